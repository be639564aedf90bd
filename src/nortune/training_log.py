"""The training log SFT and preference training both keep: one line per logging step and the loss curve.

``step_progress`` replaces the Trainer's progress bar with one that also prints and appends each
logging step (loss, lr, tokens/s) to ``log.jsonl``; the forgetting watch (``nortune.train.watch``) adds
its measurements there; ``plot_loss`` draws ``loss.png`` from both.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from nortune.jsonl import iter_jsonl
from nortune.runs import atomic_writer


def step_progress(log_path: Path) -> Any:
    from tqdm.auto import tqdm
    from transformers.trainer_callback import ProgressCallback

    class StepProgress(ProgressCallback):
        """The progress bar plus one line per logging step (loss, lr, tokens/s), kept in log.jsonl."""

        def __init__(self) -> None:
            super().__init__()
            self.last = (time.time(), 0)

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            # The last step is always logged (also one the forgetting watch, an earlier callback, stops at): a run
            # shorter than logging_steps still has a curve, and the last loss is the loss at the end.
            if state.global_step >= state.max_steps or control.should_training_stop:
                control.should_log = True
            return super().on_step_end(args, state, control, **kwargs)

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            now, seen = time.time(), state.num_input_tokens_seen
            rate = (seen - self.last[1]) / max(now - self.last[0], 1e-9)
            self.last = (now, seen)
            entry = {"step": state.global_step, "max_steps": state.max_steps, "loss": logs["loss"],
                     "lr": logs.get("learning_rate"), "tokens_seen": seen, "tokens_per_s": rate}
            line = (f"step {state.global_step}/{state.max_steps}  loss {logs['loss']:.4f}  "
                    f"lr {logs.get('learning_rate', 0):.2e}  {rate:,.0f} tok/s")
            tqdm.write(line)  # above the progress bar, if any (transformers' own bar is a tqdm)
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry) + "\n")

    return StepProgress()


def plot_loss(log_path: Path, png: Path) -> None:
    """The loss curve; with the forgetting watch's lines in the log, a second panel: perplexity change per set
    against step 0, with the step the watch kept marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for _, row in iter_jsonl(log_path)]
    losses = [r for r in rows if "loss" in r]
    watched = [r["watch"] for r in rows if "watch" in r]
    fig, axes = plt.subplots(2 if watched else 1, 1, figsize=(6, 6 if watched else 3.5), sharex=True, squeeze=False)
    ax = axes[0][0]
    ax.plot([e["step"] for e in losses], [e["loss"] for e in losses], marker="o", markersize=3)
    ax.set_ylabel("training loss (assistant tokens)")
    ax.set_title("nortune train")
    ax.grid(alpha=0.3)
    if watched:
        ax = axes[1][0]
        for name in watched[0]["sets"]:
            ax.plot([w["step"] for w in watched], [100 * w["sets"][name]["change"] for w in watched], marker="o",
                    markersize=3, label=name)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.axvline(watched[-1]["best_step"], color="green", linestyle="--", linewidth=0.8, label="best step")
        ax.set_ylabel("dev perplexity change vs step 0 (%)")
        ax.legend(fontsize=7, ncol=2)
        ax.grid(alpha=0.3)
    axes[-1][0].set_xlabel("optimizer step")
    fig.tight_layout()
    with atomic_writer(png, binary=True) as handle:
        fig.savefig(handle, dpi=110, format="png")
    plt.close(fig)

"""The training log SFT and preference training both keep: one line per logging step and the loss curve.

``step_progress`` replaces the Trainer's progress bar with one that also prints and appends each
logging step (loss, lr, tokens/s) to ``log.jsonl``; ``plot_loss`` draws ``loss.png`` from it.
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
            # The last step is always logged: a run shorter than logging_steps still has a curve, and the
            # last loss is the loss at the end, not that of an earlier window.
            if state.global_step >= state.max_steps:
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [row for _, row in iter_jsonl(log_path)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([e["step"] for e in entries], [e["loss"] for e in entries], marker="o", markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (assistant tokens)")
    ax.set_title("nortune train")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_writer(png, binary=True) as handle:
        fig.savefig(handle, dpi=110, format="png")
    plt.close(fig)

"""The forgetting watch (``train.watch``): dev-text perplexity per set while training, judged against step 0.

Every ``every_steps`` optimizer steps (and at step 0, the reference, and at the last step) the first
``max_texts`` texts of every set are scored with the weights being trained: in the training process,
eval mode (so NEFTune adds no noise), no gradient, batches sized by ``memory_mib``. Against step 0
each set gets the paired bootstrap change and verdict of the forgetting guard
(``text_perplexity.verdict``); the mean change of the trained sets is the progress.

- **Forgetting**: a set flagged by that verdict (a guarded language significantly above its
  tolerance, or a trained one significantly worse than at step 0).
- **Best step**: the lowest mean change of the trained sets among the measurements that find no
  forgetting; step 0 (change 0) counts, so a run that never improves keeps its starting point.
- **Stop** (``stop_on_forgetting``): at the first measurement that finds forgetting, or after
  ``patience`` measurements in a row without a new best.

The Trainer's own machinery carries the decisions: ``control.should_training_stop`` ends the loop on
every rank, ``control.should_save`` writes a checkpoint at each measured step, and
``state.best_global_step`` protects the best one from checkpoint rotation. Under a launcher every
rank scores (FSDP's forward is collective), rank 0's scores are broadcast, and every rank judges the
same numbers, so all stop at the same step.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from nortune.config.base import language_of
from nortune.errors import UsageError
from nortune.text_perplexity import ratio_bootstrap, read_texts, verdict
from nortune.jsonl import DataError, iter_jsonl
from nortune.runs import atomic_write_text

log = logging.getLogger(__name__)
# In the checkpoints folder: every measurement's per-text scores, one line each. The watch's state is a function of
# them, so a resumed run replays the lines up to its checkpoint and judges on as an uninterrupted run would.
SCORES_FILE = "watch_scores.jsonl"
RULE = ("the measured step with the lowest mean perplexity change of the trained sets against step 0 "
        "among those that find no forgetting (step 0 counts)")


def read_sets(settings: Any) -> dict[str, list[str]]:
    """The first ``max_texts`` texts of every set, read before any weights load (a short set is an error)."""
    sets = {}
    for name, path in settings.texts.items():
        texts = read_texts(Path(path))
        if len(texts) < settings.max_texts:
            raise DataError(f"train.watch.texts.{name}: {path} has {len(texts)} texts, fewer than max_texts "
                            f"({settings.max_texts})")
        sets[name] = texts[:settings.max_texts]
    return sets


class Watch:
    """The watch's judgement, free of torch and the Trainer: fed scores, it keeps the reference, the
    measurements, the best step and why it would stop."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.guarded = settings.guarded_languages()
        self.reference: dict[str, dict[str, list]] | None = None
        self.evaluations: list[dict[str, Any]] = []
        self.best_step = 0
        self.best_change = 0.0
        self.without_progress = 0
        self.stop_reason: str | None = None
        self.stopped_at: int | None = None

    def judged(self, name: str) -> bool:
        language = language_of(name)
        return language in self.settings.trained or language in self.guarded

    def add(self, step: int, scored: dict[str, list[tuple[float, int]]], seconds: float) -> dict[str, Any]:
        """Judge one measurement (per set: (NLL, tokens) per text); the first one is the reference."""
        s = self.settings
        current = {name: {"nll": [x[0] for x in rows], "tokens": [x[1] for x in rows]} for name, rows in scored.items()}
        is_reference = self.reference is None
        if is_reference:
            self.reference = current
        sets, forgetting = {}, []
        for name, now in current.items():
            ref = self.reference[name]
            ppl = math.exp(sum(now["nll"]) / sum(now["tokens"]))
            if is_reference:
                sets[name] = {"ppl": ppl, "change": 0.0, "ci": [0.0, 0.0], "verdict": "reference"}
                continue
            change, ci = ratio_bootstrap(ref["nll"], ref["tokens"], now["nll"], now["tokens"], s.bootstrap_samples,
                                         s.confidence)
            trained = language_of(name) in s.trained
            text, flagged = verdict(change, ci, trained, s.tolerance, len(now["nll"]))
            flagged = flagged and self.judged(name)
            sets[name] = {"ppl": ppl, "change": change, "ci": list(ci),
                          "verdict": text if self.judged(name) else f"{text} (not judged)"}
            if flagged:
                forgetting.append(name)
        trained_change = _mean([v["change"] for n, v in sets.items() if language_of(n) in s.trained])
        if not forgetting and trained_change < self.best_change:
            self.best_step, self.best_change, self.without_progress = step, trained_change, 0
        elif self.evaluations:
            self.without_progress += 1
        entry = {"step": step, "sets": sets, "trained_change": trained_change, "forgetting": forgetting,
                 "best_step": self.best_step, "seconds": round(seconds, 2)}
        self.evaluations.append(entry)
        if s.stop_on_forgetting and self.stop_reason is None and len(self.evaluations) > 1:
            if forgetting:
                self.stop_reason = "forgetting: " + ", ".join(
                    f"{n} {sets[n]['change']:+.1%} [{sets[n]['ci'][0]:+.1%}, {sets[n]['ci'][1]:+.1%}]"
                    for n in forgetting) + f" against step {self.evaluations[0]['step']}"
            elif self.without_progress >= s.patience:
                self.stop_reason = (f"no progress: the trained languages' mean perplexity has not reached a new low "
                                    f"for {self.without_progress} measurements (patience {s.patience})")
            if self.stop_reason:
                self.stopped_at = step
        return entry

    def summary(self, last_step: int, kept: str) -> dict[str, Any]:
        """What the train manifest records: why training stopped, where, and which weights were kept."""
        s = self.settings
        return {"every_steps": s.every_steps, "texts_per_set": s.max_texts, "sets": sorted(s.texts),
                "trained": list(s.trained), "guarded": self.guarded, "tolerance": s.tolerance,
                "patience": s.patience, "stop_on_forgetting": s.stop_on_forgetting, "restore_best": s.restore_best,
                "rule": RULE, "stopped_early": self.stopped_at is not None, "stop_reason": self.stop_reason,
                "stopped_at_step": self.stopped_at, "last_step": last_step, "best_step": self.best_step,
                "best_trained_change": self.best_change, "kept": kept,
                "seconds": round(sum(e["seconds"] for e in self.evaluations), 2), "evaluations": self.evaluations}


def markdown(summary: dict[str, Any]) -> str:
    """``train/watch.md`` (shown in the run report beside the chart): every measurement, why it stopped, what was
    kept."""
    from nortune import markup

    names = list(summary["evaluations"][0]["sets"]) if summary["evaluations"] else []
    lines = ["# Forgetting watch", ""]
    if summary["stopped_early"]:
        lines += [f"> **Stopped at step {summary['stopped_at_step']}: {markup.text(summary['stop_reason'])}**", ""]
    else:
        lines += [f"Ran every step ({summary['last_step']}); nothing stopped it.", ""]
    lines += [f"Kept: {markup.text(summary['kept'])}. Rule: {markup.text(summary['rule'])}.", "",
              "| step | " + " | ".join(markup.text(n) for n in names) + " | trained mean | finding |",
              "|---:|" + "---:|" * len(names) + "---:|---|"]
    for e in summary["evaluations"]:
        cells = [f"ppl {e['sets'][n]['ppl']:.2f} (reference)" if e is summary["evaluations"][0] else
                 f"{e['sets'][n]['change']:+.1%} [{e['sets'][n]['ci'][0]:+.1%}, {e['sets'][n]['ci'][1]:+.1%}]"
                 for n in names]
        finding = ("**forgetting: " + ", ".join(map(markup.text, e["forgetting"])) + "**") if e["forgetting"] else ""
        lines.append(f"| {e['step']} | " + " | ".join(cells) + f" | {e['trained_change']:+.1%} | {finding} |")
    lines += ["", f"Change of dev perplexity against step {summary['evaluations'][0]['step'] if names else 0}, "
                  f"{summary['texts_per_set']} texts per set, paired bootstrap interval; trained: "
                  f"{markup.text(', '.join(summary['trained']))}; "
                  f"guarded: {markup.text(', '.join(summary['guarded']))} "
                  f"(tolerance {summary['tolerance']:.0%}). {summary['seconds']} s measuring.", ""]
    return "\n".join(lines)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def callback(settings: Any, tokenizer: Any, device: str, log_path: Path, main: bool, checkpoints: Path,
             resume_from: Path | None) -> Any:
    """The watch as a Trainer callback (transformers imported here, when training starts)."""
    from transformers import TrainerCallback

    sets = read_sets(settings)
    scores_file = checkpoints / SCORES_FILE
    watch = Watch(settings)
    if resume_from is not None:
        resumed_at = int(resume_from.name.split("-")[-1])
        lines = [row for _, row in iter_jsonl(scores_file)] if scores_file.is_file() else []
        if not lines:
            raise UsageError(f"cannot resume the watch: {scores_file} is missing (delete {checkpoints} to start over)")
        kept = [row for row in lines if row["step"] <= resumed_at]  # later lines: the killed run's, measured again
        for row in kept:
            watch.add(row["step"], row["scored"], row["seconds"])
        if main:
            atomic_write_text(scores_file, "".join(json.dumps(row) + "\n" for row in kept))
    elif main:
        scores_file.unlink(missing_ok=True)

    class ForgettingWatch(TrainerCallback):
        def __init__(self) -> None:
            self.watch = watch

        def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
            if self.watch.reference is None:
                self._measure(state, control, model)

        def on_step_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
            if state.global_step % settings.every_steps == 0 or state.global_step >= state.max_steps:
                self._measure(state, control, model)
            return control

        def _measure(self, state, control, model) -> None:  # noqa: ANN001
            started = time.perf_counter()
            scored = _broadcast(_score(model, tokenizer, sets, settings, device))
            seconds = time.perf_counter() - started
            entry = self.watch.add(state.global_step, scored, seconds)
            if main:
                with open(scores_file, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"step": state.global_step, "scored": scored, "seconds": seconds}) + "\n")
                _log(log_path, entry, self.watch)
            if settings.restore_best and state.global_step > 0:
                control.should_save = True  # every measured step has a checkpoint to go back to
                if self.watch.best_step > 0:
                    state.best_global_step, state.best_metric = self.watch.best_step, self.watch.best_change
            if self.watch.stop_reason and self.watch.stopped_at == state.global_step:
                control.should_training_stop = True

    return ForgettingWatch()


def keep_best(watch: Watch, peft_model: Any, starting_adapter: Path, checkpoints: Path,
              last_step: int) -> dict[str, Any]:
    """The watch's record for the manifest; with ``restore_best``, the best measured step's adapter is loaded into
    ``peft_model`` (rank 0's whole model; None on other ranks) before anything is saved."""
    best = watch.best_step
    if not watch.settings.restore_best or best == last_step:
        kept = f"the last step ({last_step})"
    elif best == 0:
        kept = "step 0: the starting adapter (no measurement improved the trained languages without forgetting)"
        if peft_model is not None:
            load_adapter_weights(peft_model, starting_adapter)
    else:
        kept = f"checkpoint-{best} (step {best})"
        if peft_model is not None:
            load_adapter_weights(peft_model, checkpoints / f"checkpoint-{best}")
    if watch.stop_reason:
        log.warning("train: the watch stopped training at step %d: %s; kept %s", watch.stopped_at,
                    watch.stop_reason, kept)
    return watch.summary(last_step, kept)


def load_adapter_weights(peft_model: Any, folder: Path) -> None:
    """The adapter saved in ``folder`` (a checkpoint, or the starting adapter) back into ``peft_model``."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    loaded = set_peft_model_state_dict(peft_model, load_file(Path(folder) / "adapter_model.safetensors"))
    if getattr(loaded, "unexpected_keys", None):
        raise RuntimeError(f"{folder}: adapter weights that the model does not have: {loaded.unexpected_keys[:3]}")


def _score(model: Any, tokenizer: Any, sets: dict[str, list[str]], settings: Any,
           device: str) -> dict[str, list[tuple[float, int]]]:
    from nortune.text_perplexity import score

    was_training = model.training
    model.eval()
    try:
        return {name: score(model, tokenizer, texts, settings.max_tokens_per_text, len(texts), device,
                            settings.memory_mib * 2**20) for name, texts in sets.items()}
    finally:
        model.train(was_training)


def _broadcast(scored: dict[str, list[tuple[float, int]]]) -> dict[str, list[tuple[float, int]]]:
    """Rank 0's scores on every rank (each rank scored the same texts): the ranks judge the same numbers."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return scored
    box = [scored]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _log(log_path: Path, entry: dict[str, Any], watch: Watch) -> None:
    """One line in log.jsonl per measurement, and one on the terminal."""
    with open(log_path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"step": entry["step"], "watch": entry}) + "\n")
    changes = "  ".join(f"{name} {row['change']:+.1%}" for name, row in entry["sets"].items())
    log.info("watch step %d: %s (%.1f s)%s", entry["step"], changes, entry["seconds"],
             f"; stopping: {watch.stop_reason}" if watch.stopped_at == entry["step"] else "")

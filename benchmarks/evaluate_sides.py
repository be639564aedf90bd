"""What the two evaluation benchmarks share (``evaluate.py`` on CPU, ``evaluate_gpu.py`` on a GPU).

The same lm-eval tasks on the same items for every side, one compact record per scored item,
the item-by-item comparison of two sides, and one side per fresh process (so its wall time and
peak memory are its own). Imported by the scripts, never by nortune itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def benchmark_tasks(families: list[str], data: str | Path, obqa_shots: int,
                    prompts: list[str] | None = None) -> dict[str, Any]:
    """lm-eval task objects for ``families`` x ``prompts`` (default: every prompt) on the local sample
    data, open-book QA at ``obqa_shots``; built as ``nortune evaluate`` builds them (the recipe's
    own section and checks)."""
    from nortune.config.evaluate import EvaluateSection
    from nortune.evaluate.tasks import build_tasks, task_specs

    shots = {f: obqa_shots for f in families if f.startswith("noropenbookqa")}
    chosen = {"prompts": prompts} if prompts else {}
    settings = EvaluateSection(tasks=families, source="local", data_dir=Path(data), num_fewshot=shots, **chosen)
    return build_tasks(task_specs(settings, shots)[0])


def evaluate(lm, tasks: dict[str, Any], limit: int | None) -> dict[str, Any]:
    """lm-eval's ``simple_evaluate`` on prebuilt tasks, with logged samples. The NorEval-only task
    manager is passed: left to itself, ``simple_evaluate`` indexes every task lm-eval ships
    (about 25 s of YAML parsing on this CPU) inside the timed call."""
    import lm_eval

    from nortune.evaluate.tasks import task_manager

    return lm_eval.simple_evaluate(model=lm, tasks=list(tasks.values()), limit=limit, log_samples=True,
                                   fewshot_random_seed=1234, task_manager=task_manager())


def guarded_hf_class(guard_bytes: float):
    """lm-eval's ``HFLM`` refusing, with torch's own CPU out-of-memory message, a batch whose logits
    and log-softmax would pass ``guard_bytes`` (``auto`` then halves, as on a real OOM), so a
    shared CPU machine never meets the kernel's OOM killer. Counts the positions it feeds."""
    from lm_eval.models.huggingface import HFLM

    class GuardedHFLM(HFLM):
        forward_tokens = 0

        def _model_call(self, inps, attn_mask=None, labels=None):
            need = 2 * inps.numel() * self.model.config.get_text_config().vocab_size * 4
            if need > guard_bytes:
                raise RuntimeError(f"DefaultCPUAllocator: can't allocate memory: batch {tuple(inps.shape)} needs "
                                   f"{need / 2**30:.1f} GiB of logits + log-softmax, over 60 % of the free RAM")
            self.forward_tokens += inps.numel()
            return super()._model_call(inps, attn_mask, labels)

    return GuardedHFLM


def compact_samples(samples: dict[str, list[dict]]) -> dict[str, dict[str, dict]]:
    """lm-eval's logged samples reduced to what the comparison reads: per task and document, each
    choice's log-likelihood and greedy flag, and the item's acc / acc_norm."""
    return {task: {str(s["doc_id"]): {"ll": [float(r[0][0]) for r in s["resps"]],
                                      "greedy": [bool(r[0][1]) for r in s["resps"]],
                                      "acc": s.get("acc"), "acc_norm": s.get("acc_norm")}
                   for s in rows} for task, rows in samples.items()}


def request_count(samples: dict[str, dict[str, dict]]) -> int:
    """Log-likelihood requests scored (one per answer choice)."""
    return sum(len(item["ll"]) for items in samples.values() for item in items.values())


def compare(ours: dict, theirs: dict, atol: float = 1e-3, rtol: float = 0.0) -> dict[str, Any]:
    """Item by item: how many acc, acc_norm and greedy flags differ, and whether every choice's
    log-likelihood is within ``atol + rtol * |theirs|`` of the other side's. ``agree`` needs both:
    no flag differs and no log-likelihood is outside the tolerance."""
    mismatches = {"acc": 0, "acc_norm": 0, "greedy": 0}
    worst = worst_rel = 0.0
    outside = compared = items = 0
    for task, refs in theirs.items():
        for doc, ref in refs.items():
            mine = ours.get(task, {}).get(doc)
            if mine is None:
                continue
            items += 1
            mismatches["acc"] += mine["acc"] != ref["acc"]
            mismatches["acc_norm"] += mine["acc_norm"] != ref["acc_norm"]
            mismatches["greedy"] += mine["greedy"] != ref["greedy"]
            for a, b in zip(mine["ll"], ref["ll"]):
                diff = abs(a - b)
                worst = max(worst, diff)
                worst_rel = max(worst_rel, diff / max(abs(b), 1e-12))
                outside += diff > atol + rtol * abs(b)
            compared += len(ref["ll"])
    complete = set(ours) == set(theirs) and all(set(ours[t]) == set(theirs[t]) for t in theirs)
    return {"agree": bool(complete and not any(mismatches.values()) and outside == 0 and compared > 0),
            "acc": mismatches["acc"] == 0, "acc_norm": mismatches["acc_norm"] == 0,
            "greedy_flags": mismatches["greedy"] == 0, "flag_mismatches": mismatches, "items": items,
            "max_abs_loglikelihood_diff": worst, "max_rel_loglikelihood_diff": worst_rel,
            "loglikelihoods_compared": compared, "loglikelihoods_outside_tolerance": outside,
            "tolerance": {"atol": atol, "rtol": rtol}, "same_items": complete}


def run_side(script: str | Path, argv: list[str], side: str, setting: str, out: Path,
             timeout: float | None = None) -> tuple[dict | None, str]:
    """Run ``script --worker SIDE SETTING OUT`` in a fresh process; its result, or None and why not."""
    cmd = [sys.executable, str(script), *argv, "--worker", side, setting, str(out)]
    # Its own process group, so a hung side is stopped with every process it started (vLLM's engine).
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, f"worker stopped after {timeout} s"
    if proc.returncode == 0 and out.is_file():
        return json.loads(out.read_text()), ""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    return None, f"worker failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}"

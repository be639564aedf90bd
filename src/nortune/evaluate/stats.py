"""Scores per task and prompt, spread over prompts, headlines, and the paired bootstrap.

Numbers are percentages (0..100). The NorEval headline is "best of the prompts per task,
then the unweighted mean of the tasks"; the mean-over-prompts headline sits beside it
because best-of-5 rewards prompt luck.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from nortune.config.names import RECIPE_FAMILIES
from nortune.evaluate.tasks import CATALOGUE


def prompt_scores(samples: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """{family: {prompt: {metric: {value, stderr, n}}}} from per-sample rows (acc in 0/1)."""
    bucket: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for row in samples:
        if row.get("family") is None:
            continue
        for metric in ("acc", "acc_norm"):
            if row.get(metric) is not None:
                bucket[(row["family"], row["prompt"], metric)].append(float(row[metric]))
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = defaultdict(lambda: defaultdict(dict))
    for (family, prompt, metric), values in sorted(bucket.items()):
        n = len(values)
        mean = sum(values) / n
        # lm-eval's mean_stderr: sample standard deviation / sqrt(n)
        var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        out[family][prompt][metric] = {"value": 100 * mean, "stderr": 100 * math.sqrt(var / n), "n": n}
    return {f: dict(p) for f, p in out.items()}


def family_summary(scores: dict[str, dict[str, dict[str, dict[str, float]]]], metric: str) -> dict[str, dict]:
    """Per family: best / mean / min / std (sample std, ddof=1) over prompts, and the best prompt."""
    out = {}
    for family, prompts in scores.items():
        values = {p: m.get(metric, m.get("acc"))["value"] for p, m in prompts.items()}
        arr = np.array(list(values.values()))
        best_prompt = max(values, key=values.get)
        out[family] = {
            "label": CATALOGUE[family].label if family in CATALOGUE else family,
            "metric": metric if all(metric in m for m in prompts.values()) else "acc",
            "best": float(arr.max()), "best_prompt": best_prompt, "mean": float(arr.mean()),
            "min": float(arr.min()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "prompts": values, "n_items": int(next(iter(prompts.values()))["acc"]["n"]),
        }
    return out


def headlines(summary: dict[str, dict]) -> dict[str, Any]:
    families = [f for f in CATALOGUE if f in summary]
    complete = set(RECIPE_FAMILIES) <= set(families)  # the recipe's 8 (a noreval suite adds more)
    label = "NorEval average" if complete else f"average of {len(families)} of the 8 NorEval tasks"
    return {
        "tasks": families,
        "best_of_prompts": float(np.mean([summary[f]["best"] for f in families])) if families else None,
        "best_of_prompts_label": f"{label}: best of prompts per task, then unweighted mean over tasks",
        "mean_of_prompts": float(np.mean([summary[f]["mean"] for f in families])) if families else None,
        "mean_of_prompts_label": f"{label}: mean over prompts per task, then unweighted mean over tasks",
        "complete": complete,
    }


def correctness(samples: list[dict[str, Any]], metric: str) -> dict[str, dict[tuple[str, str], tuple[str, float]]]:
    """{family: {(prompt, doc_key): (doc_hash, correct)}} for pairing two runs."""
    out: dict[str, dict] = defaultdict(dict)
    for row in samples:
        family = row.get("family")
        if family is None:
            continue
        value = row.get(metric, row.get("acc"))
        out[family][(row["prompt"], str(row["doc_id"]))] = (row.get("doc_hash"), float(value))
    return out


@dataclass
class Delta:
    family: str
    best: float
    best_ci: tuple[float, float]
    mean: float
    mean_ci: tuple[float, float]
    n_items: int

    def regression(self) -> bool:
        return self.best_ci[1] < 0 or self.mean_ci[1] < 0

    def gain(self) -> bool:
        return self.best_ci[0] > 0 and self.mean_ci[0] > 0


def paired_bootstrap(base: list[dict], tuned: list[dict], metric: str, samples: int, confidence: float,
                     seed: int = 0) -> tuple[list[Delta], dict[str, Any]]:
    """Deltas tuned - base per family with percentile CIs; items resampled with replacement, the
    same draw for both runs and every prompt (paired on items and prompts)."""
    rng = np.random.default_rng(seed)
    a, b = correctness(base, metric), correctness(tuned, metric)
    lo_q, hi_q = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    deltas: list[Delta] = []
    draws_best, draws_mean = [], []
    for family in [f for f in CATALOGUE if f in a and f in b]:
        keys = sorted(set(a[family]) & set(b[family]))
        mismatched = [k for k in keys if a[family][k][0] != b[family][k][0]]
        if mismatched:
            raise ValueError(f"{family}: {len(mismatched)} item(s) differ between the two runs "
                             f"(e.g. prompt {mismatched[0][0]} doc {mismatched[0][1]}); cannot pair them")
        prompts = sorted({p for p, _ in keys})
        docs = sorted({d for _, d in keys})
        docs = [d for d in docs if all((p, d) in a[family] and (p, d) in b[family] for p in prompts)]
        if not docs:
            continue
        base_m = np.array([[a[family][(p, d)][1] for d in docs] for p in prompts])  # [prompts, items]
        tuned_m = np.array([[b[family][(p, d)][1] for d in docs] for p in prompts])
        idx = rng.integers(0, len(docs), size=(samples, len(docs)))
        base_acc = base_m[:, idx].mean(axis=2) * 100  # [prompts, samples]
        tuned_acc = tuned_m[:, idx].mean(axis=2) * 100
        d_best = tuned_acc.max(axis=0) - base_acc.max(axis=0)
        d_mean = tuned_acc.mean(axis=0) - base_acc.mean(axis=0)
        draws_best.append(d_best)
        draws_mean.append(d_mean)
        point_best = tuned_m.mean(axis=1).max() * 100 - base_m.mean(axis=1).max() * 100
        point_mean = (tuned_m.mean() - base_m.mean()) * 100
        deltas.append(Delta(family, float(point_best), _ci(d_best, lo_q, hi_q), float(point_mean),
                            _ci(d_mean, lo_q, hi_q), len(docs)))
    overall: dict[str, Any] = {}
    if deltas:
        avg_best = np.mean(draws_best, axis=0)
        avg_mean = np.mean(draws_mean, axis=0)
        overall = {"best": float(np.mean([d.best for d in deltas])), "best_ci": _ci(avg_best, lo_q, hi_q),
                   "mean": float(np.mean([d.mean for d in deltas])), "mean_ci": _ci(avg_mean, lo_q, hi_q),
                   "tasks": len(deltas)}
        overall["regression"] = overall["best_ci"][1] < 0 or overall["mean_ci"][1] < 0
    return deltas, overall


def _ci(draws: np.ndarray, lo_q: float, hi_q: float) -> tuple[float, float]:
    return float(np.percentile(draws, lo_q)), float(np.percentile(draws, hi_q))

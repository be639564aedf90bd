"""Scores per task and prompt, spread over prompts, normalised scores, averages, the paired bootstrap.

Numbers are on a 0..100 scale (``to_percent``). Per task (family) the prompts give best, mean,
median and min, and a combined standard error sqrt(SE_items^2 + SD_prompts^2 / k), the error bar
of NorEval's authors (docs/evaluate-statistics.md). The recipe's headline is "best of the
prompts per task, then the unweighted mean of the recipe's tasks"; the mean-over-prompts
headline sits beside it because best-of-5 rewards prompt luck. Task scores come from lm-eval's
own aggregated results, so corpus-level metrics (BLEU, chrF) are lm-eval's numbers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from statistics import NormalDist
from typing import Any

import numpy as np

from nortune.config.names import NOREVAL_CATEGORIES, RECIPE_FAMILIES
from nortune.evaluate.tasks import CATALOGUE, family_and_prompt

# lm-eval metrics that are already 0..100: sacrebleu's corpus scores, and NorEval's t5-style
# BLEU / ROUGE per item (norsumm, nortruthfulqa_gen). Their "_acc" variants are 0/1 fractions.
PERCENT_METRICS = frozenset({"bleu", "chrf", "chrf++", "ter"})
_PERCENT_PREFIXES = ("bleu_", "rouge1_", "rouge2_", "rougeL_", "rougeLsum_")
SMALL_SET = 100  # fewer items than this: the report warns and shows the interval beside the number


def is_percent_metric(metric: str) -> bool:
    """True when lm-eval reports ``metric`` on 0..100 already (else it is a 0..1 fraction)."""
    return metric in PERCENT_METRICS or (metric.startswith(_PERCENT_PREFIXES) and not metric.endswith("_acc"))


def to_percent(metric: str, value: float) -> float:
    return float(value) if is_percent_metric(metric) else 100.0 * float(value)


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, bool):
        return float(value)
    return None


def result_scores(results: dict[str, dict[str, Any]], n_samples: dict[str, Any] | None = None
                  ) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """{family: {prompt: {metric: {value, stderr, n}}}} from lm-eval's aggregated ``results``.

    Values and standard errors are lm-eval's own (``"<metric>,<filter>"`` and
    ``"<metric>_stderr,<filter>"``), scaled to 0..100; the ``none`` filter wins when a metric
    has several. ``stderr`` is None where lm-eval reported "N/A". ``n`` from ``n-samples``.
    """
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = defaultdict(dict)
    for task_name, entry in results.items():
        family, prompt = family_and_prompt(task_name)
        if family is None or not isinstance(entry, dict):
            continue
        metrics: dict[str, dict[str, Any]] = {}
        for key, raw in entry.items():
            name, sep, filter_key = key.partition(",")
            value = _number(raw)
            if not sep or name.endswith("_stderr") or value is None:
                continue
            if name in metrics and filter_key != "none":
                continue
            stderr = _number(entry.get(f"{name}_stderr,{filter_key}"))
            counts = (n_samples or {}).get(task_name) or {}
            metrics[name] = {"value": to_percent(name, value),
                             "stderr": None if stderr is None else to_percent(name, stderr),
                             "n": int(counts.get("effective") or counts.get("original") or 0)}
        if metrics:
            out[family][prompt] = metrics
    return dict(out)


def row_metrics(row: dict[str, Any]) -> dict[str, float]:
    """Per-item numeric metrics of a sample row: its ``metrics`` dict, else the acc / acc_norm keys."""
    found = {k: _number(v) for k, v in (row.get("metrics") or {}).items()}
    for key in ("acc", "acc_norm"):
        if key not in found and row.get(key) is not None:
            found[key] = _number(row[key])
    return {k: v for k, v in found.items() if v is not None}


def prompt_scores(samples: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """{family: {prompt: {metric: {value, stderr, n}}}} from per-sample rows (per-item metrics only:
    the mean and lm-eval's ``mean_stderr``, sample sd / sqrt(n)). Corpus metrics need ``result_scores``."""
    bucket: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for row in samples:
        if row.get("family") is None:
            continue
        for metric, value in row_metrics(row).items():
            bucket[(row["family"], row["prompt"], metric)].append(value)
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = defaultdict(lambda: defaultdict(dict))
    for (family, prompt, metric), values in sorted(bucket.items()):
        n = len(values)
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        out[family][prompt][metric] = {"value": to_percent(metric, mean),
                                       "stderr": to_percent(metric, math.sqrt(var / n)), "n": n}
    return {f: dict(p) for f, p in out.items()}


def headline_metric(family: str, prompts: dict[str, dict[str, Any]], metric: str) -> str:
    """The metric a family is summarised by: the catalogue's; for multiple choice (``acc``) the recipe's
    ``evaluate.metric`` (acc / acc_norm) where every prompt has it (truthfulness has acc only)."""
    wanted = CATALOGUE[family].metric if family in CATALOGUE else "acc"
    if wanted in ("acc", "acc_norm") and all(metric in m for m in prompts.values()):
        return metric
    return wanted


def chance_level(samples: list[dict[str, Any]], family: str) -> float | None:
    """Per-item chance for multiple choice, in percent: the mean over items of 100 / len(choices)."""
    per_doc: dict[str, int] = {}
    for row in samples:
        if row.get("family") == family and len(row.get("choices") or []) > 1:
            per_doc.setdefault(str(row["doc_id"]), len(row["choices"]))
    return float(np.mean([100.0 / c for c in per_doc.values()])) if per_doc else None


def random_baseline(family: str, metric: str, samples: list[dict[str, Any]] | None) -> float | None:
    """The catalogue's chance score; None there: per-item 1/len(choices) for acc / acc_norm, else none."""
    fixed = CATALOGUE[family].random_baseline if family in CATALOGUE else None
    if fixed is not None:
        return float(fixed)
    return chance_level(samples or [], family) if metric in ("acc", "acc_norm") else None


def normalised(raw: float, random: float | None, best: float = 100.0) -> float | None:
    """(raw - random) / (max - random) * 100: 0 is chance, 100 is perfect."""
    return None if random is None or random >= best else 100.0 * (raw - random) / (best - random)


def combined_se(values: list[float], stderrs: list[float | None]) -> dict[str, float | None]:
    """SE_items (root mean square of the per-prompt standard errors), SD_prompts (ddof=1), and
    sqrt(SE_items^2 + SD_prompts^2 / k); SE_items is None when lm-eval gave no standard error."""
    k = len(values)
    sd = float(np.std(values, ddof=1)) if k > 1 else 0.0
    known = [s for s in stderrs if s is not None]
    se_items = math.sqrt(sum(s * s for s in known) / len(known)) if known else None
    se = math.sqrt((se_items or 0.0) ** 2 + sd * sd / k)
    return {"se_items": se_items, "sd_prompts": sd, "se_prompts": sd / math.sqrt(k), "se": se}


def z_of(confidence: float) -> float:
    return NormalDist().inv_cdf((1 + confidence) / 2)


def family_summary(scores: dict[str, dict[str, dict[str, dict[str, float]]]], metric: str,
                   samples: list[dict[str, Any]] | None = None, confidence: float = 0.95) -> dict[str, dict]:
    """Per family: best (and its prompt) / mean / median / min / sd over prompts, the combined SE and its
    ±z·SE half-width, the random baseline and normalised best and mean, the category, the small-set flag.
    Families whose headline metric lm-eval did not report are left out (see ``missing_metrics``)."""
    out = {}
    z = z_of(confidence)
    for family, prompts in scores.items():
        name = headline_metric(family, prompts, metric)
        cells = {p: m[name] for p, m in prompts.items() if name in m}
        if not cells:
            continue
        values = {p: c["value"] for p, c in cells.items()}
        arr = np.array(list(values.values()))
        best_prompt = max(values, key=values.get)
        spread = combined_se(list(values.values()), [c.get("stderr") for c in cells.values()])
        n_items = min(int(c.get("n") or 0) for c in cells.values())
        random = random_baseline(family, name, samples)
        task = CATALOGUE.get(family)
        out[family] = {
            "label": task.label if task else family, "category": task.category if task else None,
            "metric": name, "best": float(arr.max()), "best_prompt": best_prompt, "mean": float(arr.mean()),
            "median": float(np.median(arr)), "min": float(arr.min()), "std": spread["sd_prompts"],
            "k": len(values), **spread, "ci": z * spread["se"], "prompts": values, "n_items": n_items,
            "small": 0 < n_items < SMALL_SET, "random": random,
            "normalised_best": normalised(float(arr.max()), random),
            "normalised_mean": normalised(float(arr.mean()), random),
            "normalised_se": None if normalised(0.0, random) is None else spread["se"] * 100 / (100 - random),
        }
    return out


def missing_metrics(scores: dict[str, Any], summary: dict[str, Any], metric: str) -> dict[str, str]:
    """{family: reason} for families lm-eval ran but whose headline metric it did not report."""
    return {f: f"lm-eval reported no {headline_metric(f, p, metric)!r} (got {sorted({m for x in p.values() for m in x})})"
            for f, p in scores.items() if f not in summary}


def _average(summary: dict[str, dict], families: list[str], key: str, se_key: str = "se") -> dict | None:
    """Unweighted mean of ``key`` over the families that have it; SE propagated as sqrt(sum SE^2) / N."""
    rows = [summary[f] for f in families if summary[f].get(key) is not None]
    if not rows:
        return None
    return {"value": float(np.mean([r[key] for r in rows])), "tasks": len(rows),
            "se": math.sqrt(sum(r[se_key] ** 2 for r in rows)) / len(rows)}


def _group(summary: dict[str, dict], families: list[str]) -> dict[str, Any]:
    return {"families": families, **{k: _average(summary, families, k, se) for k, se in (
        ("best", "se"), ("mean", "se"), ("normalised_best", "normalised_se"), ("normalised_mean", "normalised_se"))}}


def headlines(summary: dict[str, dict]) -> dict[str, Any]:
    """The recipe's two headlines over its tasks (unchanged), plus per-category and overall averages
    over every family summarised (raw and normalised: raw averages mix metrics, the normalised do not)."""
    recipe = list(RECIPE_FAMILIES)
    families = [f for f in recipe if f in summary]
    complete = len(families) == len(recipe)
    label = "NorEval average" if complete else f"average of {len(families)} of the {len(recipe)} NorEval recipe tasks"
    ordered = [f for f in CATALOGUE if f in summary] + [f for f in summary if f not in CATALOGUE]
    categories = {c: _group(summary, [f for f in ordered if summary[f].get("category") == c])
                  for c in NOREVAL_CATEGORIES if any(summary[f].get("category") == c for f in ordered)}
    return {
        "tasks": families,
        "best_of_prompts": float(np.mean([summary[f]["best"] for f in families])) if families else None,
        "best_of_prompts_label": f"{label}: best of prompts per task, then unweighted mean over tasks",
        "mean_of_prompts": float(np.mean([summary[f]["mean"] for f in families])) if families else None,
        "mean_of_prompts_label": f"{label}: mean over prompts per task, then unweighted mean over tasks",
        "complete": complete,
        "categories": categories,
        "overall": _group(summary, ordered),
    }


def small_sets(summary: dict[str, dict]) -> dict[str, int]:
    """{family: items} for test sets under SMALL_SET items."""
    return {f: s["n_items"] for f, s in summary.items() if s.get("small")}

"""Paired comparison of two evaluations (tuned vs base) per task, across the whole suite.

Items are resampled with replacement, the same draw for both runs and every prompt (paired on
items and prompts); best-of-prompts is re-picked inside every draw. Per-item metrics (acc,
exact_match, F1, ROUGE per item, ...) are averaged over the draw; corpus metrics (BLEU, chrF)
are recomputed on it from sacrebleu's sufficient statistics (``evaluate/corpus.py``). A task
with neither gets no interval, and the comparison says so (``overall["no_paired_ci"]``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from nortune.config.names import MIN_VERDICT_ITEMS, RECIPE_FAMILIES, too_few
from nortune.evaluate.stats import headline_metric, row_metrics, to_percent
from nortune.evaluate.tasks import CATALOGUE


def item_values(samples: list[dict[str, Any]], metric: str
                ) -> dict[str, tuple[str, dict[tuple[str, str], tuple[str, float]]]]:
    """{family: (metric, {(prompt, doc_key): (doc_hash, value 0..100)})} for pairing two runs on per-item
    metrics; the metric per family as in ``headline_metric``. Families without it per item are absent."""
    rows_by: dict[str, list[dict]] = defaultdict(list)
    for row in samples:
        if row.get("family") is not None:
            rows_by[row["family"]].append(row)
    out = {}
    for family, rows in rows_by.items():
        per_prompt: dict[str, dict[str, Any]] = defaultdict(dict)
        for row in rows:
            per_prompt[row["prompt"]].update(row_metrics(row))
        name = headline_metric(family, per_prompt, metric)
        values = {}
        for row in rows:
            value = row_metrics(row).get(name)
            if value is not None:
                values[(row["prompt"], str(row["doc_id"]))] = (row.get("doc_hash"), to_percent(name, value))
        if values:
            out[family] = (name, values)
    return out


@dataclass
class Delta:
    family: str
    best: float
    best_ci: tuple[float, float]
    mean: float
    mean_ci: tuple[float, float]
    n_items: int
    metric: str = "acc"
    method: str = "per-item"  # per-item: items resampled and averaged; corpus: the corpus metric recomputed

    def judged(self) -> bool:
        """Enough items for the interval to carry a verdict."""
        return self.n_items >= MIN_VERDICT_ITEMS

    def regression(self) -> bool:
        return self.judged() and (self.best_ci[1] < 0 or self.mean_ci[1] < 0)

    def gain(self) -> bool:
        return self.judged() and self.best_ci[0] > 0 and self.mean_ci[0] > 0

    def verdict(self) -> str:
        if not self.judged():
            return too_few(self.n_items)
        return "REGRESSION" if self.regression() else ("gain" if self.gain() else "no significant change")


@dataclass
class _Paired:
    family: str
    metric: str
    method: str
    prompts: list[str]
    docs: list[str]
    base: np.ndarray   # per-item: [prompts, items]; corpus: [prompts, items, stats]
    tuned: np.ndarray
    scorer: Any = None  # corpus.CorpusScorer for corpus metrics

    def scores(self, which: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """[prompts, draws] scores on the resampled items ``idx`` [draws, items]."""
        if self.scorer is None:
            return which[:, idx].mean(axis=2)
        counts = np.zeros((idx.shape[0], which.shape[1]))  # [draws, items]: how often each item was drawn
        np.add.at(counts, (np.arange(idx.shape[0])[:, None], idx), 1)
        summed = np.einsum("di,pis->pds", counts, which)  # [prompts, draws, stats], no per-draw copies
        return np.array([[self.scorer.score(s) for s in row] for row in summed])


def _check_pairs(family: str, a: dict, b: dict) -> tuple[list[str], list[str]]:
    keys = sorted(set(a) & set(b))
    mismatched = [k for k in keys if a[k][0] != b[k][0]]
    if mismatched:
        raise ValueError(f"{family}: {len(mismatched)} item(s) differ between the two runs "
                         f"(e.g. prompt {mismatched[0][0]} doc {mismatched[0][1]}); cannot pair them")
    prompts = sorted({p for p, _ in keys})
    docs = sorted({d for _, d in keys})
    return prompts, [d for d in docs if all((p, d) in a and (p, d) in b for p in prompts)]


def _corpus_pairs(family: str, metric: str, base: list[dict], tuned: list[dict]) -> _Paired | str:
    """The paired corpus-metric arrays of one family, or the reason there are none."""
    from nortune.evaluate.corpus import CORPUS_METRICS, CorpusScorer

    if metric not in CORPUS_METRICS:
        return (f"no per-item {metric!r} in the sample rows, and {metric!r} is not a corpus metric nortune can "
                f"recompute on resampled items ({', '.join(CORPUS_METRICS)})")
    rows = []
    for run in (base, tuned):
        rows.append({(r["prompt"], str(r["doc_id"])): r for r in run if r.get("family") == family
                     and r.get("generation") is not None and r.get("target") is not None})
    if not rows[0] or not rows[1]:
        return f"{metric!r}: the sample rows lack the generation / target needed to recompute it"
    a, b = ({k: (r.get("doc_hash"), r) for k, r in side.items()} for side in rows)
    prompts, docs = _check_pairs(family, a, b)
    if not docs:
        return "no items shared by both runs"
    scorer = CorpusScorer(metric)
    arrays = [np.stack([scorer.item_stats([side[(p, d)][1]["target"] for d in docs],
                                          [side[(p, d)][1]["generation"] for d in docs]) for p in prompts])
              for side in (a, b)]
    return _Paired(family, metric, "corpus", prompts, docs, arrays[0], arrays[1], scorer)


def paired_bootstrap(base: list[dict], tuned: list[dict], metric: str, samples: int, confidence: float,
                     seed: int = 0) -> tuple[list[Delta], dict[str, Any]]:
    """Deltas tuned - base per family with percentile CIs; items resampled with replacement, the
    same draw for both runs and every prompt (paired on items and prompts). Per-item metrics are
    averaged over the draw; corpus metrics (BLEU, chrF) are recomputed on it. ``overall`` averages
    the recipe's tasks (the headline) and lists under ``no_paired_ci`` every family with no interval."""
    rng = np.random.default_rng(seed)
    a, b = item_values(base, metric), item_values(tuned, metric)
    lo_q, hi_q = 100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2
    families = {r.get("family") for r in base if r.get("family")} & {r.get("family") for r in tuned if r.get("family")}
    ordered = [f for f in CATALOGUE if f in families] + sorted(f for f in families if f not in CATALOGUE)
    deltas: list[Delta] = []
    draws: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    no_ci: dict[str, str] = {}
    for family in ordered:
        if family in a and family in b:
            name = a[family][0]
            prompts, docs = _check_pairs(family, a[family][1], b[family][1])
            pair: _Paired | str = _Paired(
                family, name, "per-item", prompts, docs,
                np.array([[a[family][1][(p, d)][1] for d in docs] for p in prompts]),
                np.array([[b[family][1][(p, d)][1] for d in docs] for p in prompts])) if docs \
                else "no items shared by both runs"
        else:
            name = headline_metric(family, {}, metric)
            pair = _corpus_pairs(family, name, base, tuned)
        if isinstance(pair, str):
            no_ci[family] = pair
            continue
        idx = rng.integers(0, len(pair.docs), size=(samples, len(pair.docs)))
        full = np.arange(len(pair.docs))[None, :]
        base_s, tuned_s = pair.scores(pair.base, idx), pair.scores(pair.tuned, idx)
        base_p, tuned_p = pair.scores(pair.base, full)[:, 0], pair.scores(pair.tuned, full)[:, 0]
        d_best = tuned_s.max(axis=0) - base_s.max(axis=0)
        d_mean = tuned_s.mean(axis=0) - base_s.mean(axis=0)
        draws[family] = (d_best, d_mean)
        deltas.append(Delta(family, float(tuned_p.max() - base_p.max()), _ci(d_best, lo_q, hi_q),
                            float(tuned_p.mean() - base_p.mean()), _ci(d_mean, lo_q, hi_q), len(pair.docs),
                            pair.metric, pair.method))
    overall: dict[str, Any] = {"no_paired_ci": no_ci}
    headline = [d for d in deltas if d.family in RECIPE_FAMILIES]
    if headline:
        avg_best = np.mean([draws[d.family][0] for d in headline], axis=0)
        avg_mean = np.mean([draws[d.family][1] for d in headline], axis=0)
        overall.update(best=float(np.mean([d.best for d in headline])), best_ci=_ci(avg_best, lo_q, hi_q),
                       mean=float(np.mean([d.mean for d in headline])), mean_ci=_ci(avg_mean, lo_q, hi_q),
                       tasks=len(headline), items=sum(d.n_items for d in headline))
        overall["judged"] = overall["items"] >= MIN_VERDICT_ITEMS
        overall["regression"] = overall["judged"] and (overall["best_ci"][1] < 0 or overall["mean_ci"][1] < 0)
    return deltas, overall


def _ci(draws: np.ndarray, lo_q: float, hi_q: float) -> tuple[float, float]:
    return float(np.percentile(draws, lo_q)), float(np.percentile(draws, hi_q))

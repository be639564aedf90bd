"""Corpus-level metrics (sacrebleu's BLEU, chrF, chrF++) recomputed on resampled items.

A corpus BLEU is not a mean over items, so a paired bootstrap cannot average per-item
values. sacrebleu's scores are functions of per-sentence sufficient statistics that add up
over the corpus; summing a resample's rows and scoring the sum is the same as re-running
``sacrebleu.corpus_bleu`` on the resampled sentences (sacrebleu's own paired bootstrap does
this), at a fraction of the cost. The metrics are built exactly as lm-eval's aggregations
(``lm_eval.api.metrics.bleu`` / ``chrf`` / ``chrfpp``: sacrebleu defaults, references through
lm-eval's ``_sacreformat``), so the full-sample score equals the one in ``results.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# lm-eval metric name -> sacrebleu metric class name and its keyword arguments (lm-eval's defaults)
CORPUS_METRICS: dict[str, tuple[str, dict[str, Any]]] = {
    "bleu": ("BLEU", {}),
    "chrf": ("CHRF", {}),
    "chrf++": ("CHRF", {"word_order": 2}),
}


def _metric(name: str):
    import sacrebleu.metrics

    cls, kwargs = CORPUS_METRICS[name]
    return getattr(sacrebleu.metrics, cls)(**kwargs)


class CorpusScorer:
    """Per-item sufficient statistics of one corpus metric, and the score (0..100) of any multiset of items."""

    def __init__(self, name: str):
        self.name = name
        self.metric = _metric(name)

    def item_stats(self, targets: list[Any], generations: list[str]) -> np.ndarray:
        """[items, stats]: one row of sacrebleu statistics per (target, generation) pair."""
        from lm_eval.api.metrics import _sacreformat

        refs, preds = _sacreformat(list(targets), list(generations))
        return np.array(self.metric._extract_corpus_statistics(list(preds), refs), dtype=float)

    def score(self, summed: np.ndarray) -> float:
        """The corpus score of the items whose statistics add up to ``summed``."""
        return float(self.metric._compute_score_from_stats(summed.tolist()).score)

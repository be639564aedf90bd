"""Quality filters with configurable thresholds; each returns the first failing reason."""

from __future__ import annotations

import re

from nortune.config import CurateFilters

_END = re.compile(r"[.!?…:;)\]}\"'»”’`*|>0-9]$")  # a sentence, list or code block can end like this
_MIDWORD_END = re.compile(r"(,|\b(og|eller|and|or|the|som|at|til|for|med|av|ein|en|et|eit))$", re.I)


class QualityFilter:
    def __init__(self, cfg: CurateFilters):
        self.cfg = cfg
        self.boilerplate = [re.compile(p) for p in cfg.boilerplate]

    def check(self, messages: list[dict[str, str]]) -> str | None:
        cfg = self.cfg
        total = sum(len(m["content"]) for m in messages)
        if total < cfg.min_chars:
            return "filter:too_short"
        if total > cfg.max_chars:
            return "filter:too_long"
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        last = answers[-1] if answers else ""
        if len(last) < max(cfg.min_answer_chars, 1):
            return "filter:empty_answer"
        last_line = last.rsplit("\n", 1)[-1]
        if cfg.truncated and len(last) > 40 and (
                _MIDWORD_END.search(last) or (not _END.search(last) and len(last_line.split()) >= 8)):
            return "filter:truncated_answer"
        if repetition(" ".join(answers)) > cfg.max_repetition:
            return "filter:repetition"
        text = "\n".join(m["content"] for m in messages)
        if any(p.search(text) for p in self.boilerplate):
            return "filter:boilerplate"
        return None


def repetition(text: str) -> float:
    """Share of word 3-grams that repeat an earlier one (0 = no repetition)."""
    words = text.lower().split()
    if len(words) < 12:
        return 0.0
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return 1.0 - len(set(grams)) / len(grams)


def quality_score(messages: list[dict[str, str]], confidence: float) -> float:
    """Higher is better: confident language, a substantial answer, little repetition."""
    answer = " ".join(m["content"] for m in messages if m["role"] == "assistant")
    length = min(len(answer), 1500) / 1500
    return round(0.5 * confidence + 0.4 * length + 0.1 * (1 - repetition(answer)), 6)

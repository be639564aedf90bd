"""Language identification: nb (Bokmål), nn (Nynorsk), en, other, with a confidence.

A multinomial naive Bayes over word unigrams, character 1-4-grams of padded words and a
lexicon flag per word (the word is a Bokmål-only or Nynorsk-only form in the hunspell-no
dictionaries). Trained on human translations from Debian gettext catalogues; see
docs/curate.md and ``nortune.curate.langid_train``. Classes other than nb/nn/en (da, sv,
de, nl, fr) are reported as ``other``. Model and lexicon ship inside the package.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).parent
MODEL_PATH = HERE / "langid_model.json.gz"
LEXICON_PATH = HERE / "langid_lexicon.txt.gz"
PUBLIC = ("nb", "nn", "en", "other")
MAX_CHARS = 1200  # langid reads at most this much of a text; enough for a stable decision
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


def tokens(text: str) -> list[str]:
    return _WORD.findall(text[:MAX_CHARS].lower())


def load_lexicon(path: Path | None = None) -> dict[str, str]:
    """word -> "nb" or "nn" for forms that only one of the two hunspell-no dictionaries accepts."""
    out: dict[str, str] = {}
    with gzip.open(path or LEXICON_PATH, "rt", encoding="utf-8") as handle:
        for line in handle:
            label, _, word = line.rstrip("\n").partition("\t")
            out[word] = label
    return out


def features(words: list[str], max_n: int = 4, lexicon: dict[str, str] | None = None) -> list[str]:
    """Word features (``w:``), lexicon flags (``x:nb``/``x:nn``) and character n-grams."""
    out: list[str] = []
    for word in words:
        out.append("w:" + word)
        if lexicon is not None:
            flag = lexicon.get(word)
            if flag is not None:
                out.append("x:" + flag)
        padded = f" {word} "
        size = len(padded)
        for n in range(1, max_n + 1):
            for i in range(size - n + 1):
                gram = padded[i:i + n]
                if gram != " ":
                    out.append(gram)
    return out


class LangId:
    """Scores a text against every class; ``predict`` maps to the public labels."""

    def __init__(self, model: dict, lexicon: dict[str, str] | None):
        self.classes: list[str] = model["classes"]
        self.max_n: int = model["max_n"]
        self.word_weight: float = model.get("word_weight", 1.0)
        self.lexicon_weight: float = model.get("lexicon_weight", 1.0)
        self.temperature: float = model.get("temperature", 1.0)
        self.lexicon = lexicon
        scale = float(model["scale"])
        # Centre each feature's log-probabilities: only differences between classes matter.
        table: dict[str, tuple[float, ...]] = {}
        for feat, values in model["table"].items():
            mean = sum(values) / len(values)
            weight = self.word_weight if feat.startswith("w:") else (
                self.lexicon_weight if feat.startswith("x:") else 1.0)
            table[feat] = tuple(weight * (v - mean) / scale for v in values)
        self.table = table

    @classmethod
    def load(cls, path: Path | None = None, lexicon: Path | None = None) -> "LangId":
        with gzip.open(path or MODEL_PATH, "rt", encoding="utf-8") as handle:
            model = json.load(handle)
        use_lexicon = model.get("lexicon_weight", 0) > 0 and os.environ.get("NORTUNE_LANGID_NO_LEXICON") != "1"
        return cls(model, load_lexicon(lexicon) if use_lexicon else None)

    def posteriors(self, text: str) -> dict[str, float]:
        """Probabilities over the internal classes (nb, nn, en, da, sv, ...); {} without words."""
        words = tokens(text)
        if not words:
            return {}
        k = len(self.classes)
        total = [0.0] * k
        table = self.table
        for feat in features(words, self.max_n, self.lexicon):
            values = table.get(feat)
            if values is not None:  # unknown n-grams carry no evidence
                for i in range(k):
                    total[i] += values[i]
        # Naive Bayes is overconfident; dividing by sqrt(length) gives usable confidences.
        scale = self.temperature * math.sqrt(len(words))
        top = max(total)
        exp = [math.exp((t - top) / scale) for t in total]
        denom = sum(exp)
        return {c: e / denom for c, e in zip(self.classes, exp)}

    def predict(self, text: str) -> tuple[str, float]:
        """Public label (nb/nn/en/other) and confidence in [0, 1]."""
        post = self.posteriors(text)
        if not post:
            return "other", 0.0
        public: dict[str, float] = {}
        for name, p in post.items():
            label = name if name in PUBLIC else "other"
            public[label] = public.get(label, 0.0) + p
        label = max(public, key=public.__getitem__)
        return label, round(public[label], 4)


@lru_cache(maxsize=1)
def default_model() -> LangId:
    return LangId.load()


def identify(text: str) -> tuple[str, float]:
    return default_model().predict(text)

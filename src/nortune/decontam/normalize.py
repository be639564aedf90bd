"""Text normalisation, applied identically to the training and the test side.

Offsets in the report refer to the normalised text. The NUL character is reserved as a
record separator inside the scanner, so it is mapped to a space before anything else.
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass

_PUNCT = re.compile(r"[^\w\s\x00]+")
SEP = "\x00"

# lm-evaluation-harness's Janitor convention: ASCII lowercase, delete string.punctuation, split on whitespace.
_LM_EVAL_TABLE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase, string.punctuation)


@dataclass(frozen=True)
class Normalizer:
    unicode_form: str = "NFKC"
    casefold: bool = True
    collapse_whitespace: bool = True
    strip_punctuation: bool = False

    @classmethod
    def from_settings(cls, settings) -> "Normalizer":  # a DecontamNormalize section
        return cls(settings.unicode_form, settings.casefold, settings.collapse_whitespace,
                   settings.strip_punctuation)

    def _apply(self, text: str) -> str:
        if self.unicode_form != "none":
            text = unicodedata.normalize(self.unicode_form, text)
        if self.casefold:
            text = text.casefold()
        if self.strip_punctuation:
            text = _PUNCT.sub("", text)
        if self.collapse_whitespace:
            text = " ".join(text.split())
        return text

    def __call__(self, text: str) -> str:
        if SEP in text:
            text = text.replace(SEP, " ")
        return self._apply(text).strip() if self.collapse_whitespace else self._apply(text)

    def batch(self, texts: list[str]) -> list[str]:
        """Normalise many texts with a handful of C-level passes over one joined string."""
        if not texts:
            return []
        joined = SEP.join(texts)
        if joined.count(SEP) != len(texts) - 1:  # a text carried its own NUL: do it one by one
            return [self(t) for t in texts]
        parts = self._apply(joined).split(SEP)
        if len(parts) != len(texts):  # a normalisation form touched the separator (never seen; be safe)
            return [self(t) for t in texts]
        if self.collapse_whitespace:
            return [p.strip() for p in parts]
        return parts


def lm_eval_words(text: str) -> list[str]:
    """Tokens as lm-evaluation-harness's Janitor registers them (13-gram decontamination)."""
    return text.translate(_LM_EVAL_TABLE).split()

"""Text normalisation, applied identically to the training and the test side.

Offsets in the report refer to the normalised text. The NUL character is reserved as a
record separator inside the scanner, so it is mapped to a space before anything else.
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass

import numpy as np

_PUNCT = re.compile(r"[^\w\s\x00]+")
SEP = "\x00"

# lm-evaluation-harness's Janitor convention: ASCII lowercase, delete string.punctuation, split on whitespace.
_LM_EVAL_TABLE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase, string.punctuation)


_SPACE_LIMIT = 0x3001
_IS_SPACE = np.array([chr(c).isspace() for c in range(_SPACE_LIMIT)] + [False], dtype=bool)


def collapse_whitespace_joined(text: str) -> str:
    """``" ".join(part.split())`` for every NUL-separated part of ``text`` at once, in numpy.

    Whitespace is what ``str.isspace`` says; each run becomes one space, and runs at the
    start or end of a part are dropped. About twice as fast as split/join on long text.
    """
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    if not len(codes):
        return text
    space = _IS_SPACE[np.minimum(codes, _SPACE_LIMIT)]
    if not space.any():
        return text
    n = len(codes)
    # keep the last space of each run ...
    keep = ~space
    keep[:-1] |= space[:-1] & ~space[1:]
    # ... unless the run touches a part boundary (NUL) or either end of the text
    nxt = np.empty(n, dtype=np.uint32)
    nxt[:-1] = codes[1:]
    nxt[-1] = 0
    last_solid = np.where(~space, np.arange(n), -1)
    np.maximum.accumulate(last_solid, out=last_solid)
    prev_code = np.where(last_solid >= 0, codes[np.maximum(last_solid, 0)], 0)
    keep &= ~(space & ((nxt == 0) | (prev_code == 0)))
    out = codes[keep].copy()
    out[space[keep]] = 32
    return out.tobytes().decode("utf-32-le")


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

    def _apply(self, text: str, fast_spaces: bool = False) -> str:
        if self.unicode_form != "none":
            text = unicodedata.normalize(self.unicode_form, text)
        if self.casefold:
            text = text.casefold()
        if self.strip_punctuation:
            text = _PUNCT.sub("", text)
        if self.collapse_whitespace:
            text = collapse_whitespace_joined(text) if fast_spaces else " ".join(text.split())
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
        parts = self._apply(joined, fast_spaces=True).split(SEP)
        if len(parts) != len(texts):  # a normalisation form touched the separator (never seen; be safe)
            return [self(t) for t in texts]
        return parts


def lm_eval_words(text: str) -> list[str]:
    """Tokens as lm-evaluation-harness's Janitor registers them (13-gram decontamination)."""
    return text.translate(_LM_EVAL_TABLE).split()

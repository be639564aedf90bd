"""Text normalisation, applied identically to the training and the test side.

Offsets in the report refer to the normalised text. The NUL character is reserved as a
record separator inside the scanner, so it is mapped to a space before anything else.
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from dataclasses import dataclass

import numpy as np
from numba import njit

_PUNCT = re.compile(r"[^\w\s\x00]+")
SEP = "\x00"

# lm-evaluation-harness's Janitor convention: ASCII lowercase, delete string.punctuation, split on whitespace.
_LM_EVAL_TABLE = str.maketrans(string.ascii_uppercase, string.ascii_lowercase, string.punctuation)


_SPACE_LIMIT = 0x3001
_IS_SPACE = np.array([chr(c).isspace() for c in range(_SPACE_LIMIT)], dtype=np.bool_)


_FOLD_LIMIT = 0x1F000  # no code point at or above this changes under str.casefold (a test checks)


@functools.cache
def _fold_tables() -> tuple[np.ndarray, np.ndarray]:
    """str.casefold per code point below _FOLD_LIMIT: the single code point it folds to (itself when
    it folds to several), and a (code point, 3) table of the folds that lengthen the text (ß -> ss)."""
    single = np.arange(_FOLD_LIMIT, dtype=np.uint32)
    multi = np.zeros((_FOLD_LIMIT, 3), dtype=np.uint32)
    for c in range(_FOLD_LIMIT):
        if 0xD800 <= c < 0xE000:
            continue
        folded = chr(c).casefold()
        if len(folded) == 1:
            single[c] = ord(folded)
        else:
            multi[c, :len(folded)] = [ord(x) for x in folded]
    return single, multi


@njit(cache=True, nogil=True, boundscheck=False)
def _expand_folds(codes, multi):  # pragma: no cover - compiled
    """The code points with the lengthening folds replaced by all of theirs (the rest untouched)."""
    limit = multi.shape[0]
    extra = 0
    for i in range(codes.shape[0]):
        c = codes[i]
        if c < limit and multi[c, 0] != 0:
            extra += 2
    out = np.empty(codes.shape[0] + extra, dtype=np.uint32)
    k = 0
    for i in range(codes.shape[0]):
        c = codes[i]
        if c < limit and multi[c, 0] != 0:
            for t in range(3):
                if multi[c, t] != 0:
                    out[k] = multi[c, t]
                    k += 1
        else:
            out[k] = c
            k += 1
    return out[:k]


@functools.cache
def _low_table(fold: bool, collapse: bool) -> np.ndarray:
    """What each code point below _SPACE_LIMIT becomes: its (folded) code point, -1 for whitespace
    (when collapsing), -2 when its fold lengthens the text."""
    single, multi = _fold_tables()
    low = np.arange(_SPACE_LIMIT, dtype=np.int64)
    if fold:
        low = single[:_SPACE_LIMIT].astype(np.int64)
        low[multi[:_SPACE_LIMIT, 0] != 0] = -2
    if collapse:
        low[(low >= 0) & (low < _SPACE_LIMIT) & _IS_SPACE[np.clip(low, 0, _SPACE_LIMIT - 1)]] = -1
    return low


@njit(cache=True, nogil=True, boundscheck=False)
def _normalize_codes(codes, low, single, multi, do_fold):  # pragma: no cover - compiled
    """Casefold and/or collapse whitespace per NUL-separated part (``low`` says which, see _low_table).

    Returns (codes, True), or (input, False) at the first code point whose fold lengthens the
    text: the caller then expands those first (``_expand_folds``) and calls again.
    """
    low_limit = low.shape[0]
    fold_limit = single.shape[0]
    out = np.empty(codes.shape[0], dtype=np.uint32)
    k = 0
    pending = False  # a whitespace run followed something solid in this part
    solid = False    # this part has had a non-space character
    for i in range(codes.shape[0]):
        d = codes[i]
        if d < low_limit:
            v = low[d]
            if v == -1:
                pending = solid
                continue
            if v == -2:
                return codes, False
            d = np.uint32(v)
        elif do_fold and d < fold_limit:  # no fold above U+3000 gives whitespace (a test checks)
            if multi[d, 0] != 0:
                return codes, False
            d = single[d]
        if d == 0:
            pending = False
            solid = False
        elif pending:
            out[k] = 32
            k += 1
            pending = False
        if d != 0:
            solid = True
        out[k] = d
        k += 1
    return out[:k], True


def _codes_apply(text: str, fold: bool, collapse: bool) -> str:
    if not text or not (fold or collapse):
        return text
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    single, multi = _fold_tables()
    low = _low_table(fold, collapse)
    out, done = _normalize_codes(codes, low, single, multi, fold)
    if not done:
        out, done = _normalize_codes(_expand_folds(codes, multi), low, single, multi, fold)
    return str(out.data, "utf-32-le")


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
        if fast_spaces:  # the batch path: casefold and whitespace in one compiled pass over code points
            if not self.strip_punctuation:
                return _codes_apply(text, self.casefold, self.collapse_whitespace)
            text = _PUNCT.sub("", _codes_apply(text, self.casefold, False))
            return _codes_apply(text, False, self.collapse_whitespace)
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
        parts = self._apply(joined, fast_spaces=True).split(SEP)
        if len(parts) != len(texts):  # a normalisation form touched the separator (never seen; be safe)
            return [self(t) for t in texts]
        return parts


def lm_eval_words(text: str) -> list[str]:
    """Tokens as lm-evaluation-harness's Janitor registers them (13-gram decontamination)."""
    return text.translate(_LM_EVAL_TABLE).split()

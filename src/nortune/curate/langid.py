"""Language identification: nb (Bokmål), nn (Nynorsk), en, other, with a confidence.

Two linear models over one set of hashed features, scored with numpy in a single gather:
- a multinomial naive Bayes over nb, nn, en, da, sv, de, nl, fr (the last five are
  reported as ``other``), its scores divided by ``temperature * sqrt(words)``;
- a dedicated binary nb-vs-nn model, trained on Bokmål and Nynorsk only, which splits the
  Norwegian probability mass between nb and nn: an NB-LR (a logistic regression over the
  counts scaled by their nb-vs-nn naive Bayes log-count ratios, folded into one weight per
  bucket), which carries over to other translator teams better than a plain LR.
Features of the lower-cased text (letters only, one space between words, at most
``MAX_CHARS`` characters): character 1-5-grams of the padded text, words, word bigrams,
all hashed into ``2**bits`` buckets, plus two counts: words that only the Bokmål or only
the Nynorsk hunspell-no dictionary accepts. Trained on human translations from Debian
packages; see docs/curate.md and ``tools/langid/train.py``. Model and lexicon ship inside
the package. Pure numpy at run time: the hashing is a polynomial rolling hash over the
text's code points, so training and inference share ``feature_indices`` exactly.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import os
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
MODEL_PATH = HERE / "langid_model.json.gz"
LEXICON_PATH = HERE / "langid_lexicon.txt.gz"
PUBLIC = ("nb", "nn", "en", "other")
MAX_CHARS = 1200  # langid reads at most this much of a text; enough for a stable decision
MAX_N = 5  # character n-grams 1..MAX_N
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")
_NON_LETTERS = re.compile(r"[\W\d_]+")

_U = np.uint64
_P = _U(0x100000001B3)  # odd multiplier of the rolling hash (FNV prime); invertible mod 2**64
_SALT_CHAR = [_U(0x9E3779B97F4A7C15 * (n + 1) & 0xFFFFFFFFFFFFFFFF) for n in range(MAX_N + 1)]
_SALT_WORD = _U(0xD6E8FEB86659FD93)
_SALT_BIGRAM = _U(0xA0761D6478BD642F)
_SALT_LEX = _U(0xE7037ED1A0B428DB)
_BIGRAM_MUL = _U(0xC2B2AE3D27D4EB4F)


def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """P**i and P**-i mod 2**64 for i < size (by doubling; numpy uint64 wraps)."""
    p = int(_P)
    inv = 1
    for _ in range(6):  # Newton iteration for the inverse of an odd number mod 2**64
        inv = inv * (2 - p * inv) & 0xFFFFFFFFFFFFFFFF
    pw, ipw = np.ones(1, dtype=_U), np.ones(1, dtype=_U)
    step, istep = p, inv
    with np.errstate(over="ignore"):
        while len(pw) < size:
            pw = np.concatenate([pw, pw * _U(step)])
            ipw = np.concatenate([ipw, ipw * _U(istep)])
            step, istep = step * step & 0xFFFFFFFFFFFFFFFF, istep * istep & 0xFFFFFFFFFFFFFFFF
    return pw[:size], ipw[:size]


_POW, _INV_POW = _powers(MAX_CHARS + 4)


def tokens(text: str) -> list[str]:
    return _WORD.findall(text[:MAX_CHARS].lower())


def normalise(text: str) -> str:
    """Lower-cased letters, one space between words and one at each end ('' without words)."""
    core = _NON_LETTERS.sub(" ", text[:MAX_CHARS].lower()).strip()
    return f" {core} " if core else ""


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads the rolling hash's bits (wrapping uint64 arithmetic)."""
    x = x ^ (x >> _U(30))
    x = x * _U(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U(27))
    x = x * _U(0x94D049BB133111EB)
    return x ^ (x >> _U(31))


def _codes(norm: str) -> np.ndarray:
    return np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32).astype(_U)


def word_hashes(codes: np.ndarray) -> np.ndarray:
    """One position-independent 64-bit hash per word of a normalised text's code points."""
    pw, ipw = (_POW, _INV_POW) if len(codes) <= len(_POW) else _powers(len(codes))
    spaces = np.flatnonzero(codes == 32)
    starts, ends = spaces[:-1] + 1, spaces[1:]
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(codes) + 1, dtype=_U)
        np.cumsum(codes * pw[:len(codes)], out=prefix[1:])
        return (prefix[ends] - prefix[starts]) * ipw[starts]


def feature_indices(norm: str, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashed feature buckets (with repeats) of a normalised text, and its word hashes."""
    codes = _codes(norm)
    size = len(codes)
    orders = min(MAX_N, size)
    words = word_hashes(codes)
    nwords = len(words)
    total = orders * size - orders * (orders - 1) // 2 + nwords + max(nwords - 1, 0)
    out = np.empty(total, dtype=_U)  # filled in place: no per-part temporaries to concatenate
    with np.errstate(over="ignore"):
        h = codes
        at = 0
        for n in range(1, orders + 1):
            if n > 1:
                h = h[:-1] + codes[n - 1:] * _POW[n - 1]
            np.add(h, _SALT_CHAR[n], out=out[at:at + len(h)])
            at += len(h)
        np.add(words, _SALT_WORD, out=out[at:at + nwords])
        at += nwords
        if nwords > 1:
            tail = out[at:]
            np.multiply(words[:-1], _BIGRAM_MUL, out=tail)
            tail += words[1:]
            tail += _SALT_BIGRAM
        # splitmix64 finaliser in place (same as _mix), then the top ``bits`` bits
        out ^= out >> _U(30)
        out *= _U(0xBF58476D1CE4E5B9)
        out ^= out >> _U(27)
        out *= _U(0x94D049BB133111EB)
        out ^= out >> _U(31)
        out >>= _U(64 - bits)
        return out.astype(np.intp), words


def hash_words(words: list[str]) -> np.ndarray:
    """``word_hashes`` of many single lower-case words at once (a fixed-width UTF-32 matrix)."""
    width = max((len(w) for w in words), default=1)
    codes = np.array(words, dtype=f"<U{width}").view(np.uint32).reshape(len(words), width)
    with np.errstate(over="ignore"):
        return (codes.astype(_U) * _POW[:width]).sum(axis=1, dtype=_U)


def lexicon_keys(words: np.ndarray) -> np.ndarray:
    """32-bit keys under which the lexicon stores words (false-positive rate ~ 2e-4 a word)."""
    with np.errstate(over="ignore"):
        return (_mix(words + _SALT_LEX) >> _U(32)).astype(np.uint32)


class Lexicon:
    """Sorted 32-bit keys of the words only Bokmål (nb) or only Nynorsk (nn) accepts."""

    def __init__(self, nb: np.ndarray, nn: np.ndarray):
        self.nb, self.nn = np.unique(nb), np.unique(nn)
        # One merged sorted table with two flags per key (31 keys are in both lists), so a
        # text's words are looked up with a single searchsorted.
        self.keys = np.union1d(self.nb, self.nn)
        self.in_nb = np.isin(self.keys, self.nb)
        self.in_nn = np.isin(self.keys, self.nn)

    @classmethod
    def load(cls, path: Path | None = None) -> "Lexicon":
        with gzip.open(path or LEXICON_PATH, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
        keys = {}
        for label in ("nb", "nn"):
            prefix = label + "\t"
            words = [line[3:] for line in lines if line.startswith(prefix) and line[3:].isalpha()]
            keys[label] = lexicon_keys(hash_words(words))
        return cls(keys["nb"], keys["nn"])

    def counts(self, words: np.ndarray) -> tuple[int, int]:
        """How many of these word hashes are nb-only and nn-only forms."""
        table = self.keys
        if not len(table) or not len(words):
            return 0, 0
        keys = lexicon_keys(words)
        pos = np.minimum(np.searchsorted(table, keys), len(table) - 1)
        hit = pos[table[pos] == keys]
        return int(np.count_nonzero(self.in_nb[hit])), int(np.count_nonzero(self.in_nn[hit]))


def _decode(blob: dict) -> np.ndarray:
    raw = np.frombuffer(base64.b64decode(blob["data"]), dtype=blob["dtype"])
    return raw.reshape(blob["shape"])


def encode_array(array: np.ndarray) -> dict:
    return {"dtype": array.dtype.str, "shape": list(array.shape),
            "data": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")}


class LangId:
    """Scores a text against every class; ``predict`` maps to the public labels."""

    def __init__(self, model: dict, lexicon: Lexicon | None):
        self.classes: list[str] = model["classes"]
        self.bits: int = model["bits"]
        self.lexicon = lexicon
        # Weights: int8 per bucket and column (the classes, then nb-vs-nn), a scale per column.
        # Kept as int8 at run time too: a 4.7 MB table gathers faster than a float one.
        self.scale = np.asarray(model["scale"], dtype=np.float64)
        width = len(self.classes) + 1
        table = np.zeros(((1 << self.bits) + 2, width), dtype=np.int8)
        table[_decode(model["rows"]).astype(np.intp)] = _decode(model["values"])
        # Stored column-major (one contiguous row of 2**bits + 2 weights per column): gathering
        # a text's buckets along axis 1 and summing contiguous rows is ~3x faster than
        # gathering (n, width) rows and summing down axis 0.
        self.table = np.ascontiguousarray(table.T)  # last two buckets: nb-only / nn-only word
        self.lexicon_rows = table[-2:].astype(np.int64)
        self.bias = np.asarray(model["bias"], dtype=np.float64)
        self.temperature = float(model.get("temperature", 1.0))
        self.lexicon_logit = float(model.get("lexicon_logit", 0.0))
        self.binary_temperature = float(model.get("binary_temperature", 1.0))
        self.nb = self.classes.index("nb")
        self.nn = self.classes.index("nn")
        self.to_public = np.zeros((len(PUBLIC), len(self.classes)))
        for i, name in enumerate(self.classes):
            self.to_public[PUBLIC.index(name) if name in PUBLIC else PUBLIC.index("other"), i] = 1.0

    @classmethod
    def load(cls, path: Path | None = None, lexicon: Path | None = None) -> "LangId":
        with gzip.open(path or MODEL_PATH, "rt", encoding="utf-8") as handle:
            model = json.load(handle)
        use_lexicon = os.environ.get("NORTUNE_LANGID_NO_LEXICON") != "1"
        return cls(model, Lexicon.load(lexicon) if use_lexicon else None)

    def scores(self, text: str) -> np.ndarray | None:
        """Class scores (naive Bayes, tempered), then the nb-vs-nn logit; None without words."""
        norm = normalise(text)
        if not norm:
            return None
        idx, words = feature_indices(norm, self.bits)
        counts = np.take(self.table, idx, axis=1).sum(axis=1, dtype=np.int64)
        if self.lexicon is not None:
            nb, nn = self.lexicon.counts(words)
            counts += nb * self.lexicon_rows[0] + nn * self.lexicon_rows[1]
        total = counts * self.scale + self.bias
        if self.lexicon is not None:
            total[-1] += self.lexicon_logit * (nb - nn)  # one-standard forms, on top of the LR
        total[-1] /= self.binary_temperature  # calibrated on the development set (log-loss)
        # Naive Bayes is overconfident; dividing by sqrt(length) gives usable confidences.
        total[:-1] /= self.temperature * math.sqrt(len(words))
        return total

    def _probabilities(self, total: np.ndarray) -> tuple[np.ndarray, float]:
        logits = total[:-1]
        exp = np.exp(logits - logits.max())
        post = exp / exp.sum()
        p_nb = 1.0 / (1.0 + math.exp(-max(min(float(total[-1]), 60.0), -60.0)))
        norsk = post[self.nb] + post[self.nn]
        post[self.nb], post[self.nn] = norsk * p_nb, norsk * (1.0 - p_nb)
        return post, p_nb

    def posteriors(self, text: str) -> dict[str, float]:
        """Probabilities over the internal classes (nb, nn, en, da, sv, ...); {} without words.

        nb + nn is the multinomial model's Norwegian mass, split by the nb-vs-nn model."""
        total = self.scores(text)
        if total is None:
            return {}
        post, _ = self._probabilities(total)
        return {c: float(p) for c, p in zip(self.classes, post)}

    def nb_probability(self, text: str) -> float | None:
        """P(Bokmål | Bokmål or Nynorsk) from the binary model; None without words."""
        total = self.scores(text)
        return None if total is None else self._probabilities(total)[1]

    def predict(self, text: str) -> tuple[str, float]:
        """Public label (nb/nn/en/other) and confidence in [0, 1]."""
        total = self.scores(text)
        if total is None:
            return "other", 0.0
        post, _ = self._probabilities(total)
        public = self.to_public @ post
        best = int(public.argmax())
        return PUBLIC[best], round(float(public[best]), 4)


@lru_cache(maxsize=1)
def default_model() -> LangId:
    return LangId.load()


def identify(text: str) -> tuple[str, float]:
    return default_model().predict(text)

"""Vectorised polynomial rolling hashes over a sequence of codes (numpy, no Python loop per item).

For codes ``c`` and an odd base ``B`` (invertible modulo 2**64) let
``Q[i] = sum_{k<i} c[k] * B**-k``. The hash of the window ``[p, p+w)`` is
``(Q[p+w] - Q[p]) * B**p = sum_j c[p+j] * B**-j``: position independent, one cumsum per
chunk, and each window then costs three array operations wherever it is asked for
(the scanner asks only at every s-th position). Arithmetic wraps modulo 2**64.

Hashes are only ever used to find *candidates*: every candidate is compared on the
actual text before it can appear in a report, so a collision costs time, never a false hit.
"""

from __future__ import annotations

import numpy as np

_MOD = 1 << 64
BASE = 0xD6E8FEB86659FD93  # odd, so invertible modulo 2**64
_BASE_INV = pow(BASE, -1, _MOD)
MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits of h * MIX index the filter


class _Powers:
    """B**k and B**-k for k < n, grown on demand and shared by every index."""

    def __init__(self) -> None:
        self.pos = np.ones(1, dtype=np.uint64)
        self.neg = np.ones(1, dtype=np.uint64)

    @staticmethod
    def _table(base: int, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.uint64)
        out[0] = 1
        k = 1
        with np.errstate(over="ignore"):
            while k < n:
                m = min(k, n - k)
                np.multiply(out[:m], np.uint64(pow(base, k, _MOD)), out=out[k:k + m])
                k += m
        return out

    def ensure(self, n: int) -> None:
        if len(self.pos) < n:
            size = max(n, 2 * len(self.pos), 1 << 16)
            self.pos = self._table(BASE, size)
            self.neg = self._table(_BASE_INV, size)


POWERS = _Powers()


def encode(text: str) -> np.ndarray:
    """Unicode code points of ``text`` as uint32 (one item per character, astral planes included)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def prefix_sums(codes: np.ndarray) -> np.ndarray:
    """Q with Q[0] = 0 and Q[i+1] = Q[i] + codes[i] * B**-i (mod 2**64); len(codes) + 1 items."""
    n = len(codes)
    POWERS.ensure(n + 1)
    out = np.empty(n + 1, dtype=np.uint64)
    out[0] = 0
    with np.errstate(over="ignore"):
        scaled = np.multiply(codes, POWERS.neg[:n], dtype=np.uint64)
        np.cumsum(scaled, out=out[1:])
    return out


def window_hashes(q: np.ndarray, starts: np.ndarray, width: int) -> np.ndarray:
    """Hashes of the windows ``[p, p+width)`` for each p in ``starts`` (from ``prefix_sums``)."""
    with np.errstate(over="ignore"):
        return (q[starts + width] - q[starts]) * POWERS.pos[starts]


def slot(hashes: np.ndarray, bits: int) -> np.ndarray:
    """Filter slot of each hash: the top ``bits`` bits of a multiplicative mix."""
    with np.errstate(over="ignore"):
        return (hashes * MIX) >> np.uint64(64 - bits)


class BitFilter:
    """A one-hash Bloom filter over 2**bits slots: no false negatives, few false positives."""

    def __init__(self, hashes: np.ndarray, bits_per_item: int = 32) -> None:
        want = max(len(hashes), 1) * bits_per_item
        self.bits = int(min(max(16, int(want - 1).bit_length()), 36))
        self.table = np.zeros(1 << (self.bits - 3), dtype=np.uint8)
        s = slot(hashes, self.bits)
        np.bitwise_or.at(self.table, s >> np.uint64(3), np.left_shift(1, (s & np.uint64(7)).astype(np.uint8)))

    def candidates(self, hashes: np.ndarray) -> np.ndarray:
        """Indices into ``hashes`` whose slot is set (a superset of the true members)."""
        s = slot(hashes, self.bits)
        byte = self.table[s >> np.uint64(3)]
        return np.flatnonzero((byte >> (s & np.uint64(7)).astype(np.uint8)) & 1)

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes)

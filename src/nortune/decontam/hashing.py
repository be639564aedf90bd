"""Polynomial window hashes over a sequence of codes: numpy for the index, one compiled loop for the scan.

For codes ``c`` and an odd base ``B`` (invertible modulo 2**64) let
``Q[i] = sum_{k<i} c[k] * B**-k``. The hash of the window ``[p, p+w)`` is
``(Q[p+w] - Q[p]) * B**p = sum_j c[p+j] * B**-j``: position independent, one cumsum per
chunk, and each window then costs three array operations wherever it is asked for
(the scanner asks only at every s-th position). Arithmetic wraps modulo 2**64.

The training side skips the prefix sums: ``probe`` (compiled with numba) computes the same
hash directly, ``sum_j c[p+j] * B**-j`` for j < w, at every s-th position and tests it
against the bit filter in the same loop, so a chunk costs one pass and returns only the
few positions whose filter bit is set.

Hashes are only ever used to find *candidates*: every candidate is compared on the
actual text before it can appear in a report, so a collision costs time, never a false hit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_MOD = 1 << 64
BASE = 0xD6E8FEB86659FD93  # odd, so invertible modulo 2**64
_BASE_INV = pow(BASE, -1, _MOD)
MIX = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits of h * MIX index the filter
FULL = np.uint64(0xFFFFFFFFFFFFFFFF)  # hash mask; tests set it to 0 to make every window collide


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


def window_hashes(q: np.ndarray, starts: np.ndarray, width: int, mask: np.uint64 = FULL) -> np.ndarray:
    """Hashes of the windows ``[p, p+width)`` for each p in ``starts`` (from ``prefix_sums``)."""
    with np.errstate(over="ignore"):
        return ((q[starts + width] - q[starts]) * POWERS.pos[starts]) & mask


@njit(cache=True, nogil=True, boundscheck=False)
def _probe(codes, stride, width, neg, table, bits, mask):  # pragma: no cover - compiled
    n = codes.shape[0]
    m = (n - width) // stride + 1 if n >= width else 0
    hashes = np.empty(m, dtype=np.uint64)
    for k in range(m):  # compute-bound: the window sums
        p = k * stride
        h = np.uint64(0)
        for j in range(width):
            h += np.uint64(codes[p + j]) * neg[j]
        hashes[k] = h & mask
    # memory-bound: the filter lookups, in their own branch-free loop so many misses overlap
    shift = np.uint64(64 - bits)
    three, seven, one = np.uint64(3), np.uint64(7), np.uint64(1)
    mix = np.uint64(0x9E3779B97F4A7C15)
    keep = np.empty(m, dtype=np.int64)
    found = 0
    for k in range(m):
        s = (hashes[k] * mix) >> shift
        keep[found] = k
        found += (np.uint64(table[s >> three]) >> (s & seven)) & one
    keep = keep[:found]
    return keep * stride, hashes[keep]


def probe(codes: np.ndarray, stride: int, width: int, bitfilter: "BitFilter",
          mask: np.uint64 = FULL) -> tuple[np.ndarray, np.ndarray]:
    """(positions, hashes) of the windows at 0, s, 2s, ... of ``codes`` whose filter bit is set."""
    POWERS.ensure(width)
    return _probe(codes, stride, width, POWERS.neg[:width], bitfilter.table, bitfilter.bits, np.uint64(mask))


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

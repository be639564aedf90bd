"""Exact and near-duplicate detection (MinHash over word shingles, LSH banding).

Exact duplicates are caught while streaming (a set of 64-bit content digests). Near
duplicates are found after the stream, on compact numpy arrays of signatures and band
keys, so memory grows by about ``4 * num_perm + 8 * bands`` bytes per kept record.
The earliest record of a near-duplicate group is kept; later ones are dropped.
"""

from __future__ import annotations

import hashlib
import zlib

import numpy as np

from nortune.config import CurateDedup
from nortune.curate.langid import _WORD

_MASK32 = np.uint64(0xFFFFFFFF)


def content_digest(messages: list[dict[str, str]]) -> int:
    text = "\x1e".join(f"{m['role']}\x1f{' '.join(m['content'].lower().split())}" for m in messages)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class NearDuplicates:
    def __init__(self, cfg: CurateDedup, seed: int = 0):
        self.cfg = cfg
        rng = np.random.default_rng(1_000_003 + seed)
        self.a = (rng.integers(1, 2**63, size=cfg.num_perm, dtype=np.uint64) | np.uint64(1))[:, None]
        self.b = rng.integers(0, 2**63, size=cfg.num_perm, dtype=np.uint64)[:, None]
        self.rows = cfg.num_perm // cfg.bands
        self._sigs: list[np.ndarray] = []
        self._keys: list[np.ndarray] = []

    def signature(self, text: str) -> np.ndarray:
        words = _WORD.findall(text.lower())
        k = self.cfg.shingle
        if len(words) <= k:
            shingles = [" ".join(words)]
        else:
            shingles = [" ".join(words[i:i + k]) for i in range(len(words) - k + 1)]
        x = np.fromiter((zlib.crc32(s.encode()) for s in set(shingles)), dtype=np.uint64)
        with np.errstate(over="ignore"):
            hashed = ((self.a * x[None, :] + self.b) >> np.uint64(32)) & _MASK32
        return hashed.min(axis=1).astype(np.uint32)

    def add(self, text: str) -> None:
        """Record the next kept record's signature (call in stream order)."""
        sig = self.signature(text)
        bands = sig.reshape(self.cfg.bands, self.rows)
        keys = np.array([int.from_bytes(hashlib.blake2b(band.tobytes(), digest_size=8).digest(), "little")
                         for band in bands], dtype=np.uint64)
        self._sigs.append(sig)
        self._keys.append(keys)

    def duplicates(self) -> np.ndarray:
        """Boolean mask over the added records: True where an earlier record is near-identical."""
        n = len(self._sigs)
        dup = np.zeros(n, dtype=bool)
        if n < 2:
            return dup
        sigs = np.stack(self._sigs)
        keys = np.stack(self._keys)
        self._sigs, self._keys = [], []
        order_ids = np.arange(n)
        for band in range(self.cfg.bands):
            column = keys[:, band]
            order = np.lexsort((order_ids, column))  # by key, then by stream position
            sorted_keys = column[order]
            starts = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
            first = order[np.maximum.accumulate(np.where(starts, np.arange(n), 0))]
            candidates = np.nonzero(first != order)[0]
            if not len(candidates):
                continue
            later, earlier = order[candidates], first[candidates]
            similar = (sigs[later] == sigs[earlier]).mean(axis=1) >= self.cfg.threshold
            dup[later[similar]] = True
        return dup

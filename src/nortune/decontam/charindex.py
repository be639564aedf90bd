"""The test-side character-window index and the search for shared spans.

Exactness argument. Let L be the shortest shared length any method asks about (the
smallest character n, or the substring minimum). The index holds the hash of *every*
window of width ``w = L - s + 1`` inside each test text; the training side is probed only
at positions that are multiples of the stride ``s``. Any shared run of length >= L
contains a probed position p with p + w inside the run, so it is seeded. Each seed is
compared on the real text, then extended left and right to the maximal common run.
A method's verdict is then read off the maximal span's length, so "n-1 shared
characters: no hit, n: hit" holds for every n >= L at once, from one index.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import numpy as np

from nortune.decontam.hashing import FULL, BitFilter, encode, prefix_sums, probe, window_hashes
from nortune.decontam.normalize import SEP
from nortune.decontam.spans import SpanCollector


HASH_MASK = FULL  # ANDed into every hash; a test sets it to 0 so that every window collides


def default_stride(min_span: int) -> int:
    return max(1, min_span // 3)


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of range(start, start + count) for each pair, vectorised."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + (np.arange(total, dtype=np.int64) - offsets)


class CharIndex:
    """All width-w windows of the (normalised) test texts, sorted by hash, plus a bit filter."""

    def __init__(self, texts: Sequence[str], min_span: int, stride: int | None = None) -> None:
        if min_span < 2:
            raise ValueError("min_span must be at least 2")
        self.min_span = min_span
        self.stride = min(stride or default_stride(min_span), min_span)
        self.width = min_span - self.stride + 1
        self.texts = list(texts)
        self.joined = SEP.join(self.texts)
        lengths = np.array([len(t) for t in self.texts], dtype=np.int64)
        self.text_starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1])) if len(lengths) else lengths
        self._starts_list = self.text_starts.tolist()
        counts = np.maximum(lengths - self.width + 1, 0)
        positions = _ranges(self.text_starts, counts)
        q = prefix_sums(encode(self.joined))
        self.mask = HASH_MASK
        hashes = window_hashes(q, positions, self.width, self.mask)
        del q
        order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[order]
        dtype = np.uint32 if len(self.joined) < 2**32 else np.int64
        self.positions = positions[order].astype(dtype)
        del hashes, order, positions
        self.filter = BitFilter(self.hashes)
        probe(encode(" " * self.width), self.stride, self.width, self.filter, self.mask)  # compile/load it now

    @property
    def windows(self) -> int:
        return len(self.hashes)

    @property
    def nbytes(self) -> int:
        return int(self.hashes.nbytes + self.positions.nbytes + self.filter.nbytes) + len(self.joined)

    def seeds(self, chunk: str) -> tuple[np.ndarray, np.ndarray]:
        """Candidate (chunk position, test position) pairs: hash equal, not yet compared."""
        w, s = self.width, self.stride
        if len(chunk) < w or not len(self.hashes):
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        cp, ch = probe(encode(chunk), s, w, self.filter, self.mask)  # filter hits only
        if not len(cp):
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        order = np.argsort(ch)  # sorted keys make the binary searches cache-friendly
        ch, cp = ch[order], cp[order]
        lo = np.searchsorted(self.hashes, ch, side="left")
        found = self.hashes[np.minimum(lo, len(self.hashes) - 1)] == ch  # drop the filter's false positives
        ch, cp, lo = ch[found], cp[found], lo[found]
        hi = np.searchsorted(self.hashes, ch, side="right")
        counts = hi - lo
        chunk_pos = np.repeat(cp, counts)
        test_pos = self.positions[_ranges(lo, counts)].astype(np.int64)
        return chunk_pos, test_pos

    def locate(self, test_pos: int) -> tuple[int, int]:
        """(test text index, offset inside it) of a position in the joined test side."""
        i = bisect_right(self._starts_list, test_pos) - 1
        return i, test_pos - self._starts_list[i]

    def collect(self, chunk: str, pieces: "ChunkPieces", records: dict[int, str],
                collector: SpanCollector) -> int:
        """Verify every seed of ``chunk`` on the text and extend it into ``collector``; returns seeds tried."""
        chunk_pos, test_pos = self.seeds(chunk)
        w = self.width
        tried = 0
        for p, tq in zip(chunk_pos.tolist(), test_pos.tolist()):
            tried += 1
            if chunk[p:p + w] != self.joined[tq:tq + w]:
                continue  # hash collision (or a window across a record separator): never reported
            record, roff = pieces.locate(p)
            test, toff = self.locate(tq)
            collector.add_seed(record, records[record], roff, test, self.texts[test], toff, w)
        return tried


class ChunkPieces:
    """Where each piece of a scan chunk came from: (record index, offset in the record's text)."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.records: list[int] = []
        self.offsets: list[int] = []
        self.parts: list[str] = []
        self.length = 0

    def add(self, record: int, offset: int, text: str) -> None:
        if self.parts:
            self.length += 1  # the separator
        self.starts.append(self.length)
        self.records.append(record)
        self.offsets.append(offset)
        self.parts.append(text)
        self.length += len(text)

    def text(self) -> str:
        return SEP.join(self.parts)

    def locate(self, pos: int) -> tuple[int, int]:
        j = bisect_right(self.starts, pos) - 1
        return self.records[j], self.offsets[j] + pos - self.starts[j]

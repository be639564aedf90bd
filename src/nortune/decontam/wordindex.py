"""Word n-gram overlap in lm-evaluation-harness's convention (13 words by default).

Tokens follow lm-eval's Janitor: ASCII lowercase, ``string.punctuation`` deleted, split on
whitespace (see ``normalize.lm_eval_words``). Every test token gets an integer id; a
training token outside the test vocabulary gets 0, which no test window contains, so
only runs of known words are hashed. Hash-equal windows are compared token by token.

Several indexes may share one vocabulary (``vocab``), so a batch of records is turned into ids
once (``encode``) and probed by each: the whole-question check keeps one index per floor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nortune.decontam.charindex import _ranges
from nortune.decontam.hashing import BitFilter, prefix_sums, window_hashes
from nortune.decontam.spans import SpanCollector


@dataclass(frozen=True)
class Encoded:
    """A batch of records as token ids of one vocabulary (0: a word no test text has, or a record end)."""

    order: list[int]        # record numbers, in the order of ``starts``
    starts: list[int]       # where each record's ids begin
    codes: np.ndarray       # uint32 ids, a 0 after every record
    zeros: np.ndarray       # zeros[i]: how many 0 ids come before position i
    prefix: np.ndarray      # hashing.prefix_sums(codes)


class WordIndex:
    def __init__(self, token_lists: Sequence[list[str]], n: int, vocab: dict[str, int] | None = None) -> None:
        self.n = n
        self.tokens = list(token_lists)
        self.vocab: dict[str, int] = {} if vocab is None else vocab  # shared: ids stay unique across indexes
        ids: list[int] = []
        starts: list[int] = []
        for tokens in self.tokens:
            starts.append(len(ids))
            for tok in tokens:
                ids.append(self.vocab.setdefault(tok, len(self.vocab) + 1))
            ids.append(0)
        self._starts = starts
        codes = np.asarray(ids, dtype=np.uint32)
        lengths = np.array([len(t) for t in self.tokens], dtype=np.int64)
        counts = np.maximum(lengths - n + 1, 0)
        positions = _ranges(np.asarray(starts, dtype=np.int64), counts)
        hashes = window_hashes(prefix_sums(codes), positions, n)
        order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[order]
        self.positions = positions[order]
        self.filter = BitFilter(self.hashes)

    @property
    def windows(self) -> int:
        return len(self.hashes)

    def _locate(self, pos: int) -> tuple[int, int]:
        from bisect import bisect_right

        i = bisect_right(self._starts, pos) - 1
        return i, pos - self._starts[i]

    def encode(self, records: dict[int, list[str]]) -> Encoded:
        """The ids of ``records`` in this index's vocabulary, for ``collect`` of every index that shares it."""
        order = list(records)
        ids: list[int] = []
        starts: list[int] = []
        get = self.vocab.get
        for rec in order:
            starts.append(len(ids))
            ids.extend([get(tok, 0) for tok in records[rec]])
            ids.append(0)
        codes = np.asarray(ids, dtype=np.uint32)
        zeros = np.concatenate(([0], np.cumsum(codes == 0)))
        return Encoded(order, starts, codes, zeros, prefix_sums(codes))

    def collect(self, records: dict[int, list[str]], collector: SpanCollector, encoded: Encoded | None = None) -> None:
        """Find, verify and extend every shared run of >= n tokens between ``records`` and the index.

        ``encoded``: ``records`` already encoded by an index with the same vocabulary.
        """
        n = self.n
        if not len(self.hashes):
            return
        enc = self.encode(records) if encoded is None else encoded
        order, starts, codes, zeros = enc.order, enc.starts, enc.codes, enc.zeros
        if len(codes) < n:
            return
        probes = np.arange(len(codes) - n + 1, dtype=np.int64)
        probes = probes[zeros[probes + n] == zeros[probes]]
        if not len(probes):
            return
        h = window_hashes(enc.prefix, probes, n)
        hit = self.filter.candidates(h)
        ch, cp = h[hit], probes[hit]
        lo = np.searchsorted(self.hashes, ch, side="left")
        hi = np.searchsorted(self.hashes, ch, side="right")
        counts = hi - lo
        train_pos = np.repeat(cp, counts).tolist()
        test_pos = self.positions[_ranges(lo, counts)].tolist()
        from bisect import bisect_right

        for p, tq in zip(train_pos, test_pos):
            j = bisect_right(starts, p) - 1
            rec, roff = order[j], p - starts[j]
            test, toff = self._locate(tq)
            rtoks, ttoks = records[rec], self.tokens[test]
            if rtoks[roff:roff + n] != ttoks[toff:toff + n]:
                continue  # hash collision: never reported
            collector.add_seed(rec, rtoks, roff, test, ttoks, toff, n)

"""Exact comparison helpers: every reported match is measured on the real strings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def common_prefix(a: Sequence, ai: int, b: Sequence, bi: int) -> int:
    """Length of the longest common run of a[ai:] and b[bi:] (str or list), by galloping slices."""
    limit = min(len(a) - ai, len(b) - bi)
    n, step = 0, 32
    while n < limit:
        k = min(step, limit - n)
        if a[ai + n:ai + n + k] == b[bi + n:bi + n + k]:
            n += k
            step *= 2
            continue
        lo, hi = 0, k  # a prefix of length lo matches, one of length hi does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if a[ai + n:ai + n + mid] == b[bi + n:bi + n + mid]:
                lo = mid
            else:
                hi = mid
        return n + lo
    return n


def common_suffix(a: Sequence, aend: int, b: Sequence, bend: int) -> int:
    """Length of the longest common run ending just before a[aend] and b[bend]."""
    limit = min(aend, bend)
    n, step = 0, 32
    while n < limit:
        k = min(step, limit - n)
        if a[aend - n - k:aend - n] == b[bend - n - k:bend - n]:
            n += k
            step *= 2
            continue
        lo, hi = 0, k
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if a[aend - n - mid:aend - n] == b[bend - n - mid:bend - n]:
                lo = mid
            else:
                hi = mid
        return n + lo
    return n


@dataclass(frozen=True)
class Span:
    """A maximal common run: train[train_start:+length] == test[test_start:+length], not extendable."""

    record: int       # index of the training record in the stream
    test: int         # index of the test text
    train_start: int  # offsets in the normalised texts (characters, or words for word n-grams)
    test_start: int
    length: int


class SpanCollector:
    """Extends verified seed matches to maximal spans and keeps each span once, per training record."""

    def __init__(self) -> None:
        self._seen: dict[int, dict[tuple[int, int], list[tuple[int, int]]]] = {}
        self._spans: dict[int, list[Span]] = {}

    def add_seed(self, record: int, rtext: Sequence, roff: int, test: int, ttext: Sequence, toff: int,
                 width: int) -> bool:
        """A seed is a verified equal window of ``width`` items; returns True if it gave a new span."""
        seen = self._seen.setdefault(record, {})
        known = seen.setdefault((test, roff - toff), [])
        for start, end in known:
            if start <= roff < end:
                return False
        left = common_suffix(rtext, roff, ttext, toff)
        right = common_prefix(rtext, roff + width, ttext, toff + width)
        span = Span(record, test, roff - left, toff - left, left + width + right)
        known.append((span.train_start, span.train_start + span.length))
        self._spans.setdefault(record, []).append(span)
        return True

    def pop(self, record: int) -> list[Span]:
        """The spans of a finished record, sorted; forgets the record."""
        self._seen.pop(record, None)
        return sorted(self._spans.pop(record, []), key=lambda sp: (sp.train_start, sp.test, sp.test_start))

"""Stream raw records from a source: JSONL, Parquet, CSV, plain text or a HF dataset.

Every item is ``(location, payload)`` where location is ``file:line`` (or ``file:row N``,
``hf:id:N``) and payload is a dict, or a :class:`Malformed` saying why the raw line could
not even be read. Nothing is loaded whole: files are read line by line or batch by batch.

Files are read as bytes and decoded one line at a time, so a bad byte costs exactly its own
line (reported with the byte and column) and never the rest of the file. A UTF-8 byte-order
mark at the start is accepted and stripped. :func:`count_records` counts a file's records
without parsing them, so the curate report can prove that every record was accounted for.

JSONL and text lines are read in bounded blocks: a line longer than ``curate.max_record_bytes``
is skipped to its newline without being held in memory, and comes out as a ``too_large`` item
(counted as read, then dropped), so one broken gigabyte line cannot exhaust a worker.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nortune.config import CurateSource
from nortune.jsonl import DataError, parse_record

BLOCK = 1 << 20  # bytes read at a time when a line is longer than that (counting, skipping)


@dataclass(frozen=True)
class Malformed:
    """A raw record that cannot be used: why, and the drop reason it is counted under."""

    reason: str
    drop: str = "malformed"


Item = tuple[str, "dict[str, Any] | Malformed"]


def detect_format(source: CurateSource) -> str:
    if source.hf_dataset is not None:
        return "hf"
    if source.format != "auto":
        return source.format
    suffixes = [s.lower() for s in Path(source.path).suffixes]
    for suffix in reversed(suffixes):
        if suffix in (".jsonl", ".ndjson", ".json"):
            return "jsonl"
        if suffix in (".parquet", ".pq"):
            return "parquet"
        if suffix in (".csv", ".tsv"):
            return "csv"
        if suffix in (".txt", ".text"):
            return "text"
    raise ValueError(f"{source.path}: cannot tell the format from the name; set format "
                     "(jsonl, parquet, csv or text)")


def iter_source(source: CurateSource, skip: int = 0,
                checkpoints: list[tuple[int, int, int]] | None = None, max_bytes: int | None = None) -> Iterator[Item]:
    """The source's items in order, from item ``skip`` on (a worker's slice starts there).

    JSONL and text seek to the last of ``checkpoints`` (see line_checkpoints) at or before
    ``skip`` and skip the raw lines after it without decoding them; CSV rows can span lines and
    Parquet/hub rows come in batches, so those are read and dropped. ``max_bytes``: JSONL/text
    lines longer than this are ``Malformed(drop="too_large")`` items, never read whole.
    """
    kind = detect_format(source)
    if kind in ("jsonl", "text"):
        record, offset, line = max((c for c in checkpoints or [] if c[0] <= skip), default=(0, 0, 1))
        reader = {"jsonl": _iter_jsonl, "text": _iter_text}[kind]
        yield from reader(Path(source.path), skip - record, offset, line, max_bytes)
        return
    items = _iter_hf(source) if kind == "hf" else \
        {"parquet": _iter_parquet, "csv": _iter_csv}[kind](Path(source.path))
    yield from itertools.islice(items, skip, None)


def count_records(source: CurateSource) -> int | None:
    """How many records the file holds, counted without parsing them (None for a hub dataset).

    JSONL and text: non-blank lines. CSV: non-blank rows after the header (read with bad bytes
    replaced, so a bad line still counts). Parquet: the row count in the file's metadata.
    """
    kind = detect_format(source)
    if kind == "hf":
        return None
    path = Path(source.path)
    if kind == "parquet":
        return _parquet_file(path).metadata.num_rows
    if kind == "csv":
        csv.field_size_limit(min(sys.maxsize, 1 << 30))
        with open(path, "rb") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
            rows = sum(1 for row in csv.reader(text, delimiter=_delimiter(path)) if row)
        return max(rows - 1, 0)
    with open(path, "rb") as handle:
        return sum(1 for *_, blank in _bounded_lines(handle) if not blank)


CHECKPOINT_EVERY = 4096  # records between two byte offsets kept by line_checkpoints


def line_checkpoints(path: Path, every: int = CHECKPOINT_EVERY) -> tuple[int, list[tuple[int, int, int]]]:
    """The record count of a JSONL/text file (as count_records) and (record index, byte offset, line
    number) of every ``every``-th record: a worker seeks to the one before its slice."""
    points, records, offset = [], 0, 0
    with open(path, "rb") as handle:
        for line_no, _, size, blank in _bounded_lines(handle):
            if not blank:
                if records % every == 0:
                    points.append((records, offset, line_no))
                records += 1
            offset += size
    return records, points


def _bounded_lines(handle: Any, first_line: int = 1,
                   limit: int = BLOCK) -> Iterator[tuple[int, bytes | None, int, bool]]:
    """(line number, bytes or None, size on disk, blank) per physical line, never holding more than
    ``limit`` + BLOCK bytes: a longer line is read on to its newline in blocks and comes back as None.

    Blank means only ASCII whitespace, the same for a long line as for a short one, so counting
    (any ``limit``) and reading (the configured one) agree on which lines are records.
    """
    for line_no in itertools.count(first_line):
        raw = handle.readline(limit + 1)
        if not raw:
            return
        size = len(raw)
        if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]
        if raw.endswith(b"\n") or size <= limit:
            yield line_no, raw, size, not raw.strip()
            continue
        blank = not raw.strip()
        while not raw.endswith(b"\n"):
            raw = handle.readline(BLOCK)
            if not raw:
                break
            size += len(raw)
            blank = blank and not raw.strip()
        yield line_no, None, size, blank


def _raw_lines(path: Path, offset: int = 0, first_line: int = 1,
               limit: int | None = None) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) for each physical line from ``offset`` on, a leading UTF-8 BOM removed;
    with ``limit``, a line longer than that is (line number, None) and a blank one is b"" (skipped)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        if limit is not None:
            for line_no, raw, _, blank in _bounded_lines(handle, first_line, limit):
                yield line_no, b"" if blank else raw
            return
        for line_no, raw in enumerate(handle, start=first_line):
            if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            yield line_no, raw


def _decode(raw: bytes) -> str | Malformed:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Malformed(f"not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})")


def _decoded_records(path: Path, skip: int, offset: int, first_line: int,
                     max_bytes: int | None = None) -> Iterator[tuple[str, str | Malformed]]:
    """('file:line', text or Malformed) per non-blank line of a line-per-record file, after ``skip`` records."""
    for line_no, raw in _raw_lines(path, offset, first_line, max_bytes):
        if raw is not None and not raw.strip():
            continue
        if skip:
            skip -= 1
            continue
        if raw is None:
            yield f"{path}:{line_no}", Malformed(f"longer than curate.max_record_bytes ({max_bytes} bytes)",
                                                 drop="too_large")
            continue
        yield f"{path}:{line_no}", _decode(raw)


def _iter_jsonl(path: Path, skip: int = 0, offset: int = 0, first_line: int = 1,
                max_bytes: int | None = None) -> Iterator[Item]:
    for where, line in _decoded_records(path, skip, offset, first_line, max_bytes):
        if isinstance(line, Malformed):
            yield where, line
            continue
        obj, why = parse_record(line)  # malformed, nested too deeply, a lone surrogate: this line only
        if why is not None:
            yield where, Malformed(why)
            continue
        if not isinstance(obj, dict):
            yield where, Malformed(f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield where, obj


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


class _CsvLines:
    """Decoded lines for csv.reader; lines with bad bytes are held back as Malformed items.

    ``taken`` lists the physical line numbers handed out since the last reset, so the caller
    knows on which line each row starts (csv.reader never reads ahead of its row).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.taken: list[int] = []
        self.bad: list[Item] = []

    def __iter__(self) -> Iterator[str]:
        for line_no, raw in _raw_lines(self.path):
            line = _decode(raw)
            if isinstance(line, Malformed):
                if line_no == 1:
                    raise DataError(f"{self.path}:1: the header is {line.reason}")
                self.bad.append((f"{self.path}:{line_no}", line))
                continue
            self.taken.append(line_no)
            yield line


def _iter_csv(path: Path) -> Iterator[Item]:
    csv.field_size_limit(min(sys.maxsize, 1 << 30))
    lines = _CsvLines(path)
    reader = csv.reader(iter(lines), delimiter=_delimiter(path))
    header: list[str] | None = None
    while True:
        lines.taken.clear()
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{path}:{lines.taken[0] if lines.taken else '?'}: unreadable CSV: {exc}") from None
        yield from lines.bad
        lines.bad.clear()
        if not row:
            continue
        if header is None:
            header = row
            continue
        where = f"{path}:{lines.taken[0]}"
        if len(row) != len(header):
            yield where, Malformed(f"wrong number of columns ({len(row)}, the header has {len(header)})")
            continue
        yield where, {k: v for k, v in zip(header, row) if v != ""}
    yield from lines.bad


def _iter_text(path: Path, skip: int = 0, offset: int = 0, first_line: int = 1,
               max_bytes: int | None = None) -> Iterator[Item]:
    for where, line in _decoded_records(path, skip, offset, first_line, max_bytes):
        yield where, line if isinstance(line, Malformed) else {"text": line.rstrip("\r\n")}


def _parquet_file(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a Parquet file ({exc}); set the source's format if it is another kind") \
            from None


def _iter_parquet(path: Path) -> Iterator[Item]:
    row = 0
    for batch in _parquet_file(path).iter_batches(batch_size=2048):
        for obj in batch.to_pylist():
            row += 1
            yield f"{path}:row {row}", obj


def _iter_hf(source: CurateSource) -> Iterator[Item]:
    """The real hub loader (network); streamed so large datasets never sit in memory."""
    import datasets

    dataset = datasets.load_dataset(source.hf_dataset, source.hf_config, split=source.hf_split,
                                    revision=source.hf_revision, streaming=True)
    for row, obj in enumerate(dataset, start=1):
        yield f"hf:{source.hf_dataset}:{row}", dict(obj)

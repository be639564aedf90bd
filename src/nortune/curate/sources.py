"""Stream raw records from a source: JSONL, Parquet, CSV, plain text or a HF dataset.

Every item is ``(location, payload)`` where location is ``file:line`` (or ``file:row N``,
``hf:id:N``) and payload is a dict, or a :class:`Malformed` saying why the raw line could
not even be read. Nothing is loaded whole: files are read line by line or batch by batch.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nortune.config import CurateSource


@dataclass(frozen=True)
class Malformed:
    reason: str


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
    raise ValueError(f"{source.path}: cannot tell the format from the name; set format")


def iter_source(source: CurateSource) -> Iterator[Item]:
    kind = detect_format(source)
    if kind == "hf":
        yield from _iter_hf(source)
        return
    path = Path(source.path)
    yield from {"jsonl": _iter_jsonl, "parquet": _iter_parquet, "csv": _iter_csv,
                "text": _iter_text}[kind](path)


def _iter_jsonl(path: Path) -> Iterator[Item]:
    with open(path, encoding="utf-8", errors="strict", newline="\n") as handle:
        line_no = 0
        while True:
            try:
                line = handle.readline()
            except UnicodeDecodeError as exc:
                yield f"{path}:{line_no + 1}", Malformed(f"not UTF-8: {exc.reason}")
                return  # the decoder's position is lost; stop this file
            if not line:
                return
            line_no += 1
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, Malformed(f"malformed JSON: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(obj, dict):
                yield where, Malformed(f"expected a JSON object, got {type(obj).__name__}")
                continue
            yield where, obj


def _iter_csv(path: Path) -> Iterator[Item]:
    csv.field_size_limit(min(sys.maxsize, 1 << 30))
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        start = reader.line_num
        for row in reader:
            where = f"{path}:{start + 1}"
            start = reader.line_num
            if None in row or any(v is None for v in row.values()):
                yield where, Malformed("wrong number of columns")
                continue
            yield where, {k: v for k, v in row.items() if v != ""}


def _iter_text(path: Path) -> Iterator[Item]:
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                yield f"{path}:{line_no}", {"text": line.rstrip("\n")}


def _iter_parquet(path: Path) -> Iterator[Item]:
    import pyarrow.parquet as pq

    row = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=2048):
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

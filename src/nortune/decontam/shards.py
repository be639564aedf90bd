"""Decontam across workers: one test-side index, the training file cut into record ranges.

The driver builds the ``Scanner`` once; it travels to every datatrove task inside the task's
pipeline step (the executor ships it, no file is written for it). Each task scans one contiguous
range of training records and writes its partial result as JSON into a folder made fresh for the
run. The driver adds the partials up in range order, so the report equals a single scan's (the
record numbers, the per-task sets of test texts, the first 1,000 allowed examples), whatever the
worker count. Nothing read back from the run folder is unpickled: a file swapped there can change
numbers, never run code.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datatrove.pipeline.base import PipelineStep

from nortune.decontam.scan import MethodTally, Scanner
from nortune.decontam.sources import TrainRecord
from nortune.runs import create_new

ALLOWED_EXAMPLES = 1000  # = the cap in Scanner._evaluate


class CleanWriter:
    """Streams the records without hits into a temporary file, renamed into place at the end."""

    def __init__(self, source: Path, directory: Path, name: str | None = None) -> None:
        self.path = self.output_path(source, directory, name)
        # A unique name, created exclusively: a link planted beside the output cannot redirect the write.
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        self.tmp = Path(tmp)
        self.handle = os.fdopen(fd, "w", encoding="utf-8")
        self.kept = 0
        self.removed = 0

    @staticmethod
    def output_path(source: Path, directory: Path, name: str | None = None) -> Path:
        suffix = ".txt" if source.suffix in (".txt", ".text") else ".jsonl"
        return directory / (name or f"{source.stem}.clean{suffix}")

    def __call__(self, record: TrainRecord, contaminated: bool) -> None:
        if contaminated:
            self.removed += 1
            return
        self.kept += 1
        if record.raw is not None:
            self.handle.write(record.raw if record.raw.endswith("\n") else record.raw + "\n")
        else:
            self.handle.write(json.dumps(record.row, ensure_ascii=False, default=str) + "\n")

    def close(self) -> dict[str, Any]:
        self.handle.close()
        os.replace(self.tmp, self.path)
        return {"path": str(self.path), "kept": self.kept, "removed": self.removed}


@dataclass(frozen=True)
class Shard:
    record: int  # index of the shard's first record in the whole file
    count: int
    offset: int = 0  # JSONL/text: byte offset of the first record's line
    line: int = 1  # its line number (Parquet: its row number)


def plan_shards(path: Path, tasks: int) -> list[Shard]:
    """Cut the file into ``tasks`` contiguous, equal record ranges (a binary scan of the lines)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        n = pq.ParquetFile(path).metadata.num_rows
        return [Shard(n * t // tasks, n * (t + 1) // tasks - n * t // tasks, 0, n * t // tasks + 1)
                for t in range(tasks)]
    starts: list[tuple[int, int]] = []  # (byte offset, line number) of every record
    offset = 0
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if raw.strip():
                starts.append((offset, line_no))
            offset += len(raw)
    n = len(starts)
    shards = []
    for t in range(tasks):
        lo, hi = n * t // tasks, n * (t + 1) // tasks
        at = starts[lo] if lo < n else (offset, 0)
        shards.append(Shard(lo, hi - lo, *at))
    return shards


class ScanShard(PipelineStep):
    """One task: scan its record range with the driver's index, write ``<rank>.part.json`` (and a clean part)."""

    type = "nortune"
    name = "decontam scan"

    def __init__(self, scanner: Scanner, data: Path, fields: list[str] | None, shards: list[Shard], out: Path,
                 clean: bool) -> None:
        super().__init__()
        self.scanner, self.data, self.out = scanner, str(data), str(out)
        self.fields, self.shards, self.clean = fields, shards, clean

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        import copy

        from nortune.decontam.sources import iter_training

        shard = self.shards[rank]
        scanner = copy.copy(self.scanner)  # fresh tallies below; the driver's own scanner (same process) stays unscanned
        scanner.tallies = {key: MethodTally() for key in scanner.tallies}
        scanner.contaminated, scanner.allowed_examples, scanner.allowed_phrases = [], [], {}
        scanner.empty_records = scanner.chars = 0
        scanner.records = shard.record  # record numbers in the report are the file's, not the shard's
        out = Path(self.out)
        records = iter_training(Path(self.data), self.fields, offset=shard.offset, first_line=shard.line,
                                first_row=shard.line, limit=shard.count)
        if self.clean:
            writer = CleanWriter(Path(self.data), out, name=f"{rank:05d}.clean")
            scanner.scan(records, writer)
            writer.close()
        else:
            scanner.scan(records)
        part = {"records": scanner.records - shard.record, "empty": scanner.empty_records, "chars": scanner.chars,
                "tallies": {key: {"hits": t.hits, "allowed": t.allowed, "records": t.records, "longest": t.longest,
                                  "by_task": {task: {**e, "test_texts": sorted(e["test_texts"])}
                                              for task, e in t.by_task.items()}}
                            for key, t in scanner.tallies.items()},
                "contaminated": scanner.contaminated, "allowed_examples": scanner.allowed_examples,
                "allowed_phrases": scanner.allowed_phrases}
        with create_new(out / f"{rank:05d}.part.json") as handle:
            json.dump(part, handle, ensure_ascii=False)
        return
        yield  # a generator, as datatrove expects of a step


def merge_parts(scanner: Scanner, out: Path, tasks: int) -> None:
    """Add the tasks' partial results into ``scanner`` (built by the driver, nothing scanned yet)."""
    for rank in range(tasks):
        with open(out / f"{rank:05d}.part.json", encoding="utf-8") as handle:
            part: dict[str, Any] = json.load(handle)
        scanner.records += part["records"]
        scanner.empty_records += part["empty"]
        scanner.chars += part["chars"]
        scanner.contaminated.extend(part["contaminated"])
        room = ALLOWED_EXAMPLES - len(scanner.allowed_examples)
        scanner.allowed_examples.extend(part["allowed_examples"][:max(room, 0)])
        for phrase, count in part["allowed_phrases"].items():
            scanner.allowed_phrases[phrase] = scanner.allowed_phrases.get(phrase, 0) + count
        for key, tally in part["tallies"].items():
            mine = scanner.tallies[key]
            mine.hits += tally["hits"]
            mine.allowed += tally["allowed"]
            mine.records += tally["records"]
            mine.longest = max(mine.longest, tally["longest"])
            for task, entry in tally["by_task"].items():
                into = mine.by_task.setdefault(task, {"hits": 0, "records": 0, "test_texts": set(), "longest": 0})
                into["hits"] += entry["hits"]
                into["records"] += entry["records"]
                into["test_texts"] |= set(entry["test_texts"])
                into["longest"] = max(into["longest"], entry["longest"])

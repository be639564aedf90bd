"""The global step after the workers: add up the ledgers, resolve duplicates, compose, write.

Everything here follows the global record order ``(source, record index)``, never the task that
happened to hold a record, so 1 and N workers give the same files. Exact duplicates: the earliest
record with a content digest is kept. Near duplicates: datatrove's MinHash clusters say which
candidates belong together; the earliest member of each cluster is kept. Memory: one fixed-size
row per candidate (35 bytes) plus the digest table; record texts stay in the shards on disk until
the selected ones are copied out.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nortune.curate.steps import INDEX_FORMAT, INDEX_SIZE

_ROW = np.dtype([("src", "<u2"), ("item", "<u8"), ("digest", "<u8"), ("bucket", "u1"), ("score", "<f8"),
                 ("offset", "<u8")])
assert _ROW.itemsize == INDEX_SIZE == struct.calcsize(INDEX_FORMAT)


@dataclass
class Pool:
    """Every candidate in global order, with the task shard it lives in."""

    rows: np.ndarray  # _ROW, sorted by (src, item)
    shard: np.ndarray  # task rank of each row
    read: Counter  # records read per source index, all tasks
    drops: Counter
    malformed: list[str]  # "file:line: reason", in global order
    peak_rss_mb: list[float]  # per task (the process that ran it; the langid table dominates)
    cpu_s: list[float]  # per task: CPU seconds from reading to MinHash signatures


def load_pool(folder: Path, tasks: int) -> Pool:
    """Read every task's ledger and candidate index; the ledgers' counts are added, never guessed."""
    parts, ranks, read, drops, bad, peaks, cpu = [], [], Counter(), Counter(), [], [], []
    for rank in range(tasks):
        ledger_path = folder / f"{rank:05d}.ledger.json"
        if not ledger_path.is_file():
            raise RuntimeError(f"curate: task {rank} left no ledger in {folder}; it did not finish")
        ledger = json.loads(ledger_path.read_text(encoding="utf-8"))
        read.update({int(k): v for k, v in ledger["read"].items()})
        drops.update(ledger["drops"])
        bad.extend(tuple(m) for m in ledger["malformed"])
        peaks.append(ledger["peak_rss_mb"])
        cpu.append(ledger["cpu_s"])
        rows = np.fromfile(folder / f"{rank:05d}.idx", dtype=_ROW)
        parts.append(rows)
        ranks.append(np.full(len(rows), rank, dtype=np.int32))
    rows = np.concatenate(parts) if parts else np.zeros(0, _ROW)
    shard = np.concatenate(ranks) if ranks else np.zeros(0, np.int32)
    order = np.lexsort((rows["item"], rows["src"]))
    return Pool(rows[order], shard[order], read, drops, [m[2] for m in sorted(bad)], peaks, cpu)


def exact_duplicates(rows: np.ndarray) -> np.ndarray:
    """True for every candidate whose digest an earlier candidate (global order) already had."""
    dup = np.ones(len(rows), dtype=bool)
    _, first = np.unique(rows["digest"], return_index=True)
    dup[first] = False
    return dup


def near_duplicates(pool: Pool, clusters: Path, tasks: int) -> np.ndarray:
    """True for every clustered candidate that is not its cluster's earliest member.

    ``clusters`` holds datatrove's ``<task>.clusters`` files: (index within the task's shard,
    cluster id) pairs for every candidate that has a near duplicate.
    """
    n = len(pool.rows)
    cluster = np.full(n, -1, dtype=np.int64)
    # Position of (task, index within task) in the global order.
    for rank in range(tasks):
        path = clusters / f"{rank:06d}.clusters"
        if not path.is_file():
            continue
        pairs = np.fromfile(path, dtype="<u4").reshape(-1, 2)
        where = np.nonzero(pool.shard == rank)[0]
        # Rows of one task keep their shard order inside the global order (both follow (src, item)).
        shard_order = np.argsort(pool.rows["offset"][where], kind="stable")
        cluster[where[shard_order[pairs[:, 0]]]] = pairs[:, 1]
    dup = np.zeros(n, dtype=bool)
    members = np.nonzero(cluster >= 0)[0]
    if len(members):
        ids = cluster[members]
        earliest = np.full(int(ids.max()) + 1, n, dtype=np.int64)
        np.minimum.at(earliest, ids, members)
        dup[members] = earliest[ids] != members
    return dup


def read_records(folder: Path, pool: Pool, chosen: np.ndarray):
    """Yield the chosen candidates' records (dicts) in the order given, from the shards on disk."""
    handles: dict[int, object] = {}
    try:
        for idx in chosen:
            rank = int(pool.shard[idx])
            if rank not in handles:
                handles[rank] = open(folder / f"{rank:05d}.jsonl", "rb")
            handle = handles[rank]
            handle.seek(int(pool.rows["offset"][idx]))  # type: ignore[attr-defined]
            yield json.loads(handle.readline())  # type: ignore[attr-defined]
    finally:
        for handle in handles.values():
            handle.close()  # type: ignore[attr-defined]

"""Curate's per-record work as datatrove pipeline steps (run on every worker).

read -> normalise -> language label -> translation tag -> quality filters -> candidates
(ledger + labelled shard), followed in the same task by datatrove's MinHash signature step.

A record that fails a step is not removed on the spot: the step marks ``metadata["drop"]``
with the reason and later steps pass it through, so the last step (``Candidates``) counts
every record of its shard exactly once, kept or dropped, and writes the per-task ledger the
driver adds up. Records are identified by ``(source index, record index in the source)``, the
same on 1 or N workers, and that key is the global order every later decision follows.
"""

from __future__ import annotations

import json
import resource
import struct
import time
from collections import Counter
from pathlib import Path
from typing import Any

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.word_tokenizers import WordTokenizer

from nortune.config import CurateSection
from nortune.config.names import CURATE_BUCKETS as BUCKETS
from nortune.jsonl import DataError
from nortune.runs import create_new

# Per candidate in ``<rank>.idx``: source, record index, exact digest, bucket, quality score, byte offset.
INDEX_FORMAT = "<HQQBdQ"
INDEX_SIZE = struct.calcsize(INDEX_FORMAT)
WHERE = "_where"  # the shard record's file:line; kept for dropped.jsonl, never written to the training file


def shard_range(count: int | None, src_idx: int, rank: int, world: int) -> tuple[int, float]:
    """The records ``[lo, hi)`` of one source that task ``rank`` of ``world`` reads.

    Counted sources are cut into equal contiguous slices; the last task also takes anything past
    the count (so a miscounted file still shows up in the ledger). An uncounted source (a hub
    dataset) goes whole to one task.
    """
    if count is None:
        return (0, float("inf")) if src_idx % world == rank else (0, 0)
    lo = count * rank // world
    hi = count * (rank + 1) // world if rank < world - 1 else float("inf")
    return lo, hi


class _Step(PipelineStep):
    type = "nortune"

    def __init__(self, cfg: CurateSection) -> None:
        super().__init__()
        self.cfg = cfg

    def run(self, data, rank: int = 0, world_size: int = 1):
        for doc in data:
            if "drop" not in doc.metadata:
                reason = self.apply(doc)
                if reason:
                    doc.metadata["drop"] = reason
            yield doc

    def apply(self, doc: Document) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError


class ReadSources(_Step):
    """nortune's own reader: line-accurate bad-byte accounting (datatrove's readers drop or raise)."""

    name = "read sources"

    def __init__(self, cfg: CurateSection, counts: list[int | None],
                 checkpoints: list[list[tuple[int, int, int]] | None]) -> None:
        super().__init__(cfg)
        self.counts = counts
        self.checkpoints = checkpoints  # per source: where a slice can seek to (JSONL/text)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from nortune.curate.sources import Malformed, iter_source

        for src_idx, source in enumerate(self.cfg.sources):
            lo, hi = shard_range(self.counts[src_idx], src_idx, rank, world_size)
            if lo >= hi:
                continue
            items = iter_source(source, skip=lo, checkpoints=self.checkpoints[src_idx],
                                max_bytes=self.cfg.max_record_bytes)
            for item, (where, raw) in enumerate(items, start=lo):
                if item >= hi:
                    break
                meta: dict[str, Any] = {"src": src_idx, "item": item, "where": where}
                if isinstance(raw, Malformed):
                    meta["drop"] = raw.drop  # malformed, or too_large (never read whole)
                    meta["why"] = raw.reason
                else:
                    meta["raw"] = raw
                yield Document(text="", id=f"{src_idx}:{item}", metadata=meta)


class Normalise(_Step):
    name = "normalise"

    def apply(self, doc: Document) -> str | None:
        from nortune.curate.normalize import MalformedRecord, to_messages

        source = self.cfg.sources[doc.metadata["src"]]
        try:
            mapping, messages = to_messages(doc.metadata["raw"], source)
        except MalformedRecord as exc:
            doc.metadata["why"] = str(exc)
            return "malformed"
        doc.metadata["mapping"] = mapping
        doc.metadata["messages"] = messages
        doc.text = "\n".join(m["content"] for m in messages)
        return None if any(m["content"] for m in messages) else "empty"


class LanguageLabel(_Step):
    """nortune's nb/nn/en/other identifier (answer language, per-turn languages, mixed)."""

    name = "language label"

    def apply(self, doc: Document) -> str | None:
        from nortune.curate.labels import label_record
        from nortune.curate.langid import default_model

        label = label_record(default_model(), doc.metadata["messages"])
        doc.metadata["label"] = label
        return "lang:uncertain" if label.confidence < self.cfg.min_confidence else None


class TranslationTag(_Step):
    name = "translation tag"

    def apply(self, doc: Document) -> str | None:
        from nortune.curate.labels import is_translation

        meta = doc.metadata
        why = is_translation(meta["raw"], meta["messages"], meta["label"])
        meta["translation"] = why
        meta["bucket"] = "translation" if why else ("mixed" if meta["label"].mixed else meta["label"].lang)
        return None


class QualityFilters(_Step):
    name = "quality filters"

    def __init__(self, cfg: CurateSection) -> None:
        super().__init__(cfg)
        self._filter = None

    def apply(self, doc: Document) -> str | None:
        from nortune.curate.filters import QualityFilter, quality_score

        if self._filter is None:
            self._filter = QualityFilter(self.cfg.filters)
        failed = self._filter.check(doc.metadata["messages"])
        if not failed:
            doc.metadata["score"] = quality_score(doc.metadata["messages"], doc.metadata["label"].confidence)
        return failed


def _task(mapping: str, messages: list[dict[str, str]], translation: bool) -> str:
    if translation:
        return "translation"
    if mapping == "text":
        return "text"
    turns = sum(1 for m in messages if m["role"] == "user")
    return "multi-turn" if turns > 1 else "instruction"


class Candidates(PipelineStep):
    """Count every record of this task by outcome; write the survivors as a labelled shard.

    Writes ``<rank>.jsonl`` (records), ``<rank>.idx`` (fixed-size rows, ``INDEX_FORMAT``),
    ``<rank>.dropped.jsonl`` (each record dropped here: ``dropped_line``) and ``<rank>.ledger.json``
    (records read per source, drops by reason, malformed locations), and yields the survivors, in
    shard order, to the MinHash signature step.
    """

    type = "nortune"
    name = "candidates"

    def __init__(self, cfg: CurateSection, folder: Path) -> None:
        super().__init__()
        self.cfg = cfg
        self.folder = str(folder)

    def run(self, data, rank: int = 0, world_size: int = 1):
        from nortune.curate.dedup import content_digest

        started = time.process_time()  # this task's CPU time: everything upstream and the signatures downstream
        folder = Path(self.folder)  # made fresh (mkdtemp) by the driver; the files are created, never reopened
        read: Counter = Counter()
        drops: Counter = Counter()
        malformed: list[tuple[int, int, str]] = []
        with create_new(folder / f"{rank:05d}.jsonl") as shard, create_new(folder / f"{rank:05d}.idx", True) as index, \
                create_new(folder / f"{rank:05d}.dropped.jsonl") as dropped:
            for doc in data:
                meta = doc.metadata
                read[meta["src"]] += 1
                reason = meta.get("drop")
                if reason is not None:
                    if reason == "malformed":
                        if self.cfg.strict:
                            raise DataError(f"{meta['where']}: {meta['why']}")
                        malformed.append((meta["src"], meta["item"], f"{meta['where']}: {meta['why']}"))
                    drops[reason] += 1
                    messages = meta.get("messages")
                    record_id = _record_id(self.cfg.sources[meta["src"]].name, messages) if messages else None
                    dropped.write(dropped_line(self.cfg.sources[meta["src"]].name, meta["item"], meta["where"],
                                               record_id, reason))
                    continue
                yield doc
                index.write(struct.pack(INDEX_FORMAT, meta["src"], meta["item"], content_digest(meta["messages"]),
                                        BUCKETS.index(meta["bucket"]), meta["score"], shard.tell()))
                shard.write(json.dumps(self._record(meta), ensure_ascii=False) + "\n")
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # for sizing Slurm's mem_per_cpu
        ledger = {"read": {str(k): v for k, v in sorted(read.items())}, "drops": dict(sorted(drops.items())),
                  "malformed": malformed, "peak_rss_mb": round(peak_mb, 1),
                  "cpu_s": round(time.process_time() - started, 3)}
        (folder / f"{rank:05d}.ledger.json").write_text(json.dumps(ledger), encoding="utf-8")

    def _record(self, meta: dict[str, Any]) -> dict[str, Any]:
        source = self.cfg.sources[meta["src"]]
        label, messages, why = meta["label"], meta["messages"], meta["translation"]
        record = {"id": _record_id(source.name, messages), "lang": label.lang,
                  "source": source.name, "messages": messages, "lang_confidence": label.confidence,
                  "task": _task(meta["mapping"], messages, bool(why)), WHERE: meta["where"]}
        if label.mixed:
            record["turn_langs"] = list(label.turn_langs)
        if why:
            record["translation"] = why
        if source.tags:
            record["tags"] = list(source.tags)
        return record


def _record_id(source: str, messages: list[dict[str, str]]) -> str:
    """A record's id in the training file: its source and content digest (stable across runs and workers)."""
    from nortune.curate.dedup import content_digest

    return f"{source}-{content_digest(messages):016x}"


def dropped_line(source: str, item: int, where: str, record_id: str | None, reason: str) -> str:
    """One line of ``curate/dropped.jsonl``: which record went (source, index, file:line, id) and why."""
    return json.dumps({"source": source, "record": item, "where": where, "id": record_id, "reason": reason},
                      ensure_ascii=False) + "\n"


class ShingleWords(WordTokenizer):
    """The words MinHash shingles over: nortune's letter-run words (no spaCy model needed)."""

    def __init__(self) -> None:
        super().__init__("nortune")

    def word_tokenize(self, text: str) -> list[str]:
        from nortune.curate.langid import _WORD

        return _WORD.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [line for line in text.split("\n") if line.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        from nortune.curate.langid import _WORD

        return [m.span() for m in _WORD.finditer(text)]

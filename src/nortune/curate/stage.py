"""The curate stage: sources -> normalise -> langid -> translation -> filters -> dedup -> compose."""

from __future__ import annotations

import json
import logging
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

from nortune.config import CurateSection, Recipe
from nortune.jsonl import DataError
from nortune.runs import begin_stage, file_sha256, inputs_fingerprint, is_current, read_manifest

log = logging.getLogger("nortune.curate")
OUTPUT = "train.jsonl"
REPORT = "composition.md"
CHART = "composition.png"
SPOOL = ".candidates.jsonl"
BUCKETS = ["nb", "nn", "en", "other", "mixed", "translation"]


def _task(mapping: str, messages: list[dict[str, str]], translation: bool) -> str:
    if translation:
        return "translation"
    if mapping == "text":
        return "text"
    turns = sum(1 for m in messages if m["role"] == "user")
    return "multi-turn" if turns > 1 else "instruction"


def _check_sources(cfg: CurateSection) -> None:
    from nortune.curate.sources import detect_format

    if not cfg.sources:
        raise DataError("curate.sources: no sources configured")
    for i, source in enumerate(cfg.sources):
        try:
            detect_format(source)
        except ValueError as exc:
            raise DataError(f"curate.sources.{i}.path: {exc}") from None


def fingerprint(recipe: Recipe) -> dict[str, Any]:
    from nortune.curate.langid import LEXICON_PATH, MODEL_PATH

    cfg = recipe.curate
    files = [Path(s.path) for s in cfg.sources if s.path is not None]
    return {"curate": recipe.section_fingerprint("curate"), "inputs": inputs_fingerprint(files),
            "hf": [f"{s.hf_dataset}@{s.hf_revision}" for s in cfg.sources if s.hf_dataset],
            "langid": file_sha256(MODEL_PATH)[:16] + file_sha256(LEXICON_PATH)[:16]}


def run(recipe: Recipe, *, force: bool = False) -> dict[str, Any]:
    """Curate the recipe's sources into ``<run_dir>/curate/train.jsonl``; skip if current."""
    cfg = recipe.curate
    _check_sources(cfg)
    out_dir = recipe.run_dir / "curate"
    fp = fingerprint(recipe)
    if not force and is_current(out_dir, fp):
        log.info("curate: inputs and settings unchanged, skipping (%s)", out_dir)
        return read_manifest(out_dir) or {}
    stage = begin_stage("curate", out_dir, fp, recipe.to_yaml())
    try:
        result = _curate(cfg, out_dir)
    finally:
        (out_dir / SPOOL).unlink(missing_ok=True)  # an infeasible mix or a fatal record leaves no spool
    outputs = [out_dir / OUTPUT, out_dir / REPORT] + ([out_dir / CHART] if (out_dir / CHART).exists() else [])
    return stage.complete(outputs, metrics=result["metrics"], extra={"notes": result["notes"]})


def _curate(cfg: CurateSection, out_dir: Path) -> dict[str, Any]:
    from nortune.curate.dedup import NearDuplicates, content_digest
    from nortune.curate.filters import QualityFilter, quality_score
    from nortune.curate.labels import is_translation, label_record
    from nortune.curate.langid import default_model
    from nortune.curate.normalize import MalformedRecord, to_messages
    from nortune.curate.sources import Malformed, count_records, iter_source

    model = default_model()
    quality = QualityFilter(cfg.filters)
    near = NearDuplicates(cfg.dedup, seed=cfg.seed) if cfg.dedup.near else None
    bucket_names = BUCKETS
    drops: Counter = Counter()
    malformed: list[str] = []
    seen: set[int] = set()
    buckets, sources, offsets = array("B"), array("H"), array("Q")
    scores = array("d")
    read: Counter = Counter()  # records read per source (parsed or not)
    counted: dict[str, int | None] = {}  # records per source, counted without parsing
    spool_path = out_dir / SPOOL
    with open(spool_path, "w", encoding="utf-8") as spool:
        for src_idx, source in enumerate(cfg.sources):
            counted[source.name] = count_records(source)
            read[source.name] += 0
            for where, raw in iter_source(source):
                read[source.name] += 1
                if isinstance(raw, Malformed):
                    reason = raw.reason
                else:
                    try:
                        mapping, messages = to_messages(raw, source)
                        reason = None
                    except MalformedRecord as exc:
                        reason = str(exc)
                if reason is not None:
                    if cfg.strict:
                        raise DataError(f"{where}: {reason}")
                    drops["malformed"] += 1
                    malformed.append(f"{where}: {reason}")
                    continue
                if not any(m["content"] for m in messages):
                    drops["empty"] += 1
                    continue
                label = label_record(model, messages)
                if label.confidence < cfg.min_confidence:
                    drops["lang:uncertain"] += 1
                    continue
                why = is_translation(raw, messages, label)
                bucket = "translation" if why else ("mixed" if label.mixed else label.lang)
                failed = quality.check(messages)
                if failed:
                    drops[failed] += 1
                    continue
                digest = content_digest(messages)
                if digest in seen:
                    drops["duplicate:exact"] += 1
                    continue
                seen.add(digest)
                if near is not None:
                    near.add("\n".join(m["content"] for m in messages))
                record = {"id": f"{source.name}-{digest:016x}", "source": source.name,
                          "lang": label.lang, "lang_confidence": label.confidence,
                          "bucket": bucket, "task": _task(mapping, messages, bool(why)),
                          "messages": messages}
                if label.mixed:
                    record["turn_langs"] = list(label.turn_langs)
                if why:
                    record["translation"] = why
                if source.tags:
                    record["tags"] = list(source.tags)
                offsets.append(spool.tell())
                spool.write(json.dumps(record, ensure_ascii=False) + "\n")
                buckets.append(bucket_names.index(bucket))
                sources.append(src_idx)
                scores.append(quality_score(messages, label.confidence))
    inputs, notes = _check_inputs(cfg, read, counted)
    if not buckets:  # name the files and reasons, not "a bucket is empty"
        first = f"; first: {malformed[0]}" if malformed else ""
        raise DataError(f"curate.sources: none of the {inputs} input records is usable "
                        f"({', '.join(f'{k} {v}' for k, v in sorted(drops.items()))}; by source: "
                        f"{', '.join(f'{n} {c}' for n, c in read.items())}){first}")
    return _compose_and_write(cfg, out_dir, inputs, notes, read, drops, malformed,
                              buckets, sources, scores, offsets, near)


def _check_inputs(cfg: CurateSection, read: Counter, counted: dict[str, int | None]) -> tuple[int, list[str]]:
    """Total input records, counted independently of parsing; warn on empty sources, fail on none.

    A source whose parsed count differs from its independent count lost records somewhere:
    that is an error, never a report that silently adds up.
    """
    paths = {s.name: s.path or s.hf_dataset for s in cfg.sources}
    for name, n in counted.items():
        if n is not None and n != read[name]:
            raise DataError(f"{paths[name]}: {n} records in the file but {read[name]} were read; "
                            "curate refuses to lose records it cannot count")
    inputs = sum(n if n is not None else read[name] for name, n in counted.items())
    if inputs == 0:
        raise DataError("curate.sources: every source is empty: " + ", ".join(str(p) for p in paths.values()))
    notes = []
    for name in counted:
        log.info("curate: source %s (%s): %d records", name, paths[name], read[name])
        if read[name] == 0:
            notes.append(f"source {name} ({paths[name]}) has no records")
            log.warning("curate: source %s (%s) is empty", name, paths[name])
    return inputs, notes


def _compose_and_write(cfg: CurateSection, out_dir: Path, inputs: int, notes: list[str], read: Counter,
                       drops: Counter, malformed: list[str], buckets: array, sources: array, scores: array,
                       offsets: array, near: Any) -> dict[str, Any]:
    """Dedup, compose the exact mix, write train.jsonl and the report whose numbers add up."""
    import numpy as np

    from nortune.curate.compose import compose
    from nortune.curate.report import write_chart, write_markdown

    bucket_names = BUCKETS
    spool_path = out_dir / SPOOL
    n = len(buckets)
    bucket_arr = np.frombuffer(buckets, dtype=np.uint8) if n else np.zeros(0, np.uint8)
    alive = np.ones(n, dtype=bool)
    if near is not None and n:
        dup = near.duplicates()
        drops["duplicate:near"] += int(dup.sum())
        alive &= ~dup
    keep = np.nonzero(alive)[0]
    quotas = {i: s.quota for i, s in enumerate(cfg.sources) if s.quota is not None}
    comp = compose(bucket_arr[keep], bucket_names, np.frombuffer(sources, np.uint16)[keep] if n else keep,
                   np.frombuffer(scores, np.float64)[keep] if n else keep.astype(float), cfg.shares,
                   cfg.target_size, quotas, cfg.seed, cfg.quality_order, cfg.allow_shortfall)
    for reason in comp.reasons.values():
        drops[reason] += 1
    by_lang: Counter = Counter()
    by_source: Counter = Counter()
    by_task: Counter = Counter()
    tmp = out_dir / (OUTPUT + ".tmp")
    with open(spool_path, "rb") as spool, open(tmp, "w", encoding="utf-8") as out:
        for idx in comp.selected:
            spool.seek(offsets[int(keep[idx])])
            record = json.loads(spool.readline())
            by_lang[record.pop("bucket")] += 1
            by_source[record["source"]] += 1
            by_task[record["task"]] += 1
            ordered = {"id": record.pop("id"), "lang": record.pop("lang"), "source": record.pop("source"),
                       "messages": record.pop("messages"), **record}
            out.write(json.dumps(ordered, ensure_ascii=False) + "\n")
    tmp.replace(out_dir / OUTPUT)
    if malformed:
        (out_dir / "malformed.txt").write_text("\n".join(malformed) + "\n", encoding="utf-8")
    output = sum(by_lang.values())
    if output + sum(drops.values()) != inputs:  # the audit trail must close
        raise AssertionError(f"curate accounting: {output} + {sum(drops.values())} != {inputs}")
    for note in comp.notes:
        log.warning("curate: %s", note)
    notes = notes + comp.notes
    write_markdown(out_dir / REPORT, inputs=inputs, by_lang=by_lang, by_source=by_source, by_task=by_task,
                   drops=drops, shares=cfg.shares, notes=notes, malformed=malformed, read=read)
    write_chart(out_dir / CHART, by_lang=by_lang, by_source=by_source, by_task=by_task, drops=drops)
    metrics = {"input_records": inputs, "output_records": output, "dropped": dict(sorted(drops.items())),
               "by_bucket": dict(sorted(by_lang.items())), "by_source": dict(sorted(by_source.items())),
               "by_task": dict(sorted(by_task.items())), "malformed": len(malformed),
               "input_by_source": dict(read)}
    log.info("curate: %d in, %d out, %d dropped", inputs, output, sum(drops.values()))
    return {"metrics": metrics, "notes": notes}

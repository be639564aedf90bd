"""The curate stage: sources -> normalise -> langid -> translation -> filters -> dedup -> compose."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from nortune.config import CurateSection, Recipe
from nortune.config.names import CURATE_BUCKETS as BUCKETS
from nortune.jsonl import DataError
from nortune.runs import begin_stage, file_sha256, inputs_fingerprint, is_current, read_manifest

log = logging.getLogger("nortune.curate")
OUTPUT = "train.jsonl"
REPORT = "composition.md"
CHART = "composition.png"
WORK = ".work"  # per-task shards, ledgers and MinHash files; removed when the stage ends


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
    # The executor is left out: the same inputs give the same files on any executor and worker count.
    settings = recipe.curate.model_dump(mode="json", exclude={"executor"})
    digest = hashlib.sha256(json.dumps({"curate": settings}, sort_keys=True).encode()).hexdigest()[:16]
    return {"curate": digest, "inputs": inputs_fingerprint(files),
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
        shutil.rmtree(out_dir / WORK, ignore_errors=True)  # an infeasible mix or a fatal record leaves no shards
    outputs = [out_dir / OUTPUT, out_dir / REPORT] + ([out_dir / CHART] if (out_dir / CHART).exists() else [])
    return stage.complete(outputs, metrics=result["metrics"], extra={"notes": result["notes"],
                                                                    "executor": result["executor"]})


def _curate(cfg: CurateSection, out_dir: Path) -> dict[str, Any]:
    """Run the per-record pipeline on the configured executor, then the global merge here."""
    from nortune.curate.executor import run_stages, worker_count
    from nortune.curate.merge import exact_duplicates, load_pool, near_duplicates
    from nortune.curate.sources import count_records, detect_format, line_checkpoints

    tasks = worker_count(cfg.executor)
    counted, checkpoints = [], []  # records per source apart from parsing, before any work; seek points
    for source in cfg.sources:
        if tasks > 1 and detect_format(source) in ("jsonl", "text"):
            count, points = line_checkpoints(Path(source.path))
        else:
            count, points = count_records(source), None
        counted.append(count)
        checkpoints.append(points)
    work = out_dir / WORK
    shutil.rmtree(work, ignore_errors=True)
    run_stages(cfg.executor, _stages(cfg, counted, checkpoints, tasks, work), work / "logs")
    pool = load_pool(work / "shards", tasks)
    read = Counter({source.name: pool.read.get(i, 0) for i, source in enumerate(cfg.sources)})
    inputs, notes = _check_inputs(cfg, read, {s.name: n for s, n in zip(cfg.sources, counted)})
    drops, malformed = pool.drops, pool.malformed
    if not len(pool.rows):  # name the files and reasons, not "a bucket is empty"
        first = f"; first: {malformed[0]}" if malformed else ""
        raise DataError(f"curate.sources: none of the {inputs} input records is usable "
                        f"({', '.join(f'{k} {v}' for k, v in sorted(drops.items()))}; by source: "
                        f"{', '.join(f'{n} {c}' for n, c in read.items())}){first}")
    exact = exact_duplicates(pool.rows)
    if exact.any():
        drops["duplicate:exact"] += int(exact.sum())
    alive = ~exact
    if cfg.dedup.near:
        near = near_duplicates(pool, work / "minhash" / "clusters", tasks) & alive
        if near.any():
            drops["duplicate:near"] += int(near.sum())
        alive &= ~near
    result = _compose_and_write(cfg, out_dir, inputs, notes, read, drops, malformed, pool, alive)
    # Not a metric: the same inputs give the same metrics on any executor; this says where it ran.
    result["executor"] = {**cfg.executor.model_dump(mode="json"), "tasks": tasks,
                          "task_peak_rss_mb": pool.peak_rss_mb, "task_cpu_s": pool.cpu_s}
    return result


def _stages(cfg: CurateSection, counted: list[int | None], checkpoints: list, tasks: int, work: Path) -> list:
    """The datatrove stages: per-record work + MinHash signatures on every task, then buckets, clusters."""
    from nortune.curate.steps import (Candidates, LanguageLabel, Normalise, QualityFilters, ReadSources,
                                      ShingleWords, TranslationTag)

    steps = [ReadSources(cfg, counted, checkpoints), Normalise(cfg), LanguageLabel(cfg), TranslationTag(cfg),
             QualityFilters(cfg), Candidates(cfg, work / "shards")]
    if not cfg.dedup.near:
        return [("records", steps, tasks)]
    from datatrove.pipeline.dedup.minhash import (MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupSignature)

    config = minhash_config(cfg)
    minhash = work / "minhash"
    signature = MinhashDedupSignature(str(minhash / "signatures"), config=config, language=ShingleWords())
    return [("records", steps + [signature], tasks),
            ("minhash-buckets", [MinhashDedupBuckets(str(minhash / "signatures"), str(minhash / "buckets"),
                                                     config=config)], config.num_buckets),
            ("minhash-clusters", [MinhashDedupCluster(str(minhash / "buckets"), str(minhash / "clusters"),
                                                      config=config, save_cluster_id=True)], 1)]


def minhash_config(cfg: CurateSection):
    """datatrove's MinHash settings from curate.dedup (word shingles, bands x rows, seeded)."""
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import TextNormConfig

    d = cfg.dedup
    # Diacritics stay: "for" and "før" are different Norwegian words. Shingles are hashed with SHA-1:
    # datatrove 0.10.1 hands xxhash a str, which xxhash 4 refuses ("Strings must be encoded").
    return MinhashConfig(n_grams=d.shingle, num_buckets=d.bands, hashes_per_bucket=d.num_perm // d.bands,
                         seed=cfg.seed, norm_config=TextNormConfig(norm_unicode_diacritics=False),
                         hash_config=HashConfig(precision=64, hash_fc="sha1"))


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
                       drops: Counter, malformed: list[str], pool: Any, alive: Any) -> dict[str, Any]:
    """Compose the exact mix over the surviving candidates, write train.jsonl and a report that adds up."""
    import numpy as np

    from nortune.curate.compose import compose
    from nortune.curate.merge import read_records
    from nortune.curate.report import write_chart, write_markdown

    keep = np.nonzero(alive)[0]
    rows = pool.rows[keep]
    quotas = {i: s.quota for i, s in enumerate(cfg.sources) if s.quota is not None}
    comp = compose(rows["bucket"], BUCKETS, rows["src"], rows["score"], cfg.shares,
                   cfg.target_size, quotas, cfg.seed, cfg.quality_order, cfg.allow_shortfall)
    for reason in comp.reasons.values():
        drops[reason] += 1
    by_lang: Counter = Counter()
    by_source: Counter = Counter()
    by_task: Counter = Counter()
    tmp = out_dir / (OUTPUT + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        chosen = keep[comp.selected]
        for record, bucket in zip(read_records(out_dir / WORK / "shards", pool, chosen),
                                  pool.rows["bucket"][chosen]):
            by_lang[BUCKETS[bucket]] += 1
            by_source[record["source"]] += 1
            by_task[record["task"]] += 1
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
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

"""The curate stage: candidates (sources -> normalise -> langid -> translation -> filters, on the
executor), then deduplicate, select (the exact mix), write and report here."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from nortune.config import CurateSection, Recipe
from nortune.config.names import CURATE_BUCKETS as BUCKETS
from nortune.jsonl import DataError
from nortune.runner import StageContext, StageResult
from nortune.runs import RunLayout, atomic_write_text, atomic_writer, file_sha256, inputs_fingerprint

log = logging.getLogger("nortune.curate")
REPORT = "composition.md"
CHART = "composition.png"
DROPPED = "dropped.jsonl"  # every record that is not in the training file: source, index, file:line, id, reason
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


def check(recipe: Recipe) -> None:
    _check_sources(recipe.curate)


def work(ctx: StageContext) -> StageResult:
    """Curate the recipe's sources into ``<run_dir>/curate/train.jsonl``."""
    layout, out_dir = ctx.layout, ctx.directory
    try:
        result = _curate(ctx.recipe.curate, layout)
    finally:
        shutil.rmtree(out_dir / WORK, ignore_errors=True)  # an infeasible mix or a fatal record leaves no shards
    outputs = [layout.curate_output, out_dir / REPORT, out_dir / DROPPED] + (
        [out_dir / CHART] if (out_dir / CHART).exists() else [])
    return StageResult(outputs, result["metrics"], {"notes": result["notes"], "executor": result["executor"]})


def _curate(cfg: CurateSection, layout: RunLayout) -> dict[str, Any]:
    """Candidates on the configured executor, then the global steps here: deduplicate, select, write, report."""
    from nortune.curate.executor import worker_count

    tasks = worker_count(cfg.executor)
    work = layout.curate_dir / WORK
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shards = Path(tempfile.mkdtemp(prefix="shards-", dir=work))  # fresh and private: the workers' record shards
    pool, read, inputs, notes = _candidates(cfg, tasks, work, shards)
    drops = pool.drops
    dropped_here: dict[int, str] = {}  # pool index -> reason, for the drops decided here (dedup, compose)
    alive = _deduplicate(cfg, pool, work, tasks, drops, dropped_here)
    chosen, composition_notes = _select(cfg, pool, alive, drops, dropped_here)
    counts = _write(layout.curate_output, shards, pool, chosen)
    _write_dropped(layout.curate_dir / DROPPED, cfg, shards, tasks, pool, dropped_here)
    result = _report(cfg, layout.curate_dir, inputs, notes + composition_notes, read, drops, pool.malformed, counts)
    # Not a metric: the same inputs give the same metrics on any executor; this says where it ran.
    result["executor"] = {**cfg.executor.model_dump(mode="json"), "tasks": tasks,
                          "task_peak_rss_mb": pool.peak_rss_mb, "task_cpu_s": pool.cpu_s}
    return result


def _candidates(cfg: CurateSection, tasks: int, work: Path, shards: Path) -> tuple[Any, Counter, int, list[str]]:
    """Every record read, normalised, labelled and filtered on the executor; counted apart from parsing."""
    from nortune.curate.executor import run_stages
    from nortune.curate.merge import load_pool
    from nortune.curate.sources import count_records, detect_format, line_checkpoints

    counted, checkpoints = [], []  # records per source apart from parsing, before any work; seek points
    for source in cfg.sources:
        if tasks > 1 and detect_format(source) in ("jsonl", "text"):
            count, points = line_checkpoints(Path(source.path))
        else:
            count, points = count_records(source), None
        counted.append(count)
        checkpoints.append(points)
    run_stages(cfg.executor, _stages(cfg, counted, checkpoints, tasks, work, shards), work / "logs")
    pool = load_pool(shards, tasks)
    read = Counter({source.name: pool.read.get(i, 0) for i, source in enumerate(cfg.sources)})
    inputs, notes = _check_inputs(cfg, read, {s.name: n for s, n in zip(cfg.sources, counted)})
    if not len(pool.rows):  # name the files and reasons, not "a bucket is empty"
        first = f"; first: {pool.malformed[0]}" if pool.malformed else ""
        raise DataError(f"curate.sources: none of the {inputs} input records is usable "
                        f"({', '.join(f'{k} {v}' for k, v in sorted(pool.drops.items()))}; by source: "
                        f"{', '.join(f'{n} {c}' for n, c in read.items())}){first}")
    return pool, read, inputs, notes


def _deduplicate(cfg: CurateSection, pool: Any, work: Path, tasks: int, drops: Counter,
                 dropped: dict[int, str]) -> Any:
    """The candidates that survive exact and (optionally) near-duplicate removal, as a boolean mask."""
    import numpy as np

    from nortune.curate.merge import exact_duplicates, near_duplicates

    exact = exact_duplicates(pool.rows)
    if exact.any():
        drops["duplicate:exact"] += int(exact.sum())
        dropped.update(dict.fromkeys(np.nonzero(exact)[0].tolist(), "duplicate:exact"))
    alive = ~exact
    if cfg.dedup.near:
        near = near_duplicates(pool, work / "minhash" / "clusters", tasks) & alive
        if near.any():
            drops["duplicate:near"] += int(near.sum())
            dropped.update(dict.fromkeys(np.nonzero(near)[0].tolist(), "duplicate:near"))
        alive &= ~near
    return alive


def _stages(cfg: CurateSection, counted: list[int | None], checkpoints: list, tasks: int, work: Path,
            shards: Path) -> list:
    """The datatrove stages: per-record work + MinHash signatures on every task, then buckets, clusters."""
    from nortune.curate.steps import (Candidates, LanguageLabel, Normalise, QualityFilters, ReadSources,
                                      ShingleWords, TranslationTag)

    steps = [ReadSources(cfg, counted, checkpoints), Normalise(cfg), LanguageLabel(cfg), TranslationTag(cfg),
             QualityFilters(cfg), Candidates(cfg, shards)]
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


def _select(cfg: CurateSection, pool: Any, alive: Any, drops: Counter,
            dropped: dict[int, str]) -> tuple[Any, list[str]]:
    """The pool rows of the exact mix over the surviving candidates; each one left out counted by reason."""
    import numpy as np

    from nortune.curate.compose import compose

    keep = np.nonzero(alive)[0]
    rows = pool.rows[keep]
    quotas = {i: s.quota for i, s in enumerate(cfg.sources) if s.quota is not None}
    comp = compose(rows["bucket"], BUCKETS, rows["src"], rows["score"], cfg.shares,
                   cfg.target_size, quotas, cfg.seed, cfg.quality_order, cfg.allow_shortfall)
    for idx, reason in comp.reasons.items():
        drops[reason] += 1
        dropped[int(keep[idx])] = reason
    for note in comp.notes:
        log.warning("curate: %s", note)
    return keep[comp.selected], comp.notes


def _write(output: Path, shards: Path, pool: Any, chosen: Any) -> dict[str, Counter]:
    """Write the chosen records (atomically) and count them by language, source and task."""
    from nortune.curate.merge import read_records
    from nortune.curate.steps import WHERE

    counts: dict[str, Counter] = {"by_lang": Counter(), "by_source": Counter(), "by_task": Counter()}
    with atomic_writer(output) as out:
        for record, bucket in zip(read_records(shards, pool, chosen), pool.rows["bucket"][chosen]):
            counts["by_lang"][BUCKETS[bucket]] += 1
            counts["by_source"][record["source"]] += 1
            counts["by_task"][record["task"]] += 1
            record.pop(WHERE)
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return counts


def _write_dropped(path: Path, cfg: CurateSection, shards: Path, tasks: int, pool: Any,
                   dropped_here: dict[int, str]) -> None:
    """``dropped.jsonl``: one line per record left out, in the global record order (the same file on 1 or
    N workers). Each task's drops are in that order already, and so are those decided here (duplicates,
    the mix); the streams are merged, never held in memory."""
    import heapq

    import numpy as np

    from nortune.curate.merge import read_records
    from nortune.curate.steps import WHERE, dropped_line

    index = {source.name: i for i, source in enumerate(cfg.sources)}

    def from_task(rank: int):
        with open(shards / f"{rank:05d}.dropped.jsonl", encoding="utf-8") as part:
            for line in part:
                row = json.loads(line)
                yield (index[row["source"]], row["record"]), line

    def from_here():
        order = np.array(sorted(dropped_here), dtype=np.int64)
        for idx, record in zip(order, read_records(shards, pool, order)):
            item = int(pool.rows["item"][idx])
            yield (int(pool.rows["src"][idx]), item), dropped_line(record["source"], item, record[WHERE],
                                                                   record["id"], dropped_here[int(idx)])

    with atomic_writer(path) as out:
        for _, line in heapq.merge(*(from_task(rank) for rank in range(tasks)), from_here(),
                                   key=lambda pair: pair[0]):
            out.write(line)


def _report(cfg: CurateSection, out_dir: Path, inputs: int, notes: list[str], read: Counter, drops: Counter,
            malformed: list[str], counts: dict[str, Counter]) -> dict[str, Any]:
    """The composition report and chart, and metrics whose audit trail closes: output + dropped = input."""
    from nortune.curate.report import write_chart, write_markdown

    if malformed:
        atomic_write_text(out_dir / "malformed.txt", "\n".join(malformed) + "\n")
    by_lang, by_source, by_task = counts["by_lang"], counts["by_source"], counts["by_task"]
    output = sum(by_lang.values())
    if output + sum(drops.values()) != inputs:  # the audit trail must close
        raise AssertionError(f"curate accounting: {output} + {sum(drops.values())} != {inputs}")
    write_markdown(out_dir / REPORT, inputs=inputs, by_lang=by_lang, by_source=by_source, by_task=by_task,
                   drops=drops, shares=cfg.shares, notes=notes, malformed=malformed, read=read)
    write_chart(out_dir / CHART, by_lang=by_lang, by_source=by_source, by_task=by_task, drops=drops)
    metrics = {"input_records": inputs, "output_records": output, "dropped": dict(sorted(drops.items())),
               "by_bucket": dict(sorted(by_lang.items())), "by_source": dict(sorted(by_source.items())),
               "by_task": dict(sorted(by_task.items())), "malformed": len(malformed),
               "input_by_source": dict(read)}
    log.info("curate: %d in, %d out, %d dropped", inputs, output, sum(drops.values()))
    return {"metrics": metrics, "notes": notes}

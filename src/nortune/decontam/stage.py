"""``nortune decontam``: the pipeline stage. Writes into ``<run_dir>/decontam``, manifest last."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from nortune.config.names import is_sample_sets
from nortune.curate import training_data
from nortune.jsonl import DataError
from nortune.runner import StageContext, StageResult
from nortune.runs import atomic_writer, file_sha256

from nortune.decontam.report import REPORT_VERSION, write_report
from nortune.decontam.scan import Scanner, ScanSettings
from nortune.decontam.sources import describe_sources, iter_training, load_test_side, test_sources

log = logging.getLogger(__name__)
WORK = ".work"  # the workers' partial results and logs; removed when the scan ends


def training_path(recipe, data: Path | None = None) -> Path:
    """The file to check: explicit, then decontam.data, then train.data, then the curate output."""
    return training_data(recipe, data, recipe.decontam.data, recipe.train.data)


def _fingerprint(recipe, path: Path, sha: str, clean: bool) -> dict[str, Any]:
    sources = describe_sources(test_sources(recipe.decontam_test_side()))
    return {"settings": recipe.section_fingerprint("decontam"), "data": {str(path): sha},
            "test_sources": sources, "write_clean": clean}


def fingerprint(recipe, data: Path | None = None, write_clean: bool | None = None,
                text_fields: list[str] | None = None) -> dict[str, Any]:
    """Settings, test-side inputs and the training file's hash: equal means the report is current."""
    path = training_path(recipe, data)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    clean = recipe.decontam.write_clean if write_clean is None else write_clean
    fields = text_fields if text_fields is not None else recipe.decontam.text_fields
    return {**_fingerprint(recipe, path, file_sha256(path), clean), "text_fields": fields}


def _scan_in_parallel(recipe, scanner: Scanner, path: Path, fields: list[str] | None, clean: bool,
                      work: Path) -> dict[str, Any] | None:
    """Scan record ranges on curate.executor's workers against the one index; add the parts up."""
    from nortune.curate.executor import run_stages, worker_count
    from nortune.decontam.shards import CleanWriter, ScanShard, merge_parts, plan_shards

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    parts = Path(tempfile.mkdtemp(prefix="parts-", dir=work))  # fresh and private: the tasks' partial results
    tasks = worker_count(recipe.curate.executor)
    step = ScanShard(scanner, path, fields, plan_shards(path, tasks), parts, clean)
    run_stages(recipe.curate.executor, [("scan", [step], tasks)], work / "logs")
    merge_parts(scanner, parts, tasks)
    if not clean:
        return None
    clean_path = CleanWriter.output_path(path, work.parent)
    with atomic_writer(clean_path, binary=True) as out:
        for rank in range(tasks):
            with open(parts / f"{rank:05d}.clean", "rb") as part:
                shutil.copyfileobj(part, out)
    removed = len(scanner.contaminated)
    return {"path": str(clean_path), "kept": scanner.records - removed, "removed": removed}


def work(ctx: StageContext, data: Path | None = None, text_fields: list[str] | None = None) -> StageResult:
    """Check the training data against every test text.

    ``data`` and ``text_fields`` let another stage's data (preference pairs) have its own check and folder.
    """
    recipe, directory = ctx.recipe, ctx.directory
    section = recipe.decontam_test_side()
    path = training_path(recipe, data)
    clean = ctx.fingerprint["write_clean"]
    fields = text_fields if text_fields is not None else section.text_fields
    sha = ctx.fingerprint["data"][str(path)]

    # Cheap, complete validation before any index is built: test side, then every training record.
    tests, origins = load_test_side(section)
    if not tests:
        raise DataError("decontam: the test side is empty (no tasks and no extra benchmarks)")
    records = sum(1 for _ in iter_training(path, fields))
    log.info("decontam: %d test texts from %d tasks; %d training records in %s",
             len(tests), len(origins), records, path)

    started = time.perf_counter()
    scanner = Scanner(tests, ScanSettings.from_section(section))
    index_seconds = time.perf_counter() - started
    work = directory / WORK
    try:
        cleaned = _scan_in_parallel(recipe, scanner, path, fields, clean, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started

    summary = scanner.summary()
    count = summary["training"]["contaminated_records"]
    report = {
        "version": REPORT_VERSION,
        "data": {"path": str(path), "sha256": sha, "bytes": path.stat().st_size},
        "settings": section.model_dump(mode="json"),
        "text_fields": fields,
        "test_sources": origins,
        "sample_sets": is_sample_sets(section.noreval_source, section.noreval_dir),
        **summary,
        "gate": {"max_contaminated_records": section.max_contaminated_records,
                 "contaminated_records": count, "passed": count <= section.max_contaminated_records},
        "cleaned": cleaned,
        "seconds": {"index": round(index_seconds, 3), "total": round(seconds, 3)},
    }
    report_path, summary_path = write_report(directory, report)
    outputs = [report_path, summary_path] + ([Path(cleaned["path"])] if cleaned else [])
    metrics = {"contaminated_records": count, "records": summary["training"]["records"],
               "test_texts": len(tests), "passed": report["gate"]["passed"],
               "mb_per_s": round(path.stat().st_size / 1e6 / max(seconds, 1e-9), 2),
               **{f"hits_{k}": v["hits"] for k, v in summary["methods"].items()}}
    log.info("decontam: %d contaminated records of %d (%s); report %s", count, summary["training"]["records"],
             "pass" if report["gate"]["passed"] else "FAIL", report_path)
    return StageResult(outputs, metrics)

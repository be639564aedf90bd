"""The training gate: ``nortune train`` calls ``require_clean`` before it starts.

Contract: ``require_clean(recipe, data_path, override_reason=None) -> dict``

- Reads ``<run_dir>/decontam/contamination.json`` (written by ``nortune decontam``; a report
  without a completed stage manifest beside it does not count).
- Refuses (raises ``ContaminationGateError``, a ``DataError``) when the report is missing, is for
  another file (sha256 of ``data_path`` differs from the one recorded), or counts more
  contaminated training records than ``recipe.decontam.max_contaminated_records``.
- With a non-empty ``override_reason`` it never refuses; the returned dict then says why the
  gate would have refused and carries the reason, for the train manifest.
- Returns a JSON-ready dict: ``checked``, ``passed``, ``override``, ``reason``, ``report``,
  ``data_sha256``, ``contaminated_records``, ``max_contaminated_records``, ``methods``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nortune.jsonl import DataError
from nortune.runs import file_sha256, read_manifest

from nortune.decontam.report import REPORT


class ContaminationGateError(DataError):
    """Training refused: the contamination report is missing, stale or over the threshold."""


def require_clean(recipe, data_path: Path, override_reason: str | None = None,
                  folder: str = "decontam") -> dict[str, Any]:
    directory = recipe.run_dir / folder
    report_path = directory / REPORT
    limit = recipe.decontam.max_contaminated_records
    result: dict[str, Any] = {"checked": True, "passed": False, "override": override_reason or None,
                              "report": str(report_path), "data": str(data_path),
                              "max_contaminated_records": limit}
    problem = None
    sha = file_sha256(Path(data_path)) if Path(data_path).is_file() else None
    result["data_sha256"] = sha
    manifest = read_manifest(directory)
    if sha is None:
        problem = f"training data not found: {data_path}"
    elif not report_path.is_file() or manifest is None:
        problem = (f"no completed contamination report at {report_path}; "
                   f"run `nortune decontam <recipe>` on {data_path} first")
    else:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        recorded = report.get("data", {}).get("sha256")
        count = int(report["training"]["contaminated_records"])
        result["contaminated_records"] = count
        result["methods"] = {k: v["contaminated_records"] for k, v in report.get("methods", {}).items()}
        if recorded != sha:
            problem = (f"the contamination report is for another file (sha256 {str(recorded)[:12]}…, "
                       f"{report.get('data', {}).get('path')}); {data_path} has sha256 {sha[:12]}…: rerun decontam")
        elif count > limit:
            problem = (f"{count} contaminated training records (limit decontam.max_contaminated_records={limit}); "
                       f"see {directory / 'summary.md'}")
    if problem is None:
        result["passed"] = True
        result["reason"] = None
        return result
    result["reason"] = problem
    if override_reason and override_reason.strip():
        return result
    raise ContaminationGateError(f"contamination gate: {problem} "
                                 "(to train anyway, pass an explicit override reason, e.g. --allow-contaminated \"why\")")

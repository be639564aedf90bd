"""The training gate: ``nortune train`` calls ``require_clean`` before it starts.

Contract: ``require_clean(recipe, data_path, override_reason=None) -> dict``

- Reads ``<run_dir>/decontam/contamination.json`` (written by ``nortune decontam``; a report
  without a well-formed, completed stage manifest beside it that records its sha256 does not count,
  so an edited report is refused like a missing one).
- Refuses (raises ``ContaminationGateError``, a ``DataError``) when the report is missing, is for
  another file (sha256 of ``data_path`` differs from the one recorded), is stale (made with other
  methods, n-grams, floors, normalisation, allow-list, tasks, or test documents from another
  origin or revision than the current recipe asks for), or counts more contaminated training
  records than ``recipe.decontam.max_contaminated_records``.
- With a non-empty ``override_reason`` it never refuses; the returned dict then says why the
  gate would have refused and carries the reason, for the train manifest.
- Returns a JSON-ready dict: ``checked``, ``passed``, ``override``, ``reason``, ``report``,
  ``report_sha256``, ``data_sha256``, ``contaminated_records``, ``max_contaminated_records``,
  ``methods``, ``test_sources``. The ledger and the HTML report take the run's verdict from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nortune.runs import RunLayout, file_sha256, read_manifest, require_complete

from nortune.decontam.sources import describe_sources, test_sources
from nortune.errors import ContaminationGateError

# The settings a report must have been made with; any difference makes it stale.
CHECKED_SETTINGS = ("methods", "char_ngrams", "word_ngram", "substring_min_chars", "question_min_words",
                    "question_answer_min_words", "normalize", "allow", "tasks", "noreval_source", "noreval_dir",
                    "noreval_revision", "extra")
_AS_SETS = ("methods", "allow", "tasks")




def stale_because(report: dict[str, Any], recipe) -> str | None:
    """Why a report does not answer for the current recipe (other settings or test documents), or None."""
    made = report.get("settings") or {}
    now = recipe.decontam_test_side().model_dump(mode="json")

    def same(key: str) -> bool:
        a, b = made.get(key), now.get(key)
        if key in _AS_SETS and isinstance(a, list) and isinstance(b, list):
            return sorted(map(str, a)) == sorted(map(str, b))
        return a == b

    differ = [k for k in CHECKED_SETTINGS if not same(k)]
    if differ:
        shown = "; ".join(f"decontam.{k}: report {made.get(k, 'absent')!r}, recipe {now.get(k)!r}" for k in differ)
        return f"the contamination report is stale, made with other settings ({shown}): rerun `nortune decontam`"
    then = report.get("test_sources") or {}
    current = describe_sources(test_sources(recipe.decontam_test_side()))
    changed = sorted(t for t in set(then) | set(current) if then.get(t) != current.get(t))
    if changed:
        first = changed[0]
        return (f"the contamination report is stale: the test documents changed for {changed} (e.g. {first}: "
                f"report {then.get(first)}, now {current.get(first)}): rerun `nortune decontam`")
    return None


def _unproven(directory: Path, report_path: Path) -> str | None:
    """Why the report is not the one decontam's manifest records (edited or replaced since), or None."""
    from nortune.errors import IncompleteUpstream

    try:
        require_complete(directory, report_path, "the contamination report")
    except IncompleteUpstream as exc:
        return f"the contamination report cannot be trusted: {exc}"
    return None


def require_clean(recipe, data_path: Path, override_reason: str | None = None,
                  folder: str = "decontam") -> dict[str, Any]:
    layout = RunLayout.of(recipe)
    directory, report_path = layout.decontam_dir(folder), layout.contamination_report(folder)
    limit = recipe.decontam.max_contaminated_records
    result: dict[str, Any] = {"checked": True, "passed": False, "override": override_reason or None,
                              "report": str(report_path), "data": str(data_path),
                              "max_contaminated_records": limit}
    problem, kind = None, None
    sha = file_sha256(Path(data_path)) if Path(data_path).is_file() else None
    result["data_sha256"] = sha
    if sha is None:
        problem, kind = f"training data not found: {data_path}", "not_checked"
    elif not report_path.is_file() or read_manifest(directory) is None:
        problem = (f"no completed contamination report at {report_path}; "
                   f"run `nortune decontam <recipe>` on {data_path} first")
        kind = "not_checked"
    elif (unproven := _unproven(directory, report_path)) is not None:
        problem, kind = unproven, "not_checked"
    else:
        report = json.loads(report_path.read_text(encoding="utf-8"))
        result["report_sha256"] = file_sha256(report_path)
        result["test_sources"] = report.get("test_sources")
        recorded = report.get("data", {}).get("sha256")
        count = int(report["training"]["contaminated_records"])
        result["contaminated_records"] = count
        result["methods"] = {k: v["contaminated_records"] for k, v in report.get("methods", {}).items()}
        if recorded != sha:
            problem = (f"the contamination report is for another file (sha256 {str(recorded)[:12]}…, "
                       f"{report.get('data', {}).get('path')}); {data_path} has sha256 {sha[:12]}…: rerun decontam")
            kind = "other_file"
        elif (why := stale_because(report, recipe)) is not None:
            problem, kind = why, "stale"
        elif count > limit:
            problem = (f"{count} contaminated training records (limit decontam.max_contaminated_records={limit}); "
                       f"see {directory / 'summary.md'}")
            kind = "contaminated"
    if problem is None:
        result.update(passed=True, reason=None, problem=None)
        return result
    result["reason"] = problem
    result["problem"] = kind  # not_checked / other_file / stale / contaminated
    result["checked"] = kind != "not_checked"
    if override_reason and override_reason.strip():
        return result
    raise ContaminationGateError(f"contamination gate: {problem} "
                                 "(to train anyway, pass an explicit override reason, e.g. --allow-contaminated \"why\")")

"""``contamination.json`` (machine readable) and ``summary.md`` (a table a person reads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nortune.config.names import SAMPLE_SETS_MARK
from nortune.markup import code, text
from nortune.runs import RunLayout, atomic_write_text

REPORT = RunLayout.CONTAMINATION_REPORT
SUMMARY = "summary.md"
REPORT_VERSION = 1


def contaminated_records(report: dict[str, Any]) -> int:
    """Training records with at least one non-allowed hit under any method."""
    return int(report["training"]["contaminated_records"])


def write_report(directory: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    path = directory / REPORT
    atomic_write_text(path, json.dumps(report, indent=1, ensure_ascii=False, sort_keys=False))
    summary = directory / SUMMARY
    atomic_write_text(summary, markdown(report))
    return path, summary


def markdown(report: dict[str, Any]) -> str:
    train, test = report["training"], report["test_side"]
    gate = report["gate"]
    lines = [
        "# Contamination check",
        "",
        f"Training data: {code(report['data']['path'])} (sha256 {code(report['data']['sha256'][:16] + '…')}), "
        f"{train['records']:,} records, {train['chars']:,} characters, {train['empty_records']:,} empty.",
        f"Test side: {test['texts']:,} texts from {len(test['texts_by_task'])} tasks "
        f"({test['empty_texts']:,} empty after normalisation).",
        f"Normalisation: {code(json.dumps(report['settings']['normalize']))}.",
        "",
        f"**Verdict: {train['contaminated_records']:,} contaminated training records** "
        f"(gate allows {gate['max_contaminated_records']}: {'PASS' if gate['passed'] else 'FAIL'}).",
        "",
        *([f"**{SAMPLE_SETS_MARK}**: the test side is the sample sets written for nortune; this verdict says "
           "nothing about contamination with NorEval itself.", ""] if report.get("sample_sets") else []),
        "| method | hits | contaminated records | allowed (boilerplate) | longest match |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, m in report["methods"].items():
        lines.append(f"| {text(key)} | {m['hits']:,} | {m['contaminated_records']:,} | {m['allowed_hits']:,} "
                     f"| {m['longest_match']:,} |")
    if "question" in report["methods"]:
        floor = report["settings"].get("question_answer_min_words", report["settings"].get("question_min_words"))
        lines += ["", f"`question_answer`: a whole test question (at least {floor} words) **and its correct answer** "
                      "in one training record, the surest sign of a copied item; `question`: the whole question "
                      "without its answer. Lengths of these two are in words."]
        lines += _question_floors(test["index"].get("question"))
    lines += ["", "## Hits per task", "", "| task | test texts | " + " | ".join(map(text, report["methods"])) + " |",
              "|---|---:|" + "---:|" * len(report["methods"])]
    for task, count in test["texts_by_task"].items():
        cells = [str(m["by_task"].get(task, {}).get("hits", 0)) for m in report["methods"].values()]
        lines.append(f"| {text(task)} | {count:,} | " + " | ".join(cells) + " |")
    allowed = report["allowed"]
    lines += ["", "## Allow-list", ""]
    if allowed["phrases"]:
        lines += [f"- {code(p)}: {allowed['hits_by_phrase'].get(p, 0):,} matches allowed" for p in allowed["phrases"]]
    else:
        lines.append("No phrases are allowed: every match counts.")
    if report["records"]:
        lines += ["", "## First contaminated records", "", "| line | id | method | test id | length | text |",
                  "|---:|---|---|---|---:|---|"]
        first = sorted(report["records"], key=lambda r: "question_answer" not in r["methods"])[:20]
        for rec in first:  # copied items with their answers first
            for key, m in rec["methods"].items():
                first = m["matches"][0]
                lines.append(f"| {rec['line']} | {text(rec['id'] or '')} | {text(key)} | {text(first['test_id'])} "
                             f"| {m['longest_match']} | {text(first['text'][:80])} |")
    if report.get("cleaned"):
        c = report["cleaned"]
        lines += ["", f"Cleaned copy: {code(c['path'])}: kept {c['kept']:,} records, removed {c['removed']:,}."]
    return "\n".join(lines) + "\n"


def _question_floors(index: dict[str, Any] | None) -> list[str]:
    """How many test questions each floor of the whole-question check covers (a count, so nothing goes unseen)."""
    if not index or "questions_by_floor" not in index:
        return []
    alone, paired, counts = index["min_words"], index["min_words_with_answer"], index["questions_by_floor"]
    parts = [f"{counts['whole_question']:,} of ≥ {alone} words (whole-question check)"]
    if paired < alone:
        unanswered = counts["with_answer_only_no_answer"]
        short = f"{paired}-{alone - 1}" if paired < alone - 1 else str(paired)
        parts.append(f"{counts['with_answer_only']:,} of {short} words (checked only with their answer"
                     + (f"; {unanswered:,} of them have no known answer, so not checked" if unanswered else "") + ")")
    parts.append(f"{counts['under_floor']:,} under {paired} words (not checked)")
    return ["", "Test questions: " + ", ".join(parts) + "."]

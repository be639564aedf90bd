"""``nortune evaluate --compare``: tuned vs base with paired bootstrap intervals.

A regression whose interval lies entirely below zero is written at the top of ``compare.md``,
printed by the CLI in capitals (``regression_banner``) and (with ``evaluate.fail_on_regression``) turns the
command's exit status to 1. The recipe's failed runs lost up to 10 points on truthfulness.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nortune.evaluate import card, report
from nortune.evaluate.paired import paired_bootstrap
from nortune.jsonl import TOO_DEEP, DataError, iter_jsonl
from nortune.runs import atomic_write_text

log = logging.getLogger(__name__)

# What each evaluated model is compared with: the model it was trained from.
BASELINE_OF = {"tuned": "base", "preference": "tuned"}


def load_results(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A results.json written by nortune evaluate, and the samples.jsonl beside it."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    except RecursionError:
        raise DataError(f"{path}: {TOO_DEEP}") from None
    summary = results.get("nortune") if isinstance(results, dict) else None
    if not isinstance(summary, dict) or "tasks" not in summary:
        raise DataError(f"{path}: key 'nortune' missing: not a results.json written by nortune evaluate")
    samples_path = path.parent / summary.get("samples_file", "samples.jsonl")
    if not samples_path.is_file():
        raise DataError(f"{samples_path}: file not found (per-item results are needed for paired intervals)")
    return summary, [row for _, row in iter_jsonl(samples_path)]


def compare(tuned_path: Path, base_path: Path, out_dir: Path, metric: str, samples: int,
            confidence: float, force: bool = False) -> dict[str, Any]:
    base, base_rows = load_results(base_path)
    tuned, tuned_rows = load_results(tuned_path)
    forced = card.require_comparable([(str(base_path), base.get("card")), (str(tuned_path), tuned.get("card"))],
                                     force, flag="--force-compare")
    for line in forced:
        log.warning("%s", line)
    deltas, overall = paired_bootstrap(base_rows, tuned_rows, metric, samples, confidence)
    regressions = [d.family for d in deltas if d.regression()]
    result = {"base": str(base_path), "tuned": str(tuned_path), "metric": metric, "confidence": confidence,
              "bootstrap_samples": samples, "deltas": [asdict(d) | {"regression": d.regression(),
                                                                    "gain": d.gain(), "judged": d.judged(),
                                                                    "verdict": d.verdict()} for d in deltas],
              "labels": {d.family: tuned["tasks"].get(d.family, {}).get("label", d.family) for d in deltas},
              "overall": overall, "regressions": regressions, "no_paired_ci": overall.get("no_paired_ci", {}),
              "note": tuned.get("note") or base.get("note"), "forced": forced}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "compare.json", json.dumps(result, indent=2))
    atomic_write_text(out_dir / "compare.md", card.forced_markdown(forced)
                      + report.compare_markdown(base, tuned, deltas, overall, confidence))
    report.chart(out_dir / "compare.png", {"base": base, "tuned": tuned}, result["note"])
    for family, why in overall.get("no_paired_ci", {}).items():  # said, never skipped silently
        log.warning("compare: no paired interval for %s: %s", family, why)
    return result


def regression_banner(result: dict[str, Any]) -> list[str]:
    """The loud terminal lines for a significant regression in ``compare.json`` (none without one)."""
    overall = result["overall"]
    if not result["regressions"] and not overall.get("regression"):
        return []
    bar = "!" * 78
    lines = ["", bar, f"SIGNIFICANT REGRESSION (tuned vs base, {result['confidence']:.0%} paired bootstrap):"]
    for d in result["deltas"]:
        if d["regression"]:
            lines.append(f"  {result.get('labels', {}).get(d['family'], d['family'])} ({d['metric']}): best of "
                         f"prompts {d['best']:+.1f} pp [{d['best_ci'][0]:+.1f}, {d['best_ci'][1]:+.1f}], "
                         f"mean {d['mean']:+.1f} pp")
    if overall.get("regression"):
        lines.append(f"  average: {overall['best']:+.1f} pp [{overall['best_ci'][0]:+.1f}, "
                     f"{overall['best_ci'][1]:+.1f}]")
    return [*lines, bar, ""]

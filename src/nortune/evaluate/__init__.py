"""NorEval evaluation: lm-eval's own ``noreval`` tasks, a prefix-sharing backend, statistics, reports.

The stage contract: ``fingerprint(recipe, label)`` and ``run(recipe, options, label=...)``, which
evaluates one model and compares it with the model it was trained from (tuned vs base,
preference vs tuned), for the CLI and the pipeline alike. Nothing heavy is imported here;
``run`` loads lm-eval and torch when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nortune.runs import Options, RunLayout


def fingerprint(recipe: Any, label: str = "base") -> dict[str, Any]:
    from nortune.evaluate.stage import fingerprint as stage_fingerprint

    return stage_fingerprint(recipe, label)


def run(recipe: Any, options: Options = Options(), *, label: str = "base",
        baseline: Path | None = None, force_compare: bool = False) -> dict[str, Any]:
    """The evaluation's manifest plus, when compared (refused for incomparable eval cards unless ``force_compare``),
    ``regressions``, ``overall_regression``, ``comparison``,
    and with ``evaluate.perplexity``, ``forgetting`` (the held-out sets flagged), ``allow_forgetting`` and
    ``perplexity_comparison``."""
    from nortune.evaluate import perplexity
    from nortune.evaluate.compare import compare_with_baseline
    from nortune.evaluate.stage import run as run_stage

    manifest = run_stage(recipe, options, label)
    result = compare_with_baseline(recipe, label, baseline, force=force_compare)
    if result is not None:
        manifest = {**manifest, "regressions": result["regressions"],
                    "overall_regression": bool(result["overall"].get("regression")),
                    "comparison": str(RunLayout.of(recipe).compare_dir(label) / "compare.md")}
    held_out = perplexity.compare_with_baseline(recipe, label, baseline)
    if held_out is not None:
        manifest = {**manifest, "forgetting": held_out["forgetting"], "allow_forgetting": held_out["allow_forgetting"],
                    "perplexity_comparison": str(RunLayout.of(recipe).compare_dir(label) / "perplexity.md")}
    return manifest

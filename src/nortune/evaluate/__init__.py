"""NorEval evaluation: lm-eval's own ``noreval`` tasks, a prefix-sharing backend, statistics, reports.

One stage per evaluated model (``evaluate-base``, ``evaluate-tuned``, ``evaluate-preference``): it
evaluates that model and compares it with the model it was trained from (tuned vs base, preference
vs tuned), or with a given baseline, for the CLI and the pipeline alike. Nothing heavy is imported
here; the work loads lm-eval and torch when called.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from nortune.runner import Stage, StageContext, StageResult, run_stage
from nortune.runs import MODEL_STAGE_OF_LABEL, Options


def fingerprint(recipe: Any, label: str = "base", baseline: Path | None = None,
                force_compare: bool = False) -> dict[str, Any]:
    from nortune.evaluate.stage import fingerprint as stage_fingerprint

    return stage_fingerprint(recipe, label, baseline, force_compare)


def _work(ctx: StageContext, label: str, baseline: Path | None, force_compare: bool) -> StageResult:
    from nortune.evaluate.stage import work

    return work(ctx, label, baseline, force_compare)


def _preference_enabled(recipe: Any) -> str | None:
    return None if recipe.preference.configured else "no preference data configured"


def stage_for(label: str, baseline: Path | None = None, force_compare: bool = False) -> Stage:
    """The evaluation of one model; ``baseline`` (a results.json or its folder) replaces the default one.

    The manifest carries the comparison's verdicts: ``regressions``, ``overall_regression``,
    ``comparison``, and with ``evaluate.perplexity``, ``forgetting``, ``allow_forgetting`` and
    ``perplexity_comparison``."""
    return Stage(f"evaluate-{label}", partial(fingerprint, label=label, baseline=baseline, force_compare=force_compare),
                 partial(_work, label=label, baseline=baseline, force_compare=force_compare),
                 upstream=(MODEL_STAGE_OF_LABEL[label],) if label in MODEL_STAGE_OF_LABEL else (),
                 enabled=_preference_enabled if label == "preference" else lambda recipe: None)


STAGES = tuple(stage_for(label) for label in ("base", *MODEL_STAGE_OF_LABEL))


def run(recipe: Any, options: Options = Options(), *, label: str = "base",
        baseline: Path | None = None, force_compare: bool = False) -> dict[str, Any]:
    """One evaluation through the runner (as ``nortune evaluate`` runs it); returns its manifest."""
    return run_stage(stage_for(label, baseline, force_compare), recipe, options).manifest

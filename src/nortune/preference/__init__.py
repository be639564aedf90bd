"""Preference optimisation (IPO/DPO) after SFT: ``data`` (pairs), ``synthetic`` (the recipe's failed
variant), ``policy`` (PiSSA-aware policy + frozen reference), ``stage`` (the stage's work)."""

from typing import Any

from nortune.lineage import preference_fingerprint as fingerprint
from nortune.runner import Stage, StageContext, StageResult, run_stage
from nortune.runs import Options


def _work(ctx: StageContext) -> StageResult:
    from nortune.preference.stage import work

    return work(ctx)


def _enabled(recipe: Any) -> str | None:
    return None if recipe.preference.configured else "no preference data configured"


STAGE = Stage("preference", fingerprint, _work, upstream=("train",), enabled=_enabled)


def run(recipe: Any, options: Options = Options()) -> dict[str, Any]:
    """The stage through the runner (as ``nortune preference`` runs it); returns its manifest."""
    return run_stage(STAGE, recipe, options).manifest


__all__ = ["STAGE", "fingerprint", "run"]

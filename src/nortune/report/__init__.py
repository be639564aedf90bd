"""The report stage (one HTML page and a Markdown summary per run) and the run ledger it reads.

``ledger`` says what a run folder says about itself (`nortune runs`, `nortune compare`, the
report's overview), read only from stage manifests, so the three never disagree.
"""

from __future__ import annotations

from typing import Any

from nortune.runner import Stage, StageContext, StageResult, run_stage
from nortune.runs import Options


def fingerprint(recipe: Any) -> dict[str, Any]:
    from nortune.report.stage import fingerprint as stage_fingerprint

    return stage_fingerprint(recipe)


def _work(ctx: StageContext) -> StageResult:
    from nortune.report.stage import work

    return work(ctx)


STAGE = Stage("report", fingerprint, _work)


def run(recipe: Any, options: Options = Options()) -> dict[str, Any]:
    """The stage through the runner (as ``nortune report`` runs it); returns its manifest."""
    return run_stage(STAGE, recipe, options).manifest

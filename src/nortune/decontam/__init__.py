"""Contamination check: prove the training data never saw the benchmark test texts.

Modules, each small and importable without side effects:

- ``normalize``  text normalisation shared by both sides (and lm-eval's word convention)
- ``hashing``    polynomial window hashes over code points (numpy index, numba scan loop)
- ``charindex``  the test-side character-window index and the verified span finder
- ``wordindex``  word n-gram overlap (lm-evaluation-harness's 13-gram convention)
- ``sources``    test side (the documents evaluate scores: its catalogue, source, folder and
                 revision; extra benchmarks) and the streamed training side
- ``scan``       runs every method over the training stream and collects findings
- ``report``     ``contamination.json`` and the Markdown summary
- ``stage``      ``run(recipe)``: the pipeline stage (skip when unchanged, manifest last)
- ``gate``       ``require_clean``: what ``nortune train`` calls before it starts (refuses a
                 missing, stale, foreign or over-limit report)
"""


from __future__ import annotations

from typing import Any

from nortune.runner import Stage, StageContext, StageResult, run_stage
from nortune.runs import Options, RunLayout

# The preference pairs' own check: all three texts of every pair, in its own folder.
PREFERENCE_FIELDS = ["prompt.content", "chosen.content", "rejected.content"]


def fingerprint(recipe: Any) -> dict[str, Any]:
    from nortune.decontam.stage import fingerprint as stage_fingerprint

    return stage_fingerprint(recipe)


def _check(recipe: Any) -> None:
    """The training file the recipe names exists and holds records: one line before any index is built."""
    from pathlib import Path

    from nortune.cli_checks import existing_file, has_records
    from nortune.errors import DataError

    data = recipe.decontam.data or recipe.train.data
    if data is not None and not has_records(existing_file(Path(data), "a training data file")):
        raise DataError(f"{data}: no records, so there is nothing to check")


def _work(ctx: StageContext, data: Any = None, text_fields: list[str] | None = None) -> StageResult:
    from nortune.decontam.stage import work

    return work(ctx, data, text_fields)


def _preference_fingerprint(recipe: Any) -> dict[str, Any]:
    from nortune.decontam.stage import fingerprint as stage_fingerprint

    return stage_fingerprint(recipe, RunLayout.of(recipe).preference_pairs, text_fields=PREFERENCE_FIELDS)


def _preference_work(ctx: StageContext) -> StageResult:
    return _work(ctx, ctx.layout.preference_pairs, PREFERENCE_FIELDS)


STAGE = Stage("decontam", fingerprint, _work, check=_check)
# Run by the preference stage once it has written its pairs (they do not exist before it starts).
PREFERENCE_STAGE = Stage("decontam-preference", _preference_fingerprint, _preference_work)


def run(recipe: Any, options: Options = Options()) -> dict[str, Any]:
    """The stage through the runner (as ``nortune decontam`` runs it); returns its manifest."""
    return run_stage(STAGE, recipe, options).manifest


def require_clean(recipe, data_path, override_reason=None, folder="decontam"):
    """The training gate (see ``nortune.decontam.gate.require_clean``)."""
    from nortune.decontam.gate import require_clean as _require_clean

    return _require_clean(recipe, data_path, override_reason, folder)

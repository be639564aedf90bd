"""Data curation: many raw sources -> one training file with an exact language mix.

Stages, one module each: ``sources`` (streaming readers), ``normalize`` (chat messages,
NFC), ``langid`` + ``labels`` (nb/nn/en/other, mixed, translation), ``filters``, ``dedup``
(exact + MinHash/LSH), ``compose`` (exact shares), ``report``; ``stage.run`` ties them up.
Importing this package does nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nortune.runner import Stage, StageContext, StageResult, run_stage
from nortune.runs import Options, RunLayout, require_complete


def fingerprint(recipe: Any) -> dict[str, Any]:
    from nortune.curate.stage import fingerprint as stage_fingerprint

    return stage_fingerprint(recipe)


def training_data(recipe: Any, *chosen: Path | str | None) -> Path:
    """The training file: the first one the recipe names (decontam.data, train.data), else curate's
    output, accepted only when curate finished it for the current recipe and sources (never stale)."""
    for candidate in chosen:
        if candidate is not None:
            return Path(candidate)
    layout = RunLayout.of(recipe)
    if not layout.curate_output.is_file():
        from nortune.jsonl import DataError

        raise DataError(f"no training data: train.data is not set and the curate stage has no output at "
                        f"{layout.curate_output}; run `nortune curate` first or set train.data")
    require_complete(layout.curate_dir, layout.curate_output, "the training data", fingerprint(recipe),
                     accept=f"set train.data={layout.curate_output} to use it as it is")
    return layout.curate_output


def _check(recipe: Any) -> None:
    from nortune.curate.stage import check

    check(recipe)


def _work(ctx: StageContext) -> StageResult:
    from nortune.curate.stage import work

    return work(ctx)


def _enabled(recipe: Any) -> str | None:
    return None if recipe.curate.sources else "no curate.sources (train.data is used as given)"


STAGE = Stage("curate", fingerprint, _work, check=_check, enabled=_enabled)


def run(recipe: Any, options: Options = Options()) -> dict[str, Any]:
    """The stage through the runner (as ``nortune curate`` runs it); returns its manifest."""
    return run_stage(STAGE, recipe, options).manifest

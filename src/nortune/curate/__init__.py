"""Data curation: many raw sources -> one training file with an exact language mix.

Stages, one module each: ``sources`` (streaming readers), ``normalize`` (chat messages,
NFC), ``langid`` + ``labels`` (nb/nn/en/other, mixed, translation), ``filters``, ``dedup``
(exact + MinHash/LSH), ``compose`` (exact shares), ``report``; ``stage.run`` ties them up.
Importing this package does nothing.
"""

from __future__ import annotations

from typing import Any

from nortune.runs import Options


def fingerprint(recipe: Any) -> dict[str, Any]:
    from nortune.curate.stage import fingerprint as stage_fingerprint

    return stage_fingerprint(recipe)


def run(recipe: Any, options: Options = Options()) -> dict[str, Any]:
    from nortune.curate.stage import run as run_stage

    return run_stage(recipe, options)

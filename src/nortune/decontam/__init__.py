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

from nortune.runs import Options


def fingerprint(recipe: Any) -> dict[str, Any]:
    from nortune.decontam.stage import fingerprint as stage_fingerprint

    return stage_fingerprint(recipe)


def run(recipe: Any, options: Options = Options(), *, data: Any = None, write_clean: bool | None = None,
        folder: str = "decontam", text_fields: list[str] | None = None) -> dict[str, Any]:
    """The stage (see ``nortune.decontam.stage.run``); imported lazily so importing the package is free."""
    from nortune.decontam.stage import run as run_stage

    return run_stage(recipe, options, data=data, write_clean=write_clean, folder=folder, text_fields=text_fields)


def require_clean(recipe, data_path, override_reason=None, folder="decontam"):
    """The training gate (see ``nortune.decontam.gate.require_clean``)."""
    from nortune.decontam.gate import require_clean as _require_clean

    return _require_clean(recipe, data_path, override_reason, folder)

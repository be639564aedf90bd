"""Export: merged checkpoint, GGUF files made and verified with llama.cpp, Modelfile, model card.

Modules: ``toolchain`` (llama.cpp set-up, cached), ``formats`` (type names), ``merge`` (PiSSA-aware
merge), ``gguf_files`` (converter + quantiser), ``verify`` (llama.cpp vs transformers),
``modelfile`` (Ollama), ``card`` (README.md), ``chat`` (``nortune chat``), ``stage`` (``run``).
Nothing heavy is imported here.
"""


from __future__ import annotations

from typing import Any

from nortune.runner import Stage, StageContext, StageResult, run_stage
from nortune.runs import Options


def fingerprint(recipe: Any) -> dict[str, Any]:
    from nortune.export.stage import fingerprint as stage_fingerprint

    return stage_fingerprint(recipe)


def _work(ctx: StageContext) -> StageResult:
    from nortune.export.stage import work

    return work(ctx)


STAGE = Stage("export", fingerprint, _work, upstream=("train",))


def run(recipe: Any, options: Options = Options()) -> dict[str, Any]:
    """The stage through the runner (as ``nortune export`` runs it); returns its manifest."""
    return run_stage(STAGE, recipe, options).manifest

"""The train stage (SFT): PiSSA LoRA on the planned modules, TRL's SFTTrainer.

- ``stage``: the stage itself (run, fingerprint, prepare, save_outputs, checkpoint resume);
- ``data``: chat records to token ids with assistant-only loss masks, every drop counted;
- ``launch``: ``accelerate launch`` for ``--gpus N`` / ``--nodes M`` with the shipped configs
  in ``launch_configs/``.

The adapter itself (LoRA config, PiSSA save and conversion, trainer arguments) is in
``nortune.adapters``, shared with preference and export. ``STAGE`` declares the stage for the
runner (docs/architecture.md).
"""

from dataclasses import replace
from functools import partial
from typing import Any

from nortune.lineage import train_fingerprint as fingerprint
from nortune.runner import Stage, StageContext, StageResult, run_stage
from nortune.runs import Options


def _work(ctx: StageContext, callbacks: tuple[Any, ...] = ()) -> StageResult:
    from nortune.train.stage import work

    return work(ctx, callbacks)


STAGE = Stage("train", fingerprint, _work)


def run(recipe: Any, options: Options = Options(), *, callbacks: tuple[Any, ...] = ()) -> dict[str, Any]:
    """The stage through the runner (as ``nortune train`` runs it); ``callbacks`` are extra TRL callbacks."""
    stage = replace(STAGE, work=partial(_work, callbacks=callbacks)) if callbacks else STAGE
    return run_stage(stage, recipe, options).manifest


__all__ = ["STAGE", "fingerprint", "run"]

"""The train stage (SFT): PiSSA LoRA on the planned modules, TRL's SFTTrainer.

- ``stage``: the stage itself (run, fingerprint, prepare, save_outputs, checkpoint resume);
- ``data``: chat records to token ids with assistant-only loss masks, every drop counted;
- ``launch``: ``accelerate launch`` for ``--gpus N`` / ``--nodes M`` with the shipped configs
  in ``launch_configs/``.

The adapter itself (LoRA config, PiSSA save and conversion, trainer arguments) is in
``nortune.adapters``, shared with preference and export. The stage contract is
``fingerprint(recipe)`` and ``run(recipe, options)`` (docs/architecture.md).
"""

from nortune.train.stage import fingerprint, run

__all__ = ["fingerprint", "run"]


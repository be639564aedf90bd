"""Multi-GPU training through `accelerate launch` with a shipped FSDP or DeepSpeed config.

Nothing home-made for distribution: nortune only picks the config and builds the command.
PiSSA with DeepSpeed ZeRO-3 is refused: ZeRO-3 partitions weights while the model loads,
so PiSSA's SVD sees empty shards (peft#1826, accelerate#2886). FSDP shards after the
adapter is initialised on full weights, so PiSSA works there.
"""

from __future__ import annotations

import sys
from pathlib import Path

from nortune.config import ConfigError, Recipe

CONFIG_DIR = Path(__file__).resolve().parent / "launch_configs"
ACCELERATE_CONFIGS = {"fsdp": "fsdp.yaml", "deepspeed_zero3": "deepspeed_zero3.yaml"}


def launch_command(recipe: Recipe, recipe_path: str, overrides: list[str], gpus: int,
                   resume: bool = False, allow_contaminated: str | None = None,
                   config_dir: Path = CONFIG_DIR) -> list[str]:
    if recipe.train.distributed == "deepspeed_zero3" and recipe.adapter.init == "pissa":
        raise ConfigError("train.distributed: deepspeed_zero3 cannot run PiSSA initialisation (ZeRO-3 "
                          "partitions the weights before PiSSA's SVD sees them); use train.distributed=fsdp, "
                          "or adapter.init=lora")
    config = config_dir / ACCELERATE_CONFIGS[recipe.train.distributed]
    if not config.is_file():
        raise ConfigError(f"accelerate config not found: {config}")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
               "--num_processes", str(gpus), "-m", "nortune.cli", "train", recipe_path, *overrides]
    if resume:
        command.append("--resume")
    if allow_contaminated:
        command += ["--allow-contaminated", allow_contaminated]
    return command

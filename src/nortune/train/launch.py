"""Multi-process training through `accelerate launch` with a shipped FSDP or DeepSpeed config.

Nothing home-made for distribution: nortune only picks the config and builds the command.
The same command and config serve GPUs and CPU processes: ``train.device`` (read by every
launched process) decides between NCCL on GPUs and gloo on CPUs, and the precision it implies
is passed as ``--mixed_precision``. On CPU, accelerate 1.15 runs the FSDP config as DDP
(``DistributedType.MULTI_CPU``; see docs/train.md).
PiSSA with DeepSpeed ZeRO-3 is refused: ZeRO-3 partitions weights while the model loads,
so PiSSA's SVD sees empty shards (peft#1826, accelerate#2886). FSDP shards after the
adapter is initialised on full weights, so PiSSA works there.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from nortune import adapters
from nortune.config import ConfigError, Recipe

CONFIG_DIR = Path(__file__).resolve().parent / "launch_configs"
log = logging.getLogger(__name__)
ACCELERATE_CONFIGS = {"fsdp": "fsdp.yaml", "deepspeed_zero3": "deepspeed_zero3.yaml"}


def parse_address(address: str) -> tuple[str, str]:
    """``HOST:PORT`` of rank 0's machine, as every node must be given it."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--main-address: expected HOST:PORT (e.g. node001:29500), got {address!r}")
    return host, port


def mixed_precision(recipe: Recipe, device: str) -> str:
    """accelerate's --mixed_precision for this recipe: bf16 exactly when the trainer trains in bf16."""
    return "bf16" if adapters.uses_bf16(recipe, device) else "no"


def launch_command(recipe: Recipe, recipe_path: str, overrides: list[str], gpus: int,
                   resume: bool = False, allow_contaminated: str | None = None,
                   config_dir: Path = CONFIG_DIR, nodes: int = 1, node_rank: int = 0,
                   main_address: str | None = None, device: str | None = None) -> list[str]:
    """``gpus`` is per node; accelerate's ``--num_processes`` counts all nodes together."""
    if recipe.train.distributed == "deepspeed_zero3" and recipe.adapter.init == "pissa":
        raise ConfigError("train.distributed: deepspeed_zero3 cannot run PiSSA initialisation (ZeRO-3 "
                          "partitions the weights before PiSSA's SVD sees them); use train.distributed=fsdp, "
                          "or adapter.init=lora")
    if not 0 <= node_rank < nodes:
        raise ConfigError(f"--node-rank must be between 0 and --nodes - 1 ({nodes - 1}), got {node_rank}")
    if nodes > 1 and main_address is None:
        raise ConfigError("--nodes > 1 needs --main-address HOST:PORT (rank 0's machine, reachable from every node)")
    config = config_dir / ACCELERATE_CONFIGS[recipe.train.distributed]
    if not config.is_file():
        raise ConfigError(f"accelerate config not found: {config}")
    if device is None:
        device = adapters.device_of_choice(recipe)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
               "--num_processes", str(gpus * nodes), "--num_machines", str(nodes),
               "--machine_rank", str(node_rank), "--mixed_precision", mixed_precision(recipe, device)]
    if main_address is not None:
        host, port = parse_address(main_address)
        command += ["--main_process_ip", host, "--main_process_port", port]
    else:  # one node: any free port, so two runs on one machine never collide on 29500
        command += ["--main_process_port", "0"]
    command += ["-m", "nortune.cli", "train", recipe_path, *overrides]
    if resume:
        command.append("--resume")
    if allow_contaminated:
        command += ["--allow-contaminated", allow_contaminated]
    return command


def run_launched(recipe: Recipe, command: list[str]) -> int:
    """Run the launcher; if any process fails, the train stage fails as a whole, visibly.

    torchrun stops every rank when one exits with an error, and rank 0 writes the manifest
    last, after all ranks finished; so a failed launch has no new manifest. This makes sure
    none is left from before either and records why, like a failed single-process stage.
    """
    from nortune import children
    from nortune.errors import StageFailed

    log.info("launching: %s", " ".join(command))
    status = children.call(command)  # the launcher gets SIGTERM if nortune dies, and stops its ranks
    if status == 0:
        return 0
    raise StageFailed("train",
                      f"a training process exited with status {status} under accelerate launch (its traceback is "
                      f"above, prefixed with its rank); no manifest was written; rerun with --resume to continue "
                      f"from the last checkpoint", {"launcher_exit_status": status, "command": command})

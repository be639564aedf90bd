"""The ``plan`` section: the GPUs the memory estimate is made for."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from nortune.config.base import Section

_FOLLOWS_TRAIN = "the plan estimates the micro-batch training runs with: set train.{} instead"


class PlanSection(Section):
    """The GPUs of the memory estimate; the micro-batch's shape and checkpointing are train's own."""

    removed_keys: ClassVar[dict[str, str]] = {
        "batch_size": _FOLLOWS_TRAIN.format("batch_size"),
        "seq_len": _FOLLOWS_TRAIN.format("max_seq_len"),
        "gradient_checkpointing": _FOLLOWS_TRAIN.format("gradient_checkpointing (unset: on for GPUs)"),
    }

    max_gpus: int = Field(8, ge=1)  # the estimate covers 1..max_gpus GPUs (FSDP full shard)
    gpu_memory_gib: float = Field(80.0, gt=0)  # memory of one GPU: which GPU counts fit

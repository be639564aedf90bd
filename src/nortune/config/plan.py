"""The ``plan`` section: the inputs of the memory estimate."""

from __future__ import annotations

from pydantic import Field

from nortune.config.base import Section


class PlanSection(Section):
    """Inputs of the memory estimate: the shape of one training micro-batch and the GPUs."""

    batch_size: int = Field(1, ge=1)
    seq_len: int = Field(2048, ge=1)
    max_gpus: int = Field(8, ge=1)
    gpu_memory_gib: float = Field(80.0, gt=0)
    gradient_checkpointing: bool = True

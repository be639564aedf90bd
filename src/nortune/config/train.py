"""The ``train`` section: supervised fine-tuning of the adapter (preference training is its own stage)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from nortune.config.base import Section, existing_file


class TrainSection(Section):
    def checkpointing_on(self, device: str) -> bool:
        """``gradient_checkpointing`` as training on ``device`` applies it (unset: on for cuda, off on cpu)."""
        return self.gradient_checkpointing if self.gradient_checkpointing is not None else device == "cuda"

    removed_keys: ClassVar[dict[str, str]] = {
        "stage": "removed; preference runs as its own stage: nortune preference RECIPE "
                 "(nortune run runs it when preference data is configured)",
    }

    # Chat JSONL (one {"messages": [...]} per line). None: the curate stage's output in the run folder.
    data: Path | None = None
    lr: float = Field(5e-6, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    neftune_noise_alpha: float | None = Field(5.0, ge=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1)  # -1: run `epochs`
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_seq_len: int = Field(2048, ge=8)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    seed: int = 42
    packing: bool = False
    # None: on for GPUs (memory), off on CPU (small runs; measured no speed difference on the demo model).
    # The plan's memory estimate (for GPUs) uses it too.
    gradient_checkpointing: bool | None = None
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(100, ge=1)
    save_total_limit: int = Field(2, ge=1)
    merge: bool = False  # also write a merged full model into the run folder
    # Multi-GPU strategy for `--gpus N`; ZeRO-3 is refused for PiSSA (see nortune.launch).
    distributed: Literal["fsdp", "deepspeed_zero3"] = "fsdp"
    # cpu: train on CPU processes (gloo); cuda: GPUs (NCCL); auto: cuda when torch sees a GPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("data")
    @classmethod
    def _data_exists(cls, value: Path | None) -> Path | None:
        return existing_file(value)

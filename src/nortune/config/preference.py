"""The ``preference`` section: IPO/DPO after SFT, and the synthetic pairs of the recipe's failed variant."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from nortune.config.base import Section, existing_file

PREFERENCE_LOSSES = ("sigmoid", "ipo", "hinge", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard",
                     "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm")


class SyntheticPairs(Section):
    """The recipe's failed variant, reproducible: chosen = curated answer, rejected = base model's answer."""

    enabled: bool = False
    # Chat JSONL whose last assistant turns become `chosen`; None: train.data, else the curate output.
    source: Path | None = None
    max_pairs: int = Field(64, ge=1)
    max_new_tokens: int = Field(96, ge=1)

    @field_validator("source")
    @classmethod
    def _source_exists(cls, value: Path | None) -> Path | None:
        return existing_file(value)


class PreferenceSection(Section):
    """IPO/DPO after SFT (its own stage: ``nortune preference``), starting from the SFT run's adapter."""

    # JSONL or Parquet with prompt / chosen / rejected (chat message lists or plain strings),
    # or a HF dataset id with those columns.
    data: Path | None = None
    hf_dataset: str | None = None
    hf_split: str = "train"
    loss_type: Literal[PREFERENCE_LOSSES] = "ipo"  # type: ignore[valid-type]
    beta: float = Field(0.1, gt=0)
    lr: float = Field(5e-7, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = Field(-1, ge=-1)
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_len: int = Field(1024, ge=8)
    # continue: keep training the SFT adapter; stack: merge SFT, then train a new adapter on top.
    adapter: Literal["continue", "stack"] = "continue"
    merge: bool = False
    synthetic: SyntheticPairs = Field(default_factory=SyntheticPairs)

    @field_validator("data")
    @classmethod
    def _data_exists(cls, value: Path | None) -> Path | None:
        return existing_file(value)

    @property
    def configured(self) -> bool:
        return self.data is not None or self.hf_dataset is not None or self.synthetic.enabled

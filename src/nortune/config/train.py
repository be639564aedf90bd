"""The ``train`` section: supervised fine-tuning of the adapter (preference training is its own stage)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from nortune.config.base import GuardTexts, Section, existing_file, language_of, packaged_heldout
from nortune.config.names import MIN_VERDICT_ITEMS


class WatchSection(GuardTexts):
    """The forgetting watch: perplexity of dev texts per set during training, against step 0, that can stop a run
    that forgets and keep its best step (docs/train-watch.md). Never the held-out split evaluate reports: stopping on
    the test texts would select on them."""

    split: ClassVar[str] = "dev"
    # text set -> a file with one text per line. Default: the packaged dev split of every guard source.
    texts: dict[str, Path] = Field(default_factory=lambda: packaged_heldout("dev"), min_length=1)
    every_steps: int = Field(10, ge=1)  # measure every N optimizer steps (and at step 0, the reference, and the last)
    # The first N texts of each set are scored (fewer: cheaper, but under 20 no set can be judged).
    max_texts: int = Field(20, ge=MIN_VERDICT_ITEMS)
    # None: every language of `texts` that is not trained. A set of a language in neither list is measured, not judged.
    guarded: list[str] | None = None
    # Stop after this many measurements in a row without a new lowest mean perplexity of the trained languages.
    patience: int = Field(3, ge=1)
    stop_on_forgetting: bool = True  # stop at the first measurement that finds forgetting (or no progress)
    restore_best: bool = True  # keep the best measured step's weights (the rule in docs/train-watch.md), not the last
    bootstrap_samples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)

    @model_validator(mode="after")
    def _judged_languages(self) -> "WatchSection":
        languages = {language_of(name) for name in self.texts}
        if not languages & set(self.trained):
            raise ValueError(f"trained {self.trained}: no set of texts is in a trained language "
                             f"(sets: {sorted(self.texts)}), so progress cannot be watched")
        overlap = set(self.trained) & set(self.guarded or [])
        if overlap:
            raise ValueError(f"guarded: {sorted(overlap)} also trained; a language is trained or guarded")
        return self

    def guarded_languages(self) -> list[str]:
        """The languages whose rise beyond ``tolerance`` is forgetting (``guarded``, else every untrained one)."""
        if self.guarded is not None:
            return list(self.guarded)
        return sorted({language_of(n) for n in self.texts} - set(self.trained))


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
    # The forgetting watch during training (None: off): dev-text perplexity every few steps (docs/train-watch.md).
    watch: WatchSection | None = None

    @field_validator("data")
    @classmethod
    def _data_exists(cls, value: Path | None) -> Path | None:
        return existing_file(value)

"""The ``curate`` section: raw sources, filters, near-duplicate removal, the bucket mix, and the
executor curate and decontam both run on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from nortune.config.base import HUB_ID, Section, existing_file
from nortune.config.names import CURATE_BUCKETS


class CurateSource(Section):
    """One raw source: a local JSONL/Parquet/CSV/text file or a HF dataset id."""

    name: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*$")
    path: Path | None = None
    hf_dataset: str | None = None  # owner/name on the hub (real loader; streams)
    hf_config: str | None = None
    hf_split: str = "train"
    hf_revision: str | None = None
    format: Literal["auto", "jsonl", "parquet", "csv", "text"] = "auto"
    # How a record becomes chat messages; "auto" picks by the fields present.
    mapping: Literal["auto", "messages", "instruction", "prompt_response", "text"] = "auto"
    # Rename the source's fields to the canonical ones, e.g. {output: answer}: canonical <- source.
    fields: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    quota: int | None = Field(None, ge=0)  # at most this many output records from this source

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: Path | None) -> Path | None:
        return existing_file(value)

    @field_validator("hf_dataset")
    @classmethod
    def _hub_id(cls, value: str | None) -> str | None:
        if value is not None and not HUB_ID.match(value):
            raise ValueError(f"{value!r} is not a hub dataset id like owner/name")
        return value

    @field_validator("fields")
    @classmethod
    def _canonical_fields(cls, value: dict[str, str]) -> dict[str, str]:
        known = {"messages", "instruction", "input", "output", "prompt", "response", "text",
                 "system", "role", "content"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown canonical field(s) {unknown}; known: {sorted(known)}")
        return value

    @model_validator(mode="after")
    def _one_origin(self) -> "CurateSource":
        if (self.path is None) == (self.hf_dataset is None):
            raise ValueError("give exactly one of path or hf_dataset")
        return self


class CurateFilters(Section):
    min_chars: int = Field(20, ge=0)  # whole record, all turns
    max_chars: int = Field(20_000, ge=1)
    min_answer_chars: int = Field(2, ge=0)  # last assistant turn
    max_repetition: float = Field(0.35, ge=0, le=1)  # share of repeated word 3-grams
    boilerplate: list[str] = Field(default_factory=lambda: [
        r"(?i)\bas an ai (language )?model\b", r"(?i)\bsom en ki-?(språk)?modell\b",
        r"(?i)\bsom ein ki-?(språk)?modell\b", r"(?i)lorem ipsum", r"(?i)\bclick here\b",
        r"(?i)\bklikk her\b"])
    truncated: bool = True  # drop answers that stop mid-sentence (no closing punctuation)

    @field_validator("boilerplate")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None
        return value


class CurateDedup(Section):
    # datatrove's MinHash LSH: bands x (num_perm / bands) rows; a pair sharing one band is a near duplicate.
    # FineWeb's 14 x 8 catches Jaccard 0.8 with p = 0.92 and 0.5 with p = 0.05 (S-curve midpoint ~0.72).
    near: bool = True
    num_perm: int = Field(112, ge=8, le=512)
    bands: int = Field(14, ge=1)
    shingle: int = Field(5, ge=1)  # words per shingle

    @model_validator(mode="after")
    def _bands_divide(self) -> "CurateDedup":
        if self.num_perm % self.bands:
            raise ValueError(f"bands ({self.bands}) must divide num_perm ({self.num_perm})")
        return self


class ExecutorSection(Section):
    """Where curate and decontam run (datatrove executors): one setting for both stages.

    local: ``workers`` processes on this machine (0: all cores). slurm: one array task per
    worker on ``partition``; the run folder must be on a filesystem every node sees.
    ray: datatrove's Ray executor against ``address`` (None: start a local Ray instance).
    """

    type: Literal["local", "slurm", "ray"] = "local"
    workers: int = Field(0, ge=0)  # 0: every core here (local), else the number of shards/tasks
    partition: str | None = None  # slurm
    time: str = "04:00:00"  # slurm wall time per task
    cpus_per_task: int = Field(1, ge=1)  # slurm
    mem_per_cpu_gb: int = Field(4, ge=1)  # slurm
    sbatch_args: dict[str, str] = Field(default_factory=dict)  # slurm: extra #SBATCH options
    address: str | None = None  # ray: "auto" or ray://host:port; None starts a local instance

    @model_validator(mode="after")
    def _slurm_needs_partition(self) -> "ExecutorSection":
        if self.type == "slurm" and not self.partition:
            raise ValueError("executor type slurm needs a partition")
        return self


class CurateSection(Section):
    sources: list[CurateSource] = Field(default_factory=list)
    executor: ExecutorSection = Field(default_factory=ExecutorSection)  # decontam runs on it too
    # Share of the output per bucket (nb, nn, en, other, mixed, translation); missing = 0.
    shares: dict[str, float] = Field(default_factory=lambda: {"nb": 0.67, "nn": 0.31, "en": 0.02,
                                                                "translation": 0.0})
    target_size: int | None = Field(None, ge=1)  # None: the largest set the shares allow
    seed: int = 42
    strict: bool = False  # any malformed record is fatal
    # JSONL/text lines longer than this (bytes) are skipped unread and dropped as too_large (never fatal):
    # far above any training record, low enough that one broken line cannot exhaust a worker's memory.
    max_record_bytes: int = Field(16 * 1024 * 1024, ge=1)
    allow_shortfall: bool = False  # infeasible mix: write the closest feasible one instead of failing
    quality_order: bool = True  # pick the best-scoring records first (else seeded random)
    min_confidence: float = Field(0.5, ge=0, le=1)  # langid below this: dropped as lang:uncertain
    filters: CurateFilters = Field(default_factory=CurateFilters)
    dedup: CurateDedup = Field(default_factory=CurateDedup)

    @field_validator("shares")
    @classmethod
    def _shares_valid(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(CURATE_BUCKETS))
        if unknown:
            raise ValueError(f"unknown bucket(s) {unknown}; known: {list(CURATE_BUCKETS)}")
        if any(v < 0 for v in value.values()):
            raise ValueError("shares cannot be negative")
        total = sum(value.values())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"shares must add up to 1 (they add up to {total:g})")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> "CurateSection":
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {dupes}")
        return self

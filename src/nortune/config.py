"""Typed recipe config: one section per stage, validated before any work starts.

A recipe is a YAML file. Relative paths in it are read against the current working
directory (run nortune from the project root, as the shipped recipes assume). Dotted
overrides (``train.lr=1e-5``) are applied before validation, so they are checked the
same way as the file.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A recipe problem, phrased as ``where: key.path: reason``."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _existing_file(value: Path | None) -> Path | None:
    if value is not None and not Path(value).expanduser().is_file():
        raise ValueError(f"file not found: {value}")
    return value


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
EMBEDDED_PREFIX = "embedded:"


class ModelSection(Section):
    # A local HF folder, a .gguf file, a hub id (owner/name) or ``embedded:gemma3-270m``.
    source: str = "embedded:gemma3-270m"
    # A config.json (or folder holding one) that `plan` can read when the weights are not local.
    config: Path | None = None
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    @field_validator("source")
    @classmethod
    def _source_resolvable(cls, value: str) -> str:
        if value.startswith(EMBEDDED_PREFIX):
            from nortune.models import EMBEDDED_MODELS  # light module, no torch

            name = value[len(EMBEDDED_PREFIX):]
            if name not in EMBEDDED_MODELS:
                raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
            return value
        path = Path(value).expanduser()
        looks_local = value.endswith(".gguf") or value.startswith(("/", "./", "../", "~"))
        if path.exists():
            if path.is_dir() and not (path / "config.json").is_file():
                raise ValueError(f"{value} is a folder without config.json")
            return value
        if looks_local:
            raise ValueError(f"path not found: {value}")
        if not _HUB_ID.match(value):
            raise ValueError(f"{value!r} is neither an existing path nor a hub id like owner/name")
        return value

    @field_validator("config")
    @classmethod
    def _config_exists(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        path = value.expanduser()
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ValueError(f"model config not found: {value}")
        return path


class LayerSelection(Section):
    """Which decoder layers get adapters: by layer type (Gemma 2/3/4) or by index ranges."""

    layer_types: list[str] | None = None
    # Index ranges such as "0-9,12,20-29" (inclusive); negative indices count from the end.
    indices: str | None = None

    @field_validator("indices")
    @classmethod
    def _indices_parse(cls, value: str | None) -> str | None:
        if value is not None:
            parse_index_ranges(value, num_layers=None)
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> "LayerSelection":
        if self.layer_types is not None and self.indices is not None:
            raise ValueError("give layer_types or indices, not both")
        if self.layer_types is not None and not self.layer_types:
            raise ValueError("layer_types is empty: no layer would be trained")
        return self


def parse_index_ranges(spec: str, num_layers: int | None) -> list[int]:
    """Parse "0-3,7,-2--1" into sorted unique indices; with num_layers, resolve and bound them."""
    out: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        if not part:
            raise ValueError(f"empty item in index ranges {spec!r}")
        match = re.fullmatch(r"(-?\d+)(?:-(-?\d+))?", part)
        if not match:
            raise ValueError(f"cannot read {part!r} in index ranges {spec!r}")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if num_layers is not None:
            lo, hi = (i + num_layers if i < 0 else i for i in (lo, hi))
            if not (0 <= lo < num_layers and 0 <= hi < num_layers):
                raise ValueError(f"{part!r} is outside the model's {num_layers} layers")
        if (lo >= 0) == (hi >= 0) and hi < lo:
            raise ValueError(f"range {part!r} runs backwards")
        out.update(range(lo, hi + 1))
    return sorted(out)


class AdapterSection(Section):
    init: Literal["pissa", "lora"] = "pissa"
    # PiSSA's SVD: "full" is exact; "fast" is randomised (torch.svd_lowrank) with svd_niter iterations.
    svd: Literal["full", "fast"] = "full"
    svd_niter: int = Field(16, ge=1)
    r: int = Field(8, ge=1)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)
    layers: LayerSelection = Field(default_factory=LayerSelection)


class TrainSection(Section):
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
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    seed: int = 42
    packing: bool = False
    # None: on for GPUs, off on CPU (where it costs several times the speed for little memory).
    gradient_checkpointing: bool | None = None
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    logging_steps: int = Field(10, ge=1)
    save_steps: int = Field(100, ge=1)
    save_total_limit: int = Field(2, ge=1)
    merge: bool = False  # also write a merged full model into the run folder
    # Multi-GPU strategy for `--gpus N`; ZeRO-3 is refused for PiSSA (see nortune.launch).
    distributed: Literal["fsdp", "deepspeed_zero3"] = "fsdp"

    @field_validator("data")
    @classmethod
    def _data_exists(cls, value: Path | None) -> Path | None:
        return _existing_file(value)


class PlanSection(Section):
    """Inputs of the memory estimate: the shape of one training micro-batch and the GPUs."""

    batch_size: int = Field(1, ge=1)
    seq_len: int = Field(2048, ge=1)
    max_gpus: int = Field(8, ge=1)
    gpu_memory_gib: float = Field(80.0, gt=0)
    gradient_checkpointing: bool = True


class Recipe(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*$")
    # Where runs go; the run folder is <runs_dir>/<name>.
    runs_dir: Path = Path("runs")
    model: ModelSection = Field(default_factory=ModelSection)
    adapter: AdapterSection = Field(default_factory=AdapterSection)
    train: TrainSection = Field(default_factory=TrainSection)
    plan: PlanSection = Field(default_factory=PlanSection)

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.name

    def section_fingerprint(self, *sections: str) -> str:
        """Stable hash of the named sections: a stage reruns only when one of them changed."""
        payload = {name: getattr(self, name).model_dump(mode="json") for name in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def apply_override(tree: dict[str, Any], dotted: str) -> None:
    """Apply one ``a.b.c=value`` override; the value is read as YAML (so lists and numbers work)."""
    if "=" not in dotted:
        raise ConfigError(f"override {dotted!r}: expected key.path=value")
    key, raw = dotted.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {dotted!r}: empty key segment")
    node = tree
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {'.'.join(parts[:depth + 1])} is not a section")
        node = child
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None


def _format_errors(where: str, err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        reason = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            reason = "unknown key"
        elif item["type"] == "missing":
            reason = "required key is missing"
        shown = item.get("input")
        got = "" if item["type"] in ("missing", "extra_forbidden") or isinstance(shown, dict) else f" (got {shown!r})"
        lines.append(f"{where}: {key}: {reason}{got}")
    return "\n".join(lines)


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe; every problem is reported with its key path."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for item in overrides:
        apply_override(tree, item)
    try:
        return Recipe.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(str(path), exc)) from None

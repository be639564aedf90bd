"""The ``model`` and ``adapter`` sections: which model is tuned, and where its adapters go."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from nortune.config.base import HUB_ID, Section
from nortune.config.names import EMBEDDED_MODEL_NAMES, EMBEDDED_PREFIX, GEMMA3_270M


class ModelSection(Section):
    # A local HF folder, a .gguf file, a hub id (owner/name) or ``embedded:gemma3-270m``.
    source: str = EMBEDDED_PREFIX + GEMMA3_270M
    # A config.json (or folder holding one) that `plan` can read when the weights are not local.
    config: Path | None = None
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    @field_validator("source")
    @classmethod
    def _source_resolvable(cls, value: str) -> str:
        if value.startswith(EMBEDDED_PREFIX):
            name = value[len(EMBEDDED_PREFIX):]
            if name not in EMBEDDED_MODEL_NAMES:
                raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODEL_NAMES)}")
            return value
        path = Path(value).expanduser()
        looks_local = value.endswith(".gguf") or value.startswith(("/", "./", "../", "~"))
        if path.exists():
            if path.is_dir() and not (path / "config.json").is_file():
                raise ValueError(f"{value} is a folder without config.json")
            return value
        if looks_local or (path.parent != Path(".") and path.parent.is_dir()):  # runs/x is no hub id
            raise ValueError(f"path not found: {value}")
        if not HUB_ID.match(value):
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

    # Layer types to adapt. Neither this nor indices (the default): the recipe's choice, the
    # sliding-attention layers where the model has them, else every layer (and the plan says so).
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

"""The ``export`` section: merged safetensors, the GGUF types, their verification, Modelfile and card."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from nortune.config.base import PACKAGE_DATA, PlainName, Section, existing_file
from nortune.config.names import NEEDS_IMATRIX, OLLAMA_PARAMETERS, QUANTIZER_FTYPES

# The card's metadata, as the Hub reads it: a license id (SPDX-like: apache-2.0, cc-by-4.0, llama3.1,
# other) and language codes (ISO 639 with optional BCP-47 subtags: no, nb, nn, en, nb-NO).
LICENSE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]{0,63}$")
LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def check_types(names: list[str]) -> list[str]:
    """GGUF type names upper-cased, unique, known to llama.cpp and makeable without an importance matrix."""
    out: list[str] = []
    for raw in names:
        name = raw.strip().upper()
        if name not in QUANTIZER_FTYPES:
            raise ValueError(f"unknown llama.cpp type {raw!r}; known: {sorted(QUANTIZER_FTYPES)}")
        if name in NEEDS_IMATRIX:
            raise ValueError(f"{name} needs an importance matrix, which nortune does not compute")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError("no GGUF type given")
    return out


class ExportThreshold(Section):
    """When a GGUF file passes: top-1 next-token agreement with the HF model and perplexity drift."""

    min_top1: float | None = Field(None, ge=0, le=1)  # share of positions with the same argmax token
    ppl_tolerance: float | None = Field(None, ge=0)  # |ppl_gguf / ppl_hf - 1| at most this


def _export_thresholds() -> dict[str, ExportThreshold]:
    exact = ExportThreshold(min_top1=0.99, ppl_tolerance=0.01)
    return {"F32": exact, "F16": exact, "BF16": exact, "Q8_0": exact,
            "Q4_K_M": ExportThreshold(min_top1=0.85, ppl_tolerance=0.05)}


class ExportVerify(Section):
    """Each GGUF file is loaded in llama.cpp and compared with the merged HF model on held-out text."""

    enabled: bool = True
    text: Path = PACKAGE_DATA / "verify_no.txt"  # held-out Bokmål and Nynorsk, never trained on (package data)
    max_tokens: int = Field(2048, ge=16)  # tokens of the text scored (windows of `window`)
    window: int = Field(256, ge=8)
    threads: int | None = Field(None, ge=1)  # None: all cores
    # The transformers reference; bfloat16 halves its memory for big models (on a GPU when there is one).
    reference_dtype: Literal["float32", "bfloat16"] = "float32"
    # Per llama.cpp type; types not listed must meet `default`.
    thresholds: dict[str, ExportThreshold] = Field(default_factory=_export_thresholds)
    default: ExportThreshold = Field(default_factory=lambda: ExportThreshold(ppl_tolerance=0.10))
    # Share of held-out paragraphs that llama.cpp's own tokenizer (from the GGUF) splits into exactly
    # the transformers ids; below it the file fails, whatever its scores on the shared ids.
    min_tokenizer_match: float = Field(1.0, ge=0, le=1)

    @field_validator("text")
    @classmethod
    def _text_exists(cls, value: Path) -> Path:
        return existing_file(value)  # type: ignore[return-value]


def _modelfile_value(value: str | float | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        return repr(value) if isinstance(value, float) else str(value)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{value!r} holds a control character (a newline would start a Modelfile line of its own)")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def modelfile_parameter(key: str, value: str | float | int | bool) -> str:
    """One ``PARAMETER`` line: a name Ollama knows, a number bare or a one-line string in double quotes.

    The recipe's parameters are checked with it when the recipe loads, and export writes every
    line with it (the tokenizer's stop strings too), so no value can add a directive of its own.
    """
    if key not in OLLAMA_PARAMETERS:
        raise ValueError(f"{key!r} is not a parameter Ollama knows; known: {sorted(OLLAMA_PARAMETERS)}")
    return f"PARAMETER {key} {_modelfile_value(value)}"


def modelfile_block(instruction: str, text: str) -> str:
    """A ``TEMPLATE`` or ``SYSTEM`` block in Ollama's triple quotes; refused when its text would end it early."""
    if '"""' in text or text.endswith('"'):
        raise ValueError(f'the {instruction} text holds """ or ends in a quote, which would end its block '
                         "in the Modelfile early")
    return f'{instruction} """{text}"""'


class ExportModelfile(Section):
    """Ollama Modelfile: which GGUF it points at and its sampling parameters."""

    gguf_type: str = "Q4_K_M"
    # PARAMETER lines; keys are Ollama's parameter names (num_ctx, temperature, top_k, ...).
    parameters: dict[str, float | int | str] = Field(default_factory=lambda: {
        "temperature": 1.0, "top_k": 64, "top_p": 0.95, "num_ctx": 4096})
    # The SYSTEM message, written inside Ollama's triple quotes, so it may not contain three quotes itself.
    system: str | None = None

    @field_validator("parameters")
    @classmethod
    def _known_parameters(cls, value: dict[str, float | int | str]) -> dict[str, float | int | str]:
        for key, item in value.items():
            modelfile_parameter(key, item)
        return value

    @field_validator("system")
    @classmethod
    def _system_stays_in_its_block(cls, value: str | None) -> str | None:
        if value is not None:
            modelfile_block("SYSTEM", value)
        return value


class ExportCard(Section):
    """The model card's title and metadata (README.md front matter, as the Hub reads it)."""

    # The exported model's name: the card's title and the GGUF file names. None: the recipe name.
    model_name: PlainName | None = None
    license: str = "apache-2.0"  # a license id as the Hub lists them (apache-2.0, gemma, other)
    language: list[str] = Field(default_factory=lambda: ["no", "nb", "nn"])  # ISO 639 codes

    @field_validator("license")
    @classmethod
    def _license_id(cls, value: str) -> str:
        if not LICENSE_ID.match(value):
            raise ValueError(f"{value!r} is not a license id (letters, digits, '.', '+' and '-', "
                             "as the Hub lists them: apache-2.0, cc-by-4.0, other)")
        return value

    @field_validator("language")
    @classmethod
    def _language_codes(cls, value: list[str]) -> list[str]:
        for code in value:
            if not LANGUAGE_CODE.match(code):
                raise ValueError(f"{code!r} is not a language code (ISO 639, optionally with subtags: nb, nn, nb-NO)")
        return value


class ExportSection(Section):
    """Merged safetensors + GGUF files made and quantised by llama.cpp's own tools (see docs/export.md)."""

    # Which model to ship: train (SFT), preference (SFT + preference), or auto: preference when the
    # recipe configures a preference stage, else train.
    source: Literal["auto", "train", "preference"] = "auto"
    # Dtype of the merged checkpoint; "auto" keeps the base checkpoint's own dtype.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # llama.cpp types to ship, e.g. Q8_0, Q4_K_M, Q6_K, F16, BF16 (names as llama-quantize spells them).
    gguf_types: list[str] = Field(default_factory=lambda: ["Q8_0", "Q4_K_M"])
    # The full-precision GGUF that llama.cpp's converter writes and the quantiser reads.
    intermediate: Literal["F32", "F16", "BF16"] = "BF16"
    keep_intermediate: bool = False
    verify: ExportVerify = Field(default_factory=ExportVerify)
    modelfile: ExportModelfile = Field(default_factory=ExportModelfile)
    card: ExportCard = Field(default_factory=ExportCard)

    @field_validator("gguf_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        return check_types(value)

    @model_validator(mode="after")
    def _modelfile_type_exported(self) -> "ExportSection":
        if self.modelfile.gguf_type.upper() not in self.gguf_types:
            raise ValueError(f"modelfile.gguf_type {self.modelfile.gguf_type!r} is not in gguf_types "
                             f"{self.gguf_types}")
        return self

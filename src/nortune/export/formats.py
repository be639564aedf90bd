"""GGUF types: which tool makes each one. No llama.cpp import here.

The type names, with their llama.cpp ``LLAMA_FTYPE_*`` values, live in ``nortune.config.names``
(the recipe's export.gguf_types is checked against them at load). ``convert_hf_to_gguf.py``
writes F32, F16, BF16 and Q8_0 itself; every other type (the K-quants, the I-quants, the legacy
Q4_0/Q5_x) comes from ``llama_model_quantize`` reading the converter's full-precision file.
"""

from __future__ import annotations

import re
from pathlib import Path

from nortune.config.base import FILE_NAME
from nortune.config.names import QUANTIZER_FTYPES

__all__ = ["CONVERTER_TYPES", "QUANTIZER_FTYPES", "gguf_path", "made_by_converter"]

CONVERTER_TYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16", "Q8_0": "q8_0"}


def made_by_converter(name: str) -> bool:
    return name in CONVERTER_TYPES


def gguf_path(folder: Path, model_name: str, gguf_type: str) -> Path:
    """Where export writes (or deletes) a GGUF file: a plain file directly in ``folder``, whatever the name.

    The recipe's model name is checked to be one path component when it loads; this is the second
    line of defence, at the one place the name becomes a path.
    """
    path = folder / f"{model_name}-{gguf_type}.gguf"
    if not re.fullmatch(FILE_NAME, path.name) or path.resolve().parent != folder.resolve():
        raise ValueError(f"the GGUF file name {path.name!r} would leave {folder}; "
                         "export.card.model_name must be a plain name")
    return path

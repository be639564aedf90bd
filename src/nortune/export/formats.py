"""GGUF types: which tool makes each one. No llama.cpp import here.

The type names, with their llama.cpp ``LLAMA_FTYPE_*`` values, live in ``nortune.config.names``
(the recipe's export.gguf_types is checked against them at load). ``convert_hf_to_gguf.py``
writes F32, F16, BF16 and Q8_0 itself; every other type (the K-quants, the I-quants, the legacy
Q4_0/Q5_x) comes from ``llama_model_quantize`` reading the converter's full-precision file.
"""

from __future__ import annotations

from nortune.config.names import QUANTIZER_FTYPES

__all__ = ["CONVERTER_TYPES", "QUANTIZER_FTYPES", "gguf_filename", "made_by_converter"]

CONVERTER_TYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16", "Q8_0": "q8_0"}


def made_by_converter(name: str) -> bool:
    return name in CONVERTER_TYPES


def gguf_filename(model_name: str, name: str) -> str:
    return f"{model_name}-{name}.gguf"

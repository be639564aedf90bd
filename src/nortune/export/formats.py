"""GGUF type names as llama.cpp spells them, and which tool makes each one. No llama.cpp import here.

``convert_hf_to_gguf.py`` writes F32, F16, BF16 and Q8_0 itself; every other type (the K-quants,
the I-quants, the legacy Q4_0/Q5_x) comes from ``llama_model_quantize`` reading the converter's
full-precision file. The numbers are llama.cpp's ``LLAMA_FTYPE_*`` values.
"""

from __future__ import annotations

CONVERTER_TYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16", "Q8_0": "q8_0"}

QUANTIZER_FTYPES = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10,
    "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16,
    "Q5_K_M": 17, "Q6_K": 18, "IQ2_XXS": 19, "IQ2_XS": 20, "Q2_K_S": 21, "IQ3_XS": 22,
    "IQ3_XXS": 23, "IQ1_S": 24, "IQ4_NL": 25, "IQ3_S": 26, "IQ3_M": 27, "IQ2_S": 28, "IQ2_M": 29,
    "IQ4_XS": 30, "IQ1_M": 31, "BF16": 32, "TQ1_0": 36, "TQ2_0": 37,
}
# Without an importance matrix llama.cpp refuses (or ruins) these; nortune does not make one.
NEEDS_IMATRIX = {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "Q2_K_S"}


def normalise(name: str) -> str:
    return name.strip().upper()


def check_types(names: list[str]) -> list[str]:
    """Upper-case, unique, known to llama.cpp and makeable without an importance matrix."""
    out: list[str] = []
    for raw in names:
        name = normalise(raw)
        if name not in QUANTIZER_FTYPES:
            raise ValueError(f"unknown llama.cpp type {raw!r}; known: {sorted(QUANTIZER_FTYPES)}")
        if name in NEEDS_IMATRIX:
            raise ValueError(f"{name} needs an importance matrix, which nortune does not compute")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError("no GGUF type given")
    return out


def made_by_converter(name: str) -> bool:
    return name in CONVERTER_TYPES


def gguf_filename(model_name: str, name: str) -> str:
    return f"{model_name}-{name}.gguf"

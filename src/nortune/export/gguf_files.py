"""HF -> GGUF with llama.cpp's own converter, then llama.cpp's own quantiser for the other types.

The converter reads a Gemma 3 vocabulary from ``tokenizer.model`` (SentencePiece). Checkpoints that
came from a GGUF file (the embedded demo model) have only ``tokenizer.json``; for them nortune
writes the SentencePiece model from the source GGUF's own vocabulary (tokens, scores, types: the
very data llama.cpp tokenises with) into a staging folder beside the merged checkpoint, so the
shipped HF folder stays exactly what transformers saved.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from pathlib import Path

from nortune import children
from nortune.export.formats import CONVERTER_TYPES, QUANTIZER_FTYPES
from nortune.export.toolchain import Toolchain
from nortune.runs import atomic_output, atomic_write_bytes, atomic_write_text
from nortune.errors import ConversionError

log = logging.getLogger(__name__)




def sentencepiece_from_gguf(gguf_path: Path, out: Path) -> dict[str, int]:
    """Write a SentencePiece ``tokenizer.model`` holding a llama-type GGUF's vocabulary.

    Returns the user-defined tokens ({text: id}), which the converter reads from added_tokens.json.
    """
    import gguf
    from sentencepiece import sentencepiece_model_pb2 as spm

    reader = gguf.GGUFReader(str(gguf_path))

    def field(name: str):  # noqa: ANN202
        item = reader.fields.get(name)
        if item is None:
            raise ConversionError(f"{gguf_path} has no {name}; cannot rebuild its tokenizer.model")
        return item.contents()

    if field("tokenizer.ggml.model") != "llama":
        raise ConversionError(f"{gguf_path}: tokenizer type {field('tokenizer.ggml.model')!r} is not "
                              "SentencePiece ('llama'); give a checkpoint with tokenizer.model")
    proto = spm.ModelProto()
    proto.trainer_spec.model_type = spm.TrainerSpec.BPE
    proto.trainer_spec.byte_fallback = True
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    tokens = field("tokenizer.ggml.tokens")
    for text, score, kind in zip(tokens, field("tokenizer.ggml.scores"), field("tokenizer.ggml.token_type")):
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = text, float(score), int(kind)
    # SentencePiece finds its special ids by piece text, so name them after the GGUF's ids.
    for key, name in (("unknown", "unk"), ("bos", "bos"), ("eos", "eos"), ("padding", "pad")):
        value = reader.fields.get(f"tokenizer.ggml.{key}_token_id")
        if value is not None and int(value.contents()) < len(tokens):
            setattr(proto.trainer_spec, f"{name}_id", int(value.contents()))
            setattr(proto.trainer_spec, f"{name}_piece", tokens[int(value.contents())])
    atomic_write_bytes(out, proto.SerializeToString())
    return {p.piece: i for i, p in enumerate(proto.pieces) if p.type == spm.ModelProto.SentencePiece.USER_DEFINED}


def check_supported(merged: Path) -> None:
    """Refuse models llama.cpp would run differently from transformers without saying so.

    llama.cpp hard-codes Gemma 3's layout (five sliding-window layers, then one global) and its query
    scale (1/sqrt(head_dim), or 1/sqrt(hidden/heads) for 27B); the converter stores neither
    ``layer_types`` nor ``query_pre_attn_scalar``. Every released Gemma 3 matches; a model that
    does not would convert into a different model, so it fails here, before any conversion.
    """
    config = json.loads((merged / "config.json").read_text())
    text = config.get("text_config") or config
    if not str(config.get("model_type", "")).startswith("gemma3") or config.get("model_type") == "gemma3n":
        return
    layers = int(text["num_hidden_layers"])
    expected = ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)]
    types = text.get("layer_types")
    if types and list(types) != expected:
        raise ConversionError(f"{merged}/config.json: layer_types {types} differ from the 5 sliding : 1 global "
                              "pattern llama.cpp assumes for every Gemma 3; the GGUF would be a different model")
    scalar, head_dim = text.get("query_pre_attn_scalar"), text.get("head_dim")
    heads = text.get("num_attention_heads")
    allowed = {head_dim, text["hidden_size"] // heads if heads else None}
    if scalar is not None and scalar not in allowed:
        raise ConversionError(f"{merged}/config.json: query_pre_attn_scalar {scalar} is neither head_dim nor "
                              "hidden_size / heads, the only query scales llama.cpp uses for Gemma 3")


def base_tokenizer_model(source: str, revision: str | None = None) -> Path | None:
    """The base checkpoint's own tokenizer.model (local folder or hub snapshot), if it has one."""
    local = Path(source).expanduser()
    if local.is_dir():
        found = local / "tokenizer.model"
        return found if found.is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(source, "tokenizer.model", revision=revision))
    except Exception:  # noqa: BLE001 - no such file, offline, gated: the converter then says what it lacks
        return None


def conversion_folder(merged: Path, staging: Path, base_spm: Path | None, source_gguf: Path | None) -> Path:
    """The folder the converter reads: the merged checkpoint, plus the base's tokenizer.model.

    transformers saves only tokenizer.json, but llama.cpp's Gemma (1-3) converter reads the
    SentencePiece model: take the base checkpoint's own, else rebuild it from the source GGUF.
    """
    model_type = json.loads((merged / "config.json").read_text()).get("model_type", "")
    needs_spm = model_type.startswith("gemma") and not model_type.startswith("gemma4")
    if not needs_spm or (merged / "tokenizer.model").is_file() or (base_spm is None and source_gguf is None):
        return merged
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for item in merged.iterdir():
        (staging / item.name).symlink_to(item.resolve())
    if base_spm is not None:
        shutil.copyfile(base_spm, staging / "tokenizer.model")
        return staging
    user_defined = sentencepiece_from_gguf(source_gguf, staging / "tokenizer.model")  # type: ignore[arg-type]
    if user_defined:
        # The converter keeps SentencePiece user-defined pieces only when listed here.
        atomic_write_text(staging / "added_tokens.json", json.dumps(user_defined, ensure_ascii=False))
    return staging


def convert(chain: Toolchain, model_dir: Path, out: Path, outtype: str) -> Path:
    """Run llama.cpp's convert_hf_to_gguf.py (its own gguf-py, not the installed one)."""
    if outtype not in CONVERTER_TYPES:
        raise ConversionError(f"the converter writes {sorted(CONVERTER_TYPES)}, not {outtype}")
    with atomic_output(out) as tmp:
        command = [sys.executable, str(chain.converter), str(model_dir), "--outfile", str(tmp),
                   "--outtype", CONVERTER_TYPES[outtype]]
        log.info("running: %s", " ".join(command))
        env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
        env["HF_HUB_OFFLINE"] = "1"
        result = children.run(command, capture_output=True, text=True, env=env)
        if result.returncode or not tmp.is_file():
            raise ConversionError(f"convert_hf_to_gguf.py failed for {model_dir} -> {outtype} "
                                  f"(exit {result.returncode}):\n{result.stderr[-3000:]}")
    return out


def quantize(source: Path, out: Path, gguf_type: str, threads: int | None = None) -> Path:
    """llama.cpp's C++ quantiser, in a child process: a crash there is a ``NativeCrash``, not our end."""
    from nortune.export.native import call

    log.info("quantising %s -> %s (%s)", source.name, out.name, gguf_type)
    call("quantize", source, "nortune.export.gguf_files:quantize_in_process", source, out, gguf_type, threads)
    return out


def quantize_in_process(source: Path, out: Path, gguf_type: str, threads: int | None = None) -> Path:
    """``llama_model_quantize`` from a full-precision GGUF (run by ``quantize`` in its child)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTIZER_FTYPES[gguf_type]
    params.nthread = threads or 0
    with atomic_output(out) as tmp:
        code = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), params)
        if code != 0 or not tmp.is_file():
            raise ConversionError(f"llama_model_quantize {source} -> {gguf_type} failed (return code {code})")
    return out


def gguf_tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each ggml type a GGUF file holds (what the quantiser really did)."""
    import gguf

    counts: dict[str, int] = {}
    for tensor in gguf.GGUFReader(str(path)).tensors:
        name = tensor.tensor_type.name
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))

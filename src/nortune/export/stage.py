"""The export stage: merge, GGUF (converter + quantiser), verification, Modelfile, model card.

Outputs in ``<run>/export``: ``merged/``, ``<name>-<TYPE>.gguf`` per type, ``verification.json``
and ``verification.md``, ``Modelfile``, ``README.md`` (the model card), then ``manifest.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from nortune.config import Recipe
from nortune.export.formats import gguf_path, made_by_converter
from nortune.export.merge import train_inputs
from nortune.export.toolchain import Toolchain
from nortune.runner import StageContext, StageResult
from nortune.errors import StageFailed
from nortune.runs import atomic_write_text, inputs_fingerprint

log = logging.getLogger(__name__)


def fingerprint(recipe: Recipe) -> dict[str, Any]:
    inputs = train_inputs(recipe)
    files = [inputs["manifest"], inputs["adapter"], inputs["adapter_init"], inputs["adapter_lora"],
             inputs["tokenizer"]]
    if recipe.export.verify.enabled:
        files.append(Path(recipe.export.verify.text))
    from nortune.export.toolchain import LLAMA_CPP_PYTHON_VERSION

    return {"recipe": recipe.section_fingerprint("model", "adapter", "export"),
            "inputs": inputs_fingerprint(files), "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION}


def source_gguf(recipe: Recipe) -> Path | None:
    """The GGUF the base model came from, if any (its vocabulary feeds the converter for Gemma 3)."""
    from nortune.config import EMBEDDED_PREFIX
    from nortune.models import embedded_gguf

    source = recipe.model.source
    if source.startswith(EMBEDDED_PREFIX):
        return embedded_gguf(source[len(EMBEDDED_PREFIX):])
    if source.endswith(".gguf"):
        return Path(source).expanduser()
    return None


def work(ctx: StageContext) -> StageResult:
    """Merge, convert, quantise, verify; a crash of llama.cpp's native code is this stage's failure."""
    from nortune.export.native import NativeCrash
    from nortune.export.toolchain import ensure
    from nortune.models import check_local_source

    recipe = ctx.recipe
    check_local_source(recipe.model.source)  # a broken base checkpoint is one line, before the toolchain
    chain = ensure()  # set up llama.cpp's tools before any long work (cached after the first time)
    try:
        return _export(recipe, chain, ctx.directory)
    except NativeCrash as crash:
        raise StageFailed("export", str(crash), {"job": crash.job, "file": str(crash.path),
                                                 "signal": crash.signal_name,
                                                 "log": str(crash.log_file) if crash.log_file else None}) from crash


def _export(recipe: Recipe, chain: Toolchain, out_dir: Path) -> StageResult:
    settings = recipe.export
    timings: dict[str, float] = {}
    started = time.time()

    from nortune.export.merge import merge

    merged = out_dir / "merged"
    merge_info = merge(recipe, merged, settings.dtype)
    timings["merge_s"] = time.time() - started

    from nortune.export.gguf_files import (base_tokenizer_model, check_supported, conversion_folder,
                                           convert, gguf_tensor_types, quantize)

    check_supported(merged)

    name = settings.card.model_name or recipe.name
    staging = out_dir / ".convert-input"
    gguf_source = source_gguf(recipe)
    base_spm = None if gguf_source else base_tokenizer_model(merge_info["base"], recipe.model.revision)
    model_dir = conversion_folder(merged, staging, base_spm, gguf_source)
    for old in out_dir.glob("*.gguf"):
        old.unlink()
    files: dict[str, str] = {}
    t0 = time.time()
    intermediate = gguf_path(out_dir, name, settings.intermediate)
    needs_quantiser = [t for t in settings.gguf_types if not made_by_converter(t)]
    if needs_quantiser or settings.keep_intermediate or settings.intermediate in settings.gguf_types:
        convert(chain, model_dir, intermediate, settings.intermediate)
    for gguf_type in settings.gguf_types:
        path = gguf_path(out_dir, name, gguf_type)
        if gguf_type != settings.intermediate:  # the intermediate is already written above
            if made_by_converter(gguf_type):
                convert(chain, model_dir, path, gguf_type)
            else:
                quantize(intermediate, path, gguf_type, settings.verify.threads)
        files[gguf_type] = path.name
    shutil.rmtree(staging, ignore_errors=True)
    if intermediate.exists() and settings.intermediate not in settings.gguf_types:
        if settings.keep_intermediate:
            files[settings.intermediate] = intermediate.name
        else:
            intermediate.unlink()
    timings["gguf_s"] = time.time() - t0

    checks = _verify(recipe, merged, out_dir, files)
    timings["verify_s"] = time.time() - t0 - timings["gguf_s"]

    from nortune.export.card import model_card
    from nortune.export.modelfile import modelfile
    from nortune.export.verify import markdown_table
    from transformers import AutoTokenizer

    table = markdown_table(checks) if checks else "Verification was switched off (export.verify.enabled)."
    atomic_write_text(out_dir / "verification.json", json.dumps(checks, indent=2))
    atomic_write_text(out_dir / "verification.md", table + "\n")
    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    mf = settings.modelfile
    atomic_write_text(out_dir / "Modelfile", modelfile(files[mf.gguf_type.upper()], tokenizer, mf.parameters,
                                                       mf.system))
    atomic_write_text(out_dir / "README.md", model_card(recipe, checks, files, merge_info, table))

    outputs = [merged, out_dir / "verification.json", out_dir / "verification.md", out_dir / "Modelfile",
               out_dir / "README.md"] + [out_dir / f for f in files.values()]
    failed = [c["file"] for c in checks if not c["passed"]]
    metrics = {"files": {t: {"file": f, "bytes": (out_dir / f).stat().st_size,
                             "tensor_types": gguf_tensor_types(out_dir / f)} for t, f in files.items()},
               "verification": {c["gguf_type"]: {k: c[k] for k in ("top1", "ppl_ratio", "passed")}
                                for c in checks},
               "failed": failed, "passed": not failed, "merge": merge_info,
               **{k: round(v, 2) for k, v in timings.items()}}
    return StageResult(outputs, metrics, {"llama_cpp_python": chain.version})


def _verify(recipe: Recipe, merged: Path, out_dir: Path, files: dict[str, str]) -> list[dict[str, Any]]:
    settings = recipe.export.verify
    if not settings.enabled:
        return []
    from nortune.export.native import call
    from nortune.export.verify import reference

    text = Path(settings.text).read_text(encoding="utf-8")
    ref = reference(merged, text, settings.window, settings.max_tokens, settings.reference_dtype)
    checks = []
    for gguf_type, filename in files.items():
        threshold = settings.thresholds.get(gguf_type, settings.default)
        path = out_dir / filename
        check = call("verify", path, "nortune.export.verify:check_file", path, gguf_type, ref, threshold,
                     settings.threads, settings.min_tokenizer_match)
        log.info("export: %s top-1 %.4f ppl ratio %.4f %s", filename, check.top1, check.ppl_ratio,
                 "passed" if check.passed else "FAILED " + "; ".join(check.reasons))
        checks.append(check.to_json())
    return checks

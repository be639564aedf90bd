"""Merge the trained adapter into the untouched base and save a plain HF checkpoint.

A PiSSA adapter applies to the PiSSA *residual* base (W - B0 A0), not to the model on disk, so it
is never loaded onto the untouched base. Training also writes ``adapter_lora``: PEFT's conversion
(``path_initial_model_for_weight_conversion``) of the trained PiSSA adapter into a plain rank-2r
LoRA, ``[B | B0] [A ; -A0]``, whose product is exactly ``B A - B0 A0``. Merging that into the
untouched base gives ``W + s (B A - B0 A0)`` = the residual base plus the trained adapter. The merge
then re-checks this identity weight by weight from the two adapter files, independently of PEFT.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from nortune.config import Recipe
from nortune.jsonl import DataError

log = logging.getLogger(__name__)
ADAPTER_FILE = "adapter_model.safetensors"
CHECKED_MODULES = 8  # the identity check reads this many adapted weights (cheap even at 31B)


class ExportInputError(DataError):
    """The train run is missing a file the export needs (a user-facing error: one line, exit 2)."""


def source_stage(recipe: Recipe) -> str:
    """The stage whose model is exported: ``export.source``, where auto follows the recipe."""
    if recipe.export.source != "auto":
        return recipe.export.source
    return "preference" if recipe.preference.configured else "train"


def train_inputs(recipe: Recipe) -> dict[str, Path]:
    """The outputs export reads (from train, or preference); fails early, naming the missing file."""
    stage = source_stage(recipe)
    folder = recipe.run_dir / stage
    needed = {"manifest": folder / "manifest.json", "adapter": folder / "adapter",
              "adapter_init": folder / "adapter_init", "adapter_lora": folder / "adapter_lora",
              "tokenizer": folder / "tokenizer"}
    if stage == "preference" and recipe.preference.adapter == "continue":
        needed["adapter_init"] = recipe.run_dir / "train" / "adapter_init"  # the adapter it kept training
    for key, path in needed.items():
        if not path.exists():
            raise ExportInputError(f"{path} is missing ({key}): run `nortune train` for this recipe first")
    for key in ("adapter", "adapter_lora"):
        if not (needed[key] / ADAPTER_FILE).is_file():
            raise ExportInputError(f"{needed[key] / ADAPTER_FILE} is missing: the {stage} run is incomplete")
    return needed


def _module_weights(folder: Path) -> tuple[dict[str, tuple[Any, Any]], float]:
    """{module name: (A, B)} from a PEFT adapter folder, and its scale alpha / r."""
    from safetensors.torch import load_file

    config = json.loads((folder / "adapter_config.json").read_text())
    if config.get("use_rslora"):
        scale = config["lora_alpha"] / config["r"] ** 0.5
    else:
        scale = config["lora_alpha"] / config["r"]
    tensors = load_file(str(folder / ADAPTER_FILE))
    modules: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key:
                name = key.split(marker)[0].removeprefix("base_model.model.")
                modules.setdefault(name, {})[part] = value.float()
    return {n: (p["lora_A"], p["lora_B"]) for n, p in modules.items()}, scale


def pissa_delta(adapter: Path, initial_adapter: Path, module: str) -> Any:
    """s (B A - B0 A0) for one module, straight from the trained and initial PiSSA adapters."""
    trained, scale = _module_weights(adapter)
    initial, scale0 = _module_weights(initial_adapter)
    a, b = trained[module]
    a0, b0 = initial[module]
    return scale * (b @ a) - scale0 * (b0 @ a0)


def expected_delta(recipe: Recipe, inputs: dict[str, Path], module: str) -> Any:
    """What merging must add to one base weight, from the adapter files alone (not PEFT's merge).

    train, or preference continuing the SFT adapter: the trained adapter minus its initial state.
    preference stacked on a merged SFT model: the SFT delta plus the new adapter's own delta.
    """
    train_dir = recipe.run_dir / "train"
    pissa = _is_pissa(train_dir)
    own = pissa_delta(inputs["adapter"], inputs["adapter_init"], module) if pissa \
        else _lora_delta(inputs["adapter"], module)
    if source_stage(recipe) == "preference" and recipe.preference.adapter == "stack":
        sft = pissa_delta(train_dir / "adapter", train_dir / "adapter_init", module) if pissa \
            else _lora_delta(train_dir / "adapter", module)
        return sft + own
    return own


def merge(recipe: Recipe, out_dir: Path, dtype: str = "auto") -> dict[str, Any]:
    """Write the merged checkpoint (safetensors, config, tokenizer with chat template) to out_dir."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nortune.models import resolve_source

    inputs = train_inputs(recipe)
    source = resolve_source(recipe.model.source)
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    base = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, revision=recipe.model.revision)
    trained, _ = _module_weights(inputs["adapter"])
    pissa = _is_pissa(recipe.run_dir / "train")
    checked = sorted(trained)[:CHECKED_MODULES]
    before = {name: base.get_submodule(name).weight.detach().float().clone() for name in checked}

    model = PeftModel.from_pretrained(base, str(inputs["adapter_lora"])).merge_and_unload()
    worst = 0.0
    for name in checked:
        after = model.get_submodule(name).weight.detach().float()
        expected = expected_delta(recipe, inputs, name)
        error = (after - before[name] - expected).abs().max().item()
        worst = max(worst, error / max(before[name].abs().max().item(), 1e-12))
    limit = 1e-4 if next(model.parameters()).dtype == torch.float32 else 2e-2
    if worst > limit:
        raise RuntimeError(f"merged weights differ from W + s(BA - B0A0) by {worst:.2e} (relative), "
                           f"more than {limit:g}: the adapter conversion is wrong; refusing to export")

    if out_dir.exists():
        shutil.rmtree(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(str(inputs["tokenizer"]))
    if not getattr(tokenizer, "chat_template", None):
        raise ExportInputError(f"{inputs['tokenizer']} has no chat template; the GGUF files need one")
    tokenizer.save_pretrained(str(out_dir))
    return {"base": source, "adapter": str(inputs["adapter_lora"]), "pissa": pissa,
            "source_stage": source_stage(recipe),
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "checked_modules": len(checked), "max_relative_weight_error": worst}


def _is_pissa(train_dir: Path) -> bool:
    resolved = train_dir / "recipe.resolved.yaml"
    if not resolved.is_file():
        return True
    import yaml

    tree = yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}
    return (tree.get("adapter") or {}).get("init", "pissa") == "pissa"


def _lora_delta(adapter: Path, module: str) -> Any:
    weights, scale = _module_weights(adapter)
    a, b = weights[module]
    return scale * (b @ a)

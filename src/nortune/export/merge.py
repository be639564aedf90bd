"""Merge the trained adapter into the untouched base and save a plain HF checkpoint.

A PiSSA adapter applies to the PiSSA *residual* base (W - B0 A0), not to the model on disk, so it
is never loaded onto the untouched base. Training also writes ``adapter_lora``: PEFT's conversion
(``path_initial_model_for_weight_conversion``) of the trained PiSSA adapter into a plain rank-2r
LoRA, ``[B | B0] [A ; -A0]``, whose product is exactly ``B A - B0 A0``. Merging that into the
untouched base gives ``W + s (B A - B0 A0)`` = the residual base plus the trained adapter. The merge
then re-checks this identity weight by weight from the two adapter files, independently of PEFT.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from nortune import adapters
from nortune.config import Recipe
from nortune.runs import MANIFEST, RESOLVED_RECIPE, RunLayout
from nortune.errors import ExportInputError

log = logging.getLogger(__name__)
CHECKED_MODULES = 8  # the identity check reads this many adapted weights (cheap even at 31B)




def source_stage(recipe: Recipe) -> str:
    """The stage whose model is exported: ``export.source``, where auto follows the recipe."""
    if recipe.export.source != "auto":
        return recipe.export.source
    return "preference" if recipe.preference.configured else "train"


def train_inputs(recipe: Recipe) -> dict[str, Path]:
    """The outputs export reads (from train, or preference); fails early, naming the missing file."""
    stage = source_stage(recipe)
    layout = RunLayout.of(recipe)
    needed = {"manifest": layout.model_dir(stage) / MANIFEST, "adapter": layout.adapter(stage),
              "adapter_init": layout.adapter_init(stage), "adapter_lora": layout.adapter_lora(stage),
              "tokenizer": layout.tokenizer(stage)}
    if stage == "preference" and recipe.preference.adapter == "continue":
        needed["adapter_init"] = layout.adapter_init("train")  # the adapter it kept training
    for key, path in needed.items():
        if not path.exists():
            raise ExportInputError(f"{path} is missing ({key}): run `nortune train` for this recipe first")
    for key in ("adapter", "adapter_lora"):
        if not (needed[key] / adapters.WEIGHTS).is_file():
            raise ExportInputError(f"{needed[key] / adapters.WEIGHTS} is missing: the {stage} run is incomplete")
    from nortune.lineage import require_current_model

    by_stage: dict[str, dict[Path, str]] = {}
    for key, path in needed.items():  # only as the finished stage wrote them, for this recipe
        if key != "manifest":
            by_stage.setdefault(path.parent.name, {})[path] = f"the {key.replace('_', ' ')}"
    for made_by, outputs in by_stage.items():
        require_current_model(recipe, made_by, outputs)
    return needed


def pissa_delta(adapter: Path, initial_adapter: Path, module: str) -> Any:
    """s (B A - B0 A0) for one module, straight from the trained and initial PiSSA adapters."""
    trained, scale = adapters.lora_factors(adapter)
    initial, scale0 = adapters.lora_factors(initial_adapter)
    a, b = trained[module]
    a0, b0 = initial[module]
    return scale * (b @ a) - scale0 * (b0 @ a0)


def expected_delta(recipe: Recipe, inputs: dict[str, Path], module: str) -> Any:
    """What merging must add to one base weight, from the adapter files alone (not PEFT's merge).

    train, or preference continuing the SFT adapter: the trained adapter minus its initial state.
    preference stacked on a merged SFT model: the SFT delta plus the new adapter's own delta.
    """
    layout = RunLayout.of(recipe)
    pissa = _is_pissa(layout.model_dir("train"))
    own = pissa_delta(inputs["adapter"], inputs["adapter_init"], module) if pissa \
        else _lora_delta(inputs["adapter"], module)
    if source_stage(recipe) == "preference" and recipe.preference.adapter == "stack":
        sft = pissa_delta(layout.adapter("train"), layout.adapter_init("train"), module) if pissa \
            else _lora_delta(layout.adapter("train"), module)
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
    trained, _ = adapters.lora_factors(inputs["adapter"])
    pissa = _is_pissa(RunLayout.of(recipe).model_dir("train"))
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
    resolved = train_dir / RESOLVED_RECIPE
    if not resolved.is_file():
        return True
    import yaml

    tree = yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}
    return (tree.get("adapter") or {}).get("init", "pissa") == "pissa"


def _lora_delta(adapter: Path, module: str) -> Any:
    weights, scale = adapters.lora_factors(adapter)
    a, b = weights[module]
    return scale * (b @ a)

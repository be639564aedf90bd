"""The policy and its reference for preference training, PiSSA-aware.

PiSSA moves the adapter's principal part out of the base weights, so "disable the adapter"
would score against the PiSSA *residual*, a model nobody trained. TRL's DPOTrainer instead
copies the starting ``default`` adapter into a frozen ``ref`` adapter, which is right for
both modes as long as that copy does not re-run PiSSA's SVD:

- continue: base -> PiSSA residual (rebuilt from the saved initial adapter, no new SVD)
  -> the SFT adapter as ``default``;
- stack: base + SFT LoRA merged -> a new adapter (the recipe's init) as ``default``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from nortune import adapters
from nortune.adapters import WEIGHTS
from nortune.config import Recipe
from nortune.runs import RunLayout, atomic_write_text

REF = "ref"


def subtract_initial_adapter(peft_model: Any, init_dir: Path) -> None:
    """Turn the base weights into the PiSSA residual W - scale * B0 A0 using the saved B0, A0."""
    import torch

    state = load_file(str(init_dir / WEIGHTS))
    for name, module in peft_model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in module.lora_A:
            continue
        key = name.removeprefix("base_model.model.")
        a = state[f"base_model.model.{key}.lora_A.weight"].float()
        b = state[f"base_model.model.{key}.lora_B.weight"].float()
        weight = module.get_base_layer().weight
        with torch.no_grad():
            residual = weight.float() - module.scaling["default"] * (b @ a)
            weight.copy_(residual.to(weight.dtype))


def build_policy(recipe: Recipe, base: Any) -> Any:
    """The trainable ``default`` adapter at its starting point (TRL copies it to ``ref``)."""
    from peft import PeftModel

    from nortune.plan import recipe_plan

    layout = RunLayout.of(recipe)
    if recipe.preference.adapter == "continue":
        policy = PeftModel.from_pretrained(base, str(layout.adapter("train")), is_trainable=True)
        if adapters.is_pissa(recipe):
            subtract_initial_adapter(policy, layout.adapter_init("train"))
    else:
        merged = PeftModel.from_pretrained(base, str(layout.adapter_lora("train"))).merge_and_unload()
        policy = adapters.attach_adapter(merged, recipe, recipe_plan(recipe))  # the same architecture
        adapters.save_adapter(policy, layout.adapter_init("preference"))
    # The SVD is done: TRL's copy of this adapter into `ref` must not run it again on the residual.
    policy.peft_config["default"].init_lora_weights = True
    return policy


def concat_lora(first: Path, second: Path, out: Path) -> None:
    """Write one plain LoRA equal to the sum of two (same modules): B = [s1 B1 | s2 B2], A = [A1; A2]."""
    import json

    import torch

    configs = [adapters.read_config(d) for d in (first, second)]
    states = [load_file(str(d / WEIGHTS)) for d in (first, second)]
    scales = [adapters.scale_of(c) for c in configs]
    if any(c.get("rank_pattern") or c.get("alpha_pattern") for c in configs):
        raise ValueError("cannot concatenate LoRA adapters with rank or alpha patterns")
    if {k for k in states[0]} != {k for k in states[1]}:
        raise ValueError(f"{first} and {second} adapt different modules; cannot concatenate")
    merged: dict[str, Any] = {}
    for key in states[0]:
        if key.endswith("lora_A.weight"):
            merged[key] = torch.cat([states[0][key], states[1][key]], dim=0).contiguous()
        elif key.endswith("lora_B.weight"):
            merged[key] = torch.cat([scales[0] * states[0][key], scales[1] * states[1][key]], dim=1).contiguous()
        else:
            raise ValueError(f"unexpected tensor {key} in a LoRA adapter")
    rank = configs[0]["r"] + configs[1]["r"]
    config = {**configs[0], "r": rank, "lora_alpha": rank, "use_rslora": False, "init_lora_weights": True}
    out.mkdir(parents=True, exist_ok=True)
    save_file(merged, str(out / WEIGHTS))
    atomic_write_text(out / adapters.CONFIG, json.dumps(config, indent=2))

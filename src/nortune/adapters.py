"""LoRA adapters, in one place for train, preference and export.

- the adapter from the recipe: its LoRA config, attaching it to a model (PiSSA's SVD, seeded);
- saving: PEFT folders that never re-run the SVD when loaded, and the trained adapter together
  with its plain-LoRA form for the untouched base (PiSSA: PEFT's conversion, rank 2r);
- reading a saved adapter: its config, rank, scale and A/B factors, straight from the files;
- the trainer arguments SFT and preference training share: device, precision, checkpointing.

peft, torch and safetensors are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nortune.config import Recipe
    from nortune.plan import AdapterPlan

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


# ---- device and the shared trainer arguments ----

def resolve_device(setting: str = "auto") -> str:
    """``auto``: cuda when a GPU is visible, else cpu; any other setting is used as given."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_of_choice(recipe: Recipe | None = None) -> str:
    """``train.device``: the one setting that separates a CPU run (gloo) from a GPU run (NCCL)."""
    return resolve_device(recipe.train.device if recipe is not None else "auto")


def uses_bf16(recipe: Recipe, device: str) -> bool:
    """``train.precision``: bf16 when asked for, or when auto and training on a GPU."""
    precision = recipe.train.precision
    return precision == "bf16" or (precision == "auto" and device == "cuda")


def trainer_arguments(recipe: Recipe, device: str) -> dict[str, Any]:
    """The TrainingArguments SFT (SFTConfig) and preference (DPOConfig) training share."""
    t = recipe.train
    return {"seed": t.seed, "data_seed": t.seed, "logging_steps": t.logging_steps, "logging_first_step": True,
            "report_to": "none", "use_cpu": device == "cpu", "bf16": uses_bf16(recipe, device),
            "gradient_checkpointing": recipe.train.checkpointing_on(device)}


# ---- the adapter from the recipe ----

def is_pissa(recipe: Recipe) -> bool:
    return recipe.adapter.init == "pissa"


def lora_config(recipe: Recipe, plan: AdapterPlan) -> Any:
    from peft import LoraConfig

    adapter = recipe.adapter
    if adapter.init == "pissa":
        init = "pissa" if adapter.svd == "full" else f"pissa_niter_{adapter.svd_niter}"
    else:
        init = True
    return LoraConfig(r=adapter.r, lora_alpha=adapter.alpha, lora_dropout=adapter.dropout,
                      target_modules=plan.module_names, init_lora_weights=init, task_type="CAUSAL_LM")


def lora_config_for_saving(recipe: Recipe, plan: AdapterPlan) -> Any:
    """The recipe's LoRA config with ``init_lora_weights=True``: wraps weights that are already PiSSA's."""
    config = lora_config(recipe, plan)
    config.init_lora_weights = True
    return config


def attach_adapter(model: Any, recipe: Recipe, plan: AdapterPlan) -> Any:
    """Wrap the model with the planned adapter; the SVD of PiSSA is seeded, so reruns are identical."""
    import torch
    from peft import get_peft_model

    torch.manual_seed(recipe.train.seed)
    peft_model = get_peft_model(model, lora_config(recipe, plan))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    if trainable != plan.trainable_params:
        raise RuntimeError(f"PEFT made {trainable:,} parameters trainable but the plan says "
                           f"{plan.trainable_params:,}; refusing to train an unplanned adapter")
    return peft_model


# ---- saving ----

def save_adapter(peft_model: Any, directory: Path, **kwargs: Any) -> None:
    """Save with ``init_lora_weights=True`` so loading never re-runs the SVD on a residual base."""
    config = peft_model.peft_config["default"]
    original = config.init_lora_weights
    config.init_lora_weights = True
    try:
        peft_model.save_pretrained(str(directory), **kwargs)
    finally:
        config.init_lora_weights = original


def save_with_lora(peft_model: Any, adapter_dir: Path, lora_dir: Path, pissa_init: Path | None) -> None:
    """Save the trained adapter to ``adapter_dir`` and its plain-LoRA form to ``lora_dir``.

    ``pissa_init``: the adapter PiSSA started from (saved before training). PEFT then writes the
    rank-2r LoRA ``[B | B0] [A ; -A0]`` that applies to the untouched base. None (plain LoRA
    init): the adapter already applies to the untouched base and is copied as it is.
    """
    save_adapter(peft_model, adapter_dir)
    if pissa_init is not None:
        save_adapter(peft_model, lora_dir, path_initial_model_for_weight_conversion=str(pissa_init))
    else:
        shutil.copytree(adapter_dir, lora_dir, dirs_exist_ok=True)


# ---- reading a saved adapter ----

def read_config(folder: Path) -> dict[str, Any]:
    """A PEFT adapter folder's ``adapter_config.json``."""
    return json.loads((Path(folder) / CONFIG).read_text(encoding="utf-8"))


def rank_of(config: dict[str, Any]) -> int:
    """The largest LoRA rank in the adapter (``r``, or a module's ``rank_pattern`` entry)."""
    return max([int(config["r"]), *(int(r) for r in (config.get("rank_pattern") or {}).values())])


def scale_of(config: dict[str, Any]) -> float:
    """What B A is multiplied by: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    r = config["r"]
    return config["lora_alpha"] / (r ** 0.5 if config.get("use_rslora") else r)


def adapter_rank(folder: Path) -> int:
    return rank_of(read_config(folder))


def adapter_scale(folder: Path) -> float:
    return scale_of(read_config(folder))


def lora_factors(folder: Path) -> tuple[dict[str, tuple[Any, Any]], float]:
    """{module name: (A, B)} as float tensors from a PEFT adapter folder, and its scale."""
    from safetensors.torch import load_file

    scale = adapter_scale(folder)
    modules: dict[str, dict[str, Any]] = {}
    for key, value in load_file(str(Path(folder) / WEIGHTS)).items():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in key:
                name = key.split(marker)[0].removeprefix("base_model.model.")
                modules.setdefault(name, {})[part] = value.float()
    return {n: (p["lora_A"], p["lora_B"]) for n, p in modules.items()}, scale

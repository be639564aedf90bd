"""nortune.adapters: the one place for the LoRA config, PiSSA save and conversion, reading an adapter,
and the trainer arguments SFT and preference share; plus vLLM's max_lora_rank read from the adapter."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from conftest import REPO, finish_train_stage, write_recipe
from nortune import adapters
from nortune.config import load_recipe
from nortune.errors import ConfigError
from nortune.evaluate.stage import VLLM_MAX_LORA_RANKS, model_spec, vllm_max_lora_rank
from nortune.train.launch import mixed_precision

SRC = REPO / "src" / "nortune"


def _recipe(tmp_path: Path, model: Path | None = None, overrides: list[str] = (), **sections):
    """A test recipe; without a model, a hub id that nothing here loads."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_recipe(tmp_path / "recipe.yaml", model or tmp_path, tmp_path / "runs", **sections)
    return load_recipe(path, ([] if model else ["model.source=owner/model"]) + list(overrides))


# ---- the shared trainer arguments ----

@pytest.mark.parametrize("precision", ["auto", "bf16", "fp32"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_precision_is_one_rule_for_the_trainers_and_the_launcher(tmp_path, precision, device):
    recipe = _recipe(tmp_path, overrides=[f"train.precision={precision}"])
    expected = precision == "bf16" or (precision == "auto" and device == "cuda")
    assert adapters.uses_bf16(recipe, device) is expected
    assert adapters.trainer_arguments(recipe, device)["bf16"] is expected
    assert mixed_precision(recipe, device) == ("bf16" if expected else "no")


@pytest.mark.parametrize("chosen", [None, True, False])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_gradient_checkpointing_defaults_to_on_for_gpus_only(tmp_path, chosen, device):
    recipe = _recipe(tmp_path, overrides=[] if chosen is None else [f"train.gradient_checkpointing={chosen}"])
    expected = (device == "cuda") if chosen is None else chosen
    args = adapters.trainer_arguments(recipe, device)
    assert args["gradient_checkpointing"] is expected and args["use_cpu"] is (device == "cpu")


def test_sft_and_preference_trainers_get_the_same_shared_arguments(tmp_path):
    from nortune.preference.stage import dpo_config
    from nortune.train.stage import sft_config

    recipe = _recipe(tmp_path, overrides=["train.gradient_checkpointing=true", "train.seed=7", "train.logging_steps=3"])
    shared = adapters.trainer_arguments(recipe, "cpu")
    for config in (sft_config(recipe, tmp_path / "sft", "cpu"), dpo_config(recipe, tmp_path / "dpo", "cpu")):
        seen = {key: getattr(config, key) for key in shared}
        seen["report_to"] = "none" if seen["report_to"] in ([], "none", ["none"]) else seen["report_to"]
        assert seen == shared


def test_device_setting_is_used_as_given_and_auto_asks_torch(tmp_path, monkeypatch):
    import torch

    assert adapters.device_of_choice(_recipe(tmp_path, overrides=["train.device=cuda"])) == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert adapters.device_of_choice(_recipe(tmp_path)) == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert adapters.resolve_device("auto") == "cpu" and adapters.resolve_device("cuda:1") == "cuda:1"


# ---- reading a saved adapter ----

def test_scale_and_rank_from_a_config():
    assert adapters.scale_of({"r": 8, "lora_alpha": 16}) == 2.0
    assert adapters.scale_of({"r": 16, "lora_alpha": 8, "use_rslora": True}) == 2.0  # alpha / sqrt(r)
    assert adapters.rank_of({"r": 8}) == 8
    assert adapters.rank_of({"r": 8, "rank_pattern": {"q_proj": 32}}) == 32


def _pissa_trained(tmp_path, tiny_gemma3, **adapter):
    """A PiSSA adapter on the tiny model, saved before and after a fake training step."""
    import torch
    from transformers import AutoModelForCausalLM

    from nortune.plan import build_plan

    recipe = _recipe(tmp_path, tiny_gemma3, adapter=adapter)
    base = AutoModelForCausalLM.from_pretrained(tiny_gemma3, dtype=torch.float32)
    plan = build_plan(base.config, recipe)
    model = adapters.attach_adapter(base, recipe, plan)
    init = tmp_path / "adapter_init"
    adapters.save_adapter(model, init)
    with torch.no_grad():  # "training": every adapter matrix moves
        generator = torch.Generator().manual_seed(0)
        for name, param in model.named_parameters():
            if ".lora_" in name:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return recipe, plan, model, init


@pytest.mark.slow
def test_pissa_save_writes_a_rank_2r_lora_whose_product_is_the_trained_delta(tmp_path, tiny_gemma3):
    recipe, plan, model, init = _pissa_trained(tmp_path, tiny_gemma3, r=4, alpha=8)
    adapter_dir, lora_dir = tmp_path / "adapter", tmp_path / "adapter_lora"
    adapters.save_with_lora(model, adapter_dir, lora_dir, pissa_init=init)

    assert adapters.adapter_rank(init) == adapters.adapter_rank(adapter_dir) == 4
    assert adapters.adapter_scale(init) == adapters.adapter_scale(adapter_dir) == 2.0
    assert adapters.adapter_rank(lora_dir) == 8  # PiSSA's conversion: [B | B0] [A ; -A0]
    assert adapters.read_config(adapter_dir)["init_lora_weights"] is True  # loading never re-runs the SVD
    trained, scale = adapters.lora_factors(adapter_dir)
    initial, scale0 = adapters.lora_factors(init)
    converted, scale_lora = adapters.lora_factors(lora_dir)
    assert set(converted) == set(plan.module_names)
    for name in plan.module_names:
        a, b = trained[name]
        a0, b0 = initial[name]
        a_lora, b_lora = converted[name]
        assert a_lora.shape[0] == b_lora.shape[1] == adapters.adapter_rank(lora_dir)
        delta = scale * (b @ a) - scale0 * (b0 @ a0)
        assert delta.abs().max() > 1e-3  # the fake training moved it
        assert (scale_lora * (b_lora @ a_lora) - delta).abs().max() < 1e-5


@pytest.mark.slow
def test_plain_lora_save_copies_the_adapter_as_its_lora_form(tmp_path, tiny_gemma3):
    import torch
    from transformers import AutoModelForCausalLM

    from nortune.plan import build_plan

    recipe = _recipe(tmp_path, tiny_gemma3, adapter={"init": "lora"})
    base = AutoModelForCausalLM.from_pretrained(tiny_gemma3, dtype=torch.float32)
    model = adapters.attach_adapter(base, recipe, build_plan(base.config, recipe))
    adapter_dir, lora_dir = tmp_path / "adapter", tmp_path / "adapter_lora"
    adapters.save_with_lora(model, adapter_dir, lora_dir, pissa_init=None)
    files = sorted(p.name for p in adapter_dir.iterdir())
    assert files == sorted(p.name for p in lora_dir.iterdir()) and adapters.WEIGHTS in files
    assert all((adapter_dir / f).read_bytes() == (lora_dir / f).read_bytes() for f in files)
    assert adapters.adapter_rank(lora_dir) == recipe.adapter.r


@pytest.mark.slow
def test_stacked_lora_has_rank_4r_and_vllm_gets_the_next_allowed_rank(tmp_path, tiny_gemma3):
    from nortune.preference.policy import concat_lora

    _, _, model, init = _pissa_trained(tmp_path, tiny_gemma3, r=4, alpha=8)
    adapters.save_with_lora(model, tmp_path / "adapter", tmp_path / "sft_lora", pissa_init=init)
    adapters.save_with_lora(model, tmp_path / "adapter2", tmp_path / "own_lora", pissa_init=init)
    concat_lora(tmp_path / "sft_lora", tmp_path / "own_lora", tmp_path / "stacked")
    rank = adapters.adapter_rank(tmp_path / "stacked")
    assert rank == 16 and vllm_max_lora_rank(rank) == 16
    factors, _ = adapters.lora_factors(tmp_path / "stacked")
    assert all(a.shape[0] == rank for a, _ in factors.values())


# ---- vLLM's max_lora_rank ----

@pytest.mark.parametrize("r, served, expected", [
    (8, 16, 16),      # PiSSA r=8 -> adapter_lora rank 16
    (64, 128, 128),   # PiSSA r=64 -> rank 128 (the old hard-coded 64 failed here)
    (64, 256, 256),   # preference stacked on SFT: 4r
    (100, 200, 256),  # between allowed values: the next one up
    (80, 320, 320),
    (4, 8, 8),
    (1, 2, 8),
])
def test_vllm_max_lora_rank_is_the_smallest_allowed_value_at_or_above_the_adapter(r, served, expected):
    assert vllm_max_lora_rank(served) == expected
    assert expected in VLLM_MAX_LORA_RANKS and served <= expected


def test_an_adapter_above_vllms_largest_rank_is_a_clear_error():
    assert vllm_max_lora_rank(512) == 512
    with pytest.raises(ConfigError, match=r"up to rank 512, but run/adapter_lora has rank 1024.*backend=nortune"):
        vllm_max_lora_rank(1024, "run/adapter_lora")


def _vllm_recipe_with_adapter(tmp_path, rank):
    recipe = _recipe(tmp_path, overrides=["evaluate.backend=vllm"])
    from nortune.runs import RunLayout

    layout = RunLayout.of(recipe)
    lora = layout.adapter_lora("train")
    lora.mkdir(parents=True)
    (lora / adapters.CONFIG).write_text(json.dumps({"r": rank, "lora_alpha": rank}))
    finish_train_stage(recipe, [lora])
    return recipe, lora


def test_vllm_model_args_carry_the_served_adapters_rank(tmp_path):
    recipe, lora = _vllm_recipe_with_adapter(tmp_path, 128)
    args, _ = model_spec(recipe, "tuned")
    assert args["lora_local_path"] == str(lora) and args["enable_lora"] is True
    assert args["max_lora_rank"] == 128
    too_big, _ = _vllm_recipe_with_adapter(tmp_path / "big", 640)
    with pytest.raises(ConfigError, match="has rank 640"):
        model_spec(too_big, "tuned")


# ---- each fact once ----

def _sources():
    return {p.relative_to(SRC).as_posix(): p.read_text(encoding="utf-8") for p in SRC.rglob("*.py")}


@pytest.mark.parametrize("pattern, owners", [
    (r"path_initial_model_for_weight_conversion=", {"adapters.py"}),  # PiSSA -> LoRA conversion
    (r"lora_alpha\"\]\s*/", {"adapters.py"}),  # the adapter scale alpha / r
    (r"precision\s*==\s*\"bf16\"", {"adapters.py"}),  # the precision choice
    # the checkpointing default: train's own setting, which the plan's GPU estimate reads too
    (r"is not None else device == \"cuda\"", {"config/train.py"}),
    (r"\"cuda\"\s+if\s+torch\.cuda\.is_available\(\)", {"adapters.py"}),  # the device choice
])
def test_adapter_facts_are_written_once(pattern, owners):
    found = {name for name, text in _sources().items() if re.search(pattern, text)}
    assert found == owners, f"{pattern!r} is written in {sorted(found)}, not only in {owners}"


def test_preference_and_export_do_not_import_train():
    for folder in ("preference", "export"):
        for path in (SRC / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                assert not any(n == "nortune.train" or n.startswith("nortune.train.") for n in names), \
                    f"{path.relative_to(SRC)}:{node.lineno} imports train"

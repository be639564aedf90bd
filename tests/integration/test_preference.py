"""Preference stage on a tiny Gemma 3: IPO moves the adapter, the reference stays, margins rise."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import FIXTURES, write_recipe
from nortune.config import load_recipe
from nortune.preference.stage import run as preference_run
from nortune.train import run as train_run

pytestmark = pytest.mark.slow
LOCAL_NOREVAL = {"source": "local", "data_dir": str(FIXTURES / "noreval_mini")}  # decontam follows evaluate


def _pairs(path):
    chats = [json.loads(line) for line in (FIXTURES / "chat_tiny.jsonl").read_text().splitlines()]
    rows = []
    for i, chat in enumerate(chats):
        other = chats[(i + 1) % len(chats)]["messages"][-1]["content"]
        rows.append({"prompt": chat["messages"][:-1], "chosen": [chat["messages"][-1]],
                     "rejected": other})  # plain-string rejected: both forms are accepted
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module", params=["continue", "stack"])
def sft_then_preference(request, tmp_path_factory, tiny_gemma3):
    tmp_path = tmp_path_factory.mktemp(request.param)
    base = write_recipe(tmp_path / "sft.yaml", tiny_gemma3, tmp_path / "runs",
                        train={"max_steps": 3, "lr": 1e-2}, evaluate=LOCAL_NOREVAL)
    train_run(load_recipe(base), allow_contaminated="tiny fixture; gate tested in test_train.py")
    recipe = load_recipe(base, [
        f"preference.data={_pairs(tmp_path / 'pairs.jsonl')}", "preference.loss_type=ipo",
        "preference.lr=2e-2", "preference.max_steps=8", "preference.batch_size=2", "preference.merge=true",
        f"preference.adapter={request.param}"])
    return recipe, preference_run(recipe), tiny_gemma3


def test_ipo_moves_the_adapter_keeps_the_reference_and_raises_margins(sft_then_preference):
    recipe, manifest, _ = sft_then_preference
    m = manifest["metrics"]
    assert m["steps"] == 8 and m["pairs"] == 6 and m["reference_unchanged"] is True
    assert m["margin_after"] > m["margin_before"]
    assert manifest["contamination_gate"]["passed"] is True
    from safetensors.torch import load_file

    stage = recipe.run_dir / "preference"
    start = recipe.run_dir / "train" / "adapter" if recipe.preference.adapter == "continue" else stage / "adapter_init"
    before = load_file(start / "adapter_model.safetensors")
    after = load_file(stage / "adapter" / "adapter_model.safetensors")
    assert before.keys() == after.keys() and all(not torch.equal(before[k], after[k]) for k in before)


def test_merged_model_equals_the_plain_lora_on_the_untouched_base(sft_then_preference):
    recipe, _, model_dir = sft_then_preference
    from peft import PeftModel

    ids = torch.randint(3, 300, (2, 20), generator=torch.Generator().manual_seed(3))
    stage = recipe.run_dir / "preference"
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(stage / "merged", dtype=torch.float32).eval()(ids).logits
        lora = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                         stage / "adapter_lora").eval()(ids).logits
        sft_only = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                             recipe.run_dir / "train" / "adapter_lora").eval()(ids).logits
    assert torch.allclose(merged, lora, atol=1e-5)
    assert not torch.allclose(merged, sft_only, atol=1e-4)  # the preference step changed the model


def test_synthetic_pairs_take_the_base_models_answer_as_rejected(tmp_path, tiny_gemma3):
    from transformers import AutoTokenizer

    from nortune.preference.data import normalise_pairs
    from nortune.preference.synthetic import build_pairs

    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_gemma3, tmp_path / "runs"), [
        "preference.synthetic.enabled=true", "preference.synthetic.max_pairs=3",
        "preference.synthetic.max_new_tokens=4"])
    base = AutoModelForCausalLM.from_pretrained(tiny_gemma3, dtype=torch.float32)
    out = tmp_path / "synthetic.jsonl"
    assert build_pairs(recipe, base, AutoTokenizer.from_pretrained(tiny_gemma3), out) == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["synthetic"] for r in rows) and rows[0]["chosen"][0]["content"] == "Hovedstaden i Norge er Oslo."
    report = normalise_pairs(out, tmp_path / "pairs.jsonl")
    assert report.synthetic == report.used and report.used + sum(report.dropped.values()) == 3


def test_export_merges_the_preference_model_and_checks_it_weight_by_weight(sft_then_preference, tmp_path):
    from nortune.export.merge import merge, source_stage

    recipe, _, _ = sft_then_preference
    assert source_stage(recipe) == "preference"  # auto: the recipe configures a preference stage
    info = merge(recipe, tmp_path / "merged", "float32")  # raises if W + delta(adapter files) is not met
    assert info["source_stage"] == "preference" and info["max_relative_weight_error"] < 1e-4
    ids = torch.randint(3, 300, (1, 16), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        exported = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()(ids).logits
        staged = AutoModelForCausalLM.from_pretrained(recipe.run_dir / "preference" / "merged").eval()(ids).logits
    assert torch.allclose(exported, staged, atol=1e-5)


def test_hub_pairs_go_through_the_same_checks(tmp_path, monkeypatch):
    import datasets

    from nortune.preference.data import normalise_pairs
    from nortune.preference.stage import fetch_hf_pairs

    rows = [{"prompt": "Kva er hovudstaden i Noreg?", "chosen": "Oslo.", "rejected": "Bergen."},
            {"prompt": "Hei", "chosen": "Hei!", "rejected": "Hei!"}]
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split, streaming: iter(rows))
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tmp_path, tmp_path / "runs"),
                         ["model.source=owner/model", "preference.hf_dataset=owner/pairs"])
    assert fetch_hf_pairs(recipe, tmp_path / "hf.jsonl") == 2
    report = normalise_pairs(tmp_path / "hf.jsonl", tmp_path / "pairs.jsonl")
    assert report.used == 1 and report.dropped == {"identical_chosen_rejected": 1}

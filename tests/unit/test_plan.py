import json
from pathlib import Path

import pytest

from nortune.cli import main
from nortune.config import load_recipe
from nortune.plan import build_plan, plan_from_recipe

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / "configs" / "norskgemma4-31b.yaml"
SHARED_CONFIG = REPO.parent / "shared" / "models" / "gemma-4-31b-text" / "config.json"


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)


@pytest.fixture(scope="module")
def reference_plan():
    return plan_from_recipe(load_recipe(REFERENCE))


def test_reference_recipe_plans_exactly_the_published_adapter(reference_plan):
    plan = reference_plan
    assert plan.trainable_params == 9_216_000
    assert round(100 * plan.trainable_share, 2) == 0.03
    globals_ = [layer for layer in plan.layers if layer.layer_type == "full_attention"]
    assert len(globals_) == 10 and all(not layer.adapted for layer in globals_)
    assert sum(1 for layer in plan.layers if layer.adapted) == 50
    for layer in globals_:
        assert layer.excluded["q_proj"] == "layer type full_attention not selected"
        assert layer.excluded["v_proj"].startswith("this layer has no such module")


def test_global_q_proj_is_excluded_by_type_not_by_luck():
    recipe = load_recipe(REFERENCE, ["adapter.layers.layer_types=[sliding_attention, full_attention]"])
    plan = plan_from_recipe(recipe)
    # Selecting the global layers too adds their q_proj (5376 -> 32 x 512) and still no v_proj.
    assert plan.trainable_params == 9_216_000 + 10 * 8 * (5376 + 16384)


@pytest.mark.skipif(not SHARED_CONFIG.is_file(), reason="shared/ not beside this checkout")
def test_shipped_config_is_the_shared_one():
    shipped = REPO / "configs" / "models" / "gemma-4-31b-text" / "config.json"
    assert json.loads(shipped.read_text()) == json.loads(SHARED_CONFIG.read_text())


def test_memory_estimate_shrinks_with_more_gpus(reference_plan):
    totals = [m.total_gib for m in reference_plan.memory]
    assert len(totals) == 8 and totals == sorted(totals, reverse=True)
    assert 55 < reference_plan.memory[0].weights_gib < 60  # 30.7 B parameters in bf16


def test_index_selection(tmp_path):
    recipe = load_recipe(REFERENCE, ["adapter.layers.layer_types=null", "adapter.layers.indices=0-1,-1"])
    plan = plan_from_recipe(recipe)
    assert [layer.index for layer in plan.layers if layer.adapted] == [0, 1, 59]
    # Layer 59 is global: only its q_proj exists to adapt.
    assert plan.layers[59].adapted and [m.name.rsplit(".", 1)[-1] for m in plan.layers[59].adapted] == ["q_proj"]


def test_moe_expert_tensors_are_reported_not_skipped(tmp_path):
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import tiny_config

    config = tiny_config("gemma4", 400)
    config.enable_moe_block, config.num_experts, config.top_k_experts, config.moe_intermediate_size = True, 4, 2, 16
    recipe = load_recipe(REFERENCE, ["adapter.target_modules=[q_proj, gate_up_proj]",
                                     "adapter.layers.layer_types=null"])
    plan = build_plan(config, recipe)
    assert plan.frozen_3d_params == 4 * (4 * 32 * 32 + 4 * 32 * 16)
    assert any("3-D (MoE expert) tensors" in note for note in plan.notes)
    assert plan.layers[0].excluded["gate_up_proj"] == "3-D MoE expert tensor: LoRA cannot target it"


def test_plan_cli_json(capsys):
    assert main(["plan", str(REFERENCE), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trainable_params"] == 9_216_000 and out["total_params"] > 30e9
    assert len(out["module_names"]) == 100 and len(out["layers"]) == 60


def test_plan_cli_table(capsys):
    assert main(["plan", str(REFERENCE), "--model", "configs/models/gemma-4-31b-text"]) == 0
    out = capsys.readouterr().out
    assert "trainable parameters: 9,216,000" in out and "memory per GPU" in out


def test_the_plan_stage_writes_plan_folder_and_skips_when_current(tmp_path, capsys):
    from nortune.runs import RunLayout, read_manifest

    assert main(["plan", str(REFERENCE), f"runs_dir={tmp_path}"]) == 0
    recipe = load_recipe(REFERENCE, [f"runs_dir={tmp_path}"])
    folder = RunLayout.of(recipe).plan_dir
    assert folder == tmp_path / recipe.name / "plan"
    written = json.loads((folder / "plan.json").read_text())
    assert written["trainable_params"] == 9_216_000
    first = read_manifest(folder)
    assert first["metrics"]["trainable_params"] == 9_216_000
    assert set(first["outputs"]) == {"plan.json", "plan.txt"}
    printed = capsys.readouterr().out
    assert "trainable parameters: 9,216,000" in printed and printed == (folder / "plan.txt").read_text()
    assert main(["plan", str(REFERENCE), f"runs_dir={tmp_path}"]) == 0  # unchanged: skipped, still printed
    assert read_manifest(folder)["finished"] == first["finished"]
    assert capsys.readouterr().out == printed
    assert main(["plan", str(REFERENCE), f"runs_dir={tmp_path}", "adapter.r=16"]) == 0  # changed: planned again
    assert read_manifest(folder)["metrics"]["trainable_params"] == 2 * 9_216_000
    assert main(["plan", str(REFERENCE), f"runs_dir={tmp_path}", "--json"]) == 0  # JSON: printed, folder untouched
    assert read_manifest(folder)["metrics"]["trainable_params"] == 2 * 9_216_000


def test_host_ram_per_node_counts_every_rank_s_full_weights(reference_plan, capsys, tmp_path):
    # Each rank loads the full bf16 model before FSDP shards it (PiSSA's SVD needs the weights).
    full_bf16 = 2 * reference_plan.total_params / 1024 ** 3
    two = reference_plan.memory[1]
    assert two.gpus == 2 and two.host_ram_gib == pytest.approx(2 * (full_bf16 + 3))
    assert 118 < two.host_ram_gib < 122  # Gemma 4 31B (text, 30.7 B) on 2 GPUs: 120.4 GiB
    assert main(["plan", str(REFERENCE), f"runs_dir={tmp_path}"]) == 0
    table = capsys.readouterr().out.split("host RAM/node\n", 1)[1].splitlines()
    row = next(line for line in table if line.split()[:1] == ["2"])
    assert row.split()[-1] == f"{two.host_ram_gib:.1f}"


def test_the_plan_follows_train_and_reruns_when_train_changes_its_micro_batch(tmp_path, tiny_gemma3, capsys):
    """plan.json's memory estimate is for the micro-batch training runs with: train.batch_size, train.max_seq_len
    and train.gradient_checkpointing (issue 42); an old recipe's plan.seq_len is refused, naming the new key."""
    from conftest import write_recipe
    from nortune.config import ConfigError

    recipe_path = str(write_recipe(tmp_path / "r.yaml", tiny_gemma3, tmp_path / "runs"))
    plan_json = tmp_path / "runs" / "tiny" / "plan" / "plan.json"

    def activations(*overrides: str) -> float:
        assert main(["plan", recipe_path, *overrides]) == 0
        return json.loads(plan_json.read_text(encoding="utf-8"))["memory"][0]["activations_gib"]

    base = activations()
    assert activations("train.max_seq_len=128") == pytest.approx(2 * base)
    assert activations("train.batch_size=4") == pytest.approx(2 * base)
    assert activations("train.gradient_checkpointing=false") > base  # unset: on, as training on a GPU runs
    with pytest.raises(ConfigError, match=r"plan\.seq_len.*train\.max_seq_len"):
        load_recipe(recipe_path, ["plan.seq_len=128"])


def test_train_and_preference_read_the_plan_the_plan_stage_wrote(tmp_path, tiny_gemma3, monkeypatch):
    """recipe_plan reads plan/plan.json when it is current; a change to train.max_seq_len makes it stale."""
    import nortune.plan
    from conftest import write_recipe
    from nortune.plan import recipe_plan

    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_gemma3, tmp_path / "runs"))
    nortune.plan.run(recipe)
    written = json.loads((recipe.run_dir / "plan" / "plan.json").read_text())
    monkeypatch.setattr(nortune.plan, "build_plan", lambda *a, **k: pytest.fail("the plan was built again"))
    assert recipe_plan(recipe).to_json() == written
    monkeypatch.undo()
    calls = []
    monkeypatch.setattr(nortune.plan, "build_plan", lambda *a, build=nortune.plan.build_plan, **k:
                        calls.append(1) or build(*a, **k))
    longer = load_recipe(tmp_path / "r.yaml", ["train.max_seq_len=4096"])
    assert recipe_plan(longer).to_json()["memory"] != written["memory"] and calls == [1]


def test_the_smallest_recipe_is_the_recipe(tmp_path, tiny_gemma3, caplog):
    """A model and a data file, nothing else: the reference recipe's plan (issue 43). The 31B text config
    gets its 9,216,000 trainable parameters on the 50 sliding layers; a model without layer types is
    planned on every layer, and the plan says so."""
    import yaml

    from conftest import FIXTURES
    from nortune.plan import build_plan, plan_from_recipe

    smallest = tmp_path / "min.yaml"
    smallest.write_text(yaml.safe_dump({"name": "min", "runs_dir": str(tmp_path / "runs"), "model": {
        "source": "google/gemma-4-31B-it", "config": "configs/models/gemma-4-31b-text/config.json"},
        "train": {"data": str(FIXTURES / "chat_tiny.jsonl")}}))
    recipe = load_recipe(smallest)
    planned = plan_from_recipe(recipe)
    assert planned.trainable_params == 9_216_000
    assert {layer.layer_type for layer in planned.layers if layer.adapted} == {"sliding_attention"}
    assert sum(1 for layer in planned.layers if layer.adapted) == 50 and not planned.notes
    assert (recipe.adapter.r, recipe.adapter.alpha, recipe.adapter.init, recipe.adapter.target_modules) == (
        8, 16, "pissa", ["q_proj", "v_proj"])
    assert (recipe.train.lr, recipe.train.weight_decay, recipe.train.neftune_noise_alpha) == (5e-6, 0.01, 5)
    assert recipe.curate.shares == {"nb": 0.67, "nn": 0.31, "en": 0.02, "translation": 0.0}

    # the tiny Gemma 3 (layer types like the demo model's): the same split as naming sliding layers
    from transformers import LlamaConfig

    from conftest import write_recipe
    from nortune.models import load_config

    named = load_recipe(write_recipe(tmp_path / "named.yaml", tiny_gemma3, tmp_path / "runs"))
    unnamed = load_recipe(write_recipe(tmp_path / "unnamed.yaml", tiny_gemma3, tmp_path / "runs",
                                       adapter={"layers": {}}))
    assert unnamed.adapter.layers.layer_types is None
    config = load_config(str(tiny_gemma3))
    split = build_plan(config, unnamed)
    assert split.to_json() == build_plan(config, named).to_json()
    assert 0 < sum(1 for layer in split.layers if layer.adapted) < len(split.layers)

    # a model without layer types (Llama): every layer, and the plan and the log say so
    llama = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=100)
    everything = build_plan(llama, unnamed)
    assert all(layer.adapted for layer in everything.layers)
    assert "names no sliding_attention layers, so every layer is adapted" in everything.notes[0]
    assert "every layer is adapted" in caplog.text

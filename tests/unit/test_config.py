from pathlib import Path

import pytest

from nortune.cli import main
from nortune.config import ConfigError, load_recipe, parse_index_ranges

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    monkeypatch.chdir(REPO)  # recipes name paths relative to the project root


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert recipe.adapter.target_modules == ["q_proj", "v_proj"]


def test_reference_recipe_has_the_published_hyperparameters():
    recipe = load_recipe(REPO / "configs/norskgemma4-31b.yaml")
    assert (recipe.adapter.init, recipe.adapter.r, recipe.adapter.alpha) == ("pissa", 8, 16)
    assert recipe.adapter.layers.layer_types == ["sliding_attention"]
    assert (recipe.train.lr, recipe.train.weight_decay, recipe.train.neftune_noise_alpha) == (5e-6, 0.01, 5)


def _write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("body, expected", [
    ("name: x\ntrain:\n  lrr: 1\n", "train.lrr: unknown key"),
    ("name: x\ntrain:\n  lr: fast\n", "train.lr: Input should be a valid number"),
    ("name: x\ntrain:\n  lr: -1\n", "train.lr: Input should be greater than 0"),
    ("name: x\nadapter:\n  r: 0\n", "adapter.r: Input should be greater than or equal to 1"),
    ("name: x\nadapter:\n  dropout: 1.0\n", "adapter.dropout"),
    ("name: x\ntrain:\n  data: nowhere.jsonl\n", "train.data: file not found: nowhere.jsonl"),
    ("name: x\nmodel:\n  source: ./missing-model\n", "model.source: path not found"),
    ("name: x\nmodel:\n  source: embedded:nope\n", "unknown embedded model 'nope'"),
    ("name: x\nadapter:\n  layers:\n    layer_types: [sliding_attention]\n    indices: '0-3'\n",
     "give layer_types or indices, not both"),
    ("name: x\nadapter:\n  layers:\n    indices: '5-2'\n", "runs backwards"),
    ("train: {}\n", "name: required key is missing"),
])
def test_bad_recipes_fail_with_key_path_and_reason(tmp_path, body, expected):
    with pytest.raises(ConfigError) as err:
        load_recipe(_write(tmp_path, body))
    assert expected in str(err.value)
    assert str(tmp_path / "r.yaml") in str(err.value)


def test_dotted_overrides_are_applied_then_validated(tmp_path):
    path = _write(tmp_path, "name: x\n")
    recipe = load_recipe(path, ["train.lr=1e-5", "adapter.target_modules=[q_proj]", "plan.max_gpus=2"])
    assert recipe.train.lr == 1e-5 and recipe.adapter.target_modules == ["q_proj"] and recipe.plan.max_gpus == 2
    with pytest.raises(ConfigError, match="train.nope: unknown key"):
        load_recipe(path, ["train.nope=1"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_recipe(path, ["train.lr"])


def test_missing_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(_write(tmp_path, "name: [x\n"))


def test_index_ranges():
    assert parse_index_ranges("0-2,5,-1", 8) == [0, 1, 2, 5, 7]
    with pytest.raises(ValueError, match="outside"):
        parse_index_ranges("0-9", 8)


def test_config_show_prints_the_resolved_recipe(capsys):
    assert main(["config", "show", "configs/demo.yaml", "train.lr=3e-4"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.0003" in out and "name: demo" in out


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    assert main(["config", "show", str(_write(tmp_path, "name: x\nbogus: 1\n"))]) == 2
    assert "bogus: unknown key" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["sft", "dpo"])
def test_an_old_recipe_with_train_stage_is_refused_in_one_line(tmp_path, value):
    path = _write(tmp_path, f"name: x\ntrain:\n  stage: {value}\n  lr: 1.0e-5\n")
    removed = ("train.stage: removed; preference runs as its own stage: nortune preference RECIPE "
               "(nortune run runs it when preference data is configured)")
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    assert str(err.value) == f"{path}: {removed}"
    with pytest.raises(ConfigError) as err:
        load_recipe(_write(tmp_path, "name: x\n"), [f"train.stage={value}"])
    assert str(err.value) == f"override 'train.stage={value}': {removed}"


def test_preference_data_and_hf_dataset_together_are_refused(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("{}\n")
    with pytest.raises(ConfigError, match="preference: give data or hf_dataset, not both"):
        load_recipe(_write(tmp_path, "name: x\n"), [f"preference.data={pairs}", "preference.hf_dataset=a/b"])

"""Recipe reading, override parsing and the cached GGUF config behind a fast `plan`."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from nortune.cli import _parse, build_parser
from nortune.config import ConfigError, load_recipe


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_nested_unknown_key_suggests_the_nearest(tmp_path):
    recipe = write(tmp_path / "r.yaml", "name: x\ncurate:\n  sources:\n    - {name: a, pth: x.jsonl}\n"
                                        "adapter:\n  layers: {layer_type: [a]}\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe)
    text = str(err.value)
    assert f"{recipe}: curate.sources.0.pth: unknown key (did you mean path?)" in text
    assert "adapter.layers.layer_type: unknown key (did you mean layer_types?)" in text


def test_names_from_other_tools_suggest_nortunes_key(tmp_path):
    recipe = write(tmp_path / "r.yaml", "name: x\ntrain: {learning_rate: 1.0e-5, gradient_accumulation_steps: 4}\n"
                                        "curate: {mix: {nb: 1.0}}\nadapter: {lora_r: 8}\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe, ["train.max_seq_length=512"])
    text = str(err.value)
    for key, known in (("train.learning_rate", "lr"), ("train.gradient_accumulation_steps", "grad_accum"),
                       ("curate.mix", "shares"), ("adapter.lora_r", "r"), ("train.max_seq_length", "max_seq_len")):
        assert f"{key}: unknown key (did you mean {known}?)" in text


def test_duplicate_key_in_a_section_names_both_lines(tmp_path):
    recipe = write(tmp_path / "r.yaml", "name: x\ntrain:\n  lr: 1e-5\n  epochs: 2\n  lr: 2e-5\n")
    with pytest.raises(ConfigError, match=r"line 5, column 3: key 'lr' appears twice \(first on line 3\)"):
        load_recipe(recipe)


def test_utf8_bom_recipe_loads_and_latin1_names_the_line(tmp_path):
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(codecs.BOM_UTF8 + b"name: x\n")
    assert load_recipe(bom).name == "x"
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: x\n# bl\xe5b\xe6r\n")
    with pytest.raises(ConfigError, match=r"latin.yaml:2: not UTF-8 \(byte 0xe5\)"):
        load_recipe(latin)


def test_file_errors_name_the_file_and_override_errors_the_override(tmp_path):
    recipe = write(tmp_path / "r.yaml", "name: x\ntrain: {epochs: -1}\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe, ["train.lr=0"])
    lines = str(err.value).splitlines()
    assert f"{recipe}: train.epochs: Input should be greater than 0 (got -1)" in lines
    assert "override 'train.lr=0': train.lr: Input should be greater than 0 (got 0)" in lines


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_non_finite_numbers_are_refused(tmp_path, value):
    recipe = write(tmp_path / "r.yaml", "name: x\n")
    with pytest.raises(ConfigError, match="finite number"):
        load_recipe(recipe, [f"train.weight_decay={value}"])


def test_overrides_and_verbose_anywhere_on_the_line():
    parser = build_parser()
    args = _parse(parser, ["curate", "r.yaml", "--force", "curate.seed=7", "-v", "--strict", "train.lr=1"])
    assert args.overrides == ["curate.seed=7", "train.lr=1"] and args.force and args.strict and args.verbose
    with pytest.raises(SystemExit):
        _parse(build_parser(), ["runs", "runs", "train.lr=1"])  # runs takes no overrides
    with pytest.raises(SystemExit):
        _parse(build_parser(), ["curate", "r.yaml", "--nope"])


def test_gguf_config_is_parsed_once_then_read_from_the_cache(tmp_path, monkeypatch):
    """Parsing a GGUF header reads the whole vocabulary (about 20 s for Gemma 3); the cache makes it once."""
    import transformers
    from transformers import Gemma3TextConfig

    from nortune import models

    monkeypatch.setenv("NORTUNE_CACHE", str(tmp_path / "cache"))
    import gguf as gguf_package
    import numpy as np

    gguf = tmp_path / "m.gguf"  # a real header: a file that only starts with the magic is refused before parsing
    writer = gguf_package.GGUFWriter(str(gguf), arch="gemma3")
    writer.add_tensor("w", np.ones((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    parsed = []
    real = transformers.AutoConfig.from_pretrained

    def from_pretrained(folder, gguf_file=None, **kwargs):
        if gguf_file is None:
            return real(folder, **kwargs)
        parsed.append(gguf_file)
        return Gemma3TextConfig(num_hidden_layers=3, layer_types=["sliding_attention"] * 2 + ["full_attention"])

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", from_pretrained)
    first = models.load_config(str(gguf))
    second = models.load_config(str(gguf))
    assert parsed == ["m.gguf"]
    assert second.num_hidden_layers == first.num_hidden_layers == 3
    assert second.layer_types == first.layer_types


def test_layer_types_checked_against_config_json_without_torch(tmp_path):
    import json

    from nortune.plan import check_adapter

    model = tmp_path / "model"
    model.mkdir()
    config = {"model_type": "gemma3_text", "num_hidden_layers": 2,
              "layer_types": ["sliding_attention", "full_attention"]}
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    recipe = write(tmp_path / "r.yaml", f"name: x\nmodel: {{source: {model}}}\n")
    check_adapter(load_recipe(recipe))  # the default selection exists
    with pytest.raises(ConfigError, match=r"\['sliding'\] not in this model"):
        check_adapter(load_recipe(recipe, ["adapter.layers.layer_types=[sliding]"]))
    del config["layer_types"]  # transformers may derive them; the plan decides then, no false alarm
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    check_adapter(load_recipe(recipe, ["adapter.layers.layer_types=[sliding]"]))


def test_target_typo_fails_at_recipe_load_once_a_plan_has_seen_the_model(tmp_path, monkeypatch):
    import json

    from nortune.plan import check_adapter, plan_from_recipe

    monkeypatch.setenv("NORTUNE_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    model.mkdir()
    config = {"model_type": "gemma3_text", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
              "layer_types": ["sliding_attention", "full_attention"]}
    (model / "config.json").write_text(json.dumps(config), encoding="utf-8")
    recipe = write(tmp_path / "r.yaml", f"name: x\nmodel: {{source: {model}}}\n")
    typo = ["adapter.target_modules=[q_proj, v_prj]"]
    check_adapter(load_recipe(recipe, typo))  # nothing known about this model's modules yet
    with pytest.raises(ConfigError, match=r"\['v_prj'\] not in this model \(did you mean v_prj -> v_proj\?\)"):
        plan_from_recipe(load_recipe(recipe, typo))  # one typo among good targets is an error too
    plan_from_recipe(load_recipe(recipe))
    with pytest.raises(ConfigError, match=r"\['v_prj'\] not in this model"):
        check_adapter(load_recipe(recipe, typo))  # now known: no torch, no plan needed

"""Four guarantees of a stage's lifecycle, each tested where it holds, with no model trained (issue 41):
a write never goes through a link at its path, a starting stage removes links planted in its folder,
and evaluate and preference take the SFT adapter only as train's manifest records it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import finish_train_stage, write_manifest, write_recipe
from nortune.config import load_recipe
from nortune.errors import IncompleteUpstream
from nortune.runs import RunLayout, atomic_write_text, begin_stage


def test_an_atomic_write_replaces_a_link_at_its_path_and_never_writes_through_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n", encoding="utf-8")
    target = tmp_path / "run" / "pipeline.json"
    target.parent.mkdir()
    target.symlink_to(victim)
    atomic_write_text(target, "{}")
    assert not target.is_symlink() and target.read_text(encoding="utf-8") == "{}"
    assert victim.read_text(encoding="utf-8") == "precious\n"


def test_a_starting_stage_removes_links_planted_in_its_folder_and_leaves_their_targets(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n", encoding="utf-8")
    stage = tmp_path / "run" / "curate"
    (stage / "deep").mkdir(parents=True)
    (stage / "train.jsonl").symlink_to(victim)
    (stage / "deep" / "composition.png").symlink_to(victim)
    begin_stage("curate", stage, {}, "name: t\n")
    assert not [p for p in stage.rglob("*") if p.is_symlink()]
    assert victim.read_text(encoding="utf-8") == "precious\n"


def _finished_train(tmp_path: Path, tiny_gemma3: Path):
    """A recipe whose train stage looks finished (adapter, its initial and converted forms, all recorded)."""
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_gemma3, tmp_path / "runs"))
    layout = RunLayout.of(recipe)
    outputs = [layout.adapter("train"), layout.adapter_init("train"), layout.adapter_lora("train")]
    for folder in outputs:
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "lora_alpha": 8}), encoding="utf-8")
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
    finish_train_stage(recipe, outputs)
    return recipe, layout


def test_evaluate_refuses_a_tuned_adapter_edited_after_training(tmp_path, tiny_gemma3):
    from nortune.evaluate.stage import model_spec

    recipe, layout = _finished_train(tmp_path, tiny_gemma3)
    model_spec(recipe, "tuned")  # as recorded: accepted
    (layout.adapter_lora("train") / "adapter_config.json").write_text(json.dumps({"r": 64}), encoding="utf-8")
    with pytest.raises(IncompleteUpstream, match="changed since the train stage finished"):
        model_spec(recipe, "tuned")


def test_preference_refuses_an_sft_adapter_edited_after_training(tmp_path, tiny_gemma3):
    from nortune.preference import fingerprint

    recipe, layout = _finished_train(tmp_path, tiny_gemma3)
    fingerprint(recipe)  # as recorded: accepted
    (layout.adapter("train") / "adapter_model.safetensors").write_bytes(b"other weights")
    with pytest.raises(IncompleteUpstream, match="changed since the train stage finished"):
        fingerprint(recipe)


@pytest.mark.parametrize("record, field", [
    ({"outputs": [1]}, "outputs"), ({"outputs": {"a": 1}}, "outputs.a"), ({"metrics": [1]}, "metrics"),
    ({"fingerprint": "x"}, "fingerprint"), ({"started": [1]}, "started"), ({"finished": "soon"}, "finished"),
])
def test_a_manifest_of_the_wrong_shape_is_refused_naming_the_file_and_field(tmp_path, record, field):
    from nortune.errors import MalformedRunRecord
    from nortune.runs import read_manifest

    path = write_manifest(tmp_path / "s", "s", **record)
    with pytest.raises(MalformedRunRecord, match=f"^{path}: {field}: "):
        read_manifest(tmp_path / "s")


def test_a_truncated_manifest_is_a_crash_leftover_the_stage_reruns(tmp_path):
    from nortune.runs import read_manifest

    path = write_manifest(tmp_path / "s", "s")
    path.write_text(path.read_text()[:10])
    assert read_manifest(tmp_path / "s") is None


@pytest.mark.parametrize("record, field", [({"error": 5}, "error"), ({"stage": ["x"]}, "stage"),
                                           ({"interrupted": "yes"}, "interrupted")])
def test_a_failure_record_of_the_wrong_shape_is_named(tmp_path, record, field):
    from nortune.errors import MalformedRunRecord
    from nortune.runs import read_failure

    (tmp_path / "failed.json").write_text(json.dumps({"stage": "s", "error": "boom", **record}))
    with pytest.raises(MalformedRunRecord, match=f"failed.json: {field}: "):
        read_failure(tmp_path)

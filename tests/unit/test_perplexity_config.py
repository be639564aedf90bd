"""evaluate.perplexity: config errors, and the held-out texts on decontam's test side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nortune.config import ConfigError, Recipe, load_recipe
from nortune.config.base import PACKAGE_DATA
from nortune.decontam import require_clean, run
from nortune.decontam.gate import ContaminationGateError

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "noreval_mini"
HELDOUT = PACKAGE_DATA / "heldout" / "handwritten"  # one of the packaged sources


def recipe_for(tmp_path: Path, data: Path, texts: dict[str, str] | None) -> Recipe:
    evaluate = {"source": "local", "data_dir": str(FIXTURE)}
    if texts is not None:
        evaluate["perplexity"] = {"texts": texts}
    return Recipe.model_validate({"name": "ppl", "runs_dir": str(tmp_path / "runs"), "evaluate": evaluate,
                                  "decontam": {"data": str(data)}})


def chat(text: str, rid: str) -> str:
    return json.dumps({"id": rid, "messages": [{"role": "user", "content": "Skriv noe."},
                                               {"role": "assistant", "content": text}]}, ensure_ascii=False)


@pytest.mark.parametrize("content, words", [(None, "file not found"), ("\n  \n", "has no text")])
def test_missing_or_empty_text_file_is_a_one_line_config_error(tmp_path, content, words):
    path = tmp_path / "en.txt"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: x\nevaluate:\n  perplexity:\n    texts: {{nb: {HELDOUT / 'nb.txt'}, en: {path}}}\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(recipe)
    message = str(err.value)
    assert "evaluate.perplexity.texts" in message and "texts.en" in message and str(path) in message
    assert words in message


def test_a_misnamed_set_is_a_config_error(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: x\nevaluate:\n  perplexity:\n    texts: {{nb-wiki: {HELDOUT / 'nb.txt'}}}\n")
    with pytest.raises(ConfigError, match=r"evaluate.perplexity: texts.nb-wiki: a set is named LANGUAGE or "
                                          r"SOURCE.LANGUAGE, so this one has no trained language \(did you mean "
                                          r"wiki.nb\?\)"):
        load_recipe(recipe)
    recipe.write_text(f"name: x\nevaluate:\n  perplexity:\n    texts: {{wiki.nb: {HELDOUT / 'nb.txt'}}}\n")
    assert load_recipe(recipe).evaluate.perplexity.texts["wiki.nb"] == HELDOUT / "nb.txt"


def test_packaged_chooses_the_default_sources_and_a_resolved_recipe_loads_again(tmp_path):
    ppl = Recipe.model_validate({"name": "x", "evaluate": {"perplexity": {"packaged": ["debian"]}}}).evaluate.perplexity
    assert set(ppl.texts) == {"debian.nb", "debian.nn", "debian.en"}
    with pytest.raises(Exception, match="give texts or packaged, not both"):
        Recipe.model_validate({"name": "x", "evaluate": {"perplexity": {
            "packaged": ["debian"], "texts": {"nb": str(HELDOUT / "nb.txt")}}}})
    demo = load_recipe(ROOT / "configs" / "demo.yaml")
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(demo.to_yaml(), encoding="utf-8")  # texts and packaged both written, and equal
    assert load_recipe(resolved).evaluate.perplexity.texts == demo.evaluate.perplexity.texts


def test_default_is_off_and_demo_configures_the_shipped_files():
    assert Recipe.model_validate({"name": "x"}).evaluate.perplexity is None
    on = Recipe.model_validate({"name": "x", "evaluate": {"perplexity": {}}}).evaluate.perplexity
    assert on.texts == {f"{source}.{k}": PACKAGE_DATA / "heldout" / source / f"{k}.txt"  # package data, never the demo
                        for source in ("handwritten", "debian") for k in ("nb", "nn", "en")}
    verify = Recipe.model_validate({"name": "x"}).export.verify.text
    assert verify == PACKAGE_DATA / "verify_no.txt" and verify.is_file()
    assert load_recipe(ROOT / "configs" / "norskgemma4-31b.yaml").evaluate.perplexity is None
    demo = load_recipe(ROOT / "configs" / "demo.yaml")
    ppl = demo.evaluate.perplexity
    assert {k: Path(v).resolve() for k, v in ppl.texts.items()} == {  # both sources: the demo measures every one
        f"{source}.{k}": (PACKAGE_DATA / "heldout" / source / f"{k}.txt").resolve()
        for source in ("handwritten", "debian") for k in ("nb", "nn", "en")}
    assert ppl.trained == ["nb", "nn"] and ppl.tolerance == 0.02
    assert not ppl.allow_forgetting  # the demo fails on forgetting like any recipe
    assert demo.decontam_test_side().heldout == ppl.texts  # decontam follows evaluate


def test_decontam_flags_a_training_record_holding_a_heldout_line(tmp_path):
    line = (HELDOUT / "nn.txt").read_text(encoding="utf-8").splitlines()[4]
    data = tmp_path / "train.jsonl"
    data.write_text(chat("Sola skin over fjorden i dag.", "a") + "\n" + chat(f"Eit døme: {line}", "b") + "\n",
                    encoding="utf-8")
    texts = {k: str(HELDOUT / f"{k}.txt") for k in ("nb", "nn", "en")}
    recipe = recipe_for(tmp_path, data, texts)
    run(recipe)
    report = json.loads((recipe.run_dir / "decontam" / "contamination.json").read_text(encoding="utf-8"))
    assert report["training"]["contaminated_records"] == 1
    record = report["records"][0]
    assert record["id"] == "b"
    assert record["methods"]["substring"]["matches"][0]["test_id"] == "heldout:nn/line5"
    assert report["test_side"]["texts_by_task"]["heldout:nn"] == 98
    with pytest.raises(ContaminationGateError, match="1 contaminated"):
        require_clean(recipe, data)
    # without perplexity the same data is clean: the held-out lines are test texts only when configured
    plain = recipe_for(tmp_path / "plain", data, None)
    run(plain)
    assert require_clean(plain, data)["passed"] is True


def test_gate_sees_a_changed_heldout_file_as_stale(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(chat("Sola skin over fjorden i dag.", "a") + "\n", encoding="utf-8")
    en = tmp_path / "en.txt"
    en.write_text("A short held-out sentence about the weather in the mountains today.\n", encoding="utf-8")
    recipe = recipe_for(tmp_path, data, {"en": str(en)})
    run(recipe)
    assert require_clean(recipe, data)["passed"] is True
    en.write_text("A different held-out sentence about a train that was late again.\n", encoding="utf-8")
    with pytest.raises(ContaminationGateError):
        require_clean(recipe, data)

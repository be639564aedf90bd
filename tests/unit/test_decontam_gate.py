"""The gate compares how a report was made with the recipe; the run's verdict comes from the gate record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import write_manifest
from nortune.config import Recipe
from nortune.decontam import require_clean, run
from nortune.decontam.gate import ContaminationGateError
from nortune.report.ledger import summarize
from nortune.report.stage import render

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "noreval_mini"
COPIED = "Hvor legger man vanligvis fra seg de våte støvlene etter en lang tur i fjellet?"
REASON = "reviewed by hand: the overlap is a public-domain proverb"


def write_train(path: Path, contaminated: bool = False) -> Path:
    rows = [("Skriv et kort dikt om høsten i Bergen.", "Regnet faller mykt over Bryggen i kveld.")]
    if contaminated:
        rows.append((COPIED, "I gangen, selvfølgelig."))
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": u},
                                                     {"role": "assistant", "content": a}]}, ensure_ascii=False) + "\n"
                            for u, a in rows), encoding="utf-8")
    return path


def recipe_for(tmp_path: Path, data: Path, noreval: Path = FIXTURE, evaluate: dict | None = None,
               **decontam) -> Recipe:
    return Recipe.model_validate({"name": "g", "runs_dir": str(tmp_path / "runs"),
                                  "evaluate": evaluate or {"source": "local", "data_dir": str(noreval)},
                                  "decontam": {"data": str(data), **decontam}})


# ---- a report made another way is stale ------------------------------------------------------------------
@pytest.mark.slow  # the decontam stage twice per setting, seven settings
@pytest.mark.parametrize("weaker", [{"methods": ["exact"]}, {"char_ngrams": [50]}, {"word_ngram": 20},
                                    {"substring_min_chars": 60}, {"question_min_words": 9},
                                    {"allow": ["Hvor legger man"]},
                                    {"normalize": {"casefold": False}}])
def test_a_report_made_with_other_settings_is_stale(tmp_path: Path, weaker: dict) -> None:
    data = write_train(tmp_path / "train.jsonl", contaminated=True)
    run(recipe_for(tmp_path, data, max_contaminated_records=5, **weaker))
    recipe = recipe_for(tmp_path, data, max_contaminated_records=5)
    key = next(iter(weaker))
    with pytest.raises(ContaminationGateError, match=rf"stale, made with other settings \(decontam\.{key}:"):
        require_clean(recipe, data)
    overridden = require_clean(recipe, data, override_reason=REASON)
    assert overridden["passed"] is False and overridden["problem"] == "stale" and overridden["override"] == REASON
    run(recipe)
    assert require_clean(recipe, data)["passed"] is True


def test_the_issue_case_exact_only_then_train_is_refused(tmp_path: Path, capsys, tiny_gemma3) -> None:
    """`nortune decontam R decontam.methods=[exact]` then `nortune train R` used to pass."""
    from nortune.cli import main

    data = write_train(tmp_path / "train.jsonl", contaminated=True)
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: issue\nruns_dir: {tmp_path / 'runs'}\nmodel:\n  source: {tiny_gemma3}\n"
                           f"train:\n  data: {data}\nevaluate:\n  source: local\n  data_dir: {FIXTURE}\n",
                           encoding="utf-8")
    assert main(["decontam", str(recipe_file), "decontam.methods=[exact]"]) == 0  # exact alone sees nothing
    assert main(["train", str(recipe_file)]) != 0
    err = capsys.readouterr().err
    assert "stale" in err and "decontam.methods" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "issue" / "train" / "manifest.json").exists()


def test_changed_test_documents_make_the_report_stale(tmp_path: Path) -> None:
    folder = tmp_path / "noreval"
    shutil.copytree(FIXTURE, folder)
    data = write_train(tmp_path / "train.jsonl")
    recipe = recipe_for(tmp_path, data, noreval=folder)
    run(recipe)
    assert require_clean(recipe, data)["passed"] is True
    quiz = folder / "nrk_quiz_qa" / "nb" / "test.jsonl"
    quiz.write_text(quiz.read_text(encoding="utf-8") + json.dumps(
        {"id": "new", "question": "Hva heter hovedstaden i Norge i dag?", "answer": "A",
         "choices": {"label": ["A", "B"], "text": ["Oslo", "Bergen"]}}, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(ContaminationGateError, match=r"test documents changed for \['nrk_quiz_qa_nob'\]"):
        require_clean(recipe, data)


def test_another_hub_revision_makes_the_report_stale(tmp_path: Path, monkeypatch) -> None:
    import datasets

    def fake_load_dataset(name, config, split, revision=None):
        path = FIXTURE / name.split("/")[-1] / config / f"{split}.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the rows come from the (faked) datasets cache
    data = write_train(tmp_path / "train.jsonl")
    run(recipe_for(tmp_path, data, evaluate={"revision": "r1"}))
    assert require_clean(recipe_for(tmp_path, data, evaluate={"revision": "r1"}), data)["passed"] is True
    with pytest.raises(ContaminationGateError, match="decontam.noreval_revision: report 'r1', recipe 'r2'"):
        require_clean(recipe_for(tmp_path, data, evaluate={"revision": "r2"}), data)


# ---- the verdict comes from the gate record training wrote -------------------------------------------------
def _trained(recipe: Recipe, gate: dict) -> Path:
    """What train writes: its manifest with the gate record (the rest of training is not needed here)."""
    folder = recipe.run_dir / "train"
    write_manifest(folder, "train", contamination_gate=gate)
    return recipe.run_dir


def _banner(run_dir: Path) -> str:
    page, _ = render(run_dir, run_dir / "report")
    return page.split("<h1>", 1)[1].split("<table>", 1)[0]


def test_override_without_any_report_is_red_not_checked(tmp_path: Path) -> None:
    data = write_train(tmp_path / "train.jsonl")
    recipe = recipe_for(tmp_path, data)
    run_dir = _trained(recipe, require_clean(recipe, data, override_reason=REASON))
    summary = summarize(run_dir)
    assert summary.contamination_ok is False and summary.contamination.startswith("NOT CHECKED")
    assert REASON in summary.contamination
    banner = _banner(run_dir)
    assert "class='warn'" in banner and "NOT CHECKED" in banner and "class='ok'" not in banner


def test_override_of_a_contaminated_report_is_red_with_the_reason(tmp_path: Path) -> None:
    data = write_train(tmp_path / "train.jsonl", contaminated=True)
    recipe = recipe_for(tmp_path, data)
    run(recipe)
    run_dir = _trained(recipe, require_clean(recipe, data, override_reason=REASON))
    summary = summarize(run_dir)
    assert summary.contamination_ok is False and summary.contamination.startswith("CONTAMINATED")
    assert "1 contaminated training records" in summary.contamination and REASON in summary.contamination
    assert "class='warn'" in _banner(run_dir)


def test_a_report_for_another_file_is_red(tmp_path: Path) -> None:
    data = write_train(tmp_path / "train.jsonl")
    recipe = recipe_for(tmp_path, data)
    run(recipe)
    run_dir = _trained(recipe, require_clean(recipe, data))
    assert summarize(run_dir).contamination_ok is True
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"text": "En annen, helt ren fil."}) + "\n", encoding="utf-8")
    run(recipe_for(tmp_path, other))  # the decontam folder now describes another (clean) file
    summary = summarize(run_dir)
    assert summary.contamination_ok is False and summary.contamination.startswith("REPORT FOR ANOTHER FILE")
    assert "class='warn'" in _banner(run_dir)


def test_a_clean_gate_is_green_and_a_run_without_training_claims_nothing(tmp_path: Path) -> None:
    data = write_train(tmp_path / "train.jsonl")
    recipe = recipe_for(tmp_path, data)
    run(recipe)
    untrained = summarize(recipe.run_dir)
    assert untrained.contamination_ok is None and untrained.contamination.startswith("not trained")
    run_dir = _trained(recipe, require_clean(recipe, data))
    summary = summarize(run_dir)
    assert summary.contamination_ok is True and summary.contamination.startswith("clean")
    banner = _banner(run_dir)
    # contamination passed; nothing else was checked, so the banner is pending, not green
    assert "&#10003; contamination: clean" in banner and "class='warn'" not in banner
    assert "<ul class='pending'>" in banner and "not run yet: NorEval: not evaluated" in banner
    _trained(recipe, {})  # a train manifest without a gate record
    assert summarize(run_dir).contamination.startswith("NOT CHECKED")


def test_preference_gate_counts_too(tmp_path: Path) -> None:
    data = write_train(tmp_path / "train.jsonl")
    recipe = recipe_for(tmp_path, data)
    run(recipe)
    run_dir = _trained(recipe, require_clean(recipe, data))
    write_manifest(run_dir / "preference", "preference", contamination_gate=require_clean(
        recipe, data, override_reason=REASON, folder="decontam-preference"))
    summary = summarize(run_dir)
    assert summary.contamination_ok is False
    assert summary.contamination.startswith("NOT CHECKED") and summary.contamination.endswith("[preference pairs]")
    shutil.copytree(run_dir / "decontam", run_dir / "decontam-preference")
    write_manifest(run_dir / "preference", "preference", contamination_gate=require_clean(
        recipe, data, folder="decontam-preference"))
    both = summarize(run_dir)
    assert both.contamination_ok is True and both.contamination.startswith("clean (SFT data: 0 records hit")

"""The stage (NorEval-schema local files), its report, the skip, the cleaned copy, the gate, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nortune.cli import main
from nortune.config import Recipe
from nortune.decontam import require_clean, run
from nortune.decontam.gate import ContaminationGateError
from nortune.decontam import sources
from nortune.jsonl import DataError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "noreval_mini"
COPIED = "Hvor legger man vanligvis fra seg de våte støvlene etter en lang tur i fjellet?"


def chat(user: str, answer: str, rid: str) -> str:
    return json.dumps({"id": rid, "messages": [{"role": "user", "content": user},
                                               {"role": "assistant", "content": answer}]}, ensure_ascii=False)


def write_train(path: Path, contaminated: bool) -> Path:
    lines = [chat("Skriv et kort dikt om høsten i Bergen.", "Regnet faller mykt over Bryggen i kveld.", "a"),
             chat("Forklar hvorfor himmelen er blå.", "Sollyset spres mest i den blå delen av spekteret.", "b")]
    if contaminated:
        lines.append(chat(COPIED, "I gangen, selvfølgelig.", "c"))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def recipe_for(tmp_path: Path, data: Path, noreval: Path = FIXTURE, **decontam) -> Recipe:
    """decontam follows evaluate: the local NorEval folder is evaluate's."""
    return Recipe.model_validate({"name": "dc", "runs_dir": str(tmp_path / "runs"),
                                  "evaluate": {"source": "local", "data_dir": str(noreval)},
                                  "decontam": {"data": str(data), **decontam}})


def test_stage_finds_a_copied_question_and_writes_everything(tmp_path: Path) -> None:
    data = write_train(tmp_path / "train.jsonl", contaminated=True)
    recipe = recipe_for(tmp_path, data, write_clean=True)
    manifest = run(recipe)
    out = recipe.run_dir / "decontam"
    report = json.loads((out / "contamination.json").read_text(encoding="utf-8"))
    assert report["training"]["records"] == 3
    assert report["test_side"]["texts_by_task"]["norcommonsenseqa_nob"] == 12  # 2 questions + 10 choices
    assert len(report["test_side"]["texts_by_task"]) == 8
    assert report["training"]["contaminated_records"] == 1
    rec = report["records"][0]
    assert rec["id"] == "c" and rec["line"] == 3
    assert set(rec["methods"]) == {"substring", "char_50gram", "char_30gram", "word_13gram", "question_answer"}
    match = rec["methods"]["substring"]["matches"][0]
    assert match["test_id"] == "norcommonsenseqa_nob/train/csq-nb-1/question"
    assert report["gate"] == {"max_contaminated_records": 0, "contaminated_records": 1, "passed": False}
    cleaned = out / "train.clean.jsonl"
    assert report["cleaned"]["kept"] == 2 and report["cleaned"]["removed"] == 1
    assert [json.loads(x)["id"] for x in cleaned.read_text(encoding="utf-8").splitlines()] == ["a", "b"]
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "| char_50gram | 1 | 1 | 0 | 79 |" in summary
    assert "| question_answer | 1 | 1 | 0 | 15 |" in summary and "**and its correct answer**" in summary
    assert manifest["metrics"]["contaminated_records"] == 1
    assert set(manifest["outputs"]) == {"contamination.json", "summary.md", "train.clean.jsonl"}


@pytest.mark.slow  # runs the decontam stage on datatrove's worker pool, more than once
def test_stage_skips_when_unchanged_and_reruns_when_data_changes(tmp_path: Path, caplog) -> None:
    data = write_train(tmp_path / "train.jsonl", contaminated=False)
    recipe = recipe_for(tmp_path, data)
    first = run(recipe)
    with caplog.at_level("INFO"):
        again = run(recipe)
    assert again["finished"] == first["finished"] and "skipped" in caplog.text
    write_train(data, contaminated=True)
    third = run(recipe)
    assert third["metrics"]["contaminated_records"] == 1


@pytest.mark.slow  # runs the decontam stage on datatrove's worker pool, more than once
def test_gate_contract(tmp_path: Path) -> None:
    data = write_train(tmp_path / "train.jsonl", contaminated=True)
    recipe = recipe_for(tmp_path, data)
    with pytest.raises(ContaminationGateError, match="no completed contamination report"):
        require_clean(recipe, data)
    run(recipe)
    with pytest.raises(ContaminationGateError, match="1 contaminated training records"):
        require_clean(recipe, data)
    result = require_clean(recipe, data, override_reason="known overlap, reviewed by hand")
    assert result["passed"] is False and result["override"] == "known overlap, reviewed by hand"
    assert "1 contaminated" in result["reason"]
    lenient = recipe.model_copy(update={"decontam": recipe.decontam.model_copy(
        update={"max_contaminated_records": 1})})
    assert require_clean(lenient, data)["passed"] is True
    other = write_train(tmp_path / "other.jsonl", contaminated=False)
    with pytest.raises(ContaminationGateError, match="another file"):
        require_clean(recipe, other)
    clean_recipe = recipe_for(tmp_path, other)
    run(clean_recipe)
    ok = require_clean(clean_recipe, other)
    assert ok["passed"] is True and ok["contaminated_records"] == 0 and ok["override"] is None


def test_bad_training_input_fails_with_file_line_before_work(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(chat("a", "b", "1") + "\n{not json\n", encoding="utf-8")
    recipe = recipe_for(tmp_path, data)
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        run(recipe)
    failed = json.loads((recipe.run_dir / "decontam" / "failed.json").read_text())  # no index was built
    assert failed["user_error"] and "bad.jsonl:2" in failed["error"]
    assert sorted(p.name for p in (recipe.run_dir / "decontam").iterdir()) == ["failed.json", "recipe.resolved.yaml"]
    data.write_text(json.dumps({"messages": [{"role": "user"}]}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:1: messages\[0\].content"):
        run(recipe)
    data.write_text(json.dumps({"prompt": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="text_fields"):
        run(recipe)
    assert run(recipe_for(tmp_path, data, text_fields=["prompt"]))["metrics"]["records"] == 1


def test_missing_test_field_and_missing_task_file(tmp_path: Path) -> None:
    import shutil

    data = write_train(tmp_path / "train.jsonl", contaminated=False)
    folder = tmp_path / "noreval"
    shutil.copytree(FIXTURE, folder)
    quiz = folder / "nrk_quiz_qa" / "nb" / "test.jsonl"
    rows = [json.loads(line) for line in quiz.read_text(encoding="utf-8").splitlines()]
    del rows[0]["question"]
    quiz.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(DataError, match=r"nrk_quiz_qa/nb/test.jsonl:1: missing field 'question'"):
        run(recipe_for(tmp_path, data, noreval=folder))
    quiz.unlink()
    missing = r"evaluate.data_dir \(task nrk_quiz_qa_nob\): .*nrk_quiz_qa/nb/test.jsonl: file not found"
    with pytest.raises(ValueError, match=missing):
        recipe_for(tmp_path, data, noreval=folder)  # refused at load, before any work


def test_extra_benchmark_parquet_and_plain_text_training(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    passage = "Nordlyset er et lysfenomen som oppstår når partikler fra sola treffer atmosfæren."
    pq.write_table(pa.table({"key": ["x1"], "passage": [passage]}), tmp_path / "bench.parquet")
    data = tmp_path / "corpus.txt"
    data.write_text("en helt vanlig linje\n" + passage + " Det er vakkert.\n", encoding="utf-8")
    recipe = recipe_for(tmp_path, data, extra=[
        {"name": "mybench", "path": str(tmp_path / "bench.parquet"), "fields": ["passage"], "id_field": "key"}])
    run(recipe)
    report = json.loads((recipe.run_dir / "decontam" / "contamination.json").read_text(encoding="utf-8"))
    assert report["records"][0]["line"] == 2
    assert report["records"][0]["methods"]["char_50gram"]["matches"][0]["test_id"] == "mybench/x1/passage"


def test_hf_loader_reads_what_evaluate_scores_at_its_revision(monkeypatch) -> None:
    """The real loader is ``datasets.load_dataset``; here it is replaced by the local fixture rows."""
    calls = []

    def fake_load_dataset(name, config, split, revision=None):
        calls.append((name, config, split, revision))
        folder = FIXTURE / name.split("/")[-1] / config / f"{split}.jsonl"
        return [json.loads(line) for line in folder.read_text(encoding="utf-8").splitlines()]

    import datasets

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # the rows come from the (faked) datasets cache
    section = Recipe.model_validate({"name": "x", "evaluate": {"revision": "abc123"}}).decontam_test_side()
    texts, origins = sources.load_test_side(section)
    # evaluate's catalogue: dataset, config and scored split of every family, at evaluate's revision
    assert ("ltg/nortruthfulqa_mc", "nn", "validation", "abc123") in calls and len(calls) == 8
    assert ("ltg/norcommonsenseqa", "nb", "train", "abc123") in calls
    assert origins["nrk_quiz_qa_nob"] == {"origin": "hf:ltg/nrk_quiz_qa:nb:test", "revision": "abc123"}
    uids = {t.uid for t in texts}
    assert "noropenbookqa_nno/test/obqa-nn-1/fact" in uids
    assert "nortruthfulqa_mc_nob/validation/row1/mc1_targets.choices/1" in uids


@pytest.mark.slow  # runs the decontam stage on datatrove's worker pool, more than once
def test_cli_exit_code_says_pass_or_fail(tmp_path: Path, capsys) -> None:
    data = write_train(tmp_path / "train.jsonl", contaminated=True)
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: cli\nruns_dir: {tmp_path / 'runs'}\ndecontam:\n  data: {data}\n"
                           f"evaluate:\n  source: local\n  data_dir: {FIXTURE}\n", encoding="utf-8")
    assert main(["decontam", str(recipe_file)]) == 1
    assert main(["decontam", str(recipe_file), "decontam.max_contaminated_records=1"]) == 0
    assert main(["decontam", str(recipe_file), "decontam.bogus=1"]) == 2
    assert "decontam.bogus: unknown key" in capsys.readouterr().err

"""A run that stopped after training says what it has not checked: never "no regression" for a model nobody
evaluated, never a verified export that was not made."""

import json

import pytest

from conftest import FIXTURES, write_recipe
from nortune.cli import main

pytestmark = pytest.mark.slow
REPO = FIXTURES.parents[1]
DEMO = REPO / "data/demo"


def test_curate_decontam_plan_train_on_the_example_data_is_reported_as_not_evaluated(tiny_gemma3, tmp_path,
                                                                                      capsys):
    sources = [{"name": "chat", "path": str(DEMO / "chat.jsonl")},
               {"name": "chat-nb", "path": str(DEMO / "raw/chat_nb.jsonl")},
               {"name": "instructions", "path": str(DEMO / "raw/instructions.csv")},
               {"name": "notes", "path": str(DEMO / "raw/notes.txt")}]
    recipe = write_recipe(tmp_path / "r.yaml", tiny_gemma3, tmp_path / "runs", train={"data": None, "max_steps": 2},
                          curate={"sources": sources},
                          evaluate={"source": "local", "data_dir": str(DEMO / "noreval")})
    assert main(["run", str(recipe), "--only", "curate,decontam,plan,train,report"]) == 0
    # every command ends with the next one to run: here the first stage that is not current
    assert f"next: nortune evaluate {recipe} --model base   (evaluate-base: " in capsys.readouterr().err
    assert main(["plan", str(recipe)]) == 0
    assert f"next: nortune evaluate {recipe} --model base" in capsys.readouterr().err
    run = tmp_path / "runs" / "tiny"
    assert {p.parent.name for p in run.glob("*/manifest.json")} == {"curate", "decontam", "plan", "train", "report"}

    capsys.readouterr()
    assert main(["runs", str(tmp_path / "runs"), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["noreval_state"] == "not evaluated" and row["regressions"] == [] and row["export"] == "not exported"
    assert row["contamination_ok"] is True and "SAMPLE SETS, NOT NorEval" in row["contamination"]
    assert main(["runs", str(tmp_path / "runs")]) == 0
    table = capsys.readouterr().out
    assert "| not evaluated | not measured | not exported |" in table and "none" not in table

    page = (run / "report" / "report.html").read_text(encoding="utf-8")
    summary = (run / "report" / "summary.md").read_text(encoding="utf-8")
    for words in ("not run yet: NorEval: not evaluated", "not run yet: export: not exported",
                  "not run yet: forgetting: not measured"):
        assert words in page
    assert "<ul class='pending'>" in page and "<ul class='ok'>" not in page
    assert "- not run: NorEval: not evaluated" in summary and "- not run: export: not exported" in summary
    assert "- passed: contamination: clean" in summary and "SAMPLE SETS, NOT NorEval" in summary
    for shown in (page, summary, table):
        assert "no regression" not in shown.lower() and "no significant regression" not in shown.lower()
    decontam = (run / "decontam" / "summary.md").read_text(encoding="utf-8")
    assert "**SAMPLE SETS, NOT NorEval**" in decontam

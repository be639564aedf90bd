"""`nortune run` on a tiny model: stages in order, skip when current, report in a real browser."""

import json

import pytest

from conftest import FIXTURES, write_pairs, write_recipe
from nortune import browser
from nortune.cli import main
from nortune.config import ConfigError, load_recipe
from nortune.pipeline import next_step, run_pipeline, select

pytestmark = pytest.mark.slow
NAMES = ["curate", "decontam", "plan", "train", "preference", "evaluate-base", "evaluate-tuned",
         "evaluate-preference", "export", "report"]
# Export (llama.cpp conversion) has its own tests in test_export.py; here it would only add minutes.
STAGES_RUN = [n for n in NAMES if n != "export"]
REPO = FIXTURES.parents[1]


def test_stage_selection():
    assert select(NAMES, "plan", "train", None) == ["plan", "train"]
    assert select(NAMES, None, None, ["report", "curate"]) == ["curate", "report"]
    with pytest.raises(ConfigError, match="unknown stage 'nope'"):
        select(NAMES, "nope", None, None)
    with pytest.raises(ConfigError, match="comes after"):
        select(NAMES, "train", "plan", None)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_gemma3):
    tmp = tmp_path_factory.mktemp("pipeline")
    pairs = write_pairs(tmp / "pairs.jsonl")
    recipe = load_recipe(write_recipe(tmp / "r.yaml", tiny_gemma3, tmp / "runs", train={"max_steps": 2},
                                      preference={"data": str(pairs), "max_steps": 2, "loss_type": "ipo"},
                                      evaluate={"source": "local", "data_dir": str(REPO / "data/demo/noreval"),
                                                "limit": 2, "dtype": "float32", "bootstrap_samples": 200,
                                                "num_fewshot": {"noropenbookqa_nob": 0, "noropenbookqa_nno": 0}}))
    return recipe, run_pipeline(recipe, only=STAGES_RUN)


def test_pipeline_runs_every_enabled_stage_in_order(finished_run):
    recipe, results = finished_run
    assert [(r["stage"], r["action"]) for r in results] == [
        ("curate", "off"), ("decontam", "run"), ("plan", "run"), ("train", "run"), ("preference", "run"),
        ("evaluate-base", "run"), ("evaluate-tuned", "run"), ("evaluate-preference", "run"), ("report", "run")]
    assert (recipe.run_dir / "evaluate" / "tuned" / "compare" / "compare.json").is_file()
    # SFT-only vs SFT + preference, paired on the same items and prompts.
    versus = json.loads((recipe.run_dir / "evaluate" / "preference" / "compare" / "compare.json").read_text())
    assert versus["base"].endswith("evaluate/tuned/results.json") and len(versus["deltas"]) == 8
    assert all(len(d["best_ci"]) == 2 for d in versus["deltas"])
    assert json.loads((recipe.run_dir / "pipeline.json").read_text())[3]["metrics"]["steps"] == 2
    # The contamination gate passed for real: decontam ran on the same file before train.
    train = json.loads((recipe.run_dir / "train" / "manifest.json").read_text())
    assert train["contamination_gate"]["passed"] is True


def test_a_second_run_skips_everything_and_a_lost_stage_reruns(finished_run, capsys):
    recipe, _ = finished_run
    again = run_pipeline(recipe, dry_run=True, only=STAGES_RUN)
    assert {r["stage"]: r["action"] for r in again if r["action"] != "off"} == {
        "decontam": "skip", "plan": "skip", "train": "skip", "preference": "skip", "evaluate-base": "skip",
        "evaluate-tuned": "skip", "evaluate-preference": "skip", "report": "skip"}
    (recipe.run_dir / "train" / "manifest.json").rename(recipe.run_dir / "train" / "manifest.killed")
    try:
        after_kill = {r["stage"]: (r["action"], r["why"]) for r in run_pipeline(recipe, dry_run=True,
                                                                                   only=STAGES_RUN)}
        assert after_kill["train"] == ("run", "no finished result yet")
        assert after_kill["decontam"][0] == "skip" and after_kill["report"][0] == "run"
        assert next_step(recipe, "r.yaml", ["train.seed=3"], False, "run") == (
            "next: nortune train r.yaml train.seed=3   (train: no finished result yet)")
        assert next_step(recipe, "r.yaml", [], True, "evaluate") == (
            "next: fix what is reported above, then `nortune evaluate r.yaml` again")
    finally:
        (recipe.run_dir / "train" / "manifest.killed").rename(recipe.run_dir / "train" / "manifest.json")


def test_report_is_self_contained_and_renders_in_chromium(finished_run):
    recipe, _ = finished_run
    page = (recipe.run_dir / "report" / "report.html").read_text()
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    assert "Training (SFT)" in page and "Contamination check" in page and "data:image/png;base64," in page
    if browser.opted_out():  # explicit and visible; a missing browser fails the report stage instead
        pytest.skip(f"{browser.OPT_OUT_ENV}=off")
    manifest = json.loads((recipe.run_dir / "report" / "manifest.json").read_text())
    assert manifest["metrics"]["console_errors"] == 0 and manifest["metrics"]["broken_images"] == 0
    assert manifest["metrics"]["images"] >= 1
    assert (recipe.run_dir / "report" / "screenshot.png").stat().st_size > 10_000


def test_runs_ledger_lists_the_run(finished_run, capsys):
    recipe, _ = finished_run
    assert main(["runs", str(recipe.runs_dir), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["recipe"] == "tiny" and row["contamination"].startswith("clean")
    assert row["stages_done"] == ["decontam", "plan", "train", "preference", "evaluate/base", "evaluate/tuned",
                                  "evaluate/preference"]
    assert row["noreval_tuned"] is not None and row["delta_vs_base"] is not None
    # the demo's sample sets, 2 items per task: marked as such, and no verdict drawn from them
    assert row["sample_sets"] is True and row["noreval_state"].startswith("too few items for a verdict")
    assert main(["runs", str(recipe.runs_dir)]) == 0
    table = capsys.readouterr().out
    assert "(SAMPLE SETS, NOT NorEval)" in table and "| too few items for a verdict" in table


def test_compare_puts_runs_side_by_side_with_paired_deltas(finished_run, tmp_path, capsys):
    recipe, _ = finished_run
    assert main(["compare", str(recipe.run_dir), str(recipe.run_dir), "--html", str(tmp_path / "c.html")]) == 0
    table = capsys.readouterr().out
    assert "| Commonsense BM |" in table and "| **average (best of prompts)** |" in table
    assert " pp [" in table  # the delta vs base with its confidence interval
    assert "(too few items (2 < 20): no verdict)" in table and "REGRESSION" not in table
    assert table.startswith("**tiny: SAMPLE SETS, NOT NorEval")
    assert "<table>" in (tmp_path / "c.html").read_text()


def test_a_missing_browser_fails_the_report_with_the_install_command(finished_run, monkeypatch):
    from nortune import report
    from nortune.errors import StageFailed
    from nortune.runs import Options, read_failure

    recipe, _ = finished_run
    monkeypatch.setattr(browser, "available", lambda: False)
    monkeypatch.delenv(browser.OPT_OUT_ENV, raising=False)
    with pytest.raises(StageFailed, match="apt-get install chromium chromium-driver"):
        report.run(recipe, Options(force=True))  # the page is current: checked in a browser before
    assert "NORTUNE_BROWSER_CHECK=off" in read_failure(recipe.run_dir / "report")["error"]
    assert not (recipe.run_dir / "report" / "manifest.json").exists()
    monkeypatch.setenv(browser.OPT_OUT_ENV, "off")  # the explicit opt-out is recorded, not silent
    assert report.run(recipe)["metrics"]["browser_check"] == "off (NORTUNE_BROWSER_CHECK=off)"

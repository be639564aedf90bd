"""`nortune evaluate --smoke`: every task on a few items, 0 shots, in its own run folder; it says it is a smoke
test wherever its numbers appear and draws no verdict."""

import json

import pytest

from conftest import FIXTURES, write_recipe
from nortune.cli import main
from nortune.config.names import RECIPE_FAMILIES

pytestmark = pytest.mark.slow
REPO = FIXTURES.parents[1]


def test_smoke_runs_every_task_on_two_items_at_zero_shots_and_says_so(tiny_gemma3, tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_gemma3, tmp_path / "runs",
                          evaluate={"source": "local", "data_dir": str(REPO / "data/demo/noreval"), "dtype": "float32",
                                    "perplexity": {}})  # the packaged guard texts: a smoke test leaves them out
    assert main(["evaluate", str(recipe), "--smoke", "--model", "tuned"]) == 2  # the base model only
    assert main(["evaluate", str(recipe), "--smoke"]) == 0
    out = capsys.readouterr()
    assert not (tmp_path / "runs" / "tiny").exists()  # the run's own folder is untouched
    smoke = tmp_path / "runs" / "tiny-smoke" / "evaluate" / "base"
    summary = json.loads((smoke / "results.json").read_text(encoding="utf-8"))["nortune"]
    assert set(summary["num_fewshot"]) == set(RECIPE_FAMILIES) and set(summary["num_fewshot"].values()) == {0}
    assert summary["limit"] == 2 and set(summary["tasks"]) == set(RECIPE_FAMILIES)
    assert summary["note"].startswith("SMOKE TEST, NO VERDICT: 2 items per task and prompt, 0 shots")
    assert "SMOKE TEST, NO VERDICT" in (smoke / "report.md").read_text(encoding="utf-8")
    assert not (smoke / "perplexity.json").exists() and not (smoke / "compare").exists()
    assert "SMOKE TEST" in out.err or "SMOKE TEST" in out.out

    assert main(["runs", str(tmp_path / "runs")]) == 0
    table = capsys.readouterr().out
    assert "(SMOKE TEST; SAMPLE SETS, NOT NorEval)" in table and "smoke test: no verdict" in table

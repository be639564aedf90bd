"""`nortune run` exits non-zero when a GGUF file fails verification, as `nortune export` does.

The export stage writes its files and manifest even when a quantised file fails its floor
(the files are kept for inspection); the pipeline must still report the run as failed.
"""

from __future__ import annotations

import nortune.pipeline as pipeline
from nortune.cli import main

EXPORT_OK = {"stage": "export", "action": "run", "metrics": {"failed": [], "passed": True}}
EXPORT_BAD = {"stage": "export", "action": "skip",
              "metrics": {"failed": ["demo-Q4_K_M.gguf"], "passed": False}}


def test_unverified_names_each_failed_file():
    assert pipeline.unverified([EXPORT_OK]) == []
    assert pipeline.unverified([{"stage": "train", "action": "run"}, EXPORT_BAD]) == ["export: demo-Q4_K_M.gguf"]


def test_run_exits_1_on_a_failed_verification(monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: [EXPORT_BAD])
    assert main(["run", "configs/demo.yaml"]) == 1
    assert "GGUF verification FAILED for export: demo-Q4_K_M.gguf" in capsys.readouterr().err
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: [EXPORT_OK])
    assert main(["run", "configs/demo.yaml"]) == 0


def test_problems_order_and_the_regression_switch():
    from nortune.config import load_recipe

    recipe = load_recipe("configs/demo.yaml")
    regressed = {"stage": "evaluate-tuned", "action": "run", "regressions": ["nrk_quiz_qa_nob"]}
    failed = {"stage": "train", "action": "failed", "error": "train: out of memory"}
    assert pipeline.problems([EXPORT_OK], recipe) == []
    assert pipeline.problems([failed, EXPORT_BAD], recipe) == ["train: out of memory"]  # nothing after it ran
    lines = pipeline.problems([regressed, EXPORT_BAD], recipe)
    assert lines[0].startswith("SIGNIFICANT REGRESSION in evaluate-tuned: nrk_quiz_qa_nob")
    assert lines[1].startswith("GGUF verification FAILED")
    lenient = load_recipe("configs/demo.yaml", ["evaluate.fail_on_regression=false"])
    assert pipeline.problems([regressed], lenient) == []


def test_forgetting_fails_the_run_unless_the_recipe_allows_it(monkeypatch, capsys):
    from nortune.config import load_recipe
    from nortune.runner import Outcome

    recipe = load_recipe("configs/demo.yaml")
    manifest = {"metrics": {}, "forgetting": ["en"], "allow_forgetting": False}
    forgot = pipeline.result_line("evaluate-tuned", Outcome(manifest, "run", "no finished result yet"))
    assert forgot["forgetting"] == ["en"] and forgot["allow_forgetting"] is False
    assert pipeline.forgetting([forgot]) == ["evaluate-tuned: en perplexity"]
    (line,) = pipeline.problems([forgot], recipe)
    assert line.startswith("FORGETTING in evaluate-tuned: en perplexity") and "allow_forgetting: true" in line
    allowed = pipeline.result_line("evaluate-tuned", Outcome({**manifest, "allow_forgetting": True}, "skip", "current"))
    assert pipeline.forgetting([allowed]) == [] and pipeline.problems([allowed], recipe) == []
    # without a finding the manifest carries no key, and nothing is flagged
    clean = pipeline.result_line("evaluate-tuned", Outcome({"metrics": {}}, "run", ""))
    assert "forgetting" not in clean and pipeline.problems([clean], recipe) == []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: [forgot])
    assert main(["run", "configs/demo.yaml"]) == 1
    assert "FORGETTING in evaluate-tuned: en perplexity" in capsys.readouterr().err
    monkeypatch.setattr(pipeline, "run_pipeline", lambda *a, **k: [allowed])
    assert main(["run", "configs/demo.yaml"]) == 0

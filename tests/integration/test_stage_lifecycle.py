"""The runner owns every stage's lifecycle under `nortune run` (issue 41).

One walk over the pipeline on a tiny model: three `nortune run`s per stage make its work raise a plain
bug, then ``MemoryError``, then Ctrl-C. Every failure leaves its record in that stage's folder and in
``pipeline.json``, the report shows it in red, and every next run resumes at that stage, skipping the
ones before it and saying why. Every stage's fingerprint is computed exactly once per run, and the
adapter plan only by the plan stage. Each stage runs for real once, in the run after its failures.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest

from conftest import FIXTURES, write_pairs, write_recipe
from nortune import pipeline
from nortune.cli import main
from nortune.config import load_recipe
from nortune.report.stage import render

pytestmark = pytest.mark.slow
REPO = FIXTURES.parents[1]
# Export (llama.cpp) has its own tests; here its work only fails, and the last run leaves it out.
WALK = ["curate", "decontam", "plan", "train", "preference", "evaluate-base", "evaluate-tuned",
        "evaluate-preference", "export", "report"]
ORIGINAL = pipeline.STAGES  # each run instruments these afresh
KINDS = [(RuntimeError, lambda: RuntimeError("injected bug")), (MemoryError, MemoryError),
         (KeyboardInterrupt, KeyboardInterrupt)]


def _instrumented(fault_at: str, exc: BaseException, counts: Counter) -> tuple:
    def counting(stage):
        def fingerprint(recipe):
            counts[stage.name] += 1
            return stage.fingerprint(recipe)
        return replace(stage, fingerprint=fingerprint)

    def failing(ctx):
        raise exc

    return tuple(counting(replace(s, work=failing) if s.name == fault_at else s) for s in ORIGINAL)


@pytest.fixture(scope="module")
def recipe_path(tmp_path_factory, tiny_gemma3):
    tmp = tmp_path_factory.mktemp("lifecycle")
    pairs = write_pairs(tmp / "pairs.jsonl")
    path = write_recipe(tmp / "r.yaml", tiny_gemma3, tmp / "runs", train={"max_steps": 1, "data": None},
                        curate={"sources": [{"name": "chat", "path": str(REPO / "data/demo/chat.jsonl")}],
                                "allow_shortfall": True},
                        preference={"data": str(pairs), "max_steps": 1, "loss_type": "ipo"},
                        evaluate={"source": "local", "data_dir": str(REPO / "data/demo/noreval"), "limit": 2,
                                  "dtype": "float32", "bootstrap_samples": 100,
                                  "num_fewshot": {"noropenbookqa_nob": 0, "noropenbookqa_nno": 0}})
    return str(path)


def test_each_stage_fails_on_record_and_the_next_run_resumes_there(recipe_path, monkeypatch):
    import nortune.plan

    monkeypatch.setenv("NORTUNE_BROWSER_CHECK", "off")  # the page's browser check has its own tests
    recipe = load_recipe(recipe_path)
    build_plan = nortune.plan.build_plan
    for index, stage in enumerate(WALK):
        for attempt, (kind, make) in enumerate(KINDS):
            _fail_at(recipe, recipe_path, monkeypatch, build_plan, index, stage, attempt, kind, make())

    # The last run, with no fault: everything before the report skips, the report runs.
    counts = Counter()
    monkeypatch.setattr(pipeline, "STAGES", _instrumented("none", RuntimeError(), counts))
    assert main(["run", recipe_path, "--only", ",".join(s for s in WALK if s != "export")]) == 0
    record = {r["stage"]: r["action"] for r in json.loads((recipe.run_dir / "pipeline.json").read_text())}
    assert record == {**{s: "skip" for s in WALK if s not in ("export", "report")}, "report": "run"}
    assert counts == Counter({s: 1 for s in record})


def _fail_at(recipe, recipe_path, monkeypatch, build_plan, index, stage, attempt, kind, exc):
    """One `nortune run` whose ``stage`` raises ``exc``; ``attempt`` 0 is the first failure at this stage."""
    import nortune.plan

    counts: Counter = Counter()
    monkeypatch.setattr(nortune.plan, "build_plan",
                        lambda *a, counts=counts, **k: counts.update(["build_plan"]) or build_plan(*a, **k))
    monkeypatch.setattr(pipeline, "STAGES", _instrumented(stage, exc, counts))
    only = [s for s in WALK if s != "export" or stage == "export"]
    if kind is KeyboardInterrupt:
        assert main(["run", recipe_path, "--only", ",".join(only)]) == 130
    else:
        with pytest.raises(kind):
            main(["run", recipe_path, "--only", ",".join(only)])

    folder = recipe.run_dir / pipeline.STAGE_FOLDERS[stage]
    failed = json.loads((folder / "failed.json").read_text())
    assert failed["type"] == kind.__name__ and failed["interrupted"] is (kind is KeyboardInterrupt), failed
    assert not (folder / "manifest.json").exists()
    record = {r["stage"]: r for r in json.loads((recipe.run_dir / "pipeline.json").read_text())}
    assert record[stage]["action"] == ("interrupted" if kind is KeyboardInterrupt else "failed")
    for before in WALK[:index if attempt else max(index - 1, 0)]:
        if before in record:  # resumed: every earlier stage skipped, saying why
            assert (record[before]["action"], record[before]["why"]) == (
                "skip", "manifest matches the recipe and inputs"), record[before]
    previous = WALK[index - 1] if index and not attempt else None
    if previous not in (None, "export"):  # the stage that failed last time ran for real this time
        assert record[previous]["action"] == "run" and (
            recipe.run_dir / pipeline.STAGE_FOLDERS[previous] / "manifest.json").is_file()
    # One fingerprint per stage the runner reached; none for the stages after a failure.
    reached = {s for s, r in record.items() if r["action"] in ("run", "skip", "failed", "interrupted")}
    # The adapter plan is worked out by the plan stage alone: train and preference read plan/plan.json.
    planned = 1 if record.get("plan", {}).get("action") == "run" else 0
    assert counts == Counter({**{s: 1 for s in reached}, "build_plan": planned}), (stage, counts)
    if stage != "report":  # the report shows the failure in red (after an interrupt: as the next one will)
        if kind is KeyboardInterrupt:
            assert record.get("report", {}).get("action") != "run"
            page, _ = render(recipe.run_dir, recipe.run_dir / "report")
        else:
            assert record["report"]["action"] == "run"
            page = (recipe.run_dir / "report" / "report.html").read_text()
        section = page[page.index(f"<h2 id='{stage}'>"):]
        section = section[:section.index("<h2", 4)] if "<h2" in section[4:] else section
        assert "This stage FAILED" in section, stage

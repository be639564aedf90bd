"""A suite through ``nortune evaluate``'s stage code on a tiny model: a generation task, a
classification task and a family whose metric code cannot be imported, offline, --limit 1."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import REPO, write_recipe


@pytest.mark.slow  # evaluates a tiny model through lm-eval
def test_generation_and_classification_tasks_run_and_the_rest_is_named(tmp_path, tiny_gemma3, monkeypatch):
    import nortune.evaluate.tasks as tasks
    from nortune.config import load_recipe
    from nortune import evaluate

    # norec's utils.py imports sklearn: unimportable here, as bert_score is for norsumm on most machines.
    tasks._why_not_computed.cache_clear()
    monkeypatch.delitem(sys.modules, "lm_eval.tasks.noreval.norec.utils", raising=False)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    try:
        recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_gemma3, tmp_path / "runs", evaluate={
            "source": "local", "data_dir": str(REPO / "data/demo/noreval"), "device": "cpu", "limit": 1,
            "suite": ["ncb", "noridiom_nob", "norec_sentence"], "prompts": ["p0", "p1"], "batch_size": 4}))
        evaluate.run(recipe, label="base")
    finally:
        tasks._why_not_computed.cache_clear()
    out = recipe.run_dir / "evaluate" / "base"
    raw = json.loads((out / "results.json").read_text())
    assert set(raw["results"]) == {"ncb", "noridiom_nob_p0", "noridiom_nob_p1"}
    assert set(raw["results"]["noridiom_nob_p0"]) >= {"em,none", "fscore,none"}  # the YAML's own metrics
    summary = raw["nortune"]
    assert list(summary["not_computed"]) == ["norec_sentence"] and "sklearn" in summary["not_computed"]["norec_sentence"]
    assert summary["execution"]["batch_size"] == 4
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {(r["family"], r["prompt"]) for r in rows} == {("ncb", "p0"), ("noridiom_nob", "p0"), ("noridiom_nob", "p1")}
    for row in rows:
        if row["family"] == "ncb":  # log-likelihood of the correct vs the wrong sentence
            assert len(row["loglikelihoods"]) == 2 and set(row["metrics"]) == {"acc"} and "generation" not in row
            assert row["metrics"]["acc"] == float(row["loglikelihoods"][0] > row["loglikelihoods"][1])
        else:  # lm-eval's generate_until through the nortune backend
            assert isinstance(row["generation"], str) and row["target"] == "glimrer" and row["choices"] == []
            assert set(row["metrics"]) == {"em", "fscore"} and row["metrics"]["em"] in (0.0, 1.0)
            assert row["context"].endswith("Det er ikke gull alt som")

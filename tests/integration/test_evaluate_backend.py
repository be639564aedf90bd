"""The nortune backend against lm-eval's own `hf` model, item by item; resume; tuned = base + adapter."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import FIXTURES, REPO, write_recipe

pytestmark = pytest.mark.slow


def _evaluate(model: str, folder: Path, families: list[str], data_dir: Path, **model_args):
    import lm_eval

    from nortune.evaluate import backend  # noqa: F401  registers "nortune"
    from nortune.evaluate.tasks import PROMPTS, build_tasks, task_specs

    settings = SimpleNamespace(tasks=families, prompts=list(PROMPTS), source="local", data_dir=str(data_dir),
                               revision=None, extra_tasks=[])
    tasks = build_tasks(task_specs(settings, {})[0])
    args = {"pretrained": str(folder), "dtype": "float32", "device": "cpu", **model_args}
    return lm_eval.simple_evaluate(model=model, model_args=args, tasks=list(tasks.values()), log_samples=True,
                                   batch_size=4 if model == "hf" else 1)


@pytest.mark.parametrize("kind", ["gemma3", "gemma4"])
def test_same_loglikelihoods_and_predictions_as_lm_eval_hf(kind, tiny_gemma3, tiny_gemma4):
    # The tiny models' sliding window is 16 tokens: every context here is longer, so the cache
    # path through sliding-window layers is exercised too. Small batches force several batches.
    folder = tiny_gemma3 if kind == "gemma3" else tiny_gemma4
    families = ["norcommonsenseqa_nob", "nortruthfulqa_mc_nno"] if kind == "gemma3" \
        else ["nortruthfulqa_mc_nob"]
    ours = _evaluate("nortune", folder, families, FIXTURES / "noreval_mini", batch_tokens=96)
    theirs = _evaluate("hf", folder, families, FIXTURES / "noreval_mini")
    compared = 0
    for task, samples in theirs["samples"].items():
        mine = {s["doc_id"]: s for s in ours["samples"][task]}
        assert len(mine) == len(samples)
        for sample in samples:
            other = mine[sample["doc_id"]]
            assert other["arguments"] == sample["arguments"]
            for (a,), (b,) in zip(sample["resps"], other["resps"]):
                assert b[0] == pytest.approx(a[0], abs=1e-4), (task, sample["doc_id"])
                assert b[1] == a[1]
                compared += 1
            assert other["acc"] == sample["acc"]
            assert other.get("acc_norm") == sample.get("acc_norm")
    assert compared >= (30 if kind == "gemma3" else 10)


def test_stage_resumes_from_cached_requests_and_evaluates_the_adapter(tiny_gemma3, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from nortune.cli import main
    from nortune.evaluate.backend import PrefixSharingLM

    recipe = write_recipe(tmp_path / "r.yaml", tiny_gemma3, tmp_path / "runs",
                          evaluate={"source": "local", "data_dir": str(REPO / "data" / "demo" / "noreval"),
                                    "tasks": ["nrk_quiz_qa_nob", "nortruthfulqa_mc_nno"],
                                    "prompts": ["p0", "p2"], "limit": 3, "batch_tokens": 48, "bootstrap_samples": 200})
    out = tmp_path / "runs" / "tiny" / "evaluate" / "base"
    real = PrefixSharingLM._score_batch
    calls = {"n": 0}

    def dies_after_three(self, batch):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt("killed")
        yield from real(self, batch)

    monkeypatch.setattr(PrefixSharingLM, "_score_batch", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        main(["evaluate", str(recipe), "--model", "base"])
    assert not (out / "manifest.json").exists()
    counted = {"rows": 0}

    def counting(self, batch):
        counted["rows"] += sum(len(g.members) for g in batch)
        yield from real(self, batch)

    monkeypatch.setattr(PrefixSharingLM, "_score_batch", counting)
    assert main(["evaluate", str(recipe), "--model", "base"]) == 0
    total = sum(len(json.loads(line)["loglikelihoods"]) for line in (out / "samples.jsonl").open())
    assert 0 < counted["rows"] < total  # the three finished batches came from the cache
    report = (out / "report.md").read_text()
    assert "SAMPLE SETS, NOT NorEval" in report and (out / "chart.png").is_file()
    results = json.loads((out / "results.json").read_text())
    assert "nrk_quiz_qa_nob_p0" in results["results"] and results["nortune"]["headline"]["complete"] is False
    run = results["nortune"]["execution"]  # how it ran: batch settings, wall time, peak memory
    assert run["batch_tokens"] == 48 and run["memory_gib"] > 0 and run["wall_s"] > 0 and run["peak_rss_gib"] > 0.1
    assert f"batch_tokens 48, memory_gib {run['memory_gib']}" in report and "peak resident memory" in report

    # tuned = base + train/adapter_lora (a zero-initialised LoRA: same scores, no regression)
    train = tmp_path / "runs" / "tiny" / "train"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_gemma3),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(train / "adapter_lora")
    (train / "manifest.json").write_text(json.dumps({"fingerprint": {"x": 1}, "finished": 1.0}))
    assert main(["evaluate", str(recipe)]) == 0  # both: base skipped, tuned evaluated, compared
    compare = json.loads((tmp_path / "runs" / "tiny" / "evaluate" / "tuned" / "compare" / "compare.json").read_text())
    assert compare["regressions"] == [] and all(d["best"] == 0 for d in compare["deltas"])
    assert "SAMPLE SETS, NOT NorEval" in (out.parent / "tuned" / "compare" / "compare.md").read_text()

"""The nortune backend against lm-eval's own `hf` model, item by item; resume; tuned = base + adapter."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import FIXTURES, REPO, finish_train_stage, write_recipe
from nortune.config import load_recipe

pytestmark = pytest.mark.slow


def _evaluate(model: str, folder: Path, families: list[str], data_dir: Path, shots=None, limit=None, **model_args):
    import lm_eval

    from nortune.evaluate import backend  # noqa: F401  registers "nortune"
    from nortune.evaluate.tasks import PROMPTS, build_tasks, task_specs

    settings = SimpleNamespace(families=families, prompts=list(PROMPTS), source="local", data_dir=str(data_dir),
                               revision=None, extra_tasks=[])
    tasks = build_tasks(task_specs(settings, shots or {})[0])
    args = {"pretrained": str(folder), "dtype": "float32", "device": "cpu", **model_args}
    return lm_eval.simple_evaluate(model=model, model_args=args, tasks=list(tasks.values()), log_samples=True,
                                   batch_size=4 if model == "hf" else 1, limit=limit, fewshot_random_seed=1234)


def _same_as_hf(ours, theirs) -> int:
    """Every choice's log-likelihood (1e-4) and greedy flag, and every acc / acc_norm, equal; returns the count."""
    compared = 0
    for task, samples in theirs["samples"].items():
        mine = {s["doc_id"]: s for s in ours["samples"][task]}
        assert len(mine) == len(samples)
        for sample in samples:
            other = mine[sample["doc_id"]]
            assert other["arguments"] == sample["arguments"]
            for (a,), (b,) in zip(sample["resps"], other["resps"]):
                assert b[0] == pytest.approx(a[0], abs=1e-4), (task, sample["doc_id"])
                assert b[1] == a[1], (task, sample["doc_id"])
                compared += 1
            assert other["acc"] == sample["acc"]
            assert other.get("acc_norm") == sample.get("acc_norm")
    return compared


@pytest.mark.parametrize("kind", ["gemma3", "gemma4"])
def test_same_loglikelihoods_and_predictions_as_lm_eval_hf(kind, tiny_gemma3, tiny_gemma4):
    # The tiny models' sliding window is 16 tokens: every context here is longer, so the cache
    # path through sliding-window layers is exercised too. Small batches force several batches.
    folder = tiny_gemma3 if kind == "gemma3" else tiny_gemma4
    families = ["norcommonsenseqa_nob", "nortruthfulqa_mc_nno"] if kind == "gemma3" \
        else ["nortruthfulqa_mc_nob"]
    ours = _evaluate("nortune", folder, families, FIXTURES / "noreval_mini", batch_tokens=96)
    theirs = _evaluate("hf", folder, families, FIXTURES / "noreval_mini")
    assert _same_as_hf(ours, theirs) >= (30 if kind == "gemma3" else 10)


@pytest.fixture(scope="module")
def tiny_with_gemma_tokenizer(tmp_path_factory) -> Path:
    """A tiny random Gemma 3 with the embedded model's real tokenizer (262k vocabulary), in which
    " A" is one token, so letter-choice answers take the one-token paths of both backends."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conftest import tiny_config
    from nortune.models import resolve_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_source("embedded:gemma3-270m"))
    folder = tmp_path_factory.mktemp("gemma_tok")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_config("gemma3", len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_letter_choices_padding_chunks_and_fallback_equal_lm_eval_hf(tiny_with_gemma_tokenizer, monkeypatch, caplog):
    # nrk_quiz p2/p3 score the letters " A".." D" (one token each with this tokenizer); 16-shot
    # open-book QA contexts pass max_length=400 and take the fallback; batch_tokens 2048 puts
    # contexts of different lengths in one batch (left padding); a 0.05 GiB budget splits the
    # answer rows of a batch into several chunks.
    from transformers import AutoTokenizer

    from nortune.evaluate.backend import PrefixSharingLM

    assert len(AutoTokenizer.from_pretrained(tiny_with_gemma_tokenizer).encode(" A", add_special_tokens=False)) == 1
    seen = {"mixed_widths": 0, "batches": 0, "chunks": 0, "letter_rows": 0}
    real_batch, real_rows = PrefixSharingLM._score_batch, PrefixSharingLM._score_rows

    def score_batch(self, batch):
        seen["batches"] += 1
        seen["mixed_widths"] += len({len(g.context) for g in batch}) > 1
        yield from real_batch(self, batch)

    def score_rows(self, rows, *args):
        seen["chunks"] += 1
        seen["letter_rows"] += sum(len(cont) == 1 for _, _, cont, _ in rows)
        yield from real_rows(self, rows, *args)

    monkeypatch.setattr(PrefixSharingLM, "_score_batch", score_batch)
    monkeypatch.setattr(PrefixSharingLM, "_score_rows", score_rows)
    families, shots, data = ["nrk_quiz_qa_nob", "noropenbookqa_nno"], {"noropenbookqa_nno": 16}, REPO / "data" / "demo" / "noreval"
    with caplog.at_level("WARNING", logger="nortune.evaluate.backend"):
        ours = _evaluate("nortune", tiny_with_gemma_tokenizer, families, data, shots, 3,
                         batch_tokens=2048, memory_gib=0.05, max_length=400)
    theirs = _evaluate("hf", tiny_with_gemma_tokenizer, families, data, shots, 3, max_length=400)
    assert _same_as_hf(ours, theirs) == 2 * 5 * 3 * 4  # 2 families x 5 prompts x 3 items x 4 choices
    assert seen["letter_rows"] >= 2 * 3 * 4 and seen["mixed_widths"] >= 1 and seen["chunks"] > seen["batches"]
    assert "exceed the 400-token window" in caplog.text


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
    assert main(["evaluate", str(recipe), "--model", "base"]) == 130  # Ctrl-C: one line, no traceback
    assert not (out / "manifest.json").exists()
    assert json.loads((out / "failed.json").read_text())["interrupted"] is True
    assert (out / "cache").is_dir()  # the runner keeps the per-request cache in place (runs.RESUMABLE)
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
    # scores from lm-eval's aggregated results equal those from the per-item rows (the recipe's headline unchanged)
    from nortune.evaluate.stats import family_summary, prompt_scores

    from_rows = family_summary(prompt_scores([json.loads(line) for line in (out / "samples.jsonl").open()]), "acc")
    assert {f: (s["best"], s["mean"]) for f, s in results["nortune"]["tasks"].items()} == \
        {f: pytest.approx((s["best"], s["mean"])) for f, s in from_rows.items()}
    run = results["nortune"]["execution"]  # how it ran: batch settings, wall time, peak memory
    assert run["batch_tokens"] == 48 and run["memory_gib"] > 0 and run["wall_s"] > 0 and run["peak_rss_gib"] > 0.1
    assert f"batch_tokens 48, memory_gib {run['memory_gib']}" in report and "peak resident memory" in report

    # tuned = base + train/adapter_lora (a zero-initialised LoRA: same scores, no regression)
    train = tmp_path / "runs" / "tiny" / "train"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_gemma3),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(train / "adapter_lora")
    finish_train_stage(load_recipe(recipe), [train / "adapter_lora"])
    assert main(["evaluate", str(recipe)]) == 0  # both: base skipped, tuned evaluated, compared
    compare = json.loads((tmp_path / "runs" / "tiny" / "evaluate" / "tuned" / "compare" / "compare.json").read_text())
    assert compare["regressions"] == [] and all(d["best"] == 0 for d in compare["deltas"])
    assert "SAMPLE SETS, NOT NorEval" in (out.parent / "tuned" / "compare" / "compare.md").read_text()


def test_trained_adapter_changes_scores_and_equals_lm_eval_hf_with_peft(tiny_gemma3, tmp_path):
    # A LoRA with random non-zero B: the tuned model must differ from the base, and nortune
    # (which merges the adapter into the weights) must equal lm-eval `hf` running it unmerged.
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_gemma3),
                           LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(tmp_path / "adapter")
    families, data = ["nrk_quiz_qa_nob"], FIXTURES / "noreval_mini"
    adapter = {"peft": str(tmp_path / "adapter"), "tokenizer": str(tiny_gemma3)}
    base = _evaluate("nortune", tiny_gemma3, families, data, batch_tokens=96)
    tuned = _evaluate("nortune", tiny_gemma3, families, data, batch_tokens=96, **adapter)
    reference = _evaluate("hf", tiny_gemma3, families, data, **adapter)
    assert _same_as_hf(tuned, reference) >= 10
    moved = [abs(a[0][0] - b[0][0]) for task in base["samples"]
             for s, t in zip(base["samples"][task], tuned["samples"][task]) for a, b in zip(s["resps"], t["resps"])]
    assert max(moved) > 1e-2  # the adapter is not ignored


def test_bf16_autocast_matches_lm_eval_hf(tiny_gemma3):
    # Both sides under bf16 autocast: batching and padding change bf16 rounding, so log-likelihoods
    # agree to bf16 precision and predictions agree wherever lm-eval's margin exceeds it.
    families, data = ["nrk_quiz_qa_nob", "nortruthfulqa_mc_nno"], FIXTURES / "noreval_mini"
    ours = _evaluate("nortune", tiny_gemma3, families, data, batch_tokens=256, mixed_precision_dtype="bfloat16")
    theirs = _evaluate("hf", tiny_gemma3, families, data, mixed_precision_dtype="bfloat16")
    fp32 = _evaluate("hf", tiny_gemma3, families, data)
    tol, compared, off_fp32 = 0.1, 0, 0.0
    for task, samples in theirs["samples"].items():
        mine = {s["doc_id"]: s for s in ours["samples"][task]}
        exact = {s["doc_id"]: s for s in fp32["samples"][task]}
        for sample in samples:
            a = [r[0][0] for r in sample["resps"]]
            b = [r[0][0] for r in mine[sample["doc_id"]]["resps"]]
            assert b == pytest.approx(a, abs=tol), (task, sample["doc_id"])
            off_fp32 = max([off_fp32] + [abs(x - r[0][0]) for x, r in zip(b, exact[sample["doc_id"]]["resps"])])
            top = sorted(a, reverse=True)
            if len(top) > 1 and top[0] - top[1] > 2 * tol:
                assert mine[sample["doc_id"]]["acc"] == sample["acc"]
            compared += len(a)
    assert compared >= 20 and off_fp32 > 1e-4  # autocast really ran in bf16

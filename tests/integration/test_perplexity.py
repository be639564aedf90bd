"""Held-out perplexity (evaluate.perplexity) on the tiny Gemma 3: numbers, bootstrap, stage, flow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import finish_train_stage, write_recipe
from nortune.config import load_recipe
from nortune.config.base import packaged_heldout
from nortune.evaluate import perplexity

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["Hei.", "Eg veit ikkje kva tid bussen går i morgon tidleg.",
         "The train was late again, so we walked home along the river in the rain.", "Ja takk"]


def hand(model, tokenizer, text):
    """Summed NLL and count of one text, unbatched, straight from transformers."""
    import torch

    ids = torch.tensor([tokenizer(text).input_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    return -logp.gather(1, ids[0, 1:, None]).sum().item(), ids.shape[1] - 1


def test_score_equals_hand_computation_with_padding(tiny_gemma3):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_gemma3).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma3)
    # the first token (BOS where the tokenizer adds one, as Gemma's does) is context only, never scored
    lengths = {len(tokenizer(t).input_ids) for t in TEXTS}
    assert len(lengths) == len(TEXTS)  # unequal lengths: the batch is padded
    batched = perplexity.score(model, tokenizer, TEXTS, max_tokens=512, batch_size=4, device="cpu")
    single = perplexity.score(model, tokenizer, TEXTS, max_tokens=512, batch_size=1, device="cpu")
    for text, got, one in zip(TEXTS, batched, single):
        nll, count = hand(model, tokenizer, text)
        assert got[1] == count == one[1]
        assert got[0] == pytest.approx(nll, rel=1e-4) and one[0] == pytest.approx(nll, rel=1e-4)
    cut = perplexity.score(model, tokenizer, TEXTS[1:2], max_tokens=5, batch_size=1, device="cpu")
    assert cut[0][1] == 4  # max_tokens_per_text cuts the text: 5 tokens, 4 scored


class Settings:
    trained = ["nb", "nn"]
    tolerance = 0.02
    allow_forgetting = False


def fake(label, sets):
    return {"label": label, "seconds": {"total": 1.0}, "sets": {
        name: {"sha256": "x", "texts": len(nll), "nll_per_text": nll, "tokens_per_text": [10] * len(nll),
               "ppl": math.exp(sum(nll) / (10 * len(nll)))} for name, nll in sets.items()}}


def test_paired_bootstrap_flags_a_planted_rise_and_not_identical_models():
    import numpy as np

    rng = np.random.default_rng(0)
    base = {name: list(rng.uniform(30, 60, 100)) for name in ("nb", "nn", "en")}
    same = perplexity.compare(fake("base", base), fake("tuned", base), Settings(), 1000, 0.95)
    assert same["forgetting"] == [] and all(r["change"] == 0 and r["ci"] == [0, 0] for r in same["rows"])
    # en +5 % NLL per text (ppl about +20 %): forgetting; nb +0.3 % nats (ppl +1 %): trained, flagged too;
    # nn 10 % lower: improved
    planted = {"en": [x * 1.05 for x in base["en"]], "nb": [x + 0.1 for x in base["nb"]],
               "nn": [x * 0.9 for x in base["nn"]]}
    result = perplexity.compare(fake("base", base), fake("tuned", planted), Settings(), 1000, 0.95)
    rows = {r["set"]: r for r in result["rows"]}
    assert result["forgetting"] == ["nb", "en"]
    assert rows["en"]["ci"][0] > 0.02 and rows["nn"]["verdict"] == "improved"
    # a significant rise inside the tolerance is not forgetting for an untrained set
    small = {**base, "en": [x + 0.1 for x in base["en"]]}
    within = {r["set"]: r for r in perplexity.compare(fake("base", base), fake("tuned", small), Settings(),
                                                        1000, 0.95)["rows"]}
    assert within["en"]["ci"][0] > 0 and within["en"]["change"] < 0.02 and not within["en"]["forgetting"]
    # the same planted rise on 19 texts: an interval, but no verdict (and so no finding)
    few = {name: values[:19] for name, values in base.items()}
    rows = {r["set"]: r for r in perplexity.compare(fake("base", few), fake("tuned", {k: v[:19] for k, v in
                                                                                     planted.items()}),
                                                      Settings(), 1000, 0.95)["rows"]}
    assert rows["en"]["ci"][0] > 0.02 and not rows["en"]["forgetting"]
    assert rows["en"]["verdict"] == rows["nn"]["verdict"] == "too few texts (19 < 20): no verdict"
    # two sources per language: a set named SOURCE.LANGUAGE is trained by its language, and each is its own row
    sources = {f"{src}.{lang}": values for src in ("handwritten", "debian") for lang, values in base.items()}
    worse = {**sources, "debian.en": [x * 1.05 for x in base["en"]], "debian.nb": [x + 0.1 for x in base["nb"]]}
    result = perplexity.compare(fake("base", sources), fake("tuned", worse), Settings(), 1000, 0.95)
    rows = {r["set"]: r for r in result["rows"]}
    assert len(rows) == 6 and result["forgetting"] == ["debian.nb", "debian.en"]
    assert rows["debian.nb"]["trained"] and rows["handwritten.nn"]["trained"] and not rows["debian.en"]["trained"]
    assert rows["debian.nb"]["verdict"].startswith("FORGETTING (trained") and not rows["handwritten.nb"]["forgetting"]
    with pytest.raises(Exception, match="different texts"):
        perplexity.compare(fake("base", base), fake("tuned", {"en": base["en"][:50]}), Settings(), 100, 0.95)


def test_damaged_model_is_flagged(tiny_gemma3, tmp_path):
    """A real planted rise: base against a copy whose weights are damaged."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = (packaged_heldout()["handwritten.en"]).read_text(encoding="utf-8").splitlines()[:40]
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma3)
    model = AutoModelForCausalLM.from_pretrained(tiny_gemma3).eval()
    base = perplexity.score(model, tokenizer, texts, 64, 16, "cpu")
    with torch.no_grad():  # the final norm's scale up: sharper logits on a near-uniform model, confidently wrong
        model.model.norm.weight.add_(8.0)
    damaged = perplexity.score(model, tokenizer, texts, 64, 16, "cpu")

    def as_run(label, scored):
        nll, tok = [s[0] for s in scored], [s[1] for s in scored]
        return {"label": label, "seconds": {"total": 0}, "sets": {"en": {
            "sha256": "x", "texts": len(nll), "nll_per_text": nll, "tokens_per_text": tok,
            "ppl": math.exp(sum(nll) / sum(tok))}}}

    result = perplexity.compare(as_run("base", base), as_run("tuned", damaged), Settings(), 500, 0.95)
    assert result["rows"][0]["tuned_ppl"] > result["rows"][0]["base_ppl"]
    assert result["forgetting"] == ["en"]
    assert perplexity.compare(as_run("base", base), as_run("tuned", base), Settings(), 500, 0.95)["forgetting"] == []


@pytest.mark.slow  # evaluates a tiny model through lm-eval, twice
def test_stage_writes_perplexity_and_comparison_and_forgetting_fails_the_run(tiny_gemma3, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from nortune import evaluate, pipeline
    from nortune.cli import main

    texts = {}
    for lang in ("nb", "nn", "en"):
        path = tmp_path / f"{lang}.txt"
        path.write_text("\n".join((packaged_heldout()[f"handwritten.{lang}"]).read_text().splitlines()[:20]) + "\n")
        texts[lang] = str(path)
    recipe_path = write_recipe(tmp_path / "r.yaml", tiny_gemma3, tmp_path / "runs",
                               evaluate={"source": "local", "data_dir": str(REPO / "data" / "demo" / "noreval"),
                                         "tasks": ["nrk_quiz_qa_nob"], "prompts": ["p0"], "limit": 2,
                                         "bootstrap_samples": 200, "perplexity": {"texts": texts}})
    assert main(["evaluate", str(recipe_path), "--model", "base"]) == 0
    run = tmp_path / "runs" / "tiny" / "evaluate"
    base = json.loads((run / "base" / "perplexity.json").read_text())
    assert set(base["sets"]) == {"nb", "nn", "en"} and base["sets"]["nn"]["texts"] == 20
    assert base["seconds"]["total"] > 0 and len(base["sets"]["en"]["nll_per_text"]) == 20
    manifest = json.loads((run / "base" / "manifest.json").read_text())
    assert set(manifest["metrics"]["perplexity"]) == {"nb", "nn", "en"} and "perplexity.json" in manifest["outputs"]

    # tuned = base + a zero-initialised LoRA: the same perplexity, nothing flagged
    train = tmp_path / "runs" / "tiny" / "train"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_gemma3),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    model.save_pretrained(train / "adapter_lora")
    finish_train_stage(load_recipe(recipe_path), [train / "adapter_lora"])
    assert main(["evaluate", str(recipe_path)]) == 0
    compared = json.loads((run / "tuned" / "compare" / "perplexity.json").read_text())
    assert compared["forgetting"] == [] and {r["set"] for r in compared["rows"]} == {"nb", "nn", "en"}
    assert all(abs(r["change"]) < 1e-4 for r in compared["rows"])
    assert "| en |" in (run / "tuned" / "compare" / "perplexity.md").read_text()

    # a baseline re-measured lower in English (the tuned model now looks worse there): the comparison is stale,
    # so the tuned stage runs again; its manifest carries the forgetting, the pipeline and `nortune run` fail
    base_file = run / "base" / "perplexity.json"
    base["sets"]["en"]["nll_per_text"] = [x / 1.2 for x in base["sets"]["en"]["nll_per_text"]]
    base_file.write_text(json.dumps(base))
    recipe = load_recipe(recipe_path)
    manifest = evaluate.run(recipe, label="tuned")
    assert manifest["forgetting"] == ["en"] and manifest["allow_forgetting"] is False
    banner = perplexity.forgetting_banner(json.loads((run / "tuned" / "compare" / "perplexity.json").read_text()))
    assert "FORGETTING (" in banner[2] and banner[3].startswith("  en: ppl ")
    results = pipeline.run_pipeline(recipe, only=["evaluate-tuned"])
    assert pipeline.forgetting(results) == ["evaluate-tuned: en perplexity"]
    assert pipeline.forgetting([{**results[0], "allow_forgetting": True}]) == []
    assert main(["run", str(recipe_path), "--only", "evaluate-tuned"]) == 1
    assert "FORGETTING in evaluate-tuned: en perplexity" in capsys.readouterr().err
    assert main(["evaluate", str(recipe_path), "--model", "tuned"]) == 1

    # the evaluate report, the ledger (`nortune runs`), the run report's banner, `nortune compare`
    from nortune.report.ledger import compare_runs, format_runs, summarize
    from nortune.report.stage import _banner

    assert "## Held-out perplexity" in (run / "base" / "report.md").read_text()
    assert "FORGETTING" in (run / "tuned" / "compare" / "perplexity.md").read_text()
    summary = summarize(tmp_path / "runs" / "tiny")
    assert sorted(r["set"] for r in summary.perplexity) == ["en", "nb", "nn"]
    assert len(summary.forgetting) == 1 and summary.forgetting[0].startswith("tuned: en perplexity +")
    assert "en +" in format_runs([summary]) and "**FORGETTING**" in format_runs([summary])
    banner = _banner(summary)
    assert "class='warn'>&#9888; forgetting: FORGETTING (held-out perplexity): tuned: en" in banner
    assert "<tr class=warn><td>en</td>" in banner and "<td>nb (trained)</td>" in banner
    table = compare_runs([tmp_path / "runs" / "tiny", tmp_path / "runs" / "tiny"])
    assert "| held-out perplexity | tiny | tiny |" in table and "| en | " in table and "**FORGETTING**" in table


def test_tuned_loads_the_adapter_like_evaluate(tiny_gemma3, tmp_path):
    """The tuned model is base + adapter_lora through model_spec's args: a non-zero LoRA moves perplexity,
    and the merged model scores as the unmerged PEFT model does."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nortune.evaluate.stage import model_spec

    torch.manual_seed(1)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_gemma3),
                                LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    train = tmp_path / "runs" / "tiny" / "train"
    peft_model.save_pretrained(train / "adapter_lora")
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_gemma3, tmp_path / "runs",
                                      evaluate={"perplexity": {"texts": {"nn": str(packaged_heldout()["handwritten.nn"])}}}))
    finish_train_stage(recipe, [train / "adapter_lora"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma3)
    model, _, device = perplexity.load_model(recipe, model_spec(recipe, "tuned")[0])
    base, _, _ = perplexity.load_model(recipe, model_spec(recipe, "base")[0])
    tuned = perplexity.score(model, tokenizer, TEXTS, 512, 4, device)
    untouched = perplexity.score(base, tokenizer, TEXTS, 512, 4, device)
    reference = perplexity.score(peft_model.eval(), tokenizer, TEXTS, 512, 4, "cpu")
    assert max(abs(a[0] - b[0]) for a, b in zip(tuned, untouched)) > 1e-2  # the adapter is not ignored
    for got, want in zip(tuned, reference):
        assert got[0] == pytest.approx(want[0], rel=1e-4) and got[1] == want[1]
    # evaluate.tuned: merged reads train/merged instead, and scores the same
    peft_model.merge_and_unload().save_pretrained(train / "merged")
    tokenizer.save_pretrained(train / "merged")
    finish_train_stage(recipe, [train / "adapter_lora", train / "merged"])
    merged_recipe = recipe.model_copy(update={"evaluate": recipe.evaluate.model_copy(update={"tuned": "merged"})})
    args = model_spec(merged_recipe, "tuned")[0]
    assert args["pretrained"] == str(train / "merged") and "peft" not in args
    merged, _, _ = perplexity.load_model(merged_recipe, args)
    for got, want in zip(perplexity.score(merged, tokenizer, TEXTS, 512, 4, device), reference):
        assert got[0] == pytest.approx(want[0], rel=1e-4)

"""The forgetting watch (train.watch) in real training runs on a tiny Gemma 3 that first learns some English.

The tiny random model knows nothing, so training on anything makes every text likelier. Here it is
first trained (all weights, plain torch) on English sentences; the adapter is then trained on
Norwegian only, with English guarded: at a high learning rate English perplexity climbs past the
2 % tolerance and the watch must stop the run and keep the last step before; at a low one it must
let the run finish.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import WATCH_DEV, text_lines, write_recipe
from nortune.config import load_recipe
from nortune.runs import Options
from nortune.train import run as train_run

pytestmark = pytest.mark.slow
TEXTS = {"nb": str(WATCH_DEV / "nb.txt"), "en": str(WATCH_DEV / "en.txt")}


def trained(tmp_path, model, data, lr, max_steps):
    recipe = load_recipe(write_recipe(tmp_path / "recipe.yaml", model, tmp_path / "runs", train={
        "data": str(data), "lr": lr, "max_steps": max_steps, "save_steps": 100, "logging_steps": 5,
        "watch": {"texts": TEXTS, "every_steps": 5, "patience": 3}}))
    return recipe, train_run(recipe, Options(allow_contaminated="tiny test data"))


def dev_ppl(model: Path, adapter: Path, text_file: str) -> float:
    """The dev set's perplexity under base + a saved plain-LoRA adapter, scored afresh."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nortune.text_perplexity import score

    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), adapter).eval()
    scored = score(tuned, AutoTokenizer.from_pretrained(model), text_lines(text_file)[:20], 256, 20, "cpu")
    return math.exp(sum(s[0] for s in scored) / sum(s[1] for s in scored))


def test_a_run_that_forgets_english_is_stopped_and_keeps_the_step_before(tmp_path, english_gemma3, norwegian_chats):
    recipe, manifest = trained(tmp_path, english_gemma3, norwegian_chats, lr=3e-3, max_steps=40)
    watch = manifest["watch"]
    steps = [e["step"] for e in watch["evaluations"]]
    assert manifest["metrics"]["steps"] == watch["stopped_at_step"] == steps[-1] < 40
    assert watch["stopped_early"] and watch["stop_reason"].startswith("forgetting: en +")
    last = watch["evaluations"][-1]
    assert last["forgetting"] == ["en"] and last["sets"]["en"]["ci"][0] > 0  # significant
    assert last["sets"]["en"]["change"] > 0.02 and last["sets"]["nb"]["change"] < 0
    best = watch["best_step"]
    assert 0 < best < steps[-1] and watch["kept"] == f"checkpoint-{best} (step {best})"
    kept = next(e for e in watch["evaluations"] if e["step"] == best)
    assert not kept["forgetting"] and kept["sets"]["en"]["change"] <= 0.02
    # What was saved is the kept step's adapter, not the last one: its dev perplexity is the one measured there.
    stage = recipe.run_dir / "train"
    for name in ("nb", "en"):
        assert dev_ppl(english_gemma3, stage / "adapter_lora", TEXTS[name]) == pytest.approx(
            kept["sets"][name]["ppl"], rel=1e-4)
    assert dev_ppl(english_gemma3, stage / "adapter_lora", TEXTS["en"]) < last["sets"]["en"]["ppl"] * 0.99
    # The log and the chart carry the measurements beside the loss.
    logged = [json.loads(line) for line in (stage / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if "watch" in row] == steps
    assert any("loss" in row and row["step"] == steps[-1] for row in logged)  # the stopping step's loss too
    assert (stage / "loss.png").stat().st_size > 0 and not (stage / "checkpoints").exists()
    page = (stage / "watch.md").read_text()  # the run report shows it beside the chart
    assert f"Stopped at step {steps[-1]}: forgetting: en +" in page and f"Kept: checkpoint-{best} (step {best})" in page
    assert f"| {steps[-1]} | " in page and "**forgetting: en**" in page


def test_a_benign_run_runs_all_its_steps_and_keeps_the_last(tmp_path, english_gemma3, norwegian_chats):
    _, manifest = trained(tmp_path, english_gemma3, norwegian_chats, lr=1e-3, max_steps=20)
    watch = manifest["watch"]
    assert manifest["metrics"]["steps"] == 20 and not watch["stopped_early"] and watch["stop_reason"] is None
    assert [e["step"] for e in watch["evaluations"]] == [0, 5, 10, 15, 20]
    assert watch["best_step"] == 20 and watch["kept"] == "the last step (20)"
    assert all(not e["forgetting"] for e in watch["evaluations"])


def test_a_crashed_run_resumes_with_the_watch_judging_as_an_uninterrupted_run(tmp_path, english_gemma3,
                                                                              norwegian_chats):
    from transformers import TrainerCallback

    class Crash(Exception):
        pass

    class CrashAtStep12(TrainerCallback):  # after checkpoint-10 (a measured step) and before step 15
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 12:
                raise Crash()

    (tmp_path / "a").mkdir()
    _, straight = trained(tmp_path / "a", english_gemma3, norwegian_chats, lr=3e-3, max_steps=40)
    recipe = load_recipe(write_recipe(tmp_path / "b.yaml", english_gemma3, tmp_path / "b", train={
        "data": str(norwegian_chats), "lr": 3e-3, "max_steps": 40, "save_steps": 100, "logging_steps": 5,
        "watch": {"texts": TEXTS, "every_steps": 5, "patience": 3}}))
    with pytest.raises(Crash):
        train_run(recipe, Options(allow_contaminated="tiny test data"), callbacks=(CrashAtStep12(),))
    resumed = train_run(recipe, Options(resume=True, allow_contaminated="tiny test data"))
    assert resumed["resumed_from"].endswith("checkpoint-10")
    a, b = straight["watch"], resumed["watch"]
    assert [e["step"] for e in b["evaluations"]] == [e["step"] for e in a["evaluations"]]
    assert (b["stopped_at_step"], b["best_step"], b["kept"]) == (a["stopped_at_step"], a["best_step"], a["kept"])
    for x, y in zip(a["evaluations"], b["evaluations"]):
        assert all(y["sets"][n]["change"] == pytest.approx(x["sets"][n]["change"], abs=1e-5) for n in x["sets"])

"""The training benchmarks run end to end on a tiny model and end with their JSON line."""

import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def run_script(name: str, *args: str) -> tuple[str, dict]:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    return done.stdout, json.loads(lines[-1])


def test_train_throughput_pairs(tiny_gemma3):
    table, figures = run_script("train_throughput.py", "--model", str(tiny_gemma3), "--steps", "1", "--rounds", "1")
    assert set(figures["tokens_per_s"]) == {"nortune_fp32", "trl_fp32", "nortune_bf16", "trl_bf16",
                                            "nortune_bf16_checkpointing", "trl_defaults"}
    assert all(v > 0 for v in figures["tokens_per_s"].values())
    for key in ("speedup_vs_trl", "speedup_vs_trl_bf16", "speedup_vs_trl_defaults"):
        assert figures[key] > 0 and key in table
    # The peer's defaults are reported as TRL applied them, not as we assume them.
    assert figures["trl_defaults"] == {"bf16": True, "gradient_checkpointing": True}


def test_gpu_memory_check_from_shape_only(tiny_gemma3, tmp_path):
    from nortune.config import load_recipe
    from nortune.plan import plan_from_recipe

    shape = tmp_path / "shape"
    run_script("gpu_memory.py", "--model", str(tiny_gemma3), "--write-shape", str(shape))
    assert not list(shape.glob("*.safetensors")) and (shape / "config.json").is_file()
    _, figures = run_script("gpu_memory.py", "--model", str(shape), "--random-weights", "--steps", "1")
    recipe = load_recipe(REPO / "configs" / "demo.yaml", [
        f"model.source={tiny_gemma3}", "train.batch_size=2", "train.max_seq_len=256", "plan.max_gpus=1",
        "train.gradient_checkpointing=false"])
    assert figures["estimate_gib"] == round(plan_from_recipe(recipe).memory[0].total_gib, 3)
    assert figures["tokens_per_s"] > 0
    if figures["peak_allocated_gib"] is None:
        assert figures["device"].startswith("cpu")


def test_evaluate_benchmark_smoke(tiny_gemma3):
    # The recipe-shape run takes hours on 2 cores (README quotes what was measured); this one
    # checks that the script runs both sides in their own processes and compares them.
    table, figures = run_script("evaluate.py", "--model", str(tiny_gemma3), "--families", "nrk_quiz_qa_nob",
                                "--limit", "2", "--batch-tokens", "64", "--hf-batch-sizes", "1")
    assert figures["agree"] is True and figures["agree_detail"]["greedy_flags"] is True
    assert figures["agree_detail"]["loglikelihoods_compared"] == 5 * 2 * 4  # 5 prompts x 2 items x 4 choices
    assert figures["speedup_vs_lm_eval_hf_best"] > 0 and figures["memory_ratio_vs_lm_eval_hf"] > 0
    assert figures["nortune_peak_rss_gib"] > 0.1 and "peak RSS GiB" in table


def test_train_watch_benchmark_pairs_off_and_on(tiny_gemma3):
    table, figures = run_script("train_watch.py", "--model", str(tiny_gemma3), "--steps", "4", "--rounds", "1",
                                "--watch-set", "every_steps=2")
    assert figures["measurements"] == 3  # steps 0, 2 and 4: the watch ran on one side only
    assert figures["watch_seconds"] > 0 and figures["off_seconds"] > 0
    assert figures["overhead_ratio"] == round(figures["on_seconds"] / figures["off_seconds"], 3)
    assert "watch off" in table and "watch on" in table and figures["peak_rss_gib"]["on"] > 0

"""benchmarks/evaluate_gpu.py runs on CPU (what CI can check) and reports every side, run or skipped."""

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

SCRIPT = REPO / "benchmarks" / "evaluate_gpu.py"


def test_gpu_benchmark_on_cpu_agrees_and_names_skipped_sides(tiny_gemma3):
    from nortune.config.names import NOREVAL_FAMILIES

    families = [f for f in NOREVAL_FAMILIES if f.startswith(("nrk_quiz_qa", "norcommonsenseqa"))][:2]
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--limit", "1", "--model", str(tiny_gemma3),
                           "--tasks", ",".join(families), "--prompts", "p0", "--hf-batch-size", "4"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert {"speedup_vs_lm_eval_hf", "speedup_vs_lm_eval_vllm", "agree", "sides", "settings"} <= set(figures)

    # nortune and lm-eval hf scored the same items and agree on every flag and log-likelihood.
    hf = figures["agree"]["hf"]
    assert hf["agree"] is True and hf["same_items"] is True
    assert hf["flag_mismatches"] == {"acc": 0, "acc_norm": 0, "greedy": 0}
    assert hf["items"] == 2 and hf["loglikelihoods_compared"] == figures["sides"]["nortune"]["requests"] > 0
    assert hf["max_abs_loglikelihood_diff"] <= figures["settings"]["tolerance"]["atol"] == 1e-3
    assert figures["speedup_vs_lm_eval_hf"] > 0
    for side in ("nortune", "hf"):
        assert figures["sides"][side]["wall_s"] > 0 and figures["sides"][side]["requests_per_s"] > 0
        assert figures["sides"][side]["peak_rss_gib"] > 0.1 and figures["sides"][side]["peak_gpu_gib"] is None

    # vLLM is skipped with its reason, in the figures and in the table, and nothing crashed.
    vllm = figures["sides"]["vllm"]
    reason = "not installed" if importlib.util.find_spec("vllm") is None else "--device cuda"
    assert reason in vllm["skipped"] and reason in figures["agree"]["vllm"]["skipped"]
    assert figures["speedup_vs_lm_eval_vllm"] is None
    assert any(line.startswith("lm-eval vllm") and "skipped" in line for line in lines)
    assert "peak GPU GiB" in done.stdout and "requests/s" in done.stdout


def test_bad_option_is_one_line_before_any_model_loads(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tasks", "no_such_family"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--tasks: unknown NorEval family ['no_such_family']" in done.stderr


def test_a_side_that_cannot_run_is_reported_not_raised(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--limit", "1", "--sides", "nortune,hf",
                           "--model", str(tmp_path / "no_model_here"), "--prompts", "p0", "--side-timeout", "120"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for side in ("nortune", "hf"):
        assert figures["sides"][side]["skipped"].startswith("worker failed (exit 1):")
    assert figures["speedup_vs_lm_eval_hf"] is None and figures["agree"]["hf"]["agree"] is None
    assert "vllm" not in figures["sides"]

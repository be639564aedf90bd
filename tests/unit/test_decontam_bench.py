"""benchmarks/decontam.py: ``agree`` means every tool found exactly the planted copies it scanned."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "decontam.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_decontam", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_agreement_compares_hits_with_the_planted_copies() -> None:
    agreement = _bench().agreement
    planted = [(97, 1000), (194, 2000), (291, 3000)]
    assert agreement(planted, {"all": ({"hits": [97, 194, 291]}, 1 << 62)}) == {"all": True}
    assert agreement(planted, {"slice": ({"hits": [97, 194]}, 2500)}) == {"slice": True}  # 291 was not scanned
    assert agreement(planted, {"missed": ({"hits": [97, 291]}, 1 << 62)}) == {"missed": False}
    assert agreement(planted, {"extra": ({"hits": [5, 97, 194, 291]}, 1 << 62)}) == {"extra": False}
    # two tools that miss the same copy agree with each other, not with the planted copies
    assert agreement(planted, {"a": ({"hits": [97]}, 2500), "b": ({"hits": [97]}, 2500)}) == {"a": False, "b": False}


@pytest.mark.slow
def test_a_small_benchmark_run_finds_every_planted_copy() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--train-mb", "1", "--test-mb", "0.1", "--baseline-mb", "0.5",
                           "--repeat", "1", "--no-lm-eval"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["planted"] >= 5 and figures["nortune_hits"] == figures["planted"]
    assert figures["agree"] is True and set(figures["agree_planted"]) == {"full", "half", "slice", "naive"}

"""The two test lanes: the fast lane's guard really stops heavy work, and the README's lane figures are
the measured ones (scripts/test_lanes.py), not typed by hand."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUARD = REPO / "tests" / "fast_lane"


def _in_guarded_child(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(GUARD), str(REPO / "src")])}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


HEAVY_CALLS = {  # each heavy entry point, called as a test would reach it, and what the guard says it does
    "transformers.Trainer.train": ("import transformers; transformers.Trainer.train(None)", "trains a model"),
    "trl.SFTTrainer.train": ("from trl import SFTTrainer; SFTTrainer.train(None)", "trains a model"),
    "quantize": ("from nortune.export.gguf_files import quantize; quantize(None, None, 'Q8_0')",
                 "converts or quantises"),
    "convert": ("import nortune.export.gguf_files as g; g.convert(None, None, None, 'f16')", "converts or quantises"),
    "check_page": ("from nortune.browser import check_page; check_page(None, None)", "starts a browser"),
    "_build_wheel": ("from nortune.export import toolchain; toolchain._build_wheel(None, None, None, None)",
                     "builds llama.cpp"),
}


def test_the_fast_lane_guard_stops_heavy_work_in_a_child_process():
    """One child process (a CLI test's child is guarded the same way) calls every heavy entry point."""
    code = "\n".join(["import traceback"] + [
        f"try:\n    {call}\nexcept Exception as exc:\n    print({name!r}, type(exc).__name__, exc)"
        for name, (call, _) in HEAVY_CALLS.items()])
    done = _in_guarded_child(code)
    said = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert set(said) == set(HEAVY_CALLS), (done.stdout, done.stderr[-2000:])
    for name, (_, what) in HEAVY_CALLS.items():
        assert said[name].startswith("HeavyWorkInFastLane") and what in said[name], said[name]
        assert "mark the test @pytest.mark.slow" in said[name]


def test_a_process_without_the_guard_is_untouched():
    code = "import sys; print(any(getattr(f, 'fast_lane_guard', False) for f in sys.meta_path))"
    without = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert without.stdout.strip() == "False" and _in_guarded_child(code).stdout.strip() == "True"


def test_the_readme_lanes_block_is_what_the_measurement_says():
    spec = importlib.util.spec_from_file_location("test_lanes_script", REPO / "scripts" / "test_lanes.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    record = json.loads(script.RECORD.read_text(encoding="utf-8"))
    assert script.block(record) in script.README.read_text(encoding="utf-8")
    assert {"fast", "whole"} <= set(record), "measure both lanes, then run scripts/test_lanes.py"

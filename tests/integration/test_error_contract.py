"""One error contract (issue 42): a user's mistake is the same one line and exit 2 under the stage's own
command and under `nortune run`, through the real CLI.

Two more cases live beside the fixtures they need: the impossible language mix (it curates first) in
``test_run_integrity.test_the_impossible_mix_is_the_same_error_under_run``, and a chat template the
model lacks in ``test_evaluate_card_run.test_chat_on_without_a_template_is_one_line_before_scoring``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPE = "configs/demo.yaml"


def nortune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nortune.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("nortune:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def _malformed(tmp: Path) -> Path:
    path = tmp / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "Hei?"}, {"role": "assistant", "content": "Hei."}]}
    path.write_text(json.dumps(good) + "\n{not json\n", encoding="utf-8")
    return path


# (case, stage command, overrides(tmp), what the line must name)
CASES = [
    ("unknown-key", "decontam", lambda tmp: ["decontam.max_contaminated_recrods=3"],
     "decontam.max_contaminated_recrods"),
    ("missing-data-file", "decontam", lambda tmp: [f"decontam.data={tmp / 'nope.jsonl'}"], "nope.jsonl"),
    ("malformed-data-line", "decontam", lambda tmp: [f"decontam.data={_malformed(tmp)}"], "bad.jsonl:2"),
    ("bad-layer-type", "plan", lambda tmp: ["adapter.layers.layer_types=[sliding_atention]"], "sliding_atention"),
]


@pytest.mark.parametrize("case, command, overrides, named", CASES, ids=[c[0] for c in CASES])
def test_a_mistake_is_the_same_line_under_the_stage_command_and_under_run(tmp_path, case, command, overrides,
                                                                           named):
    given = overrides(tmp_path)
    alone = one_line(nortune(command, RECIPE, f"runs_dir={tmp_path / 'alone'}", *given))
    under_run = one_line(nortune("run", RECIPE, "--only", command, f"runs_dir={tmp_path / 'run'}", *given))
    assert named in alone, alone
    assert under_run == alone.replace(str(tmp_path / "alone"), str(tmp_path / "run"))

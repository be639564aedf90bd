"""``nortune decontam`` through the real CLI on the demo recipe: a 3-word quiz question with its answer fails.

The demo's nrk_quiz_qa_nob item 6, "Hvem malte «Skrik»?" (answer "Edvard Munch"), copied into one chat
record: exit 1, and contamination.json names that record under ``question_answer``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _chat(rid: str, user: str, assistant: str) -> str:
    return json.dumps({"id": rid, "messages": [{"role": "user", "content": user},
                                               {"role": "assistant", "content": assistant}]}, ensure_ascii=False)


@pytest.mark.slow  # runs decontam to the end through the CLI
def test_cli_flags_a_copied_short_quiz_item(tmp_path: Path) -> None:
    data = tmp_path / "x.jsonl"
    data.write_text("\n".join([
        _chat("clean", "Hvem malte dette bildet?", "Det vet jeg dessverre ikke."),
        _chat("skrik", "Hvem malte «Skrik»?", "Edvard Munch malte det i 1893."),
        _chat("alone", "Hvem malte «Skrik»? Svar kort.", "Det er et kjent maleri fra Norge."),
    ]) + "\n", encoding="utf-8")
    runs = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-m", "nortune.cli", "decontam", "configs/demo.yaml", f"runs_dir={runs}",
                           "--data", str(data)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads((runs / "demo" / "decontam" / "contamination.json").read_text(encoding="utf-8"))
    assert report["training"]["contaminated_records"] == 1 and report["gate"]["passed"] is False
    [rec] = report["records"]
    assert (rec["id"], rec["line"], set(rec["methods"])) == ("skrik", 2, {"question_answer"})
    [match] = rec["methods"]["question_answer"]["matches"]
    assert match["test_id"] == "nrk_quiz_qa_nob/test/demo-nrk-nb-6/question" and match["answer"] == "Edvard Munch"
    floors = report["test_side"]["index"]["question"]["questions_by_floor"]
    assert floors["with_answer_only"] == 2 and floors["under_floor"] == 0
    summary = (runs / "demo" / "decontam" / "summary.md").read_text(encoding="utf-8")
    assert "2 of 2-3 words (checked only with their answer)" in summary

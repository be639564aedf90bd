"""Issue 26's integrity cases, each through the real CLI in a subprocess, on the demo's own data.

A planted symlink cannot redirect a write; a failed rerun leaves nothing a later stage can use; a
stage refuses upstream outputs without their manifest, or changed since; a second writer of a run
folder is refused with the holder's pid; a full disk and a corrupt manifest are one line each; any
exception, a bug or an interrupt included, leaves ``failed.json``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the demo's curate and later stages through the CLI, and kills them
REPO = Path(__file__).resolve().parents[2]
RECIPE = "configs/demo.yaml"


def nortune(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nortune.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


def one_line_error(result: subprocess.CompletedProcess, code: int = 2) -> str:
    """The user-facing error: exit ``code``, no traceback, a ``nortune:`` line; returns that line."""
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("nortune:")]
    assert lines, result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    """A runs_dir whose demo run has a finished curate stage; each test copies it."""
    runs = tmp_path_factory.mktemp("curated") / "runs"
    result = nortune("curate", RECIPE, f"runs_dir={runs}")
    assert result.returncode == 0, result.stderr[-3000:]
    return runs


@pytest.fixture
def runs(curated, tmp_path) -> Path:
    copy = tmp_path / "runs"
    shutil.copytree(curated, copy, symlinks=True)
    return copy


def test_a_planted_symlink_cannot_redirect_a_write(runs, tmp_path):
    """Links at the old fixed temporary name and at the outputs themselves: their targets stay untouched."""
    curate = runs / "demo" / "curate"
    victims = {name: tmp_path / f"victim-{i}" for i, name in
               enumerate(["train.jsonl.tmp", "train.jsonl", "composition.md", "malformed.txt"])}
    for name, victim in victims.items():
        victim.write_text("precious\n", encoding="utf-8")
        (curate / name).unlink(missing_ok=True)
        (curate / name).symlink_to(victim)
    result = nortune("curate", RECIPE, f"runs_dir={runs}", "--force")
    assert result.returncode == 0, result.stderr[-3000:]
    for name, victim in victims.items():
        assert victim.read_text(encoding="utf-8") == "precious\n", f"{name} redirected a write into {victim}"
    for name in ("train.jsonl", "composition.md"):
        assert (curate / name).is_file() and not (curate / name).is_symlink()
    assert sum(1 for _ in (curate / "train.jsonl").open(encoding="utf-8")) > 10


def test_a_failed_rerun_leaves_nothing_that_later_stages_use(runs):
    """curate succeeds, a rerun with an impossible size fails: the old file is gone, decontam and train refuse."""
    curate = runs / "demo" / "curate"
    line = one_line_error(nortune("curate", RECIPE, f"runs_dir={runs}", "curate.target_size=1000000"))
    assert "cannot compose 1000000 records" in line
    failure = json.loads((curate / "failed.json").read_text(encoding="utf-8"))
    assert failure["type"] == "InfeasibleMix" and failure["user_error"] and not failure["interrupted"]
    assert not (curate / "manifest.json").exists() and not (curate / "train.jsonl").exists()
    assert (curate / ".partial" / "train.jsonl").is_file()  # kept aside for a look, read by no stage
    for command in ("decontam", "train"):
        line = one_line_error(nortune(command, RECIPE, f"runs_dir={runs}"))
        assert "curate" in line, line
    assert (runs / "demo" / "decontam" / "failed.json").is_file()  # decontam's own failure is recorded too
    assert not (runs / "demo" / "train" / "manifest.json").exists()


def test_the_impossible_mix_is_the_same_error_under_run(runs):
    """`nortune run` gives the same one line and exit 2 as `nortune curate`, and still writes pipeline.json."""
    line = one_line_error(nortune("run", RECIPE, f"runs_dir={runs}", "--to", "plan", "curate.target_size=1000000"))
    assert "cannot compose 1000000 records" in line
    record = json.loads((runs / "demo" / "pipeline.json").read_text(encoding="utf-8"))
    assert [(r["stage"], r["action"]) for r in record] == [("curate", "failed"), ("decontam", "not run"),
                                                            ("plan", "not run")]


def test_an_output_without_its_manifest_or_changed_since_is_refused(runs):
    """kill -9 leaves no handler a chance: the missing manifest alone makes the output unusable."""
    curate = runs / "demo" / "curate"
    manifest = (curate / "manifest.json").read_bytes()
    (curate / "manifest.json").unlink()
    line = one_line_error(nortune("decontam", RECIPE, f"runs_dir={runs}"))
    assert "has no manifest" in line and "nortune curate" in line
    (curate / "manifest.json").write_bytes(manifest)
    with (curate / "train.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"messages": [{"role": "user", "content": "Hei"},
                                              {"role": "assistant", "content": "Hei på deg"}]}) + "\n")
    line = one_line_error(nortune("decontam", RECIPE, f"runs_dir={runs}"))
    assert "changed since the curate stage finished" in line


def test_a_corrupt_manifest_counts_as_incomplete(runs):
    """Truncated manifest.json / failed.json: one line or a rerun, never a traceback."""
    curate = runs / "demo" / "curate"
    text = (curate / "manifest.json").read_text(encoding="utf-8")
    (curate / "manifest.json").write_text(text[: len(text) // 2], encoding="utf-8")
    dry = nortune("run", RECIPE, f"runs_dir={runs}", "--dry-run")
    assert dry.returncode == 0 and "Traceback" not in dry.stderr, dry.stderr[-3000:]
    assert any(line.startswith("curate") and "would run" in line for line in dry.stdout.splitlines()), dry.stdout
    assert "manifest.json is unreadable" in dry.stderr
    listed = nortune("runs", str(runs))
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr[-3000:]
    one_line_error(nortune("decontam", RECIPE, f"runs_dir={runs}"))
    (curate / "manifest.json").unlink()
    (curate / "failed.json").write_text('{"stage": "cur', encoding="utf-8")
    listed = nortune("runs", str(runs))
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr[-3000:]
    rerun = nortune("curate", RECIPE, f"runs_dir={runs}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (curate / "manifest.json").is_file() and not (curate / "failed.json").exists()


HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from nortune.runner import run_lock
    with run_lock(Path(sys.argv[1]), "curate (the test's holder)"):
        print("held", flush=True)
        sys.stdin.readline()
""")


def test_a_second_writer_is_refused_with_the_holders_pid(runs):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(runs / "demo")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        for argv in (["curate", RECIPE, "--force"], ["run", RECIPE, "--to", "decontam"]):
            line = one_line_error(nortune(*argv, f"runs_dir={runs}"))
            assert f"in use by pid {holder.pid}" in line, line
        assert (runs / "demo" / "curate" / "manifest.json").is_file()  # the refused run touched nothing
    finally:
        holder.communicate("\n", timeout=60)
    after = nortune("curate", RECIPE, f"runs_dir={runs}", "--force")  # the kernel dropped the lock with it
    assert after.returncode == 0, after.stderr[-3000:]


def test_two_curate_runs_at_once_give_one_clean_refusal_or_none(runs):
    """Started together: every run that does not finish is the one-line refusal; the folder ends complete."""
    command = [sys.executable, "-m", "nortune.cli", "curate", RECIPE, f"runs_dir={runs}", "--force"]
    both = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in both]
    for code, stderr in results:
        assert "Traceback" not in stderr, stderr[-3000:]
        assert code == 0 or (code == 2 and "in use by pid" in stderr), (code, stderr[-3000:])
    assert any(code == 0 for code, _ in results)
    manifest = json.loads((runs / "demo" / "curate" / "manifest.json").read_text(encoding="utf-8"))
    lines = sum(1 for _ in (runs / "demo" / "curate" / "train.jsonl").open(encoding="utf-8"))
    assert manifest["metrics"]["output_records"] == lines


def test_a_full_disk_is_one_line_naming_the_stage_and_path_and_leaves_a_record(runs):
    """The report folder on a 32 KiB tmpfs: the page does not fit, the failure record does."""
    report = runs / "demo" / "report"
    report.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(report)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.fail(f"this test needs a small tmpfs (run as root): mount said {mounted.stderr.strip()}")
    try:
        result = nortune("report", RECIPE, f"runs_dir={runs}")
        line = one_line_error(result)
        assert "report: no space left on the device" in line and str(report) in line, line
        failure = json.loads((report / "failed.json").read_text(encoding="utf-8"))
        assert failure["type"] == "OSError" and "No space left" in failure["error"]
        assert not (report / "manifest.json").exists()
        assert not [p.name for p in report.iterdir() if p.name.endswith(".tmp")]  # the temporary file is gone
    finally:
        subprocess.run(["umount", str(report)], check=True)


CRASH = textwrap.dedent("""
    import sys
    import nortune.curate.stage as stage
    from nortune import cli
    def crash(*args, **kwargs):
        raise {error}
    stage._deduplicate = crash
    sys.exit(cli.main(sys.argv[1:]))
""")


@pytest.mark.parametrize("error, code, interrupted", [
    ("MemoryError()", 1, False), ("RuntimeError('CUDA out of memory')", 1, False),
    ("KeyboardInterrupt()", 130, True)])
def test_any_exception_inside_a_stage_leaves_a_record(runs, error, code, interrupted):
    """A bug, an out-of-memory error or Ctrl-C inside curate under `nortune run`: failed.json, pipeline.json."""
    result = subprocess.run([sys.executable, "-c", CRASH.format(error=error), "run", RECIPE, f"runs_dir={runs}",
                             "--to", "decontam", "curate.seed=7"], cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == code, result.stderr[-3000:]
    assert ("Traceback" in result.stderr) is (code == 1)  # a bug keeps its traceback; an interrupt is one line
    curate = runs / "demo" / "curate"
    failure = json.loads((curate / "failed.json").read_text(encoding="utf-8"))
    assert failure["type"] == error.split("(")[0] and failure["interrupted"] is interrupted
    assert not (curate / "manifest.json").exists() and not (curate / "train.jsonl").exists()
    record = json.loads((runs / "demo" / "pipeline.json").read_text(encoding="utf-8"))
    assert record[0]["stage"] == "curate" and record[0]["action"] == ("interrupted" if interrupted else "failed")
    assert record[1] == {"stage": "decontam", "action": "not run",
                         "why": "curate interrupted" if interrupted else "curate failed"}

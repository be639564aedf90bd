"""Issue 41's hardening of the run folder, through the real CLI: a stage folder that is a link, a lock
file that is a link, a second name of another file or on a read-only folder, and records of the
wrong shape are each one line and exit 2, and whatever they point at stays untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"


def nortune(*args: str) -> subprocess.CompletedProcess:
    """The CLI; the report is written without its browser check (what these tests read is the records)."""
    from nortune.browser import OPT_OUT_ENV

    return subprocess.run([sys.executable, "-m", "nortune.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL, env={**os.environ, OPT_OUT_ENV: "off"})


def one_line(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stdout[-800:], done.stderr[-1500:])
    assert "Traceback" not in done.stderr, done.stderr[-1500:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("nortune:")]
    assert len(lines) == 1 and all(w in lines[0] for w in words), done.stderr[-1500:]


@pytest.fixture
def recipe(tmp_path) -> Path:
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "runs_dir": str(tmp_path / "runs"),
        "evaluate": {"source": "local", "data_dir": str(FIXTURES / "noreval_mini")},
        "curate": {"sources": [{"name": "a", "path": str(FIXTURES / "curate" / "mixed.jsonl")}],
                   "shares": {"nb": 1.0}}}), encoding="utf-8")
    return path


def _victim(folder: Path) -> dict[str, bytes]:
    for name in ("keep.txt", ".work/shard", ".partial/old", "manifest.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(f"victim {name}\n".encode())
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("stage", ["curate", "decontam", "report"])
def test_a_stage_folder_that_is_a_link_is_refused_and_its_target_untouched(tmp_path, recipe, stage):
    victim = tmp_path / "victim"
    before = _victim(victim)
    from conftest import write_manifest

    run = tmp_path / "runs" / "t"
    write_manifest(run / "plan", "plan")  # something to report
    (run / stage).symlink_to(victim, target_is_directory=True)
    one_line(nortune(stage, str(recipe), "--force" if stage != "report" else "--verbose"), "symbolic link", stage)
    assert {str(p.relative_to(victim)): p.read_bytes() for p in sorted(victim.rglob("*")) if p.is_file()} == before


def test_a_lock_that_is_a_link_or_a_second_name_is_refused_and_its_target_untouched(tmp_path, recipe):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n", encoding="utf-8")
    run = tmp_path / "runs" / "t"
    run.mkdir(parents=True)
    (run / ".lock").symlink_to(victim)
    one_line(nortune("curate", str(recipe)), "run lock", "symbolic link")
    (run / ".lock").unlink()
    os.link(victim, run / ".lock")
    one_line(nortune("curate", str(recipe)), "run lock", "2 names")
    assert victim.read_text(encoding="utf-8") == "precious\n"


def test_a_read_only_run_folder_is_one_line(tmp_path, recipe):
    run = tmp_path / "runs" / "t"
    run.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(run)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.fail(f"this test needs a read-only tmpfs (run as root): mount said {mounted.stderr.strip()}")
    try:
        one_line(nortune("curate", str(recipe)), "run lock", "Read-only")
    finally:
        subprocess.run(["umount", str(run)], check=True)


@pytest.mark.parametrize("record, field", [({"outputs": [1]}, "outputs"), ({"metrics": [1]}, "metrics"),
                                           ({"fingerprint": [1]}, "fingerprint"), ({"stage": 5}, "stage"),
                                           ({"outputs": {"train.jsonl": "x"}}, "outputs.train.jsonl")])
def test_a_manifest_of_the_wrong_shape_is_one_line_naming_the_file_and_field(tmp_path, recipe, record, field):
    from conftest import write_manifest

    run = tmp_path / "runs" / "t"
    path = write_manifest(run / "curate", "curate", metrics={"by_bucket": {"nb": 3}})
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **record}), encoding="utf-8")
    for command in (["runs", str(tmp_path / "runs")], ["report", str(recipe)], ["run", str(recipe), "--dry-run"]):
        one_line(nortune(*command), str(path), f"{field}: ")


def test_a_failure_record_of_the_wrong_shape_is_one_line_naming_the_file_and_field(tmp_path, recipe):
    from conftest import write_manifest

    run = tmp_path / "runs" / "t"
    write_manifest(run / "plan", "plan")  # a finished stage: `nortune runs` lists the run
    (run / "curate").mkdir(parents=True)
    path = run / "curate" / "failed.json"
    path.write_text(json.dumps({"error": 5, "stage": "curate"}), encoding="utf-8")
    one_line(nortune("report", str(recipe)), str(path), "error: ")  # the page shows failure records

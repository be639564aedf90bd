"""No process outlives nortune: real processes, real signals, no mocks (issue 26).

``nortune curate`` on two local workers runs datatrove's pool: a Manager process, multiprocess's
forkserver and resource tracker, and two workers forked by the forkserver. Each test waits until
that tree exists (read from /proc), stops nortune, and polls, up to a deadline, until every
process of the tree has ended. Before the fix a ``kill -9`` or a SIGTERM left the Manager, the
forkserver, the tracker and both workers running for good.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")

REPO = Path(__file__).resolve().parents[2]
WORDS = ("Oslo er hovedstaden i Norge og ligger innerst i Oslofjorden omgitt av skog og åser der folk går "
         "tur om sommeren og vinteren").split()


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()  # state, ppid, ... (after the command name)


def tree(root: int) -> dict[int, str]:
    """Every live process below ``root``: pid -> start time (pid and start time name a process)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) and fields[0] not in ("Z", "X"):
            parents[int(entry)] = (int(fields[1]), fields[19])
    found, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for pid, (ppid, start) in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def alive(processes: dict[int, str]) -> dict[int, str]:
    """Those of ``processes`` still running (a zombie has ended; a reused pid is another process)."""
    out = {}
    for pid, start in processes.items():
        fields = _stat(pid)
        if fields and fields[0] not in ("Z", "X") and fields[19] == start:
            out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
    return out


def wait_for_tree(proc: subprocess.Popen, size: int, what: str, deadline_s: float = 180) -> dict[int, str]:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        found = tree(proc.pid)
        if len(found) >= size:
            return found
        assert proc.poll() is None, f"nortune ended (exit {proc.returncode}) before {what} existed"
        time.sleep(0.05)
    pytest.fail(f"no {what} after {deadline_s} s; below nortune: {alive(tree(proc.pid))}")


def survivors(processes: dict[int, str], deadline_s: float = 30) -> dict[int, str]:
    """Poll until none of ``processes`` runs; what still runs at the deadline."""
    deadline = time.monotonic() + deadline_s
    while (left := alive(processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def start(argv: list[str], tmp_path: Path) -> subprocess.Popen:
    """In its own session, so whatever survives a failed test is still found (by process group) and ended."""
    return subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=open(tmp_path / "stdout.txt", "wb"),
                            stderr=open(tmp_path / "stderr.txt", "wb"), start_new_session=True)


def end_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


@pytest.fixture
def curate_recipe(tmp_path) -> Path:
    """30,000 distinct chats, curated on two local workers: the first pool runs for seconds."""
    rng = random.Random(0)
    with open(tmp_path / "a.jsonl", "w", encoding="utf-8") as handle:
        for i in range(30000):
            answer = " ".join(rng.choice(WORDS) for _ in range(40)).capitalize() + "."
            record = {"messages": [{"role": "user", "content": f"Spørsmål nummer {i}?"},
                                   {"role": "assistant", "content": answer}]}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: x\nruns_dir: {tmp_path / 'runs'}\ncurate:\n  shares: {{nb: 1.0}}\n"
                      f"  executor: {{type: local, workers: 2}}\n"
                      f"  sources:\n    - {{name: a, path: {tmp_path / 'a.jsonl'}}}\n", encoding="utf-8")
    return recipe


# The Manager, the forkserver, the resource tracker and two workers.
POOL = 5


def test_kill_9_of_curate_leaves_no_process_behind(curate_recipe, tmp_path):
    proc = start([sys.executable, "-m", "nortune.cli", "curate", str(curate_recipe)], tmp_path)
    try:
        pool = wait_for_tree(proc, POOL, "pool of two workers")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        left = survivors(pool)
        assert not left, f"still running after nortune was killed: {left}"
    finally:
        end_group(proc)


def test_sigterm_stops_curate_and_its_children_without_a_traceback(curate_recipe, tmp_path):
    proc = start([sys.executable, "-m", "nortune.cli", "curate", str(curate_recipe)], tmp_path)
    try:
        pool = wait_for_tree(proc, POOL, "pool of two workers")
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=120)
        left = survivors(pool)
        assert not left, f"still running after nortune stopped on SIGTERM: {left}"
        stderr = (tmp_path / "stderr.txt").read_text(errors="replace")
        assert code == 128 + signal.SIGTERM, (code, stderr[-3000:])  # the shell's convention, not a crash
        assert "Traceback" not in stderr, stderr[-3000:]
        assert "nortune: interrupted by SIGTERM" in stderr, stderr[-3000:]
        failure = json.loads((tmp_path / "runs" / "x" / "curate" / "failed.json").read_text(encoding="utf-8"))
        assert failure["interrupted"] and failure["error"] == "interrupted by SIGTERM", failure
        assert not (tmp_path / "runs" / "x" / "curate" / "manifest.json").exists()
    finally:
        end_group(proc)


def test_a_llama_cpp_child_dies_with_its_killed_parent(tmp_path):
    """export/native.py's child (here it sleeps instead of quantising) ends when its parent is killed."""
    script = ("import sys\nfrom pathlib import Path\nfrom nortune.export import native\n"
              "native.call('sleep', Path(sys.argv[1]), 'time:sleep', 600)\n")
    proc = start([sys.executable, "-c", script, str(tmp_path / "model.gguf")], tmp_path)
    try:
        child = wait_for_tree(proc, 1, "llama.cpp child")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        left = survivors(child)
        assert not left, f"the native child outlived its parent: {left}"
    finally:
        end_group(proc)


def test_sigterm_ends_the_children_a_killed_launcher_leaves(tmp_path):
    """A launcher (accelerate, torchrun) is SIGKILLed by subprocess.call when the wait is interrupted;
    its own children, orphaned, are still found and ended before nortune exits."""
    script = ("from nortune import children\nchildren.install()\n"
              "children.call(['sh', '-c', 'sleep 600 & sleep 600 & wait'])\n")
    proc = start([sys.executable, "-c", script], tmp_path)
    try:
        launched = wait_for_tree(proc, 3, "launcher and its two children")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        left = survivors(launched)
        assert not left, f"still running after SIGTERM: {left}"
    finally:
        end_group(proc)

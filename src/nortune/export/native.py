"""Run llama.cpp work (quantise, verify, chat) in a child process, so a native crash is an error.

llama.cpp is C++: a bad kernel or a broken file can end the process with a signal (SIGSEGV,
SIGILL, SIGABRT) instead of raising. In the parent that would take the whole pipeline, and a
test run, down with it. Here the parent only pickles a call ``module:function(*args)``, runs
``python -m nortune.export.native JOB RESULT`` and reads back the return value or the Python
exception; when the child dies by a signal, the parent raises ``NativeCrash`` naming the file,
the signal and what to try, with the child's last output saved beside the file.

``NORTUNE_NATIVE_FAULT=<job name>`` makes that child crash with a real SIGSEGV right before the
call (CPython's ``faulthandler._sigsegv``): the tests use it to prove the whole failure path on
the very code path a llama.cpp crash takes.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from nortune import children
from nortune.runs import atomic_write_text
from nortune.errors import NativeCrash

FAULT_ENV = "NORTUNE_NATIVE_FAULT"


def call(job: str, path: Path, target: str, *args: Any, interactive: bool = False) -> Any:
    """``target(*args)`` (target = 'module:function') in a child; ``path`` names the file it works on.

    ``interactive`` keeps the terminal (chat); otherwise the child's output is collected and kept
    beside ``path`` only when it crashes.
    """
    with tempfile.TemporaryDirectory(prefix="nortune-native-") as tmp:
        job_file, result_file = Path(tmp) / "job.pkl", Path(tmp) / "result.pkl"
        job_file.write_bytes(pickle.dumps((job, target, args)))
        command = [sys.executable, "-m", "nortune.export.native", str(job_file), str(result_file)]
        if interactive:
            code = children.call(command)
            output = ""
        else:
            done = children.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
            code, output = done.returncode, done.stdout
        if code < 0:
            log_file = None
            if output:
                log_file = path.with_name(f"{path.name}.{job}-crash.log")
                try:
                    atomic_write_text(log_file, output[-20000:])
                except OSError:
                    log_file = None
            raise NativeCrash(job, path, -code, log_file)
        if not result_file.is_file():
            raise RuntimeError(f"{job} on {path}: the llama.cpp child exited with code {code} and no result:\n"
                               f"{output[-3000:]}")
        ok, value = pickle.loads(result_file.read_bytes())
    if not ok:
        raise value
    return value


def _main(job_file: str, result_file: str) -> int:
    import faulthandler
    import importlib

    faulthandler.enable()  # a crash prints the Python stack into the log the parent keeps
    job, target, args = pickle.loads(Path(job_file).read_bytes())
    module, _, function = target.partition(":")
    func = getattr(importlib.import_module(module), function)
    if os.environ.get(FAULT_ENV) == job:
        faulthandler._sigsegv()  # a real SIGSEGV, for the tests of the failure path
    try:
        result: tuple[bool, Any] = (True, func(*args))
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
        result = (False, exc)
    try:
        payload = pickle.dumps(result)
    except Exception as exc:  # noqa: BLE001 - an unpicklable exception still reaches the parent as text
        payload = pickle.dumps((False, RuntimeError(f"{type(exc).__name__}: {exc}; original: {result[1]!r}")))
    Path(result_file).write_bytes(payload)
    return 0


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:3]))

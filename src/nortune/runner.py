"""One owner of what happens around a stage's work, for the CLI and the pipeline alike.

``run_stage`` takes the run folder's lock, runs the stage, and on *any* exception (a user's
mistake, a bug, ``MemoryError``, a full disk, Ctrl-C or SIGTERM) leaves a true record: no
manifest, the partial outputs moved aside into ``.partial/`` (what a resumable stage needs to
continue stays), and ``failed.json`` with the exception's type and message, or
``"interrupted": true``. The exception is then raised again: a bug keeps its traceback.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nortune.errors import DiskFull, NortuneError, RunLocked
from nortune.runs import FAILED, MANIFEST, PARTIAL, RESOLVED_RECIPE, RESUMABLE, RunLayout, atomic_write_text, \
    git_commit, refuse_linked_stage

log = logging.getLogger(__name__)
LOCK = ".lock"
# A child process that runs inside its parent's lock (a training rank under accelerate launch) finds
# the lock's path here and does not try to take it again.
HELD_ENV = "NORTUNE_RUN_LOCK"
_held: dict[str, int] = {}  # lock path -> nesting depth in this process (nortune run holds it once for all)


@contextmanager
def run_lock(run_dir: Path, command: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``<run_dir>/.lock`` for as long as this process works in the folder.

    A second writer is refused at once with the holder's pid and command. The kernel drops the lock
    when the holder dies, however it dies, so a stale lock cannot block the next run.
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NortuneError(f"runs_dir: cannot create the run folder {run_dir}: {exc.strerror}") from None
    if run_dir.is_symlink():  # a deliberate choice (another disk, say): followed, and said
        log.info("%s is a link to %s; the run is written there", run_dir, run_dir.resolve())
    path = run_dir / LOCK
    key = str(path.resolve())
    if key in _held or os.environ.get(HELD_ENV) == key:
        _held[key] = _held.get(key, 0) + 1
        try:
            yield
        finally:
            _held[key] -= 1
            if not _held[key]:
                del _held[key]
        return
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
        os.close(fd)
        raise RunLocked(f"{run_dir}: in use by {holder}; wait for it to finish (or stop it), then run again") \
            from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} (nortune {command})\n".encode(), 0)
    _held[key], os.environ[HELD_ENV] = 1, key
    try:
        yield
    finally:
        del _held[key]
        os.environ.pop(HELD_ENV, None)
        os.close(fd)  # releases the lock


def _open_lock(path: Path) -> int:
    """The lock file, opened without following a link or truncating it; refused (one line) when it is a
    link, a second name of another file (a hard link: truncating it would rewrite that file) or cannot
    be opened at all (a read-only run folder)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise NortuneError(f"{path}: cannot take the run lock: {why}; nortune writes nothing in {path.parent} "
                           "until it can") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise NortuneError(f"{path}: cannot take the run lock: it is not a plain file of its own "
                           f"({info.st_nlink} names); remove it, then run again")
    return fd


def run_stage(name: str, recipe: Any, work: Callable[[], dict[str, Any]], command: str | None = None) -> dict:
    """Run one stage's ``work`` (its ``run``) under the lock; any exception leaves its record, then propagates."""
    from nortune import ranks

    layout = RunLayout.of(recipe)
    directory = layout.stage_dir(name)
    if not ranks.is_main():  # a training rank other than 0 writes nothing in the run folder: no lock, no record
        return work()
    refuse_linked_stage(directory)  # before the lock and outside the failure record: nothing is written there
    with run_lock(layout.root, command or name):
        started = time.time()
        try:
            return work()
        except BaseException as exc:
            record_failure(name, directory, exc, started)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise DiskFull(f"{name}: no space left on the device writing "
                               f"{exc.filename or directory}; free some space and run again") from exc
            raise


def record_failure(name: str, directory: Path, exc: BaseException, started: float) -> None:
    """No manifest, partial outputs aside, ``failed.json`` (kept if the stage wrote a detailed one itself)."""
    if directory.is_symlink():  # never write, move or delete through a link
        log.error("%s: %s is a symbolic link; the failure is not recorded there", name, directory)
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MANIFEST).unlink(missing_ok=True)
        own = directory / FAILED
        if own.is_file() and own.stat().st_mtime >= started - 1:  # the stage recorded it, with details
            _quarantine(name, directory, named=_files_named(own, directory))  # StageRun.fail: they stay
            return
        _quarantine(name, directory)  # before failed.json: it needs no space
        interrupted = isinstance(exc, KeyboardInterrupt)
        record = {"stage": name, "error": _describe(exc), "type": type(exc).__name__,
                  "user_error": isinstance(exc, NortuneError), "interrupted": interrupted,
                  "started": started, "finished": time.time(), "nortune_git_commit": git_commit()}
        atomic_write_text(own, json.dumps(record, indent=2, sort_keys=True))
    except OSError as write_error:  # a full or read-only disk must not hide the stage's own error
        log.error("%s: could not record the failure in %s: %s", name, directory, write_error)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):  # errors.Interrupted names its signal
        return str(exc) or "interrupted (SIGINT)"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _files_named(record: Path, directory: Path) -> set[str]:
    """The entries of ``directory`` that a stage's own failure record points to (a crash log, say)."""
    try:
        values = json.loads(record.read_text(encoding="utf-8")).values()
    except (OSError, ValueError, AttributeError):
        return set()
    inside = (Path(v) for v in values if isinstance(v, str) and v.startswith(str(directory) + os.sep))
    return {p.relative_to(directory).parts[0] for p in inside}


def _quarantine(name: str, directory: Path, named: set[str] = frozenset()) -> None:
    """Move what the failed attempt left into ``.partial/``: nothing downstream can pick it up.

    What a resumable stage continues from stays, and so do the files its failure record names."""
    keep = {FAILED, RESOLVED_RECIPE, PARTIAL, *RESUMABLE.get(name.split("-")[0], ()), *named}
    leftovers = [p for p in directory.iterdir() if p.name not in keep]
    if not leftovers:
        return
    partial = directory / PARTIAL
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    for item in leftovers:
        os.replace(item, partial / item.name)
    log.warning("%s: the failed attempt's outputs are in %s (not used by any stage)", name, partial)

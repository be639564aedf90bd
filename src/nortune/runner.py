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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nortune.errors import DiskFull, IncompleteUpstream, NortuneError, RunLocked, StageFailed
from nortune.runs import FAILED, MANIFEST, PARTIAL, RESOLVED_RECIPE, RESUMABLE, Options, RunLayout, \
    atomic_write_text, begin_stage, changed_keys, git_commit, read_manifest, refuse_linked_stage

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


@dataclass(frozen=True)
class Stage:
    """A stage declared: what it is and what it does, never how it is opened, skipped, completed or failed.

    ``work`` gets a prepared ``StageContext`` (folder emptied of old results, resolved recipe written)
    and returns a ``StageResult``; ``run_stage`` does everything around it, for every command.
    """

    name: str  # the key in runs.STAGE_FOLDERS (or EXTRA_FOLDERS): its folder under the run folder
    fingerprint: Callable[[Any], dict[str, Any]]  # settings and input hashes: equal means the result is current
    work: Callable[["StageContext"], "StageResult"]
    upstream: tuple[str, ...] = ()  # stages whose finished result this one reads (checked before it starts)
    check: Callable[[Any], None] | None = None  # cheap input validation, before the fingerprint
    enabled: Callable[[Any], str | None] = lambda recipe: None  # a reason to leave it out of `nortune run`, or None


@dataclass(frozen=True)
class StageContext:
    """What a stage's work receives: the recipe, the command's options and its own prepared folder."""

    recipe: Any
    options: Options
    layout: RunLayout
    directory: Path
    fingerprint: dict[str, Any]
    main: bool = True  # False on a training rank other than 0: it writes nothing in the run folder


@dataclass
class StageResult:
    """What a stage's work produced: every output (listed in the manifest), its metrics, extra manifest keys."""

    outputs: list[Path]
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """A stage's manifest, and whether this call ran or skipped it, and why."""

    manifest: dict[str, Any]
    action: str  # "run" or "skip"
    why: str


def run_stage(stage: Stage, recipe: Any, options: Options = Options(), command: str | None = None) -> Outcome:
    """The whole lifecycle of one stage: upstream present, fingerprint once, skip when current (saying why),
    else prepare the folder, run the work, and write the manifest last, listing every output; any
    exception leaves ``failed.json`` instead (``record_failure``) and propagates."""
    from nortune import ranks

    layout = RunLayout.of(recipe)
    directory = layout.stage_dir(stage.name)
    if not ranks.is_main():  # a training rank other than 0 writes nothing in the run folder: no lock, no record
        return _run_on_rank(stage, recipe, options, layout, directory)
    refuse_linked_stage(directory)  # before the lock and outside the failure record: nothing is written there
    with run_lock(layout.root, command or stage.name), _recorded(stage.name, directory):
        _require_upstream(stage, layout)
        if stage.check is not None:
            stage.check(recipe)
        fingerprint = stage.fingerprint(recipe)
        action, why, manifest = decide(directory, fingerprint, options.force)
        if action == "skip":
            log.info("%s: skipped, %s (%s)", stage.name, why, directory)
            return Outcome(manifest, action, why)  # type: ignore[arg-type]
        log.info("%s: running (%s)", stage.name, why)
        run = begin_stage(stage.name, directory, fingerprint, recipe.to_yaml())
        result = stage.work(StageContext(recipe, options, layout, directory, fingerprint))
        manifest = run.complete(result.outputs, result.metrics, result.extra)
    if ranks.world_size() > 1:  # under a launcher no rank reports success before rank 0 has written the manifest
        ranks.barrier()
    return Outcome(manifest, "run", why)


def _run_on_rank(stage: Stage, recipe: Any, options: Options, layout: RunLayout, directory: Path) -> Outcome:
    """A launched rank other than 0: the same decision as rank 0 (which owns the folder), then the work."""
    from nortune import ranks

    fingerprint = stage.fingerprint(recipe)
    action, why, manifest = decide(directory, fingerprint, options.force)
    if action == "skip":
        return Outcome(manifest, action, why)  # type: ignore[arg-type]
    result = stage.work(StageContext(recipe, options, layout, directory, fingerprint, main=False))
    ranks.barrier()
    return Outcome({"metrics": result.metrics, **result.extra}, "run", "launched rank")


def decide(directory: Path, fingerprint: dict[str, Any], force: bool = False) -> tuple[str, str, dict | None]:
    """("skip" or "run", why, the manifest): skip exactly when the stage finished with this fingerprint."""
    manifest = read_manifest(directory)
    if manifest is None:
        return "run", "no finished result yet", None
    if manifest["fingerprint"] != fingerprint:
        return "run", "changed since the last run: " + ", ".join(changed_keys(manifest["fingerprint"], fingerprint)), \
            manifest
    if force:
        return "run", "forced", manifest
    return "skip", "manifest matches the recipe and inputs", manifest


def _require_upstream(stage: Stage, layout: RunLayout) -> None:
    for name in stage.upstream:
        upstream = layout.stage_dir(name)
        if read_manifest(upstream) is None:
            raise IncompleteUpstream(f"{stage.name} needs a finished {name} stage: {upstream / MANIFEST} is missing "
                                     f"(its last run failed or did not happen); run `nortune {name.split('-')[0]}` "
                                     "(or `nortune run`) first")


def run_guarded(name: str, recipe: Any, work: Callable[[], Any], command: str | None = None) -> Any:
    """Only the lock and the failure record around ``work``: for a launcher whose ranks run the stage itself."""
    layout = RunLayout.of(recipe)
    directory = layout.stage_dir(name)
    refuse_linked_stage(directory)
    with run_lock(layout.root, command or name), _recorded(name, directory):
        return work()


@contextmanager
def _recorded(name: str, directory: Path) -> Iterator[None]:
    """Any exception inside leaves the stage's failure record, then propagates (a full disk as ``DiskFull``)."""
    started = time.time()
    try:
        yield
    except BaseException as exc:
        record_failure(name, directory, exc, started)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise DiskFull(f"{name}: no space left on the device writing "
                           f"{exc.filename or directory}; free some space and run again") from exc
        raise


def record_failure(name: str, directory: Path, exc: BaseException, started: float) -> None:
    """No manifest, partial outputs aside, ``failed.json`` with the error (and a ``StageFailed``'s details)."""
    if directory.is_symlink():  # never write, move or delete through a link
        log.error("%s: %s is a symbolic link; the failure is not recorded there", name, directory)
        return
    details = exc.details if isinstance(exc, StageFailed) else {}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MANIFEST).unlink(missing_ok=True)
        _quarantine(name, directory, named=_files_named(details, directory))  # before failed.json: needs no space
        interrupted = isinstance(exc, KeyboardInterrupt)
        record = {"stage": name, "error": _describe(exc), "type": type(exc).__name__,
                  "user_error": isinstance(exc, NortuneError), "interrupted": interrupted,
                  "started": started, "finished": time.time(), "nortune_git_commit": git_commit(), **details}
        atomic_write_text(directory / FAILED, json.dumps(record, indent=2, sort_keys=True))
    except OSError as write_error:  # a full or read-only disk must not hide the stage's own error
        log.error("%s: could not record the failure in %s: %s", name, directory, write_error)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):  # errors.Interrupted names its signal
        return str(exc) or "interrupted (SIGINT)"
    if isinstance(exc, StageFailed):  # a finished stage's verdict: its own words
        return exc.message
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _files_named(details: dict[str, Any], directory: Path) -> set[str]:
    """The entries of ``directory`` that a failure's details point to (a crash log, say): they stay in place."""
    inside = (Path(v) for v in details.values() if isinstance(v, str) and v.startswith(str(directory) + os.sep))
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

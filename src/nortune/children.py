"""Child processes end with nortune: when it is stopped by a signal, and when it is killed outright.

Two ways nortune can go, two mechanisms:

* **Asked to stop** (SIGTERM, SIGINT, SIGHUP). :func:`install`, called first thing by the CLI,
  turns the signal into :class:`~nortune.errors.Interrupted` raised in the main thread, so every
  ``finally`` and ``with`` runs (datatrove's pool terminates its workers, stage folders are tidied)
  and the process exits with 128 + the signal number, without a traceback. A second signal of
  any of these kinds gets the default action (a second Ctrl-C or SIGTERM forces). From the first
  signal on, nortune is a child subreaper (orphans of its tree come to it, not to init), and at
  exit every process still below it gets SIGTERM, a short grace, then SIGKILL.
* **Killed** (``kill -9``, the OOM killer): nothing runs in nortune, so each child arranges its
  own end. Programs nortune starts (:func:`run`, :func:`call`, :func:`popen_kwargs`) get
  ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` between fork and exec, so a launcher can still stop its own
  children; Python processes forked from nortune's main thread (multiprocessing's fork start
  method: datatrove's Manager) get SIGKILL the same way. A process whose parent is not nortune
  (datatrove's pool workers are forked by the forkserver, which lives as long as they do) calls
  :func:`die_with` with nortune's pid: a daemon thread waits on a pidfd and kills the process
  when nortune is gone. The forkserver and the resource tracker then see their last client go and
  exit on their own (the tracker first unlinks what the workers left in /dev/shm).

PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, and it is set again at
every level (a grandchild's "parent" is the child). Forks from other threads are left alone
(a thread may end long before the process it forked should). Off Linux only the signal handling
is installed; everything else is a no-op.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable

LINUX = sys.platform.startswith("linux")
SIGNALS = [s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGINT", "SIGHUP")) if s is not None]
GRACE_S = 3.0  # SIGTERM, then this long, then SIGKILL
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_owner: int | None = None  # the pid whose handlers these are (a forked child gets the defaults back)
_previous: dict[int, Any] = {}  # each handled signal's handler before install
_received: int | None = None  # the first signal, once one came
_fork_parent = {"pid": 0, "main_thread": False}  # set before each fork, read in the child
_watched: set[int] = set()
_prctl: Callable[..., int] | None = None


def _libc_prctl() -> Callable[..., int] | None:
    """libc's prctl, loaded once in the parent: a child between fork and exec only calls it."""
    global _prctl
    if _prctl is None and LINUX:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).prctl
        function.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        function.restype = ctypes.c_int
        _prctl = function
    return _prctl


def _die_with_parent(parent: int, sig: int) -> None:
    """This process gets ``sig`` when its parent (thread) ends; if that already happened, it goes now."""
    prctl = _libc_prctl()
    if prctl is None:
        return
    prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl: no signal will come
        os._exit(128 + sig)


def popen_kwargs(sig: int = signal.SIGTERM) -> dict[str, Any]:
    """``subprocess`` keyword arguments for a child that ends (gets ``sig``) when nortune does.

    For a child the calling thread waits for (``run``, ``call``, ``Popen`` then ``wait``): the
    signal comes when the thread that started it ends. SIGTERM lets a launcher (accelerate,
    torchrun, chromedriver) stop its own children.
    """
    if not LINUX:
        return {}
    _libc_prctl()
    parent = os.getpid()
    return {"preexec_fn": lambda: _die_with_parent(parent, sig)}


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """``subprocess.run`` for a child that ends with nortune."""
    return subprocess.run(command, **popen_kwargs(), **kwargs)


def call(command: list[str], **kwargs: Any) -> int:
    """``subprocess.call`` for a child that ends with nortune."""
    return subprocess.call(command, **popen_kwargs(), **kwargs)


def die_with(pid: int) -> None:
    """End this process (SIGKILL) when process ``pid`` ends, ``kill -9`` included. For a process
    nortune did not start directly, e.g. a datatrove pool worker, whose parent is the forkserver.
    Nothing in ``pid`` itself, nothing off Linux; once per ``pid``."""
    if not LINUX or pid == os.getpid() or pid in _watched:
        return
    _watched.add(pid)
    try:
        handle: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGKILL)
        return
    except (OSError, AttributeError):  # a kernel before 5.3: poll instead
        handle = None
    threading.Thread(target=_watch, args=(pid, handle), name=f"nortune-die-with-{pid}", daemon=True).start()


def _watch(pid: int, handle: int | None) -> None:
    if handle is not None:
        import select

        waiter = select.poll()  # not select(): the fd may be above FD_SETSIZE
        waiter.register(handle, select.POLLIN)
        while not waiter.poll():  # a pidfd is readable once its process has ended
            pass
    else:
        start = _start_time(pid)
        while start is not None and _start_time(pid) == start:
            time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)


PRELOAD = "nortune.forkserver_preload"


def preload_forkservers() -> None:
    """Before a pool starts: the forkservers of ``multiprocess`` (datatrove's) and ``multiprocessing``
    import :mod:`nortune.forkserver_preload`, so each worker they fork watches this process from its
    start. (A forkserver and its workers outlive a killed parent: each worker holds both ends of
    its task queue, and the forkserver waits for its last client.) Only a forkserver not yet
    running takes it."""
    if not LINUX:
        return
    import importlib

    for name in ("multiprocess.forkserver", "multiprocessing.forkserver"):
        try:
            forkserver = importlib.import_module(name)
        except ImportError:
            continue
        modules = list(getattr(forkserver._forkserver, "_preload_modules", None) or ["__main__"])
        if PRELOAD not in modules:
            forkserver.set_forkserver_preload([*modules, PRELOAD])


def in_forkserver() -> None:
    """In a forkserver nortune started (its parent): each process it forks calls :func:`die_with`
    with nortune's pid. The forkserver itself exits once its last client (nortune, a worker) is gone."""
    if not LINUX or not hasattr(os, "register_at_fork"):
        return
    nortune_pid = os.getppid()
    os.register_at_fork(after_in_child=lambda: die_with(nortune_pid))


def install() -> None:
    """Once per process, from the main thread: the signals above become ``Interrupted``, forks
    and exit are hooked as described in the module docstring. A signal that is ignored (a
    background job, nohup) or that the host process already handles is left as it is."""
    global _owner
    if _owner == os.getpid() or threading.current_thread() is not threading.main_thread():
        return
    first = _owner is None
    _owner = os.getpid()
    _previous.clear()
    for sig in SIGNALS:
        current = signal.getsignal(sig)
        if current in (signal.SIG_DFL, signal.default_int_handler):
            _previous[sig] = current
            signal.signal(sig, _on_signal)
    if first:
        atexit.register(_at_exit)
        if LINUX and hasattr(os, "register_at_fork"):
            _libc_prctl()
            os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def _quiet_while_stopping(args: Any) -> None:
    """Once nortune is stopping, a library's helper thread that fails because its processes are being
    ended (multiprocessing's pool refilling itself from a forkserver that is gone) is expected: one
    debug line, not a traceback after the one-line message."""
    import logging

    logging.getLogger(__name__).debug("while stopping: thread %s ended with %s: %s",
                                      getattr(args.thread, "name", "?"), args.exc_type.__name__, args.exc_value)


def _on_signal(signum: int, frame: Any) -> None:
    from nortune.errors import Interrupted

    if os.getpid() != _owner:  # a child forked without the fork hook: what the signal would do there
        signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
        signal.raise_signal(signum)
        return
    global _received
    _received = signum
    for sig, handler in _previous.items():  # a second signal: the default action
        signal.signal(sig, handler)
    if LINUX and _libc_prctl() is not None:
        _libc_prctl()(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # children a dying launcher leaves come to us
    threading.excepthook = _quiet_while_stopping
    interrupted = Interrupted(signum)
    try:  # not sys.stderr: the main thread may be inside a write to it
        os.write(2, f"nortune: {interrupted}; stopping (again to force)\n".encode())
    except OSError:  # SIGHUP: the terminal may be gone
        pass
    raise interrupted


def _before_fork() -> None:
    _fork_parent["pid"] = os.getpid()
    _fork_parent["main_thread"] = threading.current_thread() is threading.main_thread()


def _after_fork_in_child() -> None:
    global _owner
    if _owner is not None and _fork_parent["pid"] == _owner:
        for sig, handler in _previous.items():
            signal.signal(sig, handler)
        _owner = -1  # not installed here; install() in this child would start afresh
    if _fork_parent["main_thread"]:
        _die_with_parent(_fork_parent["pid"], signal.SIGKILL)


def _at_exit() -> None:
    if _received is not None and os.getpid() == _owner:
        end_descendants()


def end_descendants(grace_s: float = GRACE_S) -> None:
    """SIGTERM every process below this one, SIGKILL what is left after ``grace_s``.

    multiprocessing's resource trackers are left to exit on their own once this process has
    (they unlink what their clients leave behind; a SIGKILL would leak it)."""
    if not LINUX:
        return
    keep = _resource_trackers()
    sent: set[tuple[int, int | None, int]] = set()  # (pid, start time, signal): each once per process
    deadline = time.monotonic() + grace_s
    while True:
        sig = signal.SIGKILL if time.monotonic() >= deadline else signal.SIGTERM
        alive = [p for p in descendants() if p not in keep]
        for pid in alive:
            key = (pid, _start_time(pid), sig)
            if key in sent:
                continue
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
            sent.add(key)
        _reap()
        if not alive or time.monotonic() >= deadline + grace_s:
            return
        time.sleep(0.05)


def _reap() -> None:
    """Collect this process's ended children (as a subreaper, adopted orphans too)."""
    for pid in _children(os.getpid()):
        if _state(pid) == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass


def _resource_trackers() -> set[int]:
    pids = set()
    for name in ("multiprocessing.resource_tracker", "multiprocess.resource_tracker"):
        module = sys.modules.get(name)
        pid = getattr(getattr(module, "_resource_tracker", None), "_pid", None)
        if pid:
            pids.add(pid)
    return pids


def _stat(pid: int) -> list[str] | None:
    """Fields 3 on of /proc/<pid>/stat (state, ppid, ...), after the command name; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def _state(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[0] if fields else None


def _start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot: with the pid, a process's identity (pids are reused)."""
    fields = _stat(pid)
    return int(fields[19]) if fields and fields[0] not in ("Z", "X") else None


def _parents() -> dict[int, int]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                out[int(entry)] = int(fields[1])
    return out


def _children(pid: int) -> list[int]:
    return [p for p, parent in _parents().items() if parent == pid]


def descendants(pid: int | None = None, include_ended: bool = False) -> list[int]:
    """Every process below ``pid`` (default: this one), found through /proc; zombies only if asked."""
    if not LINUX:
        return []
    root = os.getpid() if pid is None else pid
    parents = _parents()
    below: dict[int, list[int]] = {}
    for child, parent in parents.items():
        below.setdefault(parent, []).append(child)
    found, todo = [], list(below.get(root, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(below.get(child, []))
    return found if include_ended else [p for p in found if _state(p) not in ("Z", "X", None)]

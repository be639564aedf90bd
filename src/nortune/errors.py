"""The error contract: a user's mistake is one line, ``nortune: <message>``, exit 2.

Every error type that means "the input is wrong" (recipe, override, data file, model
folder, command line) derives from :class:`NortuneError`; the CLI prints those without a
traceback. Any other exception is a bug in nortune and keeps its traceback.
"""

from __future__ import annotations


class NortuneError(Exception):
    """Bad input from the user; the message names the file, line or key."""


class UsageError(NortuneError):
    """A command-line option that cannot work (unknown stage, --gpus 0, missing file argument)."""


class ConfigError(NortuneError, ValueError):
    """A recipe problem, phrased as ``where: key.path: reason``."""


class InfeasibleMix(NortuneError, ValueError):
    """The sources cannot supply the requested language mix; the message says how short each bucket is."""


class RunLocked(NortuneError):
    """Another nortune process holds this run folder; the message names its pid and command."""


class DiskFull(NortuneError):
    """No space left while a stage wrote its outputs; the message names the stage and the path."""


class UnsafeOutput(NortuneError):
    """A file nortune creates fresh already exists (a link or file another process planted): not written."""


class MalformedRunRecord(NortuneError):
    """A manifest or failure record that is JSON of the wrong shape (edited, or written by something else)."""


class IncompleteUpstream(NortuneError):
    """A stage's input comes from an upstream stage that has no manifest, or whose outputs changed since."""


class Interrupted(KeyboardInterrupt, SystemExit):
    """nortune was asked to stop by a signal (SIGTERM, SIGINT or SIGHUP); see ``nortune.children``.

    Raised in the main thread by the signal handler, so every ``finally`` runs. A KeyboardInterrupt,
    so code that handles Ctrl-C handles SIGTERM the same way; and a SystemExit whose code is
    128 + the signal number (130 for Ctrl-C, 143 for SIGTERM), so when nothing catches it the
    process exits with that status and no traceback, as a shell expects of a signalled program.
    """

    def __init__(self, signum: int):
        import signal

        super().__init__(signum)
        self.signum = signum
        self.code = 128 + signum  # SystemExit's exit status (KeyboardInterrupt's __init__ leaves it unset)
        try:
            self.signal_name = signal.Signals(signum).name
        except ValueError:
            self.signal_name = f"signal {signum}"

    def __str__(self) -> str:
        return f"interrupted by {self.signal_name}"


class DataError(NortuneError, ValueError):
    """Bad input data, phrased as ``file:line: reason``."""


class ContaminationGateError(DataError):
    """Training refused: the contamination report is missing, stale or over the threshold."""


class HubUnreachable(DataError):
    """The Hugging Face Hub cannot be reached for data the stage needs; the message says how to work offline."""


class ExportInputError(DataError):
    """The train run is missing a file the export needs."""


class IncomparableRuns(NortuneError):
    """Two evaluations whose cards differ in what decides a score (one line naming what differs)."""


class ToolchainError(NortuneError):
    """llama.cpp's tooling is missing or unusable here; the message says what to run."""


class TemplateError(NortuneError, ValueError):
    """The model's chat template cannot be written as an Ollama template; the message says why."""


class ConversionError(NortuneError, RuntimeError):
    """llama.cpp's converter or quantiser refused the model; the message says which and why."""


class MalformedRecord(ValueError):
    """A record cannot become chat messages (curate counts it as dropped, or stops with --strict)."""


class BrokenFile(ValueError):
    """A file's bytes do not parse as its format says; the caller names the file in a DataError."""


class StageFailed(RuntimeError):
    """A stage ended without a result, with its reason (and ``details`` for ``failed.json``): the runner
    records it in the stage's folder (no manifest), and the command exits 1."""

    def __init__(self, stage: str, message: str, details: dict | None = None):
        self.stage, self.message, self.details = stage, message, details or {}
        super().__init__(f"{stage} failed: {message}")


NATIVE_CRASH_HINT = ("Try: `python -m nortune.export.toolchain` to reinstall nortune's portable llama.cpp build "
                     "(a `NORTUNE_LLAMA_CPP_BUILD=native` build is the usual suspect), `nortune export --force` to "
                     "rewrite the files, and docs/export.md, 'When llama.cpp crashes'.")


class NativeCrash(RuntimeError):
    """A llama.cpp child process died by a signal."""

    def __init__(self, job: str, path, signum: int, log_file=None):
        import signal

        self.job, self.path, self.signum, self.log_file = job, path, signum, log_file
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        self.signal_name = name
        where = f"; its last output is in {log_file}" if log_file else ""
        super().__init__(f"llama.cpp crashed with {name} while running {job} on {path}{where}. "
                         "The process and every other result are intact, but this step produced nothing "
                         f"usable. {NATIVE_CRASH_HINT}")

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

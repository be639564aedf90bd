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

"""Reaching the Hugging Face Hub for NorEval's documents: asked once, and when it cannot be reached, one line
with the way to work offline, instead of every download's retries (about 25 s of warnings per file)."""

from __future__ import annotations

from nortune.config.names import LOCAL_LAYOUT
from nortune.errors import HubUnreachable

# Exceptions that mean "no connection" (httpx, requests, urllib3, the OS), matched by name so that no HTTP
# library has to be imported to ask.
_CONNECTION = {"ConnectError", "ConnectionError", "ConnectTimeout", "ReadTimeout", "Timeout", "TimeoutException",
               "NetworkError", "NewConnectionError", "MaxRetryError", "TimeoutError", "gaierror"}
_REACHED: set[str] = set()  # endpoints that answered in this process: asked once, not per file


def offline_fix(what: str) -> str:
    return (f"{what}. Offline, set evaluate.source: local with evaluate.data_dir holding a copy ({LOCAL_LAYOUT}), "
            "or fill the datasets cache on a connected machine (run the same command there, then copy "
            "~/.cache/huggingface) and set HF_HUB_OFFLINE=1 here")


def is_connection_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if any(cls.__name__ in _CONNECTION for cls in type(seen).__mro__):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def require_reachable(dataset: str, revision: str | None, needed_for: str) -> None:
    """Fail now, in one line, when the Hub cannot be reached and ``HF_HUB_OFFLINE`` is not set (with it, the
    datasets cache is read and a miss fails at once). Any other answer (gated, not found) is left to the
    loader, which says it in its own words."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE or constants.ENDPOINT in _REACHED:
        return
    try:
        HfApi().dataset_info(dataset, revision=revision, timeout=10)
        _REACHED.add(constants.ENDPOINT)
    except Exception as exc:  # noqa: BLE001 - only a connection failure is ours to phrase
        if is_connection_error(exc):
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise HubUnreachable(offline_fix(f"{dataset}: the Hugging Face Hub cannot be reached at "
                                             f"{constants.ENDPOINT} ({reason}); {needed_for}")) from None

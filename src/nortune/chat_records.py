"""The chat record every training stage reads: ``{"messages": [{"role": ..., "content": ...}, ...]}``.

SFT data (train), preference pairs and synthetic pairs (preference) are checked by the same
function, so a record means the same thing to both stages.
"""

from __future__ import annotations

from typing import Any

from nortune.jsonl import DataError

ROLES = ("system", "user", "assistant")


def check_messages(record: Any, where: str) -> list[dict[str, str]]:
    """Return the record's messages or raise DataError naming what is wrong and where."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    messages = record.get("messages")
    if messages is None:
        raise DataError(f"{where}: missing field 'messages'")
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: 'messages' must be a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataError(f"{where}: messages[{i}] must be an object")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(f"{where}: messages[{i}].role: {role!r} is not one of {list(ROLES)}")
        if not isinstance(content, str):
            raise DataError(f"{where}: messages[{i}].content must be a string")
    return [{"role": m["role"], "content": m["content"]} for m in messages]

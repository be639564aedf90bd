"""Map a raw record to chat ``messages`` and normalise its text (NFC, whitespace)."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from nortune.config import CurateSource
from nortune.errors import MalformedRecord

ROLES = {"system", "user", "assistant"}
_ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant",
                 "prompter": "user"}
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")




def normalise_text(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _field(obj: dict[str, Any], source: CurateSource, canonical: str) -> Any:
    return obj.get(source.fields.get(canonical, canonical))


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedRecord(f"{what} is {type(value).__name__}, expected text")
    return normalise_text(value)


def pick_mapping(obj: dict[str, Any], source: CurateSource) -> str:
    if source.mapping != "auto":
        return source.mapping
    has = lambda key: _field(obj, source, key) is not None  # noqa: E731
    if has("messages"):
        return "messages"
    if has("instruction") and has("output"):
        return "instruction"
    if has("prompt") and has("response"):
        return "prompt_response"
    if has("text"):
        return "text"
    raise MalformedRecord(f"no known fields (messages, instruction+output, prompt+response, text); "
                          f"has {sorted(obj)[:8]}")


def to_messages(obj: dict[str, Any], source: CurateSource) -> tuple[str, list[dict[str, str]]]:
    """(mapping used, normalised messages); raises MalformedRecord."""
    mapping = pick_mapping(obj, source)
    system = _text(_field(obj, source, "system"), "system")
    head = [{"role": "system", "content": system}] if system else []
    if mapping == "messages":
        raw = _field(obj, source, "messages")
        if not isinstance(raw, list) or not raw:
            raise MalformedRecord("messages must be a non-empty list")
        role_key = source.fields.get("role", "role")
        content_key = source.fields.get("content", "content")
        messages = list(head)
        for i, turn in enumerate(raw):
            if not isinstance(turn, dict):
                raise MalformedRecord(f"messages[{i}] is not an object")
            role = turn.get(role_key, turn.get("from"))
            content = turn.get(content_key, turn.get("value"))
            if not isinstance(role, str):
                raise MalformedRecord(f"messages[{i}] has no role")
            role = _ROLE_ALIASES.get(role.lower(), role.lower())
            if role not in ROLES:
                raise MalformedRecord(f"messages[{i}] has unknown role {role!r}")
            if content is None:
                raise MalformedRecord(f"messages[{i}] has no content")
            messages.append({"role": role, "content": _text(content, f"messages[{i}].content")})
        if not any(m["role"] == "assistant" for m in messages):
            raise MalformedRecord("messages have no assistant turn")
        return mapping, messages
    if mapping == "instruction":
        instruction = _text(_field(obj, source, "instruction"), "instruction")
        extra = _text(_field(obj, source, "input"), "input")
        user = f"{instruction}\n\n{extra}" if extra else instruction
        return mapping, head + [{"role": "user", "content": user},
                                {"role": "assistant", "content": _text(_field(obj, source, "output"), "output")}]
    if mapping == "prompt_response":
        return mapping, head + [{"role": "user", "content": _text(_field(obj, source, "prompt"), "prompt")},
                                {"role": "assistant", "content": _text(_field(obj, source, "response"), "response")}]
    # Plain text: one assistant turn (continued-pretraining style data).
    return mapping, [{"role": "assistant", "content": _text(_field(obj, source, "text"), "text")}]

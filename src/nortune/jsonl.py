"""Streaming JSONL reading that names file and line for every bad record."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nortune.errors import DataError




TOO_DEEP = "JSON nested too deeply (deeper than Python's recursion limit)"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # \ud800-\udfff written as a JSON escape
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(line: str, obj: Any) -> str | None:
    """Why a parsed record holds a lone surrogate (JSON allows the escape, UTF-8 cannot encode it), else None.

    Only lines that contain a surrogate escape are walked (a pair is fine: json joins it); the
    walk iterates, so a deep record cannot exhaust the stack here.
    """
    if "\\u" not in line or not _SURROGATE_ESCAPE.search(line):
        return None
    stack = [obj]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if (match := _SURROGATE.search(node)) is not None:
                return f"lone surrogate \\u{ord(match.group()):04x} in a string (not valid Unicode)"
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def parse_record(line: str) -> tuple[Any, str | None]:
    """(object, None) for one JSON line, or (None, why it is unusable): malformed, nested too deeply, or
    holding a lone surrogate. Each reader turns the reason into its own policy (DataError or a dropped line)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"malformed JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        return None, TOO_DEEP
    why = lone_surrogate(line, obj)
    return (None, why) if why else (obj, None)


def not_utf8(path: Path) -> str:
    """``file:line: not UTF-8 (byte 0x.. at column N)`` for the first undecodable line (after a decode error)."""
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return f"{path}:{line_no}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
    return f"{path}: not UTF-8"


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) for each non-blank line; malformed JSON raises DataError."""
    if not Path(path).is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8-sig") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                obj, why = parse_record(line)
                if why is not None:
                    raise DataError(f"{path}:{line_no}: {why}")
                yield line_no, obj
    except UnicodeDecodeError:
        raise DataError(not_utf8(path)) from None


@dataclass
class Drops:
    """Records left out, counted by reason, with the first line numbers of each (for the report)."""

    dropped: Counter = field(default_factory=Counter)
    dropped_lines: dict[str, list[int]] = field(default_factory=dict)

    def drop(self, reason: str, line_no: int, keep: int = 20) -> None:
        self.dropped[reason] += 1
        lines = self.dropped_lines.setdefault(reason, [])
        if len(lines) < keep:
            lines.append(line_no)

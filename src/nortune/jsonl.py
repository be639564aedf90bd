"""Streaming JSONL reading that names file and line for every bad record."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nortune.errors import NortuneError


class DataError(NortuneError, ValueError):
    """Bad input data, phrased as ``file:line: reason``."""


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
                try:
                    yield line_no, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{line_no}: malformed JSON: {exc.msg} (column {exc.colno})") from None
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

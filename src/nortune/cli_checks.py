"""Cheap checks of the paths a command names, made before any stage starts.

Each raises a :class:`~nortune.errors.NortuneError` naming the file (and line), so the CLI
prints one line instead of a traceback from deep inside llama.cpp, transformers or a stage.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from nortune.errors import UsageError
from nortune.jsonl import DataError, parse_record

GGUF_MAGIC = b"GGUF"


def existing_file(path: Path, what: str) -> Path:
    if path.is_dir():
        raise UsageError(f"{path}: is a folder, expected {what}")
    if not path.is_file():
        raise UsageError(f"{path}: file not found (expected {what})")
    return path


def gguf_file(path: Path) -> Path:
    """A file that starts with GGUF's magic bytes (llama.cpp would otherwise crash or hang on it)."""
    existing_file(path, "a .gguf file")
    with open(path, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise DataError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
    return path


def text_lines(handle: BinaryIO, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) per line, each decoded on its own; a bad byte names its line and column."""
    for line_no, raw in enumerate(handle, start=1):
        if line_no == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]
        if b"\x00" in raw:
            raise DataError(f"{name}:{line_no}: binary data (a NUL byte), not text")
        try:
            yield line_no, raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise DataError(f"{name}:{line_no}: not UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})") \
                from None


def line_texts(handle: BinaryIO, name: str, field: str | None = None) -> Iterator[str]:
    """Each line's text; with ``field``, the text of that field of each JSON line (a blank line: "")."""
    for line_no, text in text_lines(handle, name):
        if field is not None:
            where = f"{name}:{line_no}"
            text = field_text(parse_json_line(text, where), field, where) if text.strip() else ""
        yield text


def field_text(obj: Any, field: str, where: str) -> str:
    """The text of one JSONL field (chat messages: all contents); a record without it is an error."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if field not in obj:
        raise DataError(f"{where}: no field {field!r} (the record has {', '.join(sorted(obj)) or 'no fields'})")
    value = obj[field]
    if isinstance(value, list):  # chat messages: all contents
        value = "\n".join(str(m.get("content", "")) for m in value if isinstance(m, dict))
    if value is not None and not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} is not text")
    return value or ""


def parse_json_line(text: str, where: str) -> Any:
    obj, why = parse_record(text)
    if why is not None:
        raise DataError(f"{where}: {why}")
    return obj


def has_records(path: Path) -> bool:
    """Whether the file holds at least one non-blank line (or row, for Parquet)."""
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows > 0
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{path}: not a Parquet file ({exc})") from None
    with open(path, "rb") as handle:
        return any(line.strip() and line.strip() != codecs.BOM_UTF8 for line in handle)


def finished_stages(run_dir: Path) -> list[Path]:
    """The stage folders of a run that hold a manifest (or a failure record)."""
    if not run_dir.is_dir():
        return []
    return sorted(p.parent for pattern in ("*/manifest.json", "*/*/manifest.json", "*/failed.json")
                  for p in run_dir.glob(pattern))


def run_folder(path: Path) -> Path:
    if not path.is_dir():
        raise UsageError(f"{path}: no such run folder")
    if not finished_stages(path):
        raise UsageError(f"{path}: not a run folder (no stage in it has finished)")
    return path

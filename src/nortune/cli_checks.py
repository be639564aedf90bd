"""Cheap checks of the paths a command names, made before any stage starts.

Each raises a :class:`~nortune.errors.NortuneError` naming the file (and line), so the CLI
prints one line instead of a traceback from deep inside llama.cpp, transformers or a stage.
"""

from __future__ import annotations

import codecs
import json
import math
import mmap
import os
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from nortune.errors import BrokenFile, UsageError
from nortune.jsonl import DataError, parse_record

GGUF_MAGIC = b"GGUF"


def existing_file(path: Path, what: str) -> Path:
    if path.is_dir():
        raise UsageError(f"{path}: is a folder, expected {what}")
    if not path.is_file():
        raise UsageError(f"{path}: file not found (expected {what})")
    return path


def gguf_file(path: Path) -> Path:
    """A GGUF file whose header reads and whose tensors all lie inside it.

    llama.cpp and transformers crash, hang or print a traceback on a file that only starts like
    one (the magic bytes, then garbage) or was cut short by a broken download; this walk reads the
    header alone (key/value pairs and tensor infos, not the weights), so it takes a moment even
    for a large model.
    """
    existing_file(path, "a .gguf file")
    with open(path, "rb") as handle:
        if handle.read(4) != GGUF_MAGIC:
            raise DataError(f"{path}: not a GGUF file (it does not start with the GGUF magic bytes)")
        size = os.fstat(handle.fileno()).st_size
        if size < 24:
            raise DataError(f"{path}: broken GGUF file (truncated: {size} bytes, shorter than the header)")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            try:
                _GGUFHeader(data).check()
            except BrokenFile as exc:
                raise DataError(f"{path}: broken GGUF file ({exc})") from None
    return path




# GGUF value types: 0-7, 10-12 are fixed-size scalars (their struct formats), 8 a string, 9 an array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


class _GGUFHeader:
    """A bounds-checked walk over a GGUF header (version 2 or 3, little-endian), as llama.cpp reads it."""

    def __init__(self, data: Any) -> None:
        self.data, self.size, self.pos = data, len(data), 4

    def take(self, fmt: str) -> Any:
        width = struct.calcsize("<" + fmt)
        if self.pos + width > self.size:
            raise BrokenFile(f"truncated: the header runs past the end of the file at byte {self.size}")
        value = struct.unpack_from("<" + fmt, self.data, self.pos)[0]
        self.pos += width
        return value

    def string(self, what: str) -> bytes:
        length = self.take("Q")
        if length > self.size - self.pos:
            raise BrokenFile(f"truncated or garbage: {what} claims {length} bytes, past the end of the file")
        self.pos += length
        return bytes(self.data[self.pos - length:self.pos])

    def value(self, kind: int, key: str, depth: int = 0) -> Any:
        if kind in _GGUF_SCALARS:
            return self.take(_GGUF_SCALARS[kind])
        if kind == _GGUF_STRING:
            return self.string(f"the value of {key}")
        if kind != _GGUF_ARRAY or depth > 4:
            raise BrokenFile(f"unknown value type {kind} for key {key!r}")
        item, count = self.take("I"), self.take("Q")
        if item in _GGUF_SCALARS:  # a fixed-size array is skipped in one step
            width = struct.calcsize("<" + _GGUF_SCALARS[item])
            if count * width > self.size - self.pos:
                raise BrokenFile(f"truncated or garbage: array {key!r} of {count} items runs past the end of the file")
            self.pos += count * width
            return None
        if count > self.size - self.pos:  # every string or array item takes at least 8 bytes
            raise BrokenFile(f"truncated or garbage: array {key!r} of {count} items runs past the end of the file")
        for _ in range(count):
            self.value(item, key, depth + 1)
        return None

    def check(self) -> None:
        version = self.take("I")
        if version not in (2, 3):
            raise BrokenFile(f"unsupported GGUF version {version} (llama.cpp reads 2 and 3)")
        tensors, kvs = self.take("Q"), self.take("Q")
        if 24 + 12 * kvs + 24 * tensors > self.size:  # a pair takes >= 12 bytes, a tensor info >= 24
            raise BrokenFile(f"{tensors} tensors and {kvs} metadata keys cannot fit in {self.size} bytes "
                          "(truncated or garbage)")
        alignment = 32
        for _ in range(kvs):
            key = self.string("a metadata key").decode("utf-8", "replace")
            value = self.value(self.take("I"), key)
            if key == "general.alignment" and isinstance(value, int) and value > 0:
                alignment = value
        infos = []
        for _ in range(tensors):
            name = self.string("a tensor name").decode("utf-8", "replace")
            dims = self.take("I")
            if dims > 8:
                raise BrokenFile(f"tensor {name!r} has {dims} dimensions (garbage)")
            shape = [self.take("Q") for _ in range(dims)]
            infos.append((name, shape, self.take("I"), self.take("Q")))
        start = -(-self.pos // alignment) * alignment
        for name, shape, kind, offset in infos:
            end = start + offset + _tensor_bytes(name, shape, kind)
            if end > self.size:
                raise BrokenFile(f"truncated: tensor {name!r} ends at byte {end}, the file has {self.size} bytes")


def _tensor_bytes(name: str, shape: list[int], kind: int) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, width = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    except (ValueError, KeyError):
        raise BrokenFile(f"tensor {name!r} has unknown type {kind}") from None
    return math.prod(shape) // block * width


def model_weights(folder: Path) -> None:
    """The weight files transformers would load from a local model folder, checked without loading them.

    safetensors (preferred by transformers when present): the 8-byte header length and the JSON
    header parse, and the file covers every tensor's ``data_offsets``. pytorch ``.bin``: a zip
    archive (torch.save's format) whose entries lie inside the file, or torch's legacy pickle.
    Shards named by an ``*.index.json`` must exist. A folder with no weights passes (plan needs
    only config.json; the loader itself names missing weights).
    """
    folder = Path(folder)
    for weights, index, check in ((SAFETENSORS, SAFETENSORS + ".index.json", _safetensors_file),
                                  (TORCH_BIN, TORCH_BIN + ".index.json", _torch_bin_file)):
        if (folder / weights).is_file():
            check(folder / weights)
            return
        if (folder / index).is_file():
            for shard in _index_shards(folder / index):
                if not (folder / shard).is_file():
                    raise DataError(f"{folder / index}: shard {shard} is missing from {folder}")
                check(folder / shard)
            return


SAFETENSORS, TORCH_BIN = "model.safetensors", "pytorch_model.bin"
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library refuses larger headers too
# torch.save's legacy (pre-zip) format starts with a pickled magic number (torch.serialization.MAGIC_NUMBER).
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


def _index_shards(index: Path) -> list[str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map")
    except (UnicodeDecodeError, ValueError, AttributeError, RecursionError):
        weight_map = None
    if not isinstance(weight_map, dict):
        raise DataError(f"{index}: not a weights index (no weight_map object)")
    return sorted({str(shard) for shard in weight_map.values()})


def _safetensors_file(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        if length is None or length > min(size - 8, _SAFETENSORS_MAX_HEADER):
            raise DataError(f"{path}: broken safetensors file (truncated or garbage: its header length "
                            f"{length if length is not None else '(missing)'} does not fit the {size}-byte file)")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
        ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    except (UnicodeDecodeError, ValueError, RecursionError, AttributeError, TypeError, KeyError, IndexError):
        raise DataError(f"{path}: broken safetensors file (its JSON header does not read)") from None
    end = 8 + length + max(ends, default=0)
    if end > size:
        raise DataError(f"{path}: truncated safetensors file: the tensors need {end} bytes, the file has {size}")


def _torch_bin_file(path: Path) -> None:
    with open(path, "rb") as handle:
        if handle.read(len(_TORCH_LEGACY_MAGIC)) == _TORCH_LEGACY_MAGIC:
            return
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: broken PyTorch weights file (not a zip archive: truncated or not torch.save output)")
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(f"{path}: broken PyTorch weights file ({exc})") from None
    for entry in entries:
        if entry.header_offset + entry.compress_size > size:
            raise DataError(f"{path}: truncated PyTorch weights file: entry {entry.filename} runs past the "
                            f"end of the {size}-byte file")
    if not any(entry.filename.endswith("data.pkl") for entry in entries):
        raise DataError(f"{path}: not PyTorch weights (the zip archive has no data.pkl)")


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

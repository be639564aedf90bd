"""Both sides of the check.

Test side: the documents evaluate scores (the NorEval catalogue of ``nortune.config.names``:
same task, dataset, config, split, data folder and revision), through the real HF
``datasets`` loader or the local files evaluate reads, plus extra benchmarks (JSONL/Parquet
with a field list) and evaluate's held-out perplexity texts (``heldout``: one test text per line). Every field
the catalogue names as text (``NorEvalTask.text_fields``: question, passage/fact, answer choices,
reference answers, source and target sentences) becomes one test text with a stable id; a question also carries its correct answer (for the whole-question check).

Training side: chat JSONL (``messages``), any JSONL or Parquet with text fields, or plain
text (one record per line), streamed record by record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nortune.jsonl import TOO_DEEP, DataError, lone_surrogate, not_utf8


@dataclass(frozen=True)
class TestText:
    __test__ = False  # not a pytest class

    uid: str   # e.g. norcommonsenseqa_nob/train/<row id>/choices.text/2
    task: str  # e.g. norcommonsenseqa_nob (the evaluate family)
    text: str  # as loaded; normalised later
    question: bool = False     # the item's question (checked whole by the ``question`` method)
    answer: str | None = None  # for a question: the text of its correct choice, when the row says


@dataclass(frozen=True)
class TrainRecord:
    line: int           # 1-based line (JSONL/txt) or row (Parquet)
    rid: str | None     # the record's own id field, when it has one
    raw: str | None     # the original line, kept for the cleaned copy (JSONL/txt)
    row: dict | None    # the parsed row (Parquet), for the cleaned copy
    text: str


def resolve(record: Any, path: str) -> tuple[bool, list[str]]:
    """Follow a dotted path; lists are walked item by item. Returns (found, strings)."""
    nodes = [record]
    for key in path.split("."):
        nxt = []
        for node in nodes:
            if isinstance(node, list):
                node_items = node
            else:
                node_items = [node]
            for item in node_items:
                if not isinstance(item, dict) or key not in item:
                    return False, []
                nxt.append(item[key])
        nodes = nxt
    out: list[str] = []
    for node in nodes:
        for item in node if isinstance(node, list) else [node]:
            if isinstance(item, str):
                out.append(item)
            elif item is not None:
                out.append(str(item))
    return True, out


def _rows_from_file(path: Path) -> Iterator[tuple[int, dict]]:
    if path.suffix == ".parquet":
        yield from _parquet_rows(path)
        return
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = _checked_loads(line, f"{path}:{line_no}")
            if not isinstance(row, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
            yield line_no, row


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DataError(f"{path}: not a readable Parquet file: {exc}") from None
    row_no = 0
    for batch in reader.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            row_no += 1
            yield row_no, row


def correct_answer(row: dict) -> str | None:
    """The text of the correct choice: ``answer`` label in ``choices``, or label 1 of ``mc1_targets``."""
    try:
        if isinstance(row.get("mc1_targets"), dict):
            targets = row["mc1_targets"]
            return str(targets["choices"][list(targets["labels"]).index(1)])
        choices = row["choices"]
        return str(choices["text"][list(choices["label"]).index(row["answer"])])
    except (KeyError, ValueError, IndexError, TypeError):
        return None


def _texts_of(rows: Iterator[tuple[int, dict]], where: str, task: str, prefix: str, fields: list[str],
              optional: list[str], id_field: str | None, question: str | None = None) -> Iterator[TestText]:
    for line_no, row in rows:
        rid = row.get(id_field) if id_field else None
        rid = str(rid) if rid is not None else f"row{line_no}"
        for name in [*fields, *optional]:
            found, texts = resolve(row, name)
            if not found:
                if name in optional:
                    continue
                raise DataError(f"{where}:{line_no}: missing field {name!r} (have: {sorted(row)})")
            many = len(texts) > 1 or name.count(".") > 0
            for i, text in enumerate(texts):
                suffix = f"{name}/{i}" if many else name
                is_question = name == question
                yield TestText(uid=f"{prefix}/{rid}/{suffix}", task=task, text=text, question=is_question,
                               answer=correct_answer(row) if is_question else None)


def _hf_rows(dataset: str, config: str, split: str, revision: str | None) -> Iterator[tuple[int, dict]]:
    """The real loader: ``datasets.load_dataset`` (downloads, or reads the local HF cache)."""
    from datasets import load_dataset

    from nortune.hub import require_reachable

    require_reachable(dataset, revision, "decontam reads the NorEval documents evaluate scores from it")
    try:
        data = load_dataset(dataset, config, split=split, revision=revision)
    except Exception as exc:
        from nortune.hub import is_connection_error, offline_fix

        problem = f"{dataset} [{config}/{split}]: could not load with datasets.load_dataset: {exc}"
        raise DataError(offline_fix(problem) if is_connection_error(exc) or "HF_HUB_OFFLINE" in str(exc)
                        or "Couldn't reach" in str(exc) else problem) from None
    for i, row in enumerate(data, start=1):
        yield i, dict(row)


HELDOUT_PREFIX = "heldout:"  # the test-side name of evaluate.perplexity's text set <name>


def _lines_of(path: Path, task: str) -> Iterator[TestText]:
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                yield TestText(uid=f"{task}/line{line_no}", task=task, text=line.strip())


def test_sources(settings) -> dict[str, dict[str, Any]]:
    """{task: where its documents are and their revision}, without reading rows (the gate compares these).

    ``settings`` is a resolved ``decontam`` section (the recipe fills its source, folder, revision and
    tasks from ``evaluate``), so these are the documents evaluate scores: each family's scored split
    from the one catalogue, a local file by the one local layout (``config.names``). A local file's
    revision is its sha256, a hub revision the pinned one or ``default (unpinned)``.
    """
    from nortune.config.names import CATALOGUE, LOCAL_LAYOUT, local_noreval_file
    from nortune.runs import file_sha256

    out: dict[str, dict[str, Any]] = {}
    for family in settings.tasks or []:
        task = CATALOGUE[family]
        entry: dict[str, Any] = {"dataset": task.dataset, "config": task.config, "split": task.split}
        if settings.noreval_source == "local":
            path = local_noreval_file(Path(settings.noreval_dir), family, task.split)
            if not path.is_file():
                raise DataError(f"{path}: file not found ({LOCAL_LAYOUT})")
            entry.update(path=path, origin=str(path), revision=f"sha256:{file_sha256(path)}")
        else:
            entry.update(path=None, origin=f"hf:{task.dataset}:{task.config}:{task.split}",
                         revision=settings.noreval_revision or "default (unpinned)")
        out[family] = entry
    for extra in settings.extra:
        out[extra.name] = {"path": Path(extra.path), "origin": str(extra.path),
                           "revision": f"sha256:{file_sha256(Path(extra.path))}"}
    for name, path in (settings.heldout or {}).items():  # evaluate.perplexity's held-out texts, one per line
        out[f"{HELDOUT_PREFIX}{name}"] = {"path": Path(path), "origin": str(path), "lines": True,
                                         "revision": f"sha256:{file_sha256(Path(path))}"}
    return out


test_sources.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def describe_sources(sources: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The JSON-ready part of ``test_sources``: {task: {origin, revision}}."""
    return {k: {"origin": v["origin"], "revision": v["revision"]} for k, v in sources.items()}


def load_test_side(settings) -> tuple[list[TestText], dict[str, dict[str, str]]]:
    """All test texts of a resolved decontam section; also ``describe_sources``. Fails on the first bad row."""
    texts: list[TestText] = []
    sources = test_sources(settings)
    for task, doc in sources.items():
        if doc.get("lines"):  # held-out perplexity texts: every line is a test text
            texts.extend(_lines_of(Path(doc["path"]), task))
            continue
        if "dataset" not in doc:  # an extra benchmark
            rows = _rows_from_file(doc["path"])
            extra = next(e for e in settings.extra if e.name == task)
            texts.extend(_texts_of(rows, str(doc["path"]), task, task, extra.fields, [], extra.id_field))
            continue
        from nortune.config.names import CATALOGUE

        spec = CATALOGUE[task]  # the fields that are test text: questions, passages, choices, references
        fields, optional, question = spec.text_fields, spec.optional_text_fields, spec.question_field
        if doc["path"] is not None:
            rows, where = _rows_from_file(doc["path"]), str(doc["path"])
        else:
            rows = _hf_rows(doc["dataset"], doc["config"] or None, doc["split"], settings.noreval_revision)
            where = f"{doc['dataset']} [{doc['config']}/{doc['split']}] row"
        texts.extend(_texts_of(rows, where, task, f"{task}/{doc['split']}", list(fields), list(optional), "id",
                               question))
    return texts, describe_sources(sources)


def _train_text(row: Any, fields: list[str] | None, where: str) -> str:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if fields:
        parts: list[str] = []
        for name in fields:
            found, texts = resolve(row, name)
            if not found:
                raise DataError(f"{where}: missing field {name!r} (have: {sorted(row)})")
            parts.extend(texts)
        return "\n".join(parts)
    messages = row.get("messages")
    if isinstance(messages, list):
        parts = []
        for i, message in enumerate(messages):
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, str):
                raise DataError(f"{where}: messages[{i}].content is missing or not a string")
            parts.append(content)
        return "\n".join(parts)
    if isinstance(row.get("text"), str):
        return row["text"]
    raise DataError(f"{where}: no 'messages' list or 'text' string (have: {sorted(row)}); "
                    "set decontam.text_fields to the fields that hold the text")


_SCAN_ONCE = json.JSONDecoder().scan_once  # json's C scanner without loads()'s per-call wrapping


def _loads(line: str) -> Any:
    """``json.loads(line)``, a little faster on the common line; anything unusual goes to json.loads."""
    try:
        row, end = _SCAN_ONCE(line, 0)
    except StopIteration:
        return json.loads(line)  # raises the usual JSONDecodeError
    if end == len(line) or line[end:].isspace():
        return row
    return json.loads(line)


def _checked_loads(line: str, where: str) -> Any:
    """One JSON line; malformed, nested too deeply or holding a lone surrogate: DataError naming file:line
    (decontam's policy: a line it cannot check stops the check, it is never skipped)."""
    try:
        row = _loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: malformed JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise DataError(f"{where}: {TOO_DEEP}") from None
    why = lone_surrogate(line, row)
    if why is not None:
        raise DataError(f"{where}: {why}")
    return row


def iter_training(path: Path, fields: list[str] | None, offset: int = 0, first_line: int = 1,
                  first_row: int = 1, limit: int | None = None) -> Iterator[TrainRecord]:
    """Stream training records; any malformed line or missing field raises DataError with file:line.

    ``offset``/``first_line`` (JSONL, text: a byte offset at a line start and its line number) or
    ``first_row`` (Parquet) and ``limit`` read one shard of the file (``decontam.shards``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    left = float("inf") if limit is None else limit
    if left <= 0:
        return
    if path.suffix == ".parquet":
        for row_no, row in _parquet_rows(path):
            if row_no < first_row:
                continue
            rid = row.get("id")
            yield TrainRecord(row_no, None if rid is None else str(rid), None, row,
                              _train_text(row, fields, f"{path}:row {row_no}"))
            left -= 1
            if not left:
                return
        return
    plain = path.suffix in (".txt", ".text")
    try:
        with open(path, encoding="utf-8") as handle:
            handle.seek(offset)  # a line start: a byte position is a valid cookie for UTF-8
            for line_no, line in enumerate(handle, start=first_line):
                if line.isspace() or not line:
                    continue
                if plain:
                    yield TrainRecord(line_no, None, line, None, line.rstrip("\n"))
                else:
                    row = _checked_loads(line, f"{path}:{line_no}")
                    rid = row.get("id") if isinstance(row, dict) else None
                    yield TrainRecord(line_no, None if rid is None else str(rid), line, None,
                                      _train_text(row, fields, f"{path}:{line_no}"))
                left -= 1
                if not left:
                    return
    except UnicodeDecodeError:
        raise DataError(not_utf8(path)) from None  # file:line: not UTF-8 (byte .. at column N)

"""Chat training records: structure checks (``chat_records``), assistant-only loss masks, drop counts.

We tokenise ourselves (rather than TRL's ``assistant_only_loss``) because most chat
templates, Gemma's included, lack the ``{% generation %}`` markers TRL needs. The mask is
found on the rendered text: each assistant turn's character span is the difference between
the conversation rendered up to that turn and the same prefix with a generation prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nortune.chat_records import check_messages
from nortune.jsonl import DataError, Drops, iter_jsonl


@dataclass
class DataReport(Drops):
    path: str = ""
    records: int = 0
    used: int = 0
    truncated: int = 0
    assistant_tokens: int = 0
    tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "records": self.records, "used": self.used, "truncated": self.truncated,
                "dropped": dict(self.dropped), "dropped_lines_first_20": self.dropped_lines,
                "tokens": self.tokens, "assistant_tokens": self.assistant_tokens}

    def summary(self) -> str:
        drops = ", ".join(f"{k}: {v} (lines {self.dropped_lines[k][:5]}...)" for k, v in self.dropped.items())
        return (f"{self.path}: {self.records} records, {self.used} used, {self.truncated} truncated to "
                f"max_seq_len; dropped {sum(self.dropped.values())}" + (f" [{drops}]" if drops else ""))


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]], where: str) -> tuple[str, list[tuple[int, int]]]:
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        upto = tokenizer.apply_chat_template(messages[: i + 1], tokenize=False)
        if i == 0:  # a text-only record (one assistant turn): the span starts at its content
            start = upto.find(message["content"].strip())
        else:
            prefix = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
            start = len(prefix) if upto.startswith(prefix) else -1
        if start < 0 or not text.startswith(upto):
            raise DataError(f"{where}: the chat template does not render turns as prefixes of each other; "
                            "cannot locate the assistant turn for the loss mask")
        spans.append((start, len(upto)))
    return text, spans


def tokenize_record(tokenizer: Any, messages: list[dict[str, str]], max_len: int,
                    where: str) -> tuple[list[int], list[int], bool]:
    """Token ids and a 0/1 mask of assistant tokens (the only ones that carry loss)."""
    text, spans = assistant_spans(tokenizer, messages, where)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"]
    mask = [int(any(s <= start < e for s, e in spans)) for start, _ in encoded["offset_mapping"]]
    truncated = len(ids) > max_len
    return ids[:max_len], mask[:max_len], truncated


def build_dataset(path: Path, tokenizer: Any, max_len: int) -> tuple[Any, DataReport]:
    """Validate every record first (errors name file:line), then tokenise into a datasets.Dataset."""
    from datasets import Dataset

    report = DataReport(path=str(path))
    rows: dict[str, list] = {"input_ids": [], "assistant_masks": []}
    for line_no, record in iter_jsonl(path):
        report.records += 1
        where = f"{path}:{line_no}"
        messages = check_messages(record, where)
        if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
            report.drop("no_assistant_turn", line_no)
            continue
        ids, mask, truncated = tokenize_record(tokenizer, messages, max_len, where)
        if not any(mask):
            report.drop("no_assistant_tokens_within_max_seq_len", line_no)
            continue
        report.truncated += truncated
        report.used += 1
        report.tokens += len(ids)
        report.assistant_tokens += sum(mask)
        rows["input_ids"].append(ids)
        rows["assistant_masks"].append(mask)
    if not report.used:
        raise DataError(f"{path}: no usable training records ({report.summary()})")
    return Dataset.from_dict(rows), report

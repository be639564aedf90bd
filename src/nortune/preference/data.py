"""Preference pairs: checked, normalised to chat form, labelled by language, every drop counted.

Pairs arrive as JSONL or Parquet rows with ``prompt``, ``chosen`` and ``rejected``, each
either a chat message list or a plain string. They are written back as one normalised
JSONL file (chat lists only), which is what the contamination check and TRL both read.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nortune import markup
from nortune.jsonl import DataError, Drops, iter_jsonl
from nortune.runs import atomic_writer
from nortune.chat_records import check_messages

FIELDS = ("prompt", "chosen", "rejected")


@dataclass
class PairReport(Drops):
    path: str = ""
    records: int = 0
    used: int = 0
    languages: Counter = field(default_factory=Counter)
    synthetic: int = 0

    def to_json(self) -> dict[str, Any]:
        shares = {k: round(v / self.used, 4) for k, v in self.languages.items()} if self.used else {}
        return {"path": self.path, "records": self.records, "used": self.used, "dropped": dict(self.dropped),
                "dropped_lines_first_20": self.dropped_lines, "languages": dict(self.languages),
                "language_shares": shares, "synthetic": self.synthetic, "human": self.used - self.synthetic}

    def markdown(self) -> str:
        rows = [f"| {lang} | {n} | {100 * n / max(self.used, 1):.1f} % |" for lang, n in self.languages.most_common()]
        drops = [f"| {markup.text(reason)} | {n} | {markup.text(self.dropped_lines[reason][:10])} |"
                 for reason, n in self.dropped.items()]
        return "\n".join([
            f"# Preference pairs: {markup.text(self.path)}", "",
            f"{self.records} records read, {self.used} pairs used ({self.synthetic} synthetic, "
            f"{self.used - self.synthetic} human), {sum(self.dropped.values())} dropped.", "",
            "| language (of chosen) | pairs | share |", "|---|---|---|", *rows, "",
            "| dropped because | records | first lines |", "|---|---|---|", *(drops or ["| - | 0 | |"]), ""])


def _rows(path: Path):
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for row_no, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield row_no, row
        return
    yield from iter_jsonl(path)


def _as_messages(value: Any, role: str, where: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return check_messages({"messages": value}, where)


def _text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages).strip()


def normalise_pairs(path: Path, out: Path) -> PairReport:
    """Write usable pairs to ``out`` (JSONL, chat form); structural errors name file:line."""
    from nortune.curate.langid import default_model

    langid = default_model()
    report = PairReport(path=str(path))
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with atomic_writer(out) as handle:
        for line_no, row in _rows(path):
            report.records += 1
            where = f"{path}:{line_no}"
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            missing = [name for name in FIELDS if row.get(name) in (None, "", [])]
            if missing:
                report.drop(f"missing_field:{missing[0]}", line_no)
                continue
            prompt = _as_messages(row["prompt"], "user", f"{where}: prompt")
            chosen = _as_messages(row["chosen"], "assistant", f"{where}: chosen")
            rejected = _as_messages(row["rejected"], "assistant", f"{where}: rejected")
            if not _text(chosen) or not _text(rejected):
                report.drop("empty_response", line_no)
                continue
            if _text(chosen) == _text(rejected):
                report.drop("identical_chosen_rejected", line_no)
                continue
            lang, _ = langid.predict(_text(chosen))
            synthetic = bool(row.get("synthetic", False))
            report.used += 1
            report.languages[lang] += 1
            report.synthetic += synthetic
            handle.write(json.dumps({"id": row.get("id", f"pair-{line_no}"), "prompt": prompt, "chosen": chosen,
                                     "rejected": rejected, "lang": lang, "synthetic": synthetic},
                                    ensure_ascii=False) + "\n")
        if not report.used:  # inside the block: the empty file is never put in place
            raise DataError(f"{path}: no usable preference pairs (dropped: {dict(report.dropped)})")
    return report

"""The eval card: what makes a NorEval number reproducible, and whether two numbers may be compared.

Every ``results.json`` carries it under ``nortune.card``: the lm-eval version; per task its
version, a hash of its config as lm-eval loaded it, its shots, and hashes of the rows it scored
and drew shots from; where the data came from (source, revision, a hash of each local file);
the chat mode and the template's hash; the few-shot seed, backend, dtype and limit.

``differences`` names what makes two cards incomparable (task versions or configs, data,
limit, chat mode, shots, lm-eval); ``require_comparable`` refuses such a comparison unless it
is forced, and then returns the lines every output must show. Base and tuned of one run share
everything but the model, so the pipeline's own comparison passes.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable

from nortune.errors import IncomparableRuns
from nortune.markup import code, text

CARD_VERSION = 1
# Where a task's rows come from: recorded under data and covered by the rows' own hashes, so the
# same rows read from the hub or from a local copy give the same config hash.
_LOCATION_KEYS = ("dataset_path", "dataset_name", "dataset_kwargs", "training_split", "validation_split",
                  "test_split", "fewshot_split", "num_fewshot")
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")  # "<function f at 0x7f...>": differs per process




def _normalised(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalised(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalised(v) for v in value]
    if isinstance(value, str):
        return _ADDRESS.sub("", value)
    return value if value is None or isinstance(value, (bool, int, float)) else _ADDRESS.sub("", str(value))


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of a task's config as loaded (lm-eval's ``dump_config``), stable across processes and machines:
    the data location, the shots and the YAML's own path are left out (each is recorded on its own)."""
    kept = {k: v for k, v in config.items() if k not in _LOCATION_KEYS}
    if isinstance(kept.get("metadata"), dict):
        kept["metadata"] = {k: v for k, v in kept["metadata"].items() if k != "config_source"}
    text = json.dumps(_normalised(kept), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def rows_hash(rows: Iterable[Any] | None) -> str | None:
    """sha256 over the rows (documents) a task scores, in order; None when there are none."""
    if rows is None:
        return None
    digest, count = hashlib.sha256(), 0
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
        count += 1
    return digest.hexdigest() if count else None


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _local_files(configs: dict[str, dict[str, Any]], root: Path | None) -> dict[str, str]:
    """sha256 of every local data file a task read (relative to data_dir where it lies inside)."""
    files: dict[str, str] = {}
    for config in configs.values():
        data_files = (config.get("dataset_kwargs") or {}).get("data_files") or {}
        for value in data_files.values():
            for name in ([value] if isinstance(value, str) else value):
                path = Path(name)
                key = str(path.relative_to(root)) if root and path.is_relative_to(root) else str(path)
                if key not in files and path.is_file():
                    files[key] = file_hash(path)
    return dict(sorted(files.items()))


def _task_rows(task: Any, num_fewshot: int | None) -> tuple[str | None, str | None, int | None]:
    """Hashes of the rows a task scores and (with shots) the rows it draws shots from, and how many it scores."""
    if task is None:
        return None, None, None
    docs = list(task.eval_docs)
    shots = task.fewshot_docs() if num_fewshot else None  # 0-shot: where shots would come from is irrelevant
    return rows_hash(docs), rows_hash(shots), len(docs)


def build(raw: dict[str, Any], tasks: dict[str, Any], settings: Any, chat: dict[str, Any],
          execution: dict[str, Any], model_source: str) -> dict[str, Any]:
    """The card of one evaluation, from lm-eval's results (``configs``, ``versions``, ``n-shot``), the loaded
    task objects (their rows), the recipe's ``evaluate`` section and the resolved chat mode."""
    configs = raw.get("configs", {})
    per_task = {}
    for name in sorted(configs):
        num_fewshot = raw.get("n-shot", {}).get(name)
        docs, shots, count = _task_rows(tasks.get(name), num_fewshot)
        per_task[name] = {"version": raw.get("versions", {}).get(name),
                          "config_sha256": config_hash(configs[name]),
                          "num_fewshot": num_fewshot, "docs_sha256": docs,
                          "fewshot_docs_sha256": shots, "n_docs": count}
    root = Path(settings.data_dir).resolve() if settings.source == "local" and settings.data_dir else None
    return {
        "card_version": CARD_VERSION,
        "lm_eval": raw.get("lm_eval_version") or _lm_eval_version(),
        "model": model_source,
        "tasks": per_task,
        "data": {"source": settings.source, "revision": settings.revision if settings.source == "hf" else None,
                 "data_dir": str(root) if root else None, "files": _local_files(configs, root)},
        "chat": chat,
        "fewshot_seed": settings.fewshot_seed,
        "limit": settings.limit,
        "backend": execution.get("backend"),
        "dtype": execution.get("dtype"),
    }


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def _named(what: str, names: list[str]) -> str:
    shown = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
    return f"{what} of {shown}"


def _show(value: Any) -> str:
    return "none" if value is None else str(value)


def differences(first: dict[str, Any] | None, second: dict[str, Any] | None) -> list[str]:
    """What makes two cards incomparable, one short phrase each ([] when they may be compared).

    Only the tasks both ran are compared; the model, backend and dtype may differ (that is what a
    comparison is for). A card that is missing means comparability is unknown, which is a difference.
    """
    if first is None or second is None:
        return ["no eval card (results.json written before nortune recorded one): comparability unknown"]
    found = []
    if first.get("lm_eval") != second.get("lm_eval"):
        found.append(f"lm-eval {first.get('lm_eval')} vs {second.get('lm_eval')}")
    common = sorted(set(first.get("tasks", {})) & set(second.get("tasks", {})))
    if not common:
        found.append("no task in common")
    for key, what in (("version", "task version"), ("config_sha256", "task config"),
                      ("docs_sha256", "data (rows scored)"), ("fewshot_docs_sha256", "few-shot data"),
                      ("num_fewshot", "few-shot count")):
        changed = [t for t in common if first["tasks"][t].get(key) != second["tasks"][t].get(key)]
        if changed:
            detail = ""
            if key in ("version", "num_fewshot"):
                one = changed[0]
                detail = f" ({_show(first['tasks'][one].get(key))} vs {_show(second['tasks'][one].get(key))})"
            found.append(_named(what, changed) + detail)
    if first.get("limit") != second.get("limit"):
        found.append(f"limit {_show(first.get('limit'))} vs {_show(second.get('limit'))}")
    if first.get("fewshot_seed") != second.get("fewshot_seed"):
        found.append(f"few-shot seed {first.get('fewshot_seed')} vs {second.get('fewshot_seed')}")
    a, b = first.get("chat") or {}, second.get("chat") or {}
    if a.get("applied") != b.get("applied"):
        found.append(f"chat template {'on' if a.get('applied') else 'off'} vs {'on' if b.get('applied') else 'off'}")
    elif a.get("applied"):
        for key, what in (("template_sha256", "chat template (hash)"), ("fewshot_as_multiturn", "fewshot_as_multiturn"),
                          ("system_instruction", "system instruction")):
            if a.get(key) != b.get(key):
                found.append(f"{what} differs")
    return found


def require_comparable(cards: list[tuple[str, dict[str, Any] | None]], force: bool,
                       flag: str = "--force") -> list[str]:
    """Refuse (one line naming what differs) when any card differs from the first, unless ``force``;
    forced, the lines each output must carry. [] when everything is comparable."""
    if not cards:
        return []
    (first_name, first), problems = cards[0], []
    for name, card in cards[1:]:
        found = differences(first, card)
        if found:
            problems.append(f"{name} vs {first_name}: {'; '.join(found)}")
    if not problems:
        return []
    if not force:
        raise IncomparableRuns("not comparable, refusing to compare: " + " | ".join(problems)
                               + f" (pass {flag} to compare anyway)")
    return [f"FORCED COMPARISON ({flag}): these results are not comparable: {p}" for p in problems]


def require_card(name: str, card: dict[str, Any] | None, force: bool, flag: str) -> None:
    """Refuse a baseline without a card before an evaluation is spent on a comparison that would be refused."""
    if card is None and not force:
        raise IncomparableRuns(f"not comparable, refusing to compare: {name}: {differences(None, None)[0]} "
                               f"(pass {flag} to compare anyway)")


def markdown(card: dict[str, Any] | None) -> str:
    """A short 'Eval card' section for report.md (the whole card is in results.json: nortune.card)."""
    if not card:
        return ""
    from nortune.evaluate.chat_mode import label

    tasks = card["tasks"]
    versions = sorted({str(t["version"]) for t in tasks.values()})
    shots = sorted({t["num_fewshot"] for t in tasks.values() if t["num_fewshot"] is not None})
    data = card["data"]
    where = code(data["data_dir"]) if data["source"] == "local" \
        else f"hub, revision {text(data['revision'] or 'default')}"
    lines = ["", "## Eval card", "",
             f"- lm-eval {text(card['lm_eval'])}; {len(tasks)} tasks, task versions "
             f"{text(', '.join(versions) or '-')}; each task's config and rows hashed (results.json: `nortune.card`).",
             f"- data: {text(data['source'])} ({where})"
             + (f", {len(data['files'])} local files hashed" if data["files"] else ""),
             f"- {text(label(card['chat']))}: {text(card['chat']['reason'])}.",
             f"- shots {text(', '.join(map(str, shots)) or '0')}, few-shot seed {text(card['fewshot_seed'])}; "
             f"limit {text(_show(card['limit']))}; backend {text(card['backend'])}, "
             f"dtype {text(_show(card['dtype']))}.", ""]
    return "\n".join(lines)


def forced_markdown(lines: list[str]) -> str:
    """The forced-comparison warning at the top of a markdown output."""
    return "".join(f"> **{text(line)}**\n\n" for line in lines)

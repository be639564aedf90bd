"""The NorEval tasks and how their lm-eval task definitions get their data.

The catalogue (families, datasets, splits, required fields, published scores) and the prompt
names are written once, in ``nortune.config.names``, which the recipe is checked against.
Prompts, splits, target delimiters, choices, metrics and few-shot sampling all come from the
``noreval`` task YAMLs that ship inside lm-evaluation-harness, loaded by lm-eval's own
``TaskManager``. nortune only overrides where the rows come from (a local folder in the HF
schema instead of the hub) and the number of shots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nortune.config.names import (CATALOGUE, LOCAL_LAYOUT, PROMPTS, REFERENCE_AVERAGES, REFERENCE_COLUMNS,
                                  NorEvalTask, local_noreval_file)
from nortune.jsonl import DataError, iter_jsonl

__all__ = ["CATALOGUE", "PROMPTS", "REFERENCE_AVERAGES", "REFERENCE_COLUMNS", "SAMPLE_MARKER", "NorEvalTask",
           "build_tasks", "check_local_file", "family_and_prompt", "family_of", "local_file", "task_manager",
           "task_specs"]

SAMPLE_MARKER = "SAMPLE_SETS.md"  # a local data folder holding this file is demo data, not NorEval


def family_of(task_name: str) -> str | None:
    """``norcommonsenseqa_nob_p3`` -> ``norcommonsenseqa_nob`` (None for tasks outside the catalogue)."""
    base, _, prompt = task_name.rpartition("_")
    return base if base in CATALOGUE and prompt in PROMPTS else None


def family_and_prompt(task_name: str) -> tuple[str | None, str | None]:
    """``norcommonsenseqa_nob_p3`` -> (``norcommonsenseqa_nob``, ``p3``); (None, None) outside the catalogue."""
    family = family_of(task_name)
    return family, (task_name.rsplit("_", 1)[1] if family else None)


def task_manager(everything: bool = False):
    """lm-eval's TaskManager over its own shipped ``noreval`` folder (indexing every task of
    lm-eval takes half a minute on a small machine); ``everything`` for extra task names."""
    from lm_eval.tasks import TaskManager

    if everything:
        return TaskManager()
    import lm_eval

    return TaskManager(include_path=str(Path(lm_eval.__file__).parent / "tasks" / "noreval"),
                       include_defaults=False)


def local_file(root: Path, task: NorEvalTask, split: str) -> Path:
    path = local_noreval_file(root, task.family, split)
    if not path.is_file():
        raise DataError(f"{path}: file not found ({LOCAL_LAYOUT})")
    return path


def _lookup(row: Any, dotted: str) -> tuple[bool, Any]:
    node = row
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def check_local_file(path: Path, task: NorEvalTask) -> int:
    """Every row has the fields the lm-eval templates read; fails on the first bad one (file:line: key)."""
    if path.suffix == ".parquet":
        return -1  # read by datasets itself; schema errors surface there
    count = 0
    for line_no, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
        for key in task.required:
            found, value = _lookup(row, key)
            if not found:
                raise DataError(f"{path}:{line_no}: missing key {key!r}")
            if value in (None, "", []):
                raise DataError(f"{path}:{line_no}: key {key!r} is empty")
        if "answer" in task.required and row["answer"] not in row["choices"]["label"]:
            raise DataError(f"{path}:{line_no}: key 'answer': {row['answer']!r} is not one of "
                            f"choices.label {row['choices']['label']}")
        if "choices.text" in task.required and len(row["choices"]["text"]) != len(row["choices"]["label"]):
            raise DataError(f"{path}:{line_no}: key 'choices': text and label differ in length")
        if task.family.startswith("norcommonsenseqa") and len(row["choices"]["text"]) != 5:
            raise DataError(f"{path}:{line_no}: key 'choices.text': the lm-eval prompts list exactly 5")
        if task.family.startswith("noropenbookqa") and len(row["choices"]["text"]) != 4:
            raise DataError(f"{path}:{line_no}: key 'choices.text': the lm-eval prompts list exactly 4")
        count += 1
    if count == 0:
        raise DataError(f"{path}: no rows")
    return count


def task_specs(settings, fewshot: dict[str, int]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """lm-eval task dicts (registered name + overrides) for the recipe's tasks; also {family: origin}.

    ``settings`` is the recipe's ``evaluate`` section. Local files are checked here, before
    any model is loaded.
    """
    specs: list[dict[str, Any]] = []
    origins: dict[str, str] = {}
    for family in settings.tasks:
        task = CATALOGUE[family]
        shots = fewshot.get(family, 0)
        overrides: dict[str, Any] = {"num_fewshot": shots}
        if settings.source == "local":
            root = Path(settings.data_dir)
            files = {task.split: local_file(root, task, task.split)}
            if task.fewshot_split:
                try:
                    files[task.fewshot_split] = local_file(root, task, task.fewshot_split)
                except DataError:
                    if shots:
                        raise
                    overrides["training_split"] = None  # lm-eval reads it even at 0 shots
            for path in files.values():
                check_local_file(path, task)
            kind = "parquet" if next(iter(files.values())).suffix == ".parquet" else "json"
            overrides.update(dataset_path=kind, dataset_name=None,
                             dataset_kwargs={"data_files": {k: str(v) for k, v in files.items()}})
            origins[family] = str(root / task.short / task.config)
        else:
            if settings.revision:
                overrides["dataset_kwargs"] = {"revision": settings.revision}
            origins[family] = f"hf:{task.dataset}:{task.config}:{task.split}@{settings.revision or 'default'}"
        for prompt in settings.prompts:
            specs.append({"task": f"{family}_{prompt}", **overrides})
    for name in settings.extra_tasks:
        specs.append({"task": name})
        origins[name] = "lm-eval task definition"
    return specs, origins


def build_tasks(specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Load the registered lm-eval tasks with the overrides applied (lm-eval's own factory).

    An inline group whose members name registered tasks is lm-eval's public way to override a
    registered task's fields; the group itself is dropped, only its tasks are returned.
    """
    manager = task_manager(everything=any(family_of(s["task"]) is None for s in specs))
    unknown = [s["task"] for s in specs if s["task"] not in manager.all_tasks]
    if unknown:
        raise ValueError(f"lm-eval {_lm_eval_version()} does not know task(s) {unknown}")
    loaded = manager.load([{"group": "nortune_evaluate", "task": specs}])
    return loaded["tasks"]


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")

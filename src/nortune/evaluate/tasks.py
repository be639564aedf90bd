"""The NorEval tasks and how their lm-eval task definitions get their data.

The catalogue (families, datasets, splits, required fields, published scores) and the prompt
names are written once, in ``nortune.config.names``, which the recipe is checked against.
Prompts, splits, target delimiters, choices, metrics and few-shot sampling all come from the
``noreval`` task YAMLs that ship inside lm-evaluation-harness, loaded by lm-eval's own
``TaskManager``. nortune only overrides where the rows come from (a local folder in the HF
schema instead of the hub) and the number of shots.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from nortune.config.names import (CATALOGUE, LOCAL_LAYOUT, PROMPTS, REFERENCE_AVERAGES, REFERENCE_COLUMNS,
                                  SAMPLE_MARKER, SINGLE_PROMPT, NorEvalTask, local_noreval_file)
from nortune.config.evaluate import shots_for
from nortune.jsonl import DataError, iter_jsonl

__all__ = ["CATALOGUE", "PROMPTS", "REFERENCE_AVERAGES", "REFERENCE_COLUMNS", "SAMPLE_MARKER", "NorEvalTask",
           "build_tasks", "check_local_file", "family_and_prompt", "family_of", "local_file", "not_computed",
           "task_manager", "task_specs"]



def family_of(task_name: str) -> str | None:
    """``norcommonsenseqa_nob_p3`` -> ``norcommonsenseqa_nob``; ``ncb`` -> ``ncb`` (one unsuffixed task);
    None for tasks outside the catalogue."""
    task = CATALOGUE.get(task_name)
    if task is not None and not task.prompts:
        return task_name
    base, _, prompt = task_name.rpartition("_")
    return base if base in CATALOGUE and prompt in CATALOGUE[base].prompts else None


def family_and_prompt(task_name: str) -> tuple[str | None, str | None]:
    """``norcommonsenseqa_nob_p3`` -> (``norcommonsenseqa_nob``, ``p3``); ``ncb`` -> (``ncb``, ``p0``);
    (None, None) outside the catalogue."""
    family = family_of(task_name)
    if family is None:
        return None, None
    return family, (task_name.rsplit("_", 1)[1] if CATALOGUE[family].prompts else SINGLE_PROMPT)


_MANAGER = None


def task_manager(everything: bool = False):
    """lm-eval's TaskManager over its own shipped ``noreval`` folder (indexing every task of
    lm-eval takes half a minute on a small machine); ``everything`` for extra task names.
    The noreval-only index is built once per process (task_specs reads its YAMLs too)."""
    from lm_eval.tasks import TaskManager

    if everything:
        return TaskManager()
    global _MANAGER
    if _MANAGER is None:
        import lm_eval

        _MANAGER = TaskManager(include_path=str(Path(lm_eval.__file__).parent / "tasks" / "noreval"),
                               include_defaults=False)
    return _MANAGER


def _task_yaml(name: str) -> dict[str, Any]:
    """A task's YAML as lm-eval indexed it (includes merged, ``!function`` left unresolved)."""
    return dict(task_manager().task_index[name].cfg or {})


_SPLIT_SLOTS = ("training_split", "validation_split", "test_split", "fewshot_split")


def not_computed(families: list[str]) -> dict[str, str]:
    """{family: why} for what lm-eval cannot score on this machine, found before any model loads.

    A family whose task YAML's ``!function`` code cannot be imported here (norsumm's utils need
    ``bert_score``; norquad's need ``transformers.data.metrics``, gone from transformers 5) is not
    run at all: lm-eval resolves those functions when it builds the task. A family whose published
    metric lm-eval does not compute (ask_gec's ERRANT) runs with the metrics lm-eval has.
    """
    out: dict[str, str] = {}
    for family in families:
        why = _why_not_computed(family)
        if why:
            out[family] = why
    return out


@functools.lru_cache(maxsize=None)
def _why_not_computed(family: str) -> str | None:
    from lm_eval.tasks._yaml_loader import load_yaml

    task = CATALOGUE[family]
    entry = task_manager().task_index.get(task.task_names[0])
    if entry is None:
        return f"not run: lm-eval {_lm_eval_version()} has no task {task.task_names[0]}"
    try:
        load_yaml(entry.yaml_path, resolve_func=True)  # imports the task's utils.py, as building it would
    except ImportError as exc:
        return f"not run: the code of lm-eval's {family} task cannot be imported here ({type(exc).__name__}: {exc})"
    return task.external_metric


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


_LISTS = {"choices.text", "choices.label", "mc1_targets.choices", "summaries", "accepted_completions",
          "correct_answers", "incorrect_answers", "answers.text"}  # fields the templates read as lists of strings
_CHOICE_COUNT = {"norcommonsenseqa": 5, "noropenbookqa": 4}  # the lm-eval prompts list exactly this many


def _check_row(row: dict, task: NorEvalTask) -> str | None:
    """What is wrong with one row (``key 'x': why``), or None."""
    for key in task.required:
        found, value = _lookup(row, key)
        if not found:
            return f"missing key {key!r}"
        if value in (None, "", []):
            return f"key {key!r} is empty"
        if key in _LISTS and not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
            return f"key {key!r}: expected a list of non-empty strings"
    if "answer" in task.required and row["answer"] not in row["choices"]["label"]:
        return f"key 'answer': {row['answer']!r} is not one of choices.label {row['choices']['label']}"
    if "choices.text" in task.required and len(row["choices"]["text"]) != len(row["choices"]["label"]):
        return "key 'choices': text and label differ in length"
    expected = _CHOICE_COUNT.get(task.short)
    if expected and len(row["choices"]["text"]) != expected:
        return f"key 'choices.text': the lm-eval prompts list exactly {expected}"
    if "sentiment" in task.required and row["sentiment"] not in (0, 1):
        return f"key 'sentiment': {row['sentiment']!r} is not 0 (negative) or 1 (positive)"
    if "correct_answer_num" in task.required and str(row["correct_answer_num"]) not in ("1", "2", "3", "4"):
        return f"key 'correct_answer_num': {row['correct_answer_num']!r} is not one of '1'..'4'"
    if "language" in task.required and row["language"] not in ("nob", "nno"):
        return f"key 'language': {row['language']!r} is not nob or nno"
    return None


def check_local_file(path: Path, task: NorEvalTask) -> int:
    """Every row has the fields the lm-eval templates read; fails on the first bad one (file:line: key).

    Returns the rows this family scores (NorIdiom keeps both languages in one file; lm-eval's
    ``process_docs`` picks one, so a file without the family's language is an error here).
    """
    if path.suffix == ".parquet":
        return -1  # read by datasets itself; schema errors surface there
    count = 0
    language = task.family.rsplit("_", 1)[1] if "language" in task.required else None
    for line_no, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
        problem = _check_row(row, task)
        if problem:
            raise DataError(f"{path}:{line_no}: {problem}")
        count += language is None or row["language"] == language
    if count == 0:
        raise DataError(f"{path}: no rows" + (f" with language {language!r} (key 'language')" if language else ""))
    return count


def task_specs(settings, fewshot: dict[str, int]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """lm-eval task dicts (registered name + overrides) for the recipe's tasks; also {family: origin}.

    ``settings`` is the recipe's ``evaluate`` section. Local files are checked here, before
    any model is loaded. Families in ``not_computed`` with ``not run`` are left out (the stage
    reports them).
    """
    specs: list[dict[str, Any]] = []
    origins: dict[str, str] = {}
    skipped = {f for f, why in not_computed(settings.families).items() if why.startswith("not run")}
    for family in settings.families:
        task = CATALOGUE[family]
        shots = shots_for(fewshot, family)
        overrides: dict[str, Any] = {"num_fewshot": shots}
        names = [task.task_name(p) for p in (task.prompts or (SINGLE_PROMPT,))
                 if not task.prompts or settings.prompts is None or p in settings.prompts]
        if settings.source == "local":
            root = Path(settings.data_dir)
            files = {task.split: local_file(root, task, task.split)}
            if task.fewshot_split and task.fewshot_split != task.split:
                try:
                    files[task.fewshot_split] = local_file(root, task, task.fewshot_split)
                except DataError:
                    if shots:
                        raise
            for path in files.values():
                check_local_file(path, task)
            kind = "parquet" if next(iter(files.values())).suffix == ".parquet" else "json"
            overrides.update(dataset_path=kind, dataset_name=None,
                             dataset_kwargs={"data_files": {k: str(v) for k, v in files.items()}})
            # lm-eval reads every split its YAML names (even at 0 shots): one without a local file is unset.
            if names and family not in skipped:
                declared = _task_yaml(names[0])
                overrides.update({slot: None for slot in _SPLIT_SLOTS if declared.get(slot) not in (None, *files)})
            origins[family] = str(files[task.split].parent)
        else:
            if settings.revision:
                overrides["dataset_kwargs"] = {"revision": settings.revision}
            origins[family] = f"hf:{task.dataset}:{task.config or '-'}:{task.split}@{settings.revision or 'default'}"
        if family in skipped:
            continue
        specs.extend({"task": name, **overrides} for name in names)
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
    if not specs:
        raise DataError("no lm-eval task left to run (every selected family is not computed here)")
    unknown = [s["task"] for s in specs if s["task"] not in manager.all_tasks]
    if unknown:
        raise ValueError(f"lm-eval {_lm_eval_version()} does not know task(s) {unknown}")
    loaded = manager.load([{"group": "nortune_evaluate", "task": specs}])
    return loaded["tasks"]


def _lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")

"""evaluate.suite: the catalogue against lm-eval's shipped NorEval tasks, the sample sets, the local
overlay, what cannot be computed here, and the suite's config errors (no model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from nortune.config import ConfigError, load_recipe
from nortune.config.names import CATALOGUE, NOREVAL_CATEGORIES, RECIPE_FAMILIES, local_noreval_file
from nortune.evaluate.tasks import (build_tasks, check_local_file, family_and_prompt, not_computed, task_manager,
                                    task_specs)
from nortune.jsonl import DataError

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data" / "demo" / "noreval"


def _recipe(tmp_path: Path, evaluate: str):
    path = tmp_path / "r.yaml"
    path.write_text(f"name: x\nevaluate:\n  source: local\n  data_dir: {DEMO}\n{evaluate}")
    return load_recipe(path)


def test_the_catalogue_is_every_noreval_task_lm_eval_ships():
    """Fails when lm-eval adds a NorEval task (or a prompt) that the catalogue misses, or drops one."""
    ours = [name for task in CATALOGUE.values() for name in task.task_names]
    shipped = set(task_manager().all_subtasks)
    assert len(ours) == len(set(ours)) == 116
    assert set(ours) == shipped
    assert len(CATALOGUE) == 26 and {t.dataset for t in CATALOGUE.values()} >= {"facebook/belebele", "hcfa/ncb"}
    assert {t.category for t in CATALOGUE.values()} == set(NOREVAL_CATEGORIES)


def test_each_family_headline_metric_and_output_type_are_its_yaml_s():
    index = task_manager().task_index
    for family, task in CATALOGUE.items():
        for name in task.task_names:
            cfg = index[name].cfg
            declared = [m["metric"] for m in cfg.get("metric_list", [])] or ["exact_match"]  # lm-eval's default
            assert task.metric in declared, name
            assert cfg["output_type"] == task.output, name
            if task.output == "multiple_choice":
                assert task.metric_max == 1.0 and task.text_fields and task.question_field or family == "ncb"


@pytest.mark.parametrize(("name", "expected"), [
    ("norsumm_nob_p5", ("norsumm_nob", "p5")), ("ncb", ("ncb", "p0")), ("tatoeba_nno_eng_p3", ("tatoeba_nno_eng", "p3")),
    ("norrewrite_instruct", ("norrewrite_instruct", "p0")), ("tatoeba_eng_nob_p4", (None, None)),
    ("norsumm_nob", (None, None)), ("arc_easy", (None, None)), ("nrk_quiz_qa_nno_p4", ("nrk_quiz_qa_nno", "p4")),
])
def test_task_names_split_into_family_and_prompt(name, expected):
    assert family_and_prompt(name) == expected


def test_every_sample_set_passes_the_row_check():
    """Every family's evaluated split (and few-shot split where one ships) is there and valid."""
    assert (DEMO / "SAMPLE_SETS.md").is_file()
    for family, task in CATALOGUE.items():
        path = local_noreval_file(DEMO, family, task.split)
        assert check_local_file(path, task) >= (15 if family in RECIPE_FAMILIES else 2), family
        if task.fewshot_split and task.fewshot_split != task.split and family not in RECIPE_FAMILIES:
            assert check_local_file(local_noreval_file(DEMO, family, task.fewshot_split), task) >= 2, family


@pytest.mark.parametrize(("family", "row", "error"), [
    ("norbelebele", {"correct_answer_num": "5"}, "key 'correct_answer_num'"),
    ("norec_sentence", {"sentiment": 2}, "key 'sentiment'"),
    ("norsumm_nob", {"summaries": "one string"}, "key 'summaries': expected a list"),
    ("tatoeba_eng_nob", {"targetString": ""}, "key 'targetString' is empty"),
    ("noridiom_nno", {"language": "swe"}, "key 'language'"),
    ("norquad", {"answers": {"answer_start": [0]}}, "missing key 'answers.text'"),
])
def test_bad_rows_of_the_new_schemas_name_file_line_and_key(tmp_path, family, row, error):
    task = CATALOGUE[family]
    good = json.loads(local_noreval_file(DEMO, family, task.split).read_text(encoding="utf-8").splitlines()[0])
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps(good, ensure_ascii=False) + "\n" + json.dumps({**good, **row}) + "\n")
    with pytest.raises(DataError, match=rf"test.jsonl:2: {error}"):
        check_local_file(path, task)


def test_an_idiom_file_without_the_family_s_language_is_refused(tmp_path):
    rows = [r for r in map(json.loads, (DEMO / "Norwegian_idioms" / "test.jsonl").read_text().splitlines())
            if r["language"] == "nob"]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert check_local_file(path, CATALOGUE["noridiom_nob"]) == len(rows)
    with pytest.raises(DataError, match="no rows with language 'nno'"):
        check_local_file(path, CATALOGUE["noridiom_nno"])


def test_suites_resolve_and_the_recipe_default_is_unchanged(tmp_path):
    recipe = _recipe(tmp_path, "")
    assert recipe.evaluate.suite == "recipe" and recipe.evaluate.families == list(RECIPE_FAMILIES)
    specs, origins = task_specs(recipe.evaluate, dict(recipe.evaluate.num_fewshot))
    assert len(specs) == 40 and list(origins) == list(RECIPE_FAMILIES)
    assert all(set(s) == {"task", "num_fewshot", "dataset_path", "dataset_name", "dataset_kwargs"} for s in specs)
    everything = _recipe(tmp_path, "  suite: noreval\n").evaluate
    assert everything.families == list(CATALOGUE) and everything.tasks is None
    picked = _recipe(tmp_path, "  suite: [ncb, norsumm_nno]\n  prompts: [p5]\n").evaluate
    assert [s["task"] for s in task_specs(picked, {})[0]] == (  # p5 exists only for norsumm; ncb has one task
        ["ncb"] + (["norsumm_nno_p5"] if "norsumm_nno" not in not_computed(["norsumm_nno"]) else []))


@pytest.mark.parametrize(("evaluate", "error"), [
    ("  suite: everything\n", r"evaluate.suite: unknown suite 'everything'; known: \['recipe', 'noreval'\]"),
    ("  suite: [ncb, norquad_nob]\n", r"evaluate.suite: unknown NorEval task\(s\) \['norquad_nob'\]; known: \["),
    ("  suite: noreval\n  tasks: [ncb]\n", "suite 'noreval' and tasks \\['ncb'\\] disagree"),
    ("  suite: [ncb]\n  num_fewshot: {ncb: 2}\n", r"num_fewshot: \['ncb'\] run 0-shot only"),
    ("  suite: [ncb, tatoeba_eng_nob]\n  prompts: [p4]\n",
     r"prompts \['p4'\]: these families have none of them: \{'tatoeba_eng_nob': \['p0', 'p1', 'p2', 'p3'\]\}"),
])
def test_suite_config_errors_are_one_line(tmp_path, evaluate, error):
    with pytest.raises(ConfigError, match=error) as caught:
        _recipe(tmp_path, evaluate)
    assert "\n" not in str(caught.value).strip()


def test_lm_eval_builds_every_family_from_the_local_overlay(tmp_path):
    """Every computable family's task, from the sample sets: lm-eval's own loader reads the rows
    (splits without a local file are unset) and its templates render them."""
    settings = _recipe(tmp_path, "  suite: noreval\n  prompts: [p0]\n  num_fewshot: {tatoeba_eng_nno: 1}\n").evaluate
    specs, origins = task_specs(settings, dict(settings.num_fewshot))
    skipped = {f for f, why in not_computed(list(CATALOGUE)).items() if why.startswith("not run")}
    assert set(origins) == set(CATALOGUE) and len(specs) == 26 - len(skipped)
    norsumm = next((s for s in specs if s["task"] == "norsumm_nob_p0"), None)
    assert norsumm is None or norsumm["dataset_kwargs"]["data_files"] == {"test": str(DEMO / "NorSumm/nb/test.jsonl")}
    tatoeba = next(s for s in specs if s["task"] == "tatoeba_eng_nno_p0")
    assert set(tatoeba["dataset_kwargs"]["data_files"]) == {"test", "validation"} and "training_split" not in tatoeba
    tasks = build_tasks(specs)
    assert len(tasks) == len(specs)
    for name, task in tasks.items():
        family, _ = family_and_prompt(name)
        docs = list(task.eval_docs)
        expected = check_local_file(local_noreval_file(DEMO, family, CATALOGUE[family].split), CATALOGUE[family])
        assert len(docs) == expected, name
        assert task.doc_to_text(docs[0]) or family == "ncb", name  # ncb scores two bare sentences
        assert task.OUTPUT_TYPE == CATALOGUE[family].output
    few = tasks["tatoeba_eng_nno_p0"].fewshot_context(tasks["tatoeba_eng_nno_p0"].eval_docs[0], num_fewshot=1)
    assert "Takk for maten." in few or "Ho snakkar tre språk." in few  # the example came from validation


def test_a_family_whose_lm_eval_code_cannot_import_is_named_and_left_out(tmp_path, monkeypatch):
    """As norsumm (bert_score) or norquad (transformers.data.metrics) on a machine without them:
    here sklearn, which norec's utils.py imports, is made unimportable."""
    import nortune.evaluate.tasks as tasks

    tasks._why_not_computed.cache_clear()
    monkeypatch.delitem(sys.modules, "lm_eval.tasks.noreval.norec.utils", raising=False)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    try:
        why = not_computed(["norec_sentence", "ncb", "ask_gec"])
        assert why["norec_sentence"].startswith("not run: the code of lm-eval's norec_sentence task")
        assert "sklearn" in why["norec_sentence"] and "ncb" not in why
        assert "ERRANT" in why["ask_gec"]  # runs, with lm-eval's exact_match; the published metric is named
        settings = _recipe(tmp_path, "  suite: [norec_sentence, ncb, ask_gec]\n").evaluate
        assert [s["task"] for s in task_specs(settings, {})[0]] == ["ncb"] + [f"ask_gec_p{i}" for i in range(5)]
    finally:
        tasks._why_not_computed.cache_clear()


def test_splits_without_a_local_file_are_unset_and_needed_ones_are_named(tmp_path):
    """lm-eval reads the few-shot split even at 0 shots: a folder with only the scored split still
    builds; asking for shots from a split that has no file is a one-line error naming the file."""
    import shutil

    root = tmp_path / "noreval"
    for family in ("ask_gec", "tatoeba_nob_eng"):
        src = local_noreval_file(DEMO, family, CATALOGUE[family].split)
        dst = root / src.relative_to(DEMO)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: x\nevaluate:\n  source: local\n  data_dir: {root}\n"
                      "  suite: [ask_gec, tatoeba_nob_eng]\n  prompts: [p0]\n")
    settings = load_recipe(recipe).evaluate
    specs, _ = task_specs(settings, {})
    assert specs[0]["training_split"] is None and specs[1]["training_split"] is None
    tasks = build_tasks(specs)
    assert [len(list(t.eval_docs)) for t in tasks.values()] == [4, 4]
    with pytest.raises(DataError, match=r"tatoeba_mt/eng-nob/validation.jsonl: file not found"):
        task_specs(settings, {"tatoeba_nob_eng": 2})


def test_decontam_checks_every_text_field_of_every_suite_family():
    """decontam follows evaluate: with suite noreval it reads each family's scored file and its
    text fields (passages, references, source and target sentences), not only the MC questions."""
    from nortune.decontam.sources import load_test_side

    recipe = load_recipe(REPO / "configs" / "demo.yaml", ["evaluate.suite=noreval"])
    assert recipe.decontam_test_side().tasks == list(CATALOGUE)
    texts, sources = load_test_side(recipe.decontam_test_side())
    by_task: dict[str, set[str]] = {}
    for t in texts:
        by_task.setdefault(t.task, set()).add(t.text)
    assert set(CATALOGUE) <= set(by_task)
    assert sources["norsumm_nob"]["origin"].endswith("NorSumm/nb/test.jsonl")
    for family, task in CATALOGUE.items():
        row = json.loads(local_noreval_file(DEMO, family, task.split).read_text(encoding="utf-8").splitlines()[0])
        for field in task.text_fields:  # every text field's value of the first row is a test text
            value = row
            for key in field.split("."):
                value = value[key]
            for text in value if isinstance(value, list) else [value]:
                assert text in by_task[family], (family, field)
    assert "Vi går heim no." in by_task["tatoeba_eng_nno"] and "glimrer" in by_task["noridiom_nob"]
    assert not any(t.text in ("0", "1") for t in texts if t.task.startswith("norec"))  # labels are not text

"""The eval card's pure parts: stable config hashes, what counts as a difference, the refusal,
the chat-mode resolution and the recipe setting (issue 18, parts 3 and 4)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest

from nortune.evaluate import card, chat_mode

CONFIG = {"task": "nrk_quiz_qa_nob_p0", "dataset_path": "json", "test_split": "test", "num_fewshot": 0,
          "dataset_kwargs": {"data_files": {"test": "/somewhere/nrk_quiz_qa/nb/test.jsonl"}},
          "doc_to_text": "{{question}}", "process_docs": "def f(d):\n    return d\n",
          "fewshot_config": {"process_docs": "<function filter_dataset at 0x7f909db04400>"},
          "metadata": {"version": 1.0, "config_source": "/venv/a/lm_eval/tasks/noreval/x.yaml"}}


def test_config_hash_ignores_addresses_locations_and_shots_but_not_the_prompt():
    same = copy.deepcopy(CONFIG)
    same["fewshot_config"]["process_docs"] = "<function filter_dataset at 0x55d0c0ffee00>"  # another process
    same["dataset_kwargs"] = {"data_files": {"test": "/elsewhere/test.jsonl"}}  # the data are hashed on their own
    same["dataset_path"], same["num_fewshot"] = "ltg/nrk_quiz_qa", 5
    same["metadata"]["config_source"] = "/other/venv/x.yaml"
    assert card.config_hash(same) == card.config_hash(CONFIG)
    for key, value in (("doc_to_text", "Spørsmål: {{question}}"), ("process_docs", "def f(d):\n    return d[:1]\n"),
                       ("metadata", {"version": 2.0})):
        changed = copy.deepcopy(CONFIG)
        changed[key] = value
        assert card.config_hash(changed) != card.config_hash(CONFIG), key


def test_rows_hash_sees_content_and_order():
    rows = [{"q": "a", "answer": 1}, {"q": "b", "answer": 2}]
    assert card.rows_hash(rows) == card.rows_hash([{"answer": 1, "q": "a"}, {"answer": 2, "q": "b"}])
    assert card.rows_hash(rows) != card.rows_hash(rows[::-1])
    assert card.rows_hash(rows) != card.rows_hash([rows[0], {"q": "b", "answer": 3}])
    assert card.rows_hash([]) is None and card.rows_hash(None) is None


def _card(**changes):
    task = {"version": 1.0, "config_sha256": "c" * 64, "num_fewshot": 0, "docs_sha256": "d" * 64,
            "fewshot_docs_sha256": None, "n_docs": 20}
    base = {"card_version": 1, "lm_eval": "0.4.13", "model": "m", "data": {"source": "local"},
            "tasks": {"a_p0": dict(task), "a_p1": dict(task)}, "fewshot_seed": 1234, "limit": None,
            "chat": {"setting": "off", "applied": False, "template_sha256": None, "fewshot_as_multiturn": False,
                     "system_instruction": None, "reason": "r"},
            "backend": "nortune", "dtype": "float32"}
    for path, value in changes.items():
        node, *keys = path.split("__")
        target = base
        for key in [node, *keys][:-1]:
            target = target[key]
        target[[node, *keys][-1]] = value
    return base


@pytest.mark.parametrize("changes, expected", [
    ({}, []),
    ({"model": "other", "backend": "vllm", "dtype": "bfloat16", "data__source": "hf"}, []),  # what comparing is for
    ({"lm_eval": "0.4.12"}, ["lm-eval 0.4.13 vs 0.4.12"]),
    ({"tasks__a_p1__version": 2.0}, ["task version of a_p1 (1.0 vs 2.0)"]),
    ({"tasks__a_p0__config_sha256": "x"}, ["task config of a_p0"]),
    ({"tasks__a_p0__docs_sha256": "x", "tasks__a_p1__docs_sha256": "x"}, ["data (rows scored) of a_p0, a_p1"]),
    ({"tasks__a_p0__num_fewshot": 4}, ["few-shot count of a_p0 (0 vs 4)"]),
    ({"tasks__a_p0__fewshot_docs_sha256": "x"}, ["few-shot data of a_p0"]),
    ({"limit": 6}, ["limit none vs 6"]),
    ({"fewshot_seed": 1}, ["few-shot seed 1234 vs 1"]),
    ({"chat__applied": True}, ["chat template off vs on"]),
    ({"tasks": {"b_p0": {}}}, ["no task in common"]),
])
def test_differences_name_what_decides_a_score(changes, expected):
    assert card.differences(_card(), _card(**changes)) == expected


def test_chat_details_count_only_when_the_template_is_applied():
    on = _card(chat__applied=True, chat__template_sha256="t1", chat__fewshot_as_multiturn=True)
    assert card.differences(on, _card(chat__applied=True, chat__template_sha256="t2",
                                      chat__fewshot_as_multiturn=True)) == ["chat template (hash) differs"]
    assert card.differences(on, _card(chat__applied=True, chat__template_sha256="t1",
                                      chat__fewshot_as_multiturn=False)) == ["fewshot_as_multiturn differs"]


def test_only_common_tasks_are_compared_and_a_missing_card_is_unknown():
    fewer = _card()
    del fewer["tasks"]["a_p1"]
    assert card.differences(_card(), fewer) == []
    assert card.differences(None, _card()) == card.differences(_card(), None) == [
        "no eval card (results.json written before nortune recorded one): comparability unknown"]


def test_require_comparable_refuses_in_one_line_unless_forced():
    cards = [("run-a", _card()), ("run-b", _card(limit=2)), ("run-c", _card())]
    with pytest.raises(card.IncomparableRuns) as caught:
        card.require_comparable(cards, force=False)
    assert str(caught.value) == ("not comparable, refusing to compare: run-b vs run-a: limit none vs 2 "
                                 "(pass --force to compare anyway)")
    forced = card.require_comparable(cards, force=True, flag="--force-compare")
    assert forced == ["FORCED COMPARISON (--force-compare): these results are not comparable: run-b vs run-a: "
                      "limit none vs 2"]
    assert card.forced_markdown(forced).startswith("> **FORCED COMPARISON")
    assert card.require_comparable([("a", _card()), ("b", _card(model="other"))], force=False) == []


@pytest.mark.parametrize("source, instruct", [
    ("google/gemma-4-31B-it", True), ("meta-llama/Llama-3.1-8B-Instruct", True),
    ("norallm/normistral-7b-warm-instruct", True),
    ("some/model-chat", True), ("/models/gemma-3-1b-it/", True),
    ("embedded:gemma3-270m", False), ("google/gemma-3-1b-pt", False), ("norallm/normistral-7b-warm", False),
    ("/models/italian-base", False), ("/models/chatter", False),
])
def test_instruct_is_read_from_the_model_name(source, instruct):
    assert chat_mode.looks_instruct(source) is instruct


class _LM:
    def __init__(self, template):
        self.template = template

    def chat_template(self, chat_template):
        return self.template


def _settings(mode, multiturn=True, system=None):
    return SimpleNamespace(chat_template=mode, fewshot_as_multiturn=multiturn, system_instruction=system)


def test_resolve_decides_per_model_kind_and_refuses_on_without_a_template():
    from nortune.errors import ConfigError

    chat = chat_mode.resolve(_settings("auto", system="Svar kort."), "google/gemma-4-31B-it", _LM("{{ x }}"))
    assert chat["applied"] and chat["fewshot_as_multiturn"] and chat["system_instruction"] == "Svar kort."
    assert chat["template_sha256"] == __import__("hashlib").sha256(b"{{ x }}").hexdigest()
    assert chat_mode.simple_evaluate_args(chat) == {"apply_chat_template": True, "fewshot_as_multiturn": True,
                                                    "system_instruction": "Svar kort."}
    base = chat_mode.resolve(_settings("auto"), "embedded:gemma3-270m", _LM("{{ x }}"))  # nortune installs one
    assert not base["applied"] and "base model" in base["reason"]
    assert chat_mode.simple_evaluate_args(base) == {"apply_chat_template": False, "fewshot_as_multiturn": False,
                                                    "system_instruction": None}
    assert not chat_mode.resolve(_settings("auto"), "x/model-it", _LM(None))["applied"]
    assert chat_mode.resolve(_settings("on"), "embedded:gemma3-270m", _LM("t"))["applied"]
    assert not chat_mode.resolve(_settings("off"), "google/gemma-4-31B-it", _LM("t"))["applied"]
    with pytest.raises(ConfigError, match="evaluate.chat_template: on, but the tokenizer of m has no chat template"):
        chat_mode.resolve(_settings("on"), "m", _LM(None))
    assert chat_mode.label(chat).startswith("chat template on (sha256 ")
    assert chat_mode.label(base) == "chat template off"


@pytest.mark.parametrize("text, expected", [("on", "on"), ("off", "off"), ("auto", "auto"), ("true", "on")])
def test_recipe_setting_reads_yaml_on_and_off(tmp_path, text, expected):
    from nortune.config import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nmodel: {{source: embedded:gemma3-270m}}\nevaluate: {{chat_template: {text}}}\n")
    assert load_recipe(recipe).evaluate.chat_template == expected


def test_recipe_setting_rejects_anything_else(tmp_path):
    from nortune.config import ConfigError, load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmodel: {source: embedded:gemma3-270m}\nevaluate: {chat_template: maybe}\n")
    with pytest.raises(ConfigError, match="evaluate.chat_template"):
        load_recipe(recipe)


def test_a_baseline_without_a_card_is_refused_up_front_unless_forced():
    with pytest.raises(card.IncomparableRuns, match="^not comparable, refusing to compare: old/results.json: no eval"):
        card.require_card("old/results.json", None, force=False, flag="--force-compare")
    card.require_card("old/results.json", None, force=True, flag="--force-compare")
    card.require_card("new/results.json", _card(), force=False, flag="--force-compare")

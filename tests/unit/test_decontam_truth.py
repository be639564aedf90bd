"""One source of truth for the test side, and the whole-question check on real quiz-length items."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nortune.config import ConfigError, Recipe, load_recipe
from nortune.decontam import run
from nortune.decontam.scan import Scanner, ScanSettings
from nortune.decontam.sources import TrainRecord, describe_sources, load_test_side, test_sources
from nortune.evaluate.tasks import CATALOGUE

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo.yaml"
DEMO_NOREVAL = REPO / "data" / "demo" / "noreval"
MINI = REPO / "tests" / "fixtures" / "noreval_mini"
# data/demo/chat.jsonl line 16 as it was: nrk_quiz_qa_nob item 2, word for word, with its answer.
PLANTED = ("Hva er Norges høyeste fjell?\nNorges høyeste fjell er Galdhøpiggen, som er 2469 meter over havet. "
           "Det ligger i Jotunheimen i Lom kommune i Innlandet.")


def _quiz(folder: Path, config: str = "nb") -> list[dict]:
    path = folder / "nrk_quiz_qa" / config / "test.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _scan(recipe: Recipe, texts: list[str], **settings) -> dict:
    tests, _ = load_test_side(recipe.decontam_test_side())
    scanner = Scanner(tests, ScanSettings(**{**{
        "methods": list(recipe.decontam.methods), "question_min_words": recipe.decontam.question_min_words},
        **settings}))
    scanner.scan([TrainRecord(i + 1, None, None, None, t) for i, t in enumerate(texts)])
    return scanner.summary()


# ---- one source of truth --------------------------------------------------------------------------------
def test_demo_decontaminates_the_documents_evaluate_scores() -> None:
    from nortune.evaluate.tasks import task_specs

    recipe = load_recipe(DEMO)
    # derived where it is used: loading leaves the decontam section as written (no validator writes into it)
    assert recipe.decontam.noreval_dir is None and recipe.decontam.tasks is None and recipe.decontam.heldout is None
    assert Path(recipe.decontam_test_side().noreval_dir) == Path(recipe.evaluate.data_dir) == Path("data/demo/noreval")
    specs, _ = task_specs(recipe.evaluate, recipe.evaluate.num_fewshot)
    families = {s["task"].rsplit("_", 1)[0]: s for s in specs}
    scored = {f: s["dataset_kwargs"]["data_files"][CATALOGUE[f].split] for f, s in families.items()}
    checked = {task: doc["origin"] for task, doc in describe_sources(test_sources(recipe.decontam_test_side())).items()}
    heldout = {task: origin for task, origin in checked.items() if task.startswith("heldout:")}
    assert {t: o for t, o in checked.items() if t not in heldout} == scored  # the same eight files, split for split
    # and the held-out perplexity texts, like a test set
    assert heldout == {f"heldout:{lang}": str(path) for lang, path in recipe.evaluate.perplexity.texts.items()}


@pytest.mark.parametrize("override, words", [
    ("decontam.noreval_dir=tests/fixtures/noreval_mini", "decontam.noreval_dir is tests/fixtures/noreval_mini"),
    ("decontam.noreval_source=hf", "decontam.noreval_source is hf but evaluate scores local"),
    ("decontam.noreval_revision=v1", "decontam.noreval_revision is v1 but evaluate scores None"),
    ("decontam.tasks=[nrk_quiz_qa_nob]", "evaluate scores ['norcommonsenseqa_nob'"),
])
def test_a_recipe_where_decontam_and_evaluate_can_differ_is_refused_at_load(override, words) -> None:
    with pytest.raises(ConfigError, match=__import__("re").escape(words)):
        load_recipe(DEMO, [override])


def test_hf_source_follows_evaluate_revision_and_refuses_another() -> None:
    recipe = Recipe.model_validate({"name": "x", "evaluate": {"revision": "abc123"}})
    assert recipe.decontam_test_side().noreval_source == "hf" and recipe.decontam_test_side().noreval_revision == "abc123"
    docs = test_sources(recipe.decontam_test_side())
    assert docs["nrk_quiz_qa_nno"]["origin"] == "hf:ltg/nrk_quiz_qa:nn:test"
    assert docs["norcommonsenseqa_nob"]["split"] == "train" and docs["norcommonsenseqa_nob"]["revision"] == "abc123"
    with pytest.raises(ValueError, match="noreval_revision is other but evaluate scores abc123"):
        Recipe.model_validate({"name": "x", "evaluate": {"revision": "abc123"},
                               "decontam": {"noreval_revision": "other"}})
    with pytest.raises(ValueError, match="noreval_source is local but evaluate scores hf"):
        Recipe.model_validate({"name": "x", "decontam": {"noreval_source": "local", "noreval_dir": str(MINI)}})


def test_catalogue_matches_lm_eval_task_definitions() -> None:
    """Decontam reads the catalogue; lm-eval scores its own YAMLs: they name the same dataset, config, split."""
    pytest.importorskip("lm_eval")
    from nortune.evaluate.tasks import task_manager

    index = task_manager().task_index
    for family, task in CATALOGUE.items():
        for name in task.task_names:  # every prompt's YAML (includes merged by lm-eval's own indexer)
            merged = index[name].cfg
            scored = merged.get("test_split") or merged.get("validation_split")  # lm-eval's eval_docs order
            assert (merged["dataset_path"], merged.get("dataset_name"), scored) == \
                (task.dataset, task.config or None, task.split), name


# ---- the whole-question check ---------------------------------------------------------------------------
def test_the_planted_demo_item_is_caught_only_by_the_question_check() -> None:
    recipe = load_recipe(DEMO)
    old = _scan(recipe, [PLANTED], methods=["exact", "substring", "char_ngram", "word_ngram"])
    assert old["training"]["contaminated_records"] == 0  # 28 characters, 5 words: under every floor
    new = _scan(recipe, [PLANTED])
    assert new["training"]["contaminated_records"] == 1
    [match] = new["records"][0]["methods"]["question_answer"]["matches"]
    assert match["test_id"] == "nrk_quiz_qa_nob/test/demo-nrk-nb-2/question"
    assert match["answer"] == "Galdhøpiggen" and match["answer_in_record"] is True


def test_every_quiz_question_is_flagged_and_harder_with_its_answer() -> None:
    """Real quiz length: all nrk_quiz_qa questions of the demo sets, in both languages."""
    recipe = load_recipe(DEMO)
    rows = [r for c in ("nb", "nn") for r in _quiz(DEMO_NOREVAL, c)]
    assert sum(len(r["question"]) < 30 for r in rows) >= 5  # short ones exist: the case the old methods missed
    answer = {r["question"]: r["choices"]["text"][r["choices"]["label"].index(r["answer"])] for r in rows}
    bare = [f"Her er dagens spørsmål: {q.rstrip('?')} Tenk deg om." for q in answer]
    answered = [f"Spørsmål: {q}\nSvar: {a}." for q, a in answer.items()]
    summary = _scan(recipe, bare + answered, methods=["question"])
    kinds = {r["line"]: set(r["methods"]) for r in summary["records"]}
    long_enough = [len(re.findall(r"\w+", q)) >= 4 for q in answer]
    assert sum(long_enough) >= 30 and not all(long_enough)  # "Hvem malte «Skrik»?" is under the 4-word floor
    assert [kinds.get(i + 1) for i in range(len(bare))] == [{"question"} if ok else None for ok in long_enough]
    # with its answer a question counts from 2 words (question_answer_min_words): every demo quiz question
    assert [kinds.get(len(bare) + i + 1) for i in range(len(answered))] == [{"question_answer"}] * len(answered)


def test_question_floor_word_boundaries_and_allow_list() -> None:
    recipe = load_recipe(DEMO)
    near = ["Hva er Norges høyeste fjellområde?",        # a longer word is not the question
            "Hva er Norges høyeste",                      # part of it
            "I hvilket år fikk Norge sin grunnlov, og hvorfor akkurat da?"]  # the whole question, mid-sentence
    summary = _scan(recipe, near, methods=["question"])
    assert [r["line"] for r in summary["records"]] == [3]
    allowed = _scan(recipe, [PLANTED], methods=["question"], allow=["Hva er Norges høyeste fjell"])
    assert allowed["training"]["contaminated_records"] == 0
    assert allowed["methods"]["question_answer"]["allowed_hits"] == 1
    in_question = _scan(recipe, ["Hvilken by var vertskap for vinter-OL i 1994? Lillehammer, sa de."],
                        methods=["question"])
    assert set(in_question["records"][0]["methods"]) == {"question_answer"}
    # an answer that only occurs inside the question does not make it question_answer
    assert _answer_only_in_question(recipe)
    floor = _scan(recipe, [PLANTED], methods=["question"], question_min_words=6, question_answer_min_words=6)
    assert floor["training"]["contaminated_records"] == 0  # a 5-word question is under a 6-word floor
    paired = _scan(recipe, [PLANTED], methods=["question"], question_min_words=6)
    assert set(paired["records"][0]["methods"]) == {"question_answer"}  # with its answer it counts from 2 words


def _answer_only_in_question(recipe: Recipe) -> bool:
    from nortune.decontam.sources import TestText

    tests = [TestText("q/1/question", "quiz", "Skrev Ibsen eller Bjørnson Peer Gynt?", question=True, answer="Ibsen")]
    scanner = Scanner(tests, ScanSettings(methods=["question"]))
    scanner.scan([TrainRecord(1, None, None, None, "Skrev Ibsen eller Bjørnson Peer Gynt? Godt spørsmål."),
                  TrainRecord(2, None, None, None, "Skrev Ibsen eller Bjørnson Peer Gynt? Ibsen.")])
    kinds = [set(r["methods"]) for r in scanner.summary()["records"]]
    return kinds == [{"question"}, {"question_answer"}]


@pytest.mark.slow  # decontam over the whole demo data and its benchmark sets
def test_shipped_demo_data_is_clean_against_the_demo_sets(tmp_path: Path) -> None:
    """The demo runs through the gate: its curated chats carry no test question (chat.jsonl line 16 was fixed)."""
    from nortune.curate import run as curate

    recipe = load_recipe(DEMO, [f"runs_dir={tmp_path}"])
    curate(recipe)
    manifest = run(recipe)
    assert manifest["metrics"]["records"] > 90 and manifest["metrics"]["test_texts"] > 700
    assert manifest["metrics"]["contaminated_records"] == 0

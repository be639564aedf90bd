"""Quiz questions under the 4-word floor: checked together with their correct answer (issue 26, part 8).

"Hvem malte «Skrik»?" is 3 words. Alone it is an ordinary phrase; with "Edvard Munch" in the same training
record it is the test item itself, and the whole-question check must say ``question_answer``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nortune.config import ConfigError, Recipe, load_recipe
from nortune.decontam import require_clean, run
from nortune.decontam.gate import ContaminationGateError
from nortune.decontam.scan import Scanner, ScanSettings
from nortune.decontam.sources import TrainRecord, load_test_side
from nortune.decontam.stage import fingerprint

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo.yaml"
MINI = REPO / "tests" / "fixtures" / "noreval_mini"
SKRIK = "nrk_quiz_qa_nob/test/demo-nrk-nb-6/question"  # "Hvem malte «Skrik»?", answer A: "Edvard Munch"


def _flags(recipe: Recipe, texts: list[str], **settings) -> tuple[dict[int, set[str]], dict]:
    """{line: methods} of the flagged records, and the summary, scanning with the recipe's own settings."""
    tests, _ = load_test_side(recipe.decontam_test_side())
    scan_settings = ScanSettings.from_section(recipe.decontam)
    for key, value in settings.items():
        setattr(scan_settings, key, value)
    scanner = Scanner(tests, scan_settings)
    scanner.scan([TrainRecord(i + 1, None, None, None, t) for i, t in enumerate(texts)])
    summary = scanner.summary()
    return {r["line"]: set(r["methods"]) for r in summary["records"]}, summary


def _quiz_row(rid: str, question: str, choices: list[str], answer: int) -> dict:
    labels = ["A", "B", "C", "D"][:len(choices)]
    return {"id": rid, "question": question, "choices": {"label": labels, "text": choices}, "answer": labels[answer]}


# The nrk_quiz_qa_nob test set of the overlay: two 3-word questions, a 2-word and a 1-word one, and a long one.
QUIZ = [_quiz_row("skrik", "Hvem malte «Skrik»?", ["Harald Sohlberg", "Edvard Munch", "Hans Gude"], 1),
        _quiz_row("sult", "Hvem skrev «Sult»?", ["Knut Hamsun", "Henrik Ibsen", "Sigrid Undset"], 0),
        _quiz_row("fjord", "Definer «fjord».", ["En lang havarm", "En høy fjelltopp", "En bred elv"], 0),
        _quiz_row("foto", "Fotosyntese?", ["Planter lager sukker av lys", "Dyr puster", "Stein smelter"], 0),
        _quiz_row("ol", "Hvilken by var vertskap for vinter-OL i 1994?", ["Lillehammer", "Bergen"], 0)]


def _overlay(tmp_path: Path) -> Path:
    """The mini NorEval folder with nrk_quiz_qa_nob replaced by QUIZ (the other seven families as they are)."""
    folder = tmp_path / "noreval"
    if folder.is_dir():
        return folder
    shutil.copytree(MINI, folder)
    (folder / "nrk_quiz_qa" / "nb" / "test.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in QUIZ), encoding="utf-8")
    return folder


def _recipe(tmp_path: Path, data: Path | None = None, **decontam) -> Recipe:
    return Recipe.model_validate({"name": "sq", "runs_dir": str(tmp_path / "runs"),
                                  "evaluate": {"source": "local", "data_dir": str(_overlay(tmp_path))},
                                  "decontam": {**({"data": str(data)} if data else {}), **decontam}})


# ---- the demo's own short question, through the real loader ---------------------------------------------
def test_skrik_with_its_answer_is_question_answer_and_without_it_is_not() -> None:
    recipe = load_recipe(DEMO)
    texts = ["Hvem malte «Skrik»?\nDet var Edvard Munch, i 1893.",                  # 1: the item, answered
             "Hvem malte «Skrik»? Godt spørsmål, jeg vet ikke.",                     # 2: the question alone
             "Hvem malte «Madonna»? Edvard Munch.",                                   # 3: another question
             "HVEM\u00a0MALTE \"Ｓｋｒｉｋ\" ?? Svaret er: edvard   MUNCH!",         # 4: look-alikes, case, quotes
             "Hvem malte «Skrikene»? Edvard Munch.",                                  # 5: a longer word
             "Edvard Munch: hvem malte «Skrik»?"]                                     # 6: answer first
    flags, summary = _flags(recipe, texts)
    assert flags == {1: {"question_answer"}, 4: {"question_answer"}, 6: {"question_answer"}}
    [match] = summary["records"][0]["methods"]["question_answer"]["matches"]
    assert match["test_id"] == SKRIK and match["answer"] == "Edvard Munch" and match["answer_in_record"] is True
    assert match["text"] == "hvem malte skrik" and match["length"] == 3
    # the floor is a setting: at 4 words (the old behaviour) the item goes unseen again
    assert _flags(recipe, texts[:1], question_answer_min_words=4)[0] == {}
    # the other methods never see it: 19 characters, 3 words
    assert _flags(recipe, texts[:1], methods=["exact", "substring", "char_ngram", "word_ngram"])[0] == {}


def test_the_demo_counts_its_questions_per_floor() -> None:
    recipe = load_recipe(DEMO)
    _, summary = _flags(recipe, [])
    q = summary["test_side"]["index"]["question"]
    assert (q["min_words"], q["min_words_with_answer"]) == (4, 2)
    # "Hvem malte «Skrik»?" and "Kven måla «Skrik»?" are the demo's two questions under 4 words
    assert q["questions_by_floor"]["with_answer_only"] == 2
    assert q["questions_by_floor"]["with_answer_only_no_answer"] == 0
    assert q["questions_by_floor"]["under_floor"] == 0
    assert q["questions"] == q["questions_by_floor"]["whole_question"] + 2


def test_a_short_question_without_a_known_answer_is_counted_and_not_checked() -> None:
    """norquad (extractive QA) has no answer choices: its 3-word "Hvor startet brannen?" cannot be checked."""
    recipe = load_recipe(DEMO, ["decontam.tasks=[norcommonsenseqa_nob,norcommonsenseqa_nno,noropenbookqa_nob,"
                                "noropenbookqa_nno,nortruthfulqa_mc_nob,nortruthfulqa_mc_nno,nrk_quiz_qa_nob,"
                                "nrk_quiz_qa_nno,norquad]"])
    flags, summary = _flags(recipe, ["Hvor startet brannen? I kjelleren, trolig."])
    assert flags == {}
    floors = summary["test_side"]["index"]["question"]["questions_by_floor"]
    assert floors["with_answer_only"] == 3 and floors["with_answer_only_no_answer"] == 1


# ---- a tiny local overlay: the edges of the floor -------------------------------------------------------
def test_floor_edges_on_a_tiny_set(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path)
    texts = ["Hvem malte «Skrik»? Edvard Munch.",                  # 1: 3 words + its answer
             "Hvem malte «Skrik»? Vet ikke.",                      # 2: the same question alone
             "Hvem skrev «Sult»? Edvard Munch.",                   # 3: another 3-word test question, Skrik's answer
             "Hvem skrev «Sult»? Det var Knut Hamsun.",            # 4: that question with its own answer
             "Definer «fjord». En lang havarm, ofte dyp.",         # 5: 2 words (at the floor) + its answer
             "Fotosyntese? Planter lager sukker av lys."]          # 6: 1 word + its answer: under every floor
    flags, summary = _flags(recipe, texts)
    assert flags == {1: {"question_answer"}, 4: {"question_answer"}, 5: {"question_answer"}}
    ids = {r["line"]: r["methods"]["question_answer"]["matches"][0]["test_id"] for r in summary["records"]}
    assert ids == {1: "nrk_quiz_qa_nob/test/skrik/question", 4: "nrk_quiz_qa_nob/test/sult/question",
                   5: "nrk_quiz_qa_nob/test/fjord/question"}
    # a 3-word floor leaves the 2-word question out, and a 4-word floor all three
    assert set(_flags(recipe, texts, question_answer_min_words=3)[0]) == {1, 4}
    assert _flags(recipe, texts, question_answer_min_words=4)[0] == {}


def test_allow_list_applies_to_short_questions(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, allow=["Hvem malte"])
    flags, summary = _flags(recipe, ["Hvem malte «Skrik»? Edvard Munch."])
    assert flags == {}  # one word left of the question: under the 2-word floor, so allowed and counted
    assert summary["methods"]["question_answer"]["allowed_hits"] == 1


def test_the_stage_reports_the_floors_in_json_and_markdown(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    rows = [{"id": "ok", "messages": [{"role": "user", "content": "Hvem skrev «Sult»?"},
                                      {"role": "assistant", "content": "Det husker jeg ikke."}]},
            {"id": "copied", "messages": [{"role": "user", "content": "Hvem malte «Skrik»?"},
                                          {"role": "assistant", "content": "Edvard Munch."}]}]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    recipe = _recipe(tmp_path, data)
    manifest = run(recipe)
    out = recipe.run_dir / "decontam"
    report = json.loads((out / "contamination.json").read_text(encoding="utf-8"))
    assert manifest["metrics"]["contaminated_records"] == 1 and not manifest["metrics"]["passed"]
    [rec] = report["records"]
    assert (rec["id"], rec["line"], set(rec["methods"])) == ("copied", 2, {"question_answer"})
    assert report["settings"]["question_answer_min_words"] == 2
    # the mini set's 8 other questions and the long quiz question are >= 4 words
    assert report["test_side"]["index"]["question"]["questions_by_floor"] == {
        "whole_question": 9, "with_answer_only": 3, "with_answer_only_no_answer": 0, "under_floor": 1}
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert ("Test questions: 9 of ≥ 4 words (whole-question check), 3 of 2-3 words (checked only with their "
            "answer), 1 under 2 words (not checked).") in summary
    assert "a whole test question (at least 2 words) **and its correct answer**" in summary


# ---- the floors are settings: validated, in the fingerprint and the gate --------------------------------
def test_the_floors_are_checked_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"question_answer_min_words \(5\) is above question_min_words \(4\)"):
        load_recipe(DEMO, ["decontam.question_answer_min_words=5"])
    with pytest.raises(ConfigError, match="question_answer_min_words"):
        load_recipe(DEMO, ["decontam.question_answer_min_words=1"])
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"text": "Hvem malte «Skrik»? Edvard Munch."}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    recipe = _recipe(tmp_path, data, max_contaminated_records=5)
    weaker = _recipe(tmp_path, data, max_contaminated_records=5, question_answer_min_words=4)
    assert fingerprint(recipe) != fingerprint(weaker)
    assert fingerprint(weaker)["settings"] != fingerprint(recipe)["settings"]
    assert run(weaker)["metrics"]["contaminated_records"] == 0  # 4-word floor: the old blind spot
    with pytest.raises(ContaminationGateError, match=r"stale, made with other settings "
                                                     r"\(decontam\.question_answer_min_words: report 4, recipe 2"):
        require_clean(recipe, data)
    assert run(recipe)["metrics"]["contaminated_records"] == 1  # not skipped: another fingerprint
    assert require_clean(recipe, data)["passed"] is True  # 1 <= 5, and current

"""NorEval statistics for the whole suite: combined SE, median, normalised scores, category averages,
generation metrics from lm-eval-shaped results, small-set warnings, paired comparison beyond the recipe.

Every expected number is worked out by hand in the comment beside it. Families outside today's
catalogue are added with monkeypatch, so the tests hold whatever the catalogue grows into.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from conftest import write_manifest
from nortune.config.names import NorEvalTask
from nortune.evaluate import report
from nortune.evaluate.paired import paired_bootstrap
from nortune.evaluate.stats import family_summary, headlines, result_scores, small_sets, to_percent
from nortune.evaluate.tasks import CATALOGUE

KNOWLEDGE, COMMONSENSE = "Norwegian-specific & world knowledge", "Commonsense reasoning"


def lm_eval_results(task_values: dict[str, list[dict[str, float]]], n: int) -> tuple[dict, dict]:
    """(results, n-samples) shaped like lm-eval 0.4.13's: "<metric>,none" and "<metric>_stderr,none"."""
    results, counts = {}, {}
    for family, prompts in task_values.items():
        for i, metrics in enumerate(prompts):
            name = f"{family}_p{i}"
            entry = {"alias": name, "sample_len": n}
            for metric, (value, stderr) in metrics.items():
                entry[f"{metric},none"] = value
                entry[f"{metric}_stderr,none"] = stderr
            results[name], counts[name] = entry, {"original": 1000, "effective": n}
    return results, counts


@pytest.fixture
def catalogue(monkeypatch):
    """Pin the fields these tests depend on, and add two generation families (as the suite helper will)."""
    monkeypatch.setitem(CATALOGUE, "nrk_quiz_qa_nob", replace(CATALOGUE["nrk_quiz_qa_nob"], category=KNOWLEDGE,
                                                              random_baseline=None, metric="acc"))
    for family in ("norcommonsenseqa_nob", "norcommonsenseqa_nno"):
        monkeypatch.setitem(CATALOGUE, family, replace(CATALOGUE[family], category=COMMONSENSE, random_baseline=20.0))
    monkeypatch.setitem(CATALOGUE, "norquad", NorEvalTask(
        "norquad", "NorQuAD", "ltg/norquad", "nb", "test", "train", (), (), "Machine reading comprehension", 0.0, "f1"))
    monkeypatch.setitem(CATALOGUE, "tatoeba_eng_nno", NorEvalTask(
        "tatoeba_eng_nno", "Tatoeba en-nn", "Helsinki-NLP/tatoeba_mt", "eng-nno", "test", "validation", (), (),
        "Machine translation", None, "bleu"))
    monkeypatch.setitem(CATALOGUE, "norec_sentence", NorEvalTask(
        "norec_sentence", "NoReC sentence", "ltg/norec_sentence", "nb", "test", "train", (), (),
        "Sentiment analysis", 50.0, "f1"))
    return CATALOGUE


def test_median_combined_se_and_normalised_score_by_hand(catalogue):
    acc = [0.50, 0.60, 0.40, 0.70, 0.45]
    se = [0.05, 0.04, 0.05, 0.03, 0.04]
    results, counts = lm_eval_results({"nrk_quiz_qa_nob": [{"acc": (a, s)} for a, s in zip(acc, se)]}, n=80)
    # chance from the rows' choices: items with 4, 4 and 2 choices -> mean(25, 25, 50) = 33.333
    rows = [{"family": "nrk_quiz_qa_nob", "prompt": p, "doc_id": d, "choices": ["x"] * c}
            for p in ("p0", "p1") for d, c in enumerate([4, 4, 2])]
    s = family_summary(result_scores(results, counts), "acc", rows)["nrk_quiz_qa_nob"]
    assert (s["best"], s["best_prompt"], s["min"], s["k"]) == (70.0, "p3", 40.0, 5)
    assert s["mean"] == pytest.approx(53.0) and s["median"] == pytest.approx(50.0)
    # SD over prompts: deviations -3, 7, -13, 17, -8 -> 580 / 4 = 145; SD^2 / k = 29
    assert s["sd_prompts"] == pytest.approx(math.sqrt(145))
    # SE_items: root mean square of 5, 4, 5, 3, 4 -> sqrt(91 / 5) = sqrt(18.2)
    assert s["se_items"] == pytest.approx(math.sqrt(18.2))
    assert s["se"] == pytest.approx(math.sqrt(18.2 + 29))  # 6.870
    assert s["ci"] == pytest.approx(1.959964 * math.sqrt(47.2), rel=1e-6)
    assert s["random"] == pytest.approx(100 / 3)
    assert s["normalised_best"] == pytest.approx(55.0)   # (70 - 33.33) / (100 - 33.33)
    assert s["normalised_mean"] == pytest.approx(29.5)   # (53 - 33.33) / (100 - 33.33)
    assert s["small"] and s["n_items"] == 80


def test_category_and_overall_averages_by_hand(catalogue):
    results, counts = lm_eval_results({
        "norcommonsenseqa_nob": [{"acc": (0.6, 0.0)}, {"acc": (0.4, 0.0)}],  # best 60, mean 50, SE sqrt(200/2) = 10
        "norcommonsenseqa_nno": [{"acc": (0.8, 0.0)}, {"acc": (0.8, 0.0)}],  # best 80, mean 80, SE 0
        "norec_sentence": [{"f1": (0.5, 0.0)}, {"f1": (0.5, 0.0), "acc": (0.9, 0.0)}],  # macro F1 50, chance 50
    }, n=500)
    summary = family_summary(result_scores(results, counts), "acc")
    assert summary["norec_sentence"]["metric"] == "f1" and summary["norec_sentence"]["best"] == 50.0
    head = headlines(summary)
    commonsense = head["categories"][COMMONSENSE]
    assert commonsense["best"]["value"] == pytest.approx(70.0) and commonsense["mean"]["value"] == pytest.approx(65.0)
    assert commonsense["best"]["se"] == pytest.approx(5.0)  # sqrt(10^2 + 0^2) / 2
    # normalised (chance 20): best (60-20)/80 = 50 and (80-20)/80 = 75 -> 62.5; mean 37.5 and 75 -> 56.25
    assert commonsense["normalised_best"]["value"] == pytest.approx(62.5)
    assert commonsense["normalised_mean"]["value"] == pytest.approx(56.25)
    assert commonsense["normalised_best"]["se"] == pytest.approx(6.25)  # SE 10 * 100/80 = 12.5, halved
    assert list(head["categories"]) == ["Sentiment analysis", COMMONSENSE]  # NorEval's category order
    assert head["overall"]["best"]["value"] == pytest.approx((60 + 80 + 50) / 3)
    assert head["overall"]["normalised_best"]["value"] == pytest.approx((50 + 75 + 0) / 3)
    # the recipe headline averages the recipe's tasks only (norec has no published reference here)
    assert head["best_of_prompts"] == pytest.approx(70.0) and not head["complete"]


def test_generation_families_from_lm_eval_results(catalogue):
    results, counts = lm_eval_results({
        "norquad": [{"exact_match": (0.20, 0.04), "f1": (0.45, 0.03)},
                    {"exact_match": (0.30, 0.05), "f1": (0.55, 0.02)}],
        # sacrebleu scores are 0..100 in lm-eval; bootstrap stderr N/A when only one item was scored
        "tatoeba_eng_nno": [{"bleu": (12.5, 1.2), "chrf": (40.1, 0.9)}, {"bleu": (17.5, "N/A"), "chrf": (44.0, 1.0)}],
    }, n=250)
    results["norquad_p1"].update({"f1,strip": 0.99, "f1_stderr,strip": 0.01})  # another filter: "none" wins
    summary = family_summary(result_scores(results, counts), "acc_norm")
    quad, mt = summary["norquad"], summary["tatoeba_eng_nno"]
    assert quad["metric"] == "f1" and (quad["best"], quad["best_prompt"]) == (pytest.approx(55.0), "p1")
    assert quad["se_items"] == pytest.approx(math.sqrt((9 + 4) / 2))  # f1 stderrs 3 and 2 points
    assert quad["normalised_best"] == pytest.approx(55.0)  # chance 0: normalised = raw
    assert mt["metric"] == "bleu" and mt["best"] == 17.5 and mt["mean"] == 15.0 and mt["min"] == 12.5
    assert mt["se_items"] == pytest.approx(1.2)  # the N/A prompt has no item SE; the prompt spread still counts
    assert mt["se"] == pytest.approx(math.sqrt(1.44 + 12.5 / 2))  # SD^2 = 12.5, k = 2
    assert mt["random"] is None and mt["normalised_best"] is None  # generation: no chance level
    assert to_percent("rougeL_max", 31.0) == 31.0 and to_percent("rougeL_acc", 0.31) == 31.0
    head = headlines(summary)
    assert head["best_of_prompts"] is None and head["overall"]["best"]["tasks"] == 2
    assert head["overall"]["normalised_best"]["tasks"] == 1  # only norquad has a chance level
    md = report.markdown({"label": "base", "metric": "acc", "backend": "nortune", "num_fewshot": {},
                          "scores": result_scores(results, counts), "tasks": summary, "headline": head,
                          "not_computed": {"ask_gec": "errant is not installed"}})
    assert "| Tatoeba en-nn | Machine translation | bleu |" in md and "**17.5 ± " in md
    assert "## Not computed" in md and "`ask_gec`: errant is not installed" in md


def test_small_set_warning_below_100_items_only(catalogue):
    results, counts = lm_eval_results({"nrk_quiz_qa_nob": [{"acc": (0.5, 0.05)}] * 2}, n=99)
    big, big_counts = lm_eval_results({"norcommonsenseqa_nob": [{"acc": (0.5, 0.05)}] * 2}, n=100)
    scores = result_scores({**results, **big}, {**counts, **big_counts})
    summary = family_summary(scores, "acc")
    assert small_sets(summary) == {"nrk_quiz_qa_nob": 99}
    md = report.markdown({"label": "base", "metric": "acc", "backend": "nortune", "num_fewshot": {},
                          "scores": scores, "tasks": summary, "headline": headlines(summary)})
    warning = next(line for line in md.splitlines() if "Small test sets" in line)
    assert "Norwegian knowledge BM (99)" in warning and "Commonsense BM" not in warning
    row = next(line for line in md.splitlines() if line.startswith("| Norwegian knowledge BM |"))
    assert "99 (small)" in row and f"**50.0 ± {summary['nrk_quiz_qa_nob']['ci']:.1f}**" in row
    assert "(small)" not in next(line for line in md.splitlines() if line.startswith("| Commonsense BM |"))


def _quad_rows(f1: list[float]) -> list[dict]:
    return [{"family": "norquad", "prompt": p, "doc_id": i, "doc_hash": f"q{i}",
             "metrics": {"f1": v, "exact_match": float(v == 1.0)}} for p in ("p0", "p1") for i, v in enumerate(f1)]


def _mt_rows(generations: list[str], targets: list[str]) -> list[dict]:
    return [{"family": "tatoeba_eng_nno", "prompt": p, "doc_id": i, "doc_hash": f"t{i}", "metrics": {},
             "generation": g, "target": t} for p in ("p0", "p1") for i, (g, t) in enumerate(zip(generations, targets))]


def test_paired_comparison_beyond_the_recipe(catalogue):
    from lm_eval.api.metrics import bleu

    targets = [f"Eg likar {w} og kaffi kvar morgon." for w in ("te", "brød", "ost", "eple", "is", "fisk")] * 5
    worse = [t.replace("kaffi kvar morgon", "mjølk i kveld") if i % 2 else t for i, t in enumerate(targets)]
    base = _quad_rows([1.0] * 40 + [0.5] * 10) + _mt_rows(targets, targets)
    tuned = _quad_rows([0.2] * 40 + [0.5] * 10) + _mt_rows(worse, targets)
    base += [{"family": "norec_sentence", "prompt": "p0", "doc_id": 0, "doc_hash": "n0", "metrics": {"acc": 1.0}}]
    tuned += [{"family": "norec_sentence", "prompt": "p0", "doc_id": 0, "doc_hash": "n0", "metrics": {"acc": 1.0}}]
    deltas, overall = paired_bootstrap(base, tuned, "acc", 300, 0.95)
    by = {d.family: d for d in deltas}
    quad, mt = by["norquad"], by["tatoeba_eng_nno"]
    assert (quad.metric, quad.method, quad.n_items) == ("f1", "per-item", 50)
    assert quad.best == pytest.approx(-64.0) and quad.regression()  # f1 mean 90 -> 26 points
    expected = bleu(list(zip(targets, worse))) - bleu(list(zip(targets, targets)))  # lm-eval items: (ref, pred)
    assert (mt.metric, mt.method) == ("bleu", "corpus") and mt.best == pytest.approx(expected)
    assert -90 < expected < -10  # a real corpus BLEU change, not a floor or a ceiling
    assert mt.regression() and mt.best_ci[1] < 0
    # norec's macro F1 is corpus-level with no per-item values: said, not skipped silently
    assert "norec_sentence" in overall["no_paired_ci"] and "'f1'" in overall["no_paired_ci"]["norec_sentence"]
    assert "tasks" not in overall  # no recipe task compared: no headline delta
    md = report.compare_markdown({"label": "base", "tasks": {}, "headline": {}}, {"label": "tuned", "tasks": {}},
                                 deltas, overall, 0.95)
    assert "bleu (corpus metric recomputed)" in md and "No paired interval" in md and "norec_sentence" in md


def test_run_report_and_ledger_show_intervals_small_sets_and_not_computed(tmp_path):
    import json

    from nortune.report.ledger import compare_runs
    from nortune.report.stage import _data_notes
    from nortune.runs import RunLayout

    run = tmp_path / "runs" / "r1"
    layout = RunLayout(run)
    metrics = {"best_of_prompts": 55.0, "mean_of_prompts": 50.0, "normalised_overall": 31.0, "note": None,
               "normalised_categories": {KNOWLEDGE: 40.0},
               "tasks": {"nrk_quiz_qa_nno": 60.0}, "tasks_mean": {"nrk_quiz_qa_nno": 52.0},
               "tasks_ci": {"nrk_quiz_qa_nno": 9.4}, "small_sets": {"nrk_quiz_qa_nno": 57},
               "not_computed": {"ask_gec": "errant is not installed"}}
    for label in ("base", "tuned"):
        write_manifest(layout.evaluate_dir(label), f"evaluate-{label}", metrics=metrics)
    layout.compare_dir("tuned").mkdir(parents=True)
    (layout.compare_dir("tuned") / "compare.json").write_text(json.dumps({
        "confidence": 0.95, "deltas": [], "no_paired_ci": {"norec_sentence": "macro F1 is corpus-level"}}))
    notes = _data_notes(run)
    assert "Not computed (tuned): ask_gec: errant is not installed" in notes
    assert "Small test sets (&lt; 100 items): nrk_quiz_qa_nno (57)" in notes
    assert "No paired interval (tuned vs its baseline): norec_sentence: macro F1 is corpus-level" in notes
    table = compare_runs([run])
    assert "| Norwegian knowledge NN | 60.0 ± 9.4 (n=57, small) |" in table
    assert f"| {KNOWLEDGE}, normalised (best of prompts) | 40.0 |" in table
    assert "| average (mean of prompts) | 50.0 |" in table and "| all tasks, normalised (best of prompts) | 31.0 |" in table
    assert "Not computed: r1: ask_gec (errant is not installed)" in table and "No paired interval: r1: norec_sentence" in table

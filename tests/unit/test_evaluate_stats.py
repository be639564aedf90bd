"""Evaluate: statistics, headlines, paired bootstrap, recipe section and local data checks (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nortune.config import ConfigError, load_recipe
from nortune.config.names import RECIPE_FAMILIES
from nortune.evaluate.paired import paired_bootstrap
from nortune.evaluate.stats import family_summary, headlines, prompt_scores
from nortune.evaluate.tasks import CATALOGUE, PROMPTS, check_local_file, task_specs
from nortune.jsonl import DataError

REPO = Path(__file__).resolve().parents[2]


def rows(family: str, correct: dict[str, list[int]], start: int = 0) -> list[dict]:
    return [{"family": family, "prompt": p, "doc_id": i, "doc_hash": f"h{i}", "acc": float(c),
             "acc_norm": float(c)} for p, values in correct.items() for i, c in enumerate(values, start)]


def test_summary_best_mean_min_std_and_headlines():
    samples = []
    for family in CATALOGUE:
        samples += rows(family, {"p0": [1, 1, 0, 0], "p1": [1, 1, 1, 0], "p2": [0, 0, 0, 0]})
    scores = prompt_scores(samples)
    s = family_summary(scores, "acc")["norcommonsenseqa_nob"]
    assert (s["best"], s["best_prompt"], s["min"]) == (75.0, "p1", 0.0)
    assert s["mean"] == pytest.approx(41.6667, abs=1e-3)
    assert s["std"] == pytest.approx(38.188, abs=1e-3)  # sample std over prompts
    p0 = scores["norcommonsenseqa_nob"]["p0"]["acc"]
    assert p0["stderr"] == pytest.approx(100 * (1 / 3) ** 0.5 / 2)  # lm-eval's mean_stderr
    head = headlines(family_summary(scores, "acc"))
    assert head["complete"] and head["best_of_prompts"] == 75.0
    assert "best of prompts per task, then unweighted mean" in head["best_of_prompts_label"]


def test_paired_bootstrap_flags_a_real_regression_and_not_noise():
    n = 60
    base = rows("nortruthfulqa_mc_nob", {p: [1] * 45 + [0] * 15 for p in PROMPTS})
    worse = rows("nortruthfulqa_mc_nob", {p: [1] * 30 + [0] * 30 for p in PROMPTS})  # -25 pp
    same = rows("nortruthfulqa_mc_nob", {p: [1] * 44 + [0] + [1] + [0] * 14 for p in PROMPTS})
    deltas, overall = paired_bootstrap(base, worse, "acc", 500, 0.95)
    assert deltas[0].regression() and overall["regression"] and deltas[0].n_items == n
    assert deltas[0].best == pytest.approx(-25.0)
    deltas, overall = paired_bootstrap(base, same, "acc", 500, 0.95)
    assert not deltas[0].regression() and not overall["regression"]


def test_the_interval_is_the_percentile_of_paired_draws_worked_out_by_hand():
    # 4 items, one prompt: base right on items 0 and 1, tuned also on item 2; per-item delta 0, 0, +100, 0 pp.
    base = rows("norcommonsenseqa_nob", {"p0": [1, 1, 0, 0]})
    tuned = rows("norcommonsenseqa_nob", {"p0": [1, 1, 1, 0]})
    (delta,), _ = paired_bootstrap(base, tuned, "acc", 4, 0.95, seed=0)
    # numpy's default_rng(0) draws these item indices for 4 resamples of 4 items:
    #   [3, 2, 2, 1] -> item 2 twice: 50 pp;  [1, 0, 0, 0] -> 0 pp;  [0, 3, 2, 3] -> 25 pp;  [2, 2, 3, 2] -> 75 pp
    # sorted 0, 25, 50, 75; numpy's linear percentile at 2.5 % is 0 + 0.075 * 25, at 97.5 % 50 + 0.925 * 25.
    assert delta.best == delta.mean == pytest.approx(25.0)
    assert delta.best_ci == pytest.approx((1.875, 73.125)) and delta.mean_ci == pytest.approx((1.875, 73.125))


def test_only_the_paired_interval_excludes_zero_on_correlated_items():
    import numpy as np

    # 40 items: base right on the even ones; tuned also on 6 odd ones, and the same elsewhere (+15 pp).
    right = [1 - i % 2 for i in range(40)]
    better = [1 if i in (1, 3, 5, 7, 9, 11) else right[i] for i in range(40)]
    (delta,), overall = paired_bootstrap(rows("nrk_quiz_qa_nob", {"p0": right}),
                                         rows("nrk_quiz_qa_nob", {"p0": better}), "acc", 2000, 0.95)
    assert delta.best == pytest.approx(15.0) and delta.gain()
    # about 6 of 40 drawn items carry the gain: the interval is wide ([5, 27.5] pp or so) yet above 0
    assert 0 < delta.best_ci[0] < 10 and delta.best_ci[1] > 20
    # The same draws made independently for base and tuned (what an unpaired bootstrap does) straddle 0:
    rng = np.random.default_rng(0)
    a, b = np.array(right) * 100.0, np.array(better) * 100.0
    unpaired = b[rng.integers(0, 40, (2000, 40))].mean(1) - a[rng.integers(0, 40, (2000, 40))].mean(1)
    assert np.percentile(unpaired, 2.5) < 0 < np.percentile(unpaired, 97.5)


def test_an_interval_from_fewer_than_20_items_draws_no_verdict():
    base = rows("nortruthfulqa_mc_nob", {p: [1] * 19 for p in PROMPTS})
    worse = rows("nortruthfulqa_mc_nob", {p: [0] * 19 for p in PROMPTS})  # -100 pp on 19 items
    deltas, overall = paired_bootstrap(base, worse, "acc", 200, 0.95)
    assert deltas[0].best_ci[1] < 0 and not deltas[0].regression() and not overall["regression"]
    assert deltas[0].verdict() == "too few items (19 < 20): no verdict" and not overall["judged"]
    deltas, overall = paired_bootstrap(base + rows("nortruthfulqa_mc_nob", {p: [1] for p in PROMPTS}, start=19),
                                       worse + rows("nortruthfulqa_mc_nob", {p: [0] for p in PROMPTS}, start=19),
                                       "acc", 200, 0.95)
    assert deltas[0].n_items == 20 and deltas[0].regression() and overall["regression"]


def test_paired_bootstrap_refuses_different_items():
    a = rows("nrk_quiz_qa_nob", {"p0": [1, 0]})
    b = [dict(r, doc_hash="other") for r in a]
    with pytest.raises(ValueError, match="cannot pair"):
        paired_bootstrap(a, b, "acc", 100, 0.95)


def test_recipe_section_validates(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\nevaluate:\n  tasks: [norcommonsenseqa_nob, arc_easy]\n")
    with pytest.raises(ConfigError, match="evaluate.tasks: unknown NorEval task"):
        load_recipe(recipe)
    recipe.write_text("name: x\nevaluate:\n  source: local\n  data_dir: nowhere\n")
    with pytest.raises(ConfigError, match="data_dir is not a folder"):
        load_recipe(recipe)
    recipe.write_text("name: x\nevaluate:\n  shots: 3\n")
    with pytest.raises(ConfigError, match="evaluate.shots: unknown key"):
        load_recipe(recipe)
    ok = load_recipe(_write(tmp_path / "ok.yaml", "name: x\n"))
    assert ok.evaluate.num_fewshot == {"noropenbookqa_nob": 16, "noropenbookqa_nno": 16}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_local_data_errors_name_file_line_and_key(tmp_path):
    path = tmp_path / "test.jsonl"
    good = {"question": "q", "choices": {"label": ["A", "B", "C", "D"], "text": ["a", "b", "c", "d"]}, "answer": "A"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "answer": "F"}) + "\n")
    with pytest.raises(DataError, match=r"test.jsonl:2: key 'answer'"):
        check_local_file(path, CATALOGUE["nrk_quiz_qa_nob"])
    path.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(DataError, match=r"test.jsonl:1: missing key 'choices.text'"):
        check_local_file(path, CATALOGUE["nrk_quiz_qa_nob"])


def test_demo_sample_sets_are_complete_and_valid(tmp_path):
    root = REPO / "data" / "demo" / "noreval"
    assert (root / "SAMPLE_SETS.md").is_file()
    recipe = load_recipe(_write(tmp_path / "r.yaml", f"name: x\nevaluate:\n  source: local\n  data_dir: {root}\n"))
    specs, origins = task_specs(recipe.evaluate, dict(recipe.evaluate.num_fewshot))
    assert len(specs) == 40 and len(origins) == 8
    obqa = next(s for s in specs if s["task"] == "noropenbookqa_nno_p0")
    assert obqa["num_fewshot"] == 16 and set(obqa["dataset_kwargs"]["data_files"]) == {"test", "train"}
    for task in (CATALOGUE[f] for f in RECIPE_FAMILIES):  # the rest: tests/unit/test_evaluate_suite.py
        split_file = root / task.short / task.config / f"{task.split}.jsonl"
        assert check_local_file(split_file, task) >= 15


def test_all_forty_noreval_tasks_ship_in_lm_eval():
    from nortune.evaluate.tasks import task_manager

    names = [f"{family}_{p}" for family in RECIPE_FAMILIES for p in PROMPTS]
    assert sorted(set(names) - set(task_manager().all_tasks)) == []


def _results(folder: Path, label: str, correct: list[int]) -> Path:
    samples = rows("nortruthfulqa_mc_nob", {p: correct for p in PROMPTS})
    scores = prompt_scores(samples)
    summary = family_summary(scores, "acc")
    folder.mkdir(parents=True)
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in samples))
    (folder / "results.json").write_text(json.dumps({"results": {}, "nortune": {
        "label": label, "tasks": summary, "scores": scores, "headline": headlines(summary),
        "note": None, "samples_file": "samples.jsonl", "card": _CARD}}))
    return folder / "results.json"


# Both runs of a comparison share one eval card (the refusal itself is tested in test_evaluate_card.py).
_CARD = {"card_version": 1, "lm_eval": "0.4.13", "model": "m", "data": {"source": "local"},
         "tasks": {f"nortruthfulqa_mc_nob_{p}": {"version": 1.0, "config_sha256": "c", "num_fewshot": 0,
                                                 "docs_sha256": "d", "fewshot_docs_sha256": None, "n_docs": 50}
                   for p in PROMPTS},
         "fewshot_seed": 1234, "limit": None, "backend": "nortune", "dtype": "float32",
         "chat": {"setting": "off", "applied": False, "template_sha256": None, "fewshot_as_multiturn": False,
                  "system_instruction": None, "reason": "base model"}}


def test_compare_writes_reports_and_shouts_about_a_regression(tmp_path):
    from nortune.evaluate.compare import compare, regression_banner

    base = _results(tmp_path / "base", "base", [1] * 40 + [0] * 10)
    tuned = _results(tmp_path / "tuned", "tuned", [1] * 25 + [0] * 25)  # the recipe's -10 pp, and worse
    result = compare(tuned, base, tmp_path / "cmp", "acc", 300, 0.95)
    assert result["regressions"] == ["nortruthfulqa_mc_nob"] and result["overall"]["regression"]
    banner = regression_banner(json.loads((tmp_path / "cmp" / "compare.json").read_text()))
    assert "SIGNIFICANT REGRESSION (tuned vs base, 95% paired bootstrap):" in banner
    assert any(line.startswith("  Truthfulness BM (acc): best of prompts -") for line in banner), banner
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "SIGNIFICANT REGRESSION: Truthfulness BM" in md and "**REGRESSION**" in md
    assert (tmp_path / "cmp" / "compare.png").is_file()
    with pytest.raises(DataError, match="key 'nortune' missing"):
        (tmp_path / "bad.json").write_text("{}")
        compare(tmp_path / "bad.json", base, tmp_path / "cmp2", "acc", 100, 0.95)


def test_the_perplexity_interval_is_the_quantile_of_paired_draws_worked_out_by_hand():
    import math

    from nortune.evaluate.perplexity import ratio_bootstrap

    # 4 texts of 10 tokens; tuned loses 4 nats on text 3 only. default_rng(20) (perplexity.SEED) draws
    # [3, 1, 1, 1], [3, 0, 0, 2], [0, 1, 1, 0], [0, 0, 2, 3]: text 3 once, once, never, once, so the ratio of
    # perplexities is exp(4 / 40) - 1 three times and 0 once; numpy's linear quantile at 2.5 % is 0.075 of the way
    # from 0 to that, at 97.5 % that value itself.
    rise = math.exp(0.1) - 1
    point, (lo, hi) = ratio_bootstrap([10.0] * 4, [10] * 4, [10.0, 10.0, 10.0, 14.0], [10] * 4, 4, 0.95)
    assert point == pytest.approx(rise) and lo == pytest.approx(0.075 * rise) and hi == pytest.approx(rise)


def test_only_the_paired_perplexity_interval_excludes_zero():
    import numpy as np

    from nortune.evaluate.perplexity import ratio_bootstrap

    # Texts that differ tenfold in difficulty, each 1 % harder for tuned: paired, a tight interval above 0.
    rng = np.random.default_rng(1)
    base = rng.uniform(5, 50, 60)
    tuned = base * 1.01
    tokens = [20] * 60
    point, (lo, hi) = ratio_bootstrap(list(base), tokens, list(tuned), tokens, 2000, 0.95)
    assert 0 < lo < point < hi < 0.05
    idx_a, idx_b = rng.integers(0, 60, (2000, 60)), rng.integers(0, 60, (2000, 60))  # unpaired: two draws
    unpaired = np.exp(tuned[idx_b].mean(1) / 20 - base[idx_a].mean(1) / 20) - 1
    assert np.quantile(unpaired, 0.025) < 0 < np.quantile(unpaired, 0.975)

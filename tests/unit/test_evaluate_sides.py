"""benchmarks/evaluate_sides.py's comparison: what ``agree`` means for the evaluation benchmarks."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "evaluate_sides.py"
spec = importlib.util.spec_from_file_location("evaluate_sides", SCRIPT)
sides = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sides)


def item(ll, greedy=(False, False), acc=1.0, acc_norm=0.0):
    return {"ll": list(ll), "greedy": list(greedy), "acc": acc, "acc_norm": acc_norm}


def test_equal_within_tolerance_agrees():
    ref = {"t": {"0": item([-10.0, -12.0]), "1": item([-3.0, -4.0])}}
    ours = {"t": {"0": item([-10.0004, -12.0]), "1": item([-3.0, -4.0002])}}
    d = sides.compare(ours, ref, atol=1e-3)
    assert d["agree"] is True and d["items"] == 2 and d["loglikelihoods_compared"] == 4
    assert abs(d["max_abs_loglikelihood_diff"] - 4e-4) < 1e-9


def test_a_loglikelihood_outside_the_tolerance_or_a_flipped_flag_disagrees():
    ref = {"t": {"0": item([-10.0, -12.0])}}
    far = sides.compare({"t": {"0": item([-10.0, -12.5])}}, ref, atol=1e-3)
    assert far["agree"] is False and far["loglikelihoods_outside_tolerance"] == 1
    # The relative part of the rule: 0.5 on |-12| is within 0.05 + 0.05 x 12.
    assert sides.compare({"t": {"0": item([-10.0, -12.5])}}, ref, atol=0.05, rtol=0.05)["agree"] is True
    flipped = sides.compare({"t": {"0": item([-10.0, -12.0], acc=0.0)}}, ref)
    assert flipped["agree"] is False and flipped["flag_mismatches"] == {"acc": 1, "acc_norm": 0, "greedy": 0}
    greedy = sides.compare({"t": {"0": item([-10.0, -12.0], greedy=(True, False))}}, ref)
    assert greedy["agree"] is False and greedy["greedy_flags"] is False


def test_missing_items_disagree():
    ref = {"t": {"0": item([-1.0]), "1": item([-2.0])}}
    d = sides.compare({"t": {"0": item([-1.0])}}, ref)
    assert d["same_items"] is False and d["agree"] is False
    assert sides.compare({}, {})["agree"] is False  # nothing compared is not agreement

"""The forgetting watch's judgement (train.watch) on scores worked out by hand, and its recipe checks."""

from __future__ import annotations

import math

import pytest

from nortune.config import ConfigError, load_recipe
from nortune.config.train import WatchSection
from nortune.jsonl import DataError
from nortune.train.watch import Watch, read_sets

N = 30  # texts per set: enough for a verdict (20)


def texts(tmp_path, name, n=N):
    path = tmp_path / f"{name}.txt"
    path.write_text("".join(f"text {i} of {name}\n" for i in range(n)))
    return path


def settings(tmp_path, **values):
    return WatchSection(texts={"nb": texts(tmp_path, "nb"), "debian.en": texts(tmp_path, "en"),
                               "de": texts(tmp_path, "de")}, max_texts=N, guarded=["en"], **values)


def scores(nb=1.0, en=1.0, de=1.0):
    """Per set, N texts of 10 tokens; each text's NLL scaled by the set's factor, with some spread (a real
    interval): perplexity changes by exp(2.0 * (factor - 1)) against factor 1."""
    spread = [2.0 * 10 * (1 + 0.01 * ((i % 5) - 2)) for i in range(N)]
    return {name: [(x * f, 10) for x in spread] for name, f in (("nb", nb), ("debian.en", en), ("de", de))}


def test_forgetting_stops_at_the_first_measurement_that_finds_it_and_keeps_the_best_before(tmp_path):
    watch = Watch(settings(tmp_path, patience=5))
    watch.add(0, scores(), 1.0)
    better = watch.add(10, scores(nb=0.97), 1.0)        # nb -5.8 %, en unchanged
    assert better["best_step"] == 10 and not better["forgetting"] and watch.stop_reason is None
    assert better["sets"]["nb"]["change"] == pytest.approx(math.exp(2.0 * -0.03) - 1)
    forgot = watch.add(20, scores(nb=0.95, en=1.03), 1.0)  # nb better still, English +6.2 %: beyond 2 %
    assert forgot["forgetting"] == ["debian.en"] and watch.stopped_at == 20
    assert watch.stop_reason.startswith("forgetting: debian.en +6.2% [+6.2%, +6.2%] against step 0")
    assert watch.best_step == 10  # a step that forgets is never the best, however low nb went
    summary = watch.summary(20, "checkpoint-10 (step 10)")
    assert summary["stopped_early"] and summary["best_step"] == 10 and summary["stopped_at_step"] == 20
    assert [e["step"] for e in summary["evaluations"]] == [0, 10, 20]


def test_a_rise_within_the_tolerance_or_of_an_unjudged_language_does_not_stop(tmp_path):
    watch = Watch(settings(tmp_path))
    watch.add(0, scores(), 1.0)
    entry = watch.add(10, scores(nb=0.97, en=1.005, de=1.5), 1.0)  # en +1 % (significant, within 2 %); de x2.7
    assert entry["sets"]["debian.en"]["ci"][0] > 0 and "within the 2% tolerance" in entry["sets"]["debian.en"]["verdict"]
    assert entry["sets"]["de"]["verdict"].endswith("(not judged)")  # neither trained nor guarded
    assert not entry["forgetting"] and watch.stop_reason is None and watch.best_step == 10


def test_a_trained_language_that_gets_significantly_worse_is_forgetting(tmp_path):
    watch = Watch(settings(tmp_path))
    watch.add(0, scores(), 1.0)
    assert watch.add(10, scores(nb=1.01), 1.0)["forgetting"] == ["nb"]  # +2 %: any significant rise of a trained set
    assert watch.best_step == 0


def test_patience_stops_a_run_that_stopped_improving(tmp_path):
    watch = Watch(settings(tmp_path, patience=2))
    watch.add(0, scores(), 1.0)
    watch.add(10, scores(nb=0.95), 1.0)
    watch.add(20, scores(nb=0.96), 1.0)
    assert watch.stop_reason is None and watch.without_progress == 1
    watch.add(30, scores(nb=0.955), 1.0)
    assert watch.stopped_at == 30 and watch.stop_reason.startswith("no progress") and watch.best_step == 10


def test_a_benign_run_is_never_stopped_and_without_stop_on_forgetting_nothing_stops(tmp_path):
    watch = Watch(settings(tmp_path, patience=1))
    watch.add(0, scores(), 1.0)
    for step, factor in ((10, 0.99), (20, 0.98), (30, 0.97)):
        watch.add(step, scores(nb=factor), 1.0)
    assert watch.stop_reason is None and watch.best_step == 30
    recorder = Watch(settings(tmp_path, stop_on_forgetting=False, patience=1))
    recorder.add(0, scores(), 1.0)
    assert recorder.add(10, scores(en=1.1), 1.0)["forgetting"] == ["debian.en"]
    recorder.add(20, scores(en=1.1), 1.0)
    assert recorder.stop_reason is None and recorder.best_step == 0


def test_replaying_the_written_scores_resumes_the_same_judgement(tmp_path):
    """A resumed run replays watch_scores.jsonl (scores through JSON) up to its checkpoint, then judges on."""
    import json

    measured = [(0, scores()), (10, scores(nb=0.95)), (20, scores(nb=0.96)), (30, scores(nb=0.96))]
    straight = Watch(settings(tmp_path, patience=2))
    for step, scored in measured:
        straight.add(step, scored, 1.0)
    resumed = Watch(settings(tmp_path, patience=2))
    for step, scored in measured[:2]:
        resumed.add(step, json.loads(json.dumps(scored)), 1.0)  # as written, tuples become lists
    for step, scored in measured[2:]:
        resumed.add(step, scored, 1.0)
    assert resumed.evaluations == straight.evaluations and resumed.stopped_at == straight.stopped_at == 30


def test_read_sets_takes_the_first_texts_and_names_a_short_file(tmp_path):
    short = texts(tmp_path, "short", n=25)
    watch = WatchSection(texts={"nb": texts(tmp_path, "nb"), "en": short}, max_texts=25)
    assert read_sets(watch)["nb"] == [f"text {i} of nb" for i in range(25)]
    with pytest.raises(DataError, match=r"train.watch.texts.en: .*short.txt has 25 texts, fewer than max_texts \(26\)"):
        read_sets(WatchSection(texts={"nb": texts(tmp_path, "nb"), "en": short}, max_texts=26))


def test_the_recipe_checks_of_the_watch(tmp_path):
    demo = "configs/demo.yaml"
    watch = load_recipe(demo, ["train.watch={}"]).train.watch
    assert sorted(watch.texts) == ["debian.en", "debian.nb", "debian.nn", "handwritten.en", "handwritten.nb",
                                   "handwritten.nn"]
    assert all(p.parent.name == "dev" for p in watch.texts.values()) and watch.guarded_languages() == ["en"]
    with pytest.raises(ConfigError, match="handwritten.en .* is also held out by evaluate.perplexity"):
        load_recipe(demo, ["train.watch.texts={handwritten.en: src/nortune/data/heldout/handwritten/en.txt, "
                           "nb: src/nortune/data/heldout/handwritten/dev/nb.txt}"])
    with pytest.raises(ConfigError, match="max_texts: Input should be greater than or equal to 20"):
        load_recipe(demo, ["train.watch.max_texts=5"])
    with pytest.raises(ConfigError, match=r"guarded: \['nb'\] also trained"):
        load_recipe(demo, ["train.watch.guarded=[nb]"])
    with pytest.raises(ConfigError, match="no set of texts is in a trained language"):
        load_recipe(demo, ["train.watch.packaged=[debian]", "train.watch.trained=[se]"])

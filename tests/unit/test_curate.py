"""The curate stage on small fixtures: every stage, accounting, infeasible mixes, determinism."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from nortune.config import ConfigError, CurateFilters, CurateSource, Recipe, load_recipe
from nortune.curate.compose import InfeasibleMix, allocate, compose
from nortune.curate.filters import QualityFilter
from nortune.curate.labels import is_translation, label_record
from nortune.curate.langid import default_model
from nortune.curate.normalize import MalformedRecord, normalise_text, to_messages
from nortune.curate import run
from nortune.jsonl import DataError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "curate" / "mixed.jsonl"
NB = ["Oslo er hovedstaden i Norge og ligger innerst i Oslofjorden ved skogen.",
      "Fotosyntese er prosessen der planter bruker sollys og vann til å lage sukker.",
      "Hvis du vil sove bedre, bør du legge deg til samme tid hver eneste dag.",
      "Jeg tror ikke at det er mulig å rekke bussen hvis vi ikke går nå.",
      "Det finnes mange fine turstier rundt byen, og de fleste er godt merket.",
      "Husk å ta med ekstra klær og nok mat når du går på tur i fjellet."]
NN = ["Eg trur ikkje det er mogleg å rekkje bussen viss vi ikkje går no med ein gong.",
      "Kva tid kjem toget frå Bergen, og korleis kjem vi oss vidare derifrå?",
      "Dei fleste kommunane på Vestlandet har vedteke nynorsk som målform for skulen."]
EN = ["The midnight sun can be seen in northern Norway from late May until July."]


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n"
                            for r in rows), encoding="utf-8")
    return path


def recipe(tmp_path: Path, sources: list[dict], **curate) -> Recipe:
    return Recipe.model_validate({"name": "t", "runs_dir": str(tmp_path / "runs"),
                                  "curate": {"sources": sources, **curate}})


def corpus(tmp_path: Path) -> Path:
    rows = [chat("Kan du forklare dette for meg?", t) for t in NB]
    rows += [chat("Kan du forklare dette for meg?", t) for t in NN]
    rows += [chat("Can you explain this to me?", t) for t in EN]
    rows += [chat("Oversett til nynorsk: Jeg vet ikke hva jeg skal gjøre.", "Eg veit ikkje kva eg skal gjere.")]
    rows += [chat("Kan du forklare dette for meg?", NB[0])]  # exact duplicate
    rows += ["{broken json", chat("Kan du svare kort på hva jeg bør ha med meg på fjelltur?", "")]  # malformed, empty answer
    return write_jsonl(tmp_path / "src.jsonl", rows)


# -- parse and normalise ---------------------------------------------------------------------

def test_normalise_nfc_and_whitespace():
    assert normalise_text("  Bla\u030a  bær \t og\r\n\n\n\nmer  ") == "Blå bær og\n\nmer"


@pytest.mark.parametrize("raw,expected_user", [
    ({"instruction": "Svar kort.", "input": "Hva er 2+2?", "output": "Fire."}, "Svar kort.\n\nHva er 2+2?"),
    ({"prompt": "Hei?", "response": "Hei på deg."}, "Hei?"),
    ({"conversations": [{"from": "human", "value": "Hei?"}, {"from": "gpt", "value": "Hei."}]}, "Hei?"),
])
def test_field_mappings(raw, expected_user):
    fields = {"messages": "conversations"} if "conversations" in raw else {}
    source = CurateSource(name="s", path=FIXTURE, fields=fields)
    _, messages = to_messages(raw, source)
    assert messages[0] == {"role": "user", "content": expected_user}
    assert messages[-1]["role"] == "assistant"


def test_plain_text_and_malformed_mapping():
    source = CurateSource(name="s", path=FIXTURE)
    assert to_messages({"text": "Bare tekst."}, source)[1] == [{"role": "assistant", "content": "Bare tekst."}]
    with pytest.raises(MalformedRecord, match="no known fields"):
        to_messages({"foo": 1}, source)
    with pytest.raises(MalformedRecord, match="unknown role"):
        to_messages({"messages": [{"role": "robot", "content": "x"}]}, source)


def test_strict_makes_malformed_fatal_with_file_and_line(tmp_path):
    src = write_jsonl(tmp_path / "s.jsonl", [chat("Hei?", NB[0]), "{oops"])
    with pytest.raises(DataError, match=r"s\.jsonl:2: malformed JSON"):
        run(recipe(tmp_path, [{"name": "s", "path": str(src)}], strict=True))


# -- language, translation -------------------------------------------------------------------

def test_mixed_language_record_is_labelled():
    messages = [{"role": "user", "content": "Can you tell me how the weather will be tomorrow in Bergen?"},
                {"role": "assistant", "content": "Eg trur det blir regn i Bergen i morgon, som vanleg."}]
    label = label_record(default_model(), messages)
    assert label.mixed and label.lang == "nn" and set(label.turn_langs) == {"en", "nn"}


@pytest.mark.parametrize("raw,messages", [
    ({"source": "a", "target": "b"}, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]),
    ({}, [{"role": "user", "content": "Translate into English: Eg er glad."},
          {"role": "assistant", "content": "I am happy."}]),
    ({}, [{"role": "user", "content": "Skriv dette om til nynorsk: Jeg er glad i deg."},
          {"role": "assistant", "content": "Eg er glad i deg."}]),
])
def test_translation_detection(raw, messages):
    assert is_translation(raw, messages, label_record(default_model(), messages))


def test_bilingual_near_verbatim_pair_without_request():
    messages = [{"role": "user", "content": "Jeg vet ikke hvorfor bussen alltid kommer for sent om morgenen."},
                {"role": "assistant", "content": "Eg veit ikkje kvifor bussen alltid kjem for seint om morgonen."}]
    assert is_translation({}, messages, label_record(default_model(), messages)) == "bilingual near-verbatim pair"


# -- filters, dedup ----------------------------------------------------------------------------

def test_quality_filters():
    check = QualityFilter(CurateFilters()).check
    ok = [{"role": "user", "content": "Hva er Oslo?"}, {"role": "assistant", "content": NB[0]}]
    assert check(ok) is None
    assert check([{"role": "assistant", "content": "Ja."}]) == "filter:too_short"
    assert check([{"role": "user", "content": "Fortell om Oslo, takk."}, {"role": "assistant", "content": ""}]) \
        == "filter:empty_answer"
    cut = "Oslo er hovedstaden i Norge og ligger innerst i Oslofjorden, og byen har"
    assert check([{"role": "user", "content": "Hva er Oslo?"}, {"role": "assistant", "content": cut}]) \
        == "filter:truncated_answer"
    loop = ("Dette er bra. " * 20).strip()
    assert check([{"role": "user", "content": "Hva?"}, {"role": "assistant", "content": loop}]) == "filter:repetition"
    boiler = "Som en KI-språkmodell kan jeg ikke ha meninger om dette spørsmålet."
    assert check([{"role": "user", "content": "Hva?"}, {"role": "assistant", "content": boiler}]) == "filter:boilerplate"


@pytest.mark.slow  # runs the curate stage on datatrove's worker pool
def test_near_duplicates_keep_the_earliest_and_are_counted(tmp_path):
    """datatrove's MinHash finds the near copies; the earliest record of each cluster stays."""
    base = " ".join(NB)
    answers = [base, base.replace("Oslofjorden", "Oslofjorden,"), " ".join(NN), base + " Ekstra."]
    path = write_jsonl(tmp_path / "near.jsonl", [chat("Fortell meg litt om dette, takk.", a) for a in answers])
    r = Recipe.model_validate({"name": "t", "runs_dir": str(tmp_path / "runs"), "curate": {
        "sources": [{"name": "s", "path": str(path)}], "shares": {"nb": 0.5, "nn": 0.5}}})
    m = run(r)["metrics"]
    assert m["dropped"]["duplicate:near"] == 2 and "duplicate:exact" not in m["dropped"]
    kept = [json.loads(line)["messages"][1]["content"]
            for line in (tmp_path / "runs/t/curate/train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(kept) == sorted([base, " ".join(NN)])


# -- composition ---------------------------------------------------------------------------------

def test_allocate_is_exact():
    assert allocate({"nb": 0.67, "nn": 0.31, "en": 0.02, "translation": 0.0}, 100) == {"nb": 67, "nn": 31, "en": 2}
    assert sum(allocate({"nb": 0.67, "nn": 0.31, "en": 0.02}, 3230).values()) == 3230


def test_infeasible_mix_says_how_short_each_bucket_is():
    import numpy as np

    buckets = np.array([0] * 10 + [1] * 2, dtype=np.uint8)
    args = (buckets, ["nb", "nn"], np.zeros(12, np.uint16), np.ones(12), {"nb": 0.5, "nn": 0.5}, 10, {}, 0, True)
    with pytest.raises(InfeasibleMix, match=r"nn: need 5, have 2 \(short by 3\)"):
        compose(*args, False)
    closest = compose(*args, True)
    assert closest.size == 4 and closest.notes and len(closest.selected) == 4


def test_source_quota():
    import numpy as np

    buckets = np.zeros(10, dtype=np.uint8)
    sources = np.array([0] * 5 + [1] * 5, dtype=np.uint16)
    comp = compose(buckets, ["nb"], sources, np.arange(10, dtype=float), {"nb": 1.0}, 6, {1: 2}, 0, True, False)
    assert sorted(int(sources[i]) for i in comp.selected) == [0, 0, 0, 0, 1, 1]


# -- the whole stage -----------------------------------------------------------------------------

@pytest.mark.slow  # runs the curate stage on datatrove's worker pool
def test_stage_accounts_for_every_record_and_skips_when_unchanged(tmp_path, caplog):
    src = corpus(tmp_path)
    r = recipe(tmp_path, [{"name": "s", "path": str(src), "tags": ["t1"]}],
               shares={"nb": 0.6, "nn": 0.3, "en": 0.1, "translation": 0.0})
    manifest = run(r)
    m = manifest["metrics"]
    assert m["input_records"] == m["output_records"] + sum(m["dropped"].values()) == 14
    assert m["dropped"]["malformed"] == 1 and m["dropped"]["duplicate:exact"] == 1
    assert m["dropped"]["filter:empty_answer"] == 1 and m["dropped"]["compose:unwanted_translation"] == 1
    assert m["by_bucket"] == {"nb": 6, "nn": 3, "en": 1}
    out = (tmp_path / "runs/t/curate/train.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(out[0])
    assert list(first)[:4] == ["id", "lang", "source", "messages"] and first["tags"] == ["t1"]
    curate_dir = tmp_path / "runs/t/curate"
    assert (curate_dir / "composition.md").is_file() and (curate_dir / "composition.png").is_file()
    assert "adds up" in (curate_dir / "composition.md").read_text(encoding="utf-8")
    caplog.set_level("INFO")
    run(r)
    assert "curate: skipped" in caplog.text


def test_dropped_jsonl_names_every_dropped_record_and_adds_up_to_the_report(tmp_path):
    src = corpus(tmp_path)
    r = recipe(tmp_path, [{"name": "s", "path": str(src)}], shares={"nb": 0.5, "nn": 0.5})
    m = run(r)["metrics"]
    curate_dir = tmp_path / "runs/t/curate"
    dropped = [json.loads(line) for line in (curate_dir / "dropped.jsonl").read_text(encoding="utf-8").splitlines()]
    by_reason: dict[str, int] = {}
    for row in dropped:
        by_reason[row["reason"]] = by_reason.get(row["reason"], 0) + 1
    assert by_reason == m["dropped"] and len(dropped) == m["input_records"] - m["output_records"]
    assert [row["record"] for row in dropped] == sorted(row["record"] for row in dropped)  # the input's order
    where = {row["reason"]: row["where"] for row in dropped}  # file:line of the records planted in `corpus`
    assert where["duplicate:exact"] == f"{src}:12" and where["malformed"] == f"{src}:13"
    assert where["compose:unwanted_en"] == f"{src}:10" and where["filter:empty_answer"] == f"{src}:14"
    kept = {json.loads(line)["id"] for line in (curate_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()}
    duplicate = next(row for row in dropped if row["reason"] == "duplicate:exact")
    first = kept | {row["id"] for row in dropped if row["where"] == f"{src}:1"}  # NB[0]: kept, or over target
    assert duplicate["id"] in first and duplicate["source"] == "s"  # the same content as line 1
    assert next(row for row in dropped if row["reason"] == "malformed")["id"] is None  # never parsed
    assert not any("_where" in line for line in (curate_dir / "train.jsonl").read_text(encoding="utf-8").splitlines())
    # 3 nn records cap the 50/50 mix at 6: three nb records go, and the report says which share to change
    assert m["dropped"]["compose:over_target"] == 3 and m["by_bucket"] == {"nb": 3, "nn": 3}
    report = (curate_dir / "composition.md").read_text(encoding="utf-8")
    assert ("the mix left out 3 nb records over its target (3 = share 0.5 of 6; the size (6) is set by nn: "
            "3 records at share 0.5): to keep them, raise curate.shares.nb or add nn records") in report


@pytest.mark.slow  # the curate stage on datatrove, four times
def test_stage_is_deterministic_for_a_seed(tmp_path):
    src = corpus(tmp_path)
    shares = {"nb": 0.6, "nn": 0.4}
    outputs = []
    for i, seed in enumerate([7, 7, 8]):
        r = recipe(tmp_path / str(i), [{"name": "s", "path": str(src)}], shares=shares, seed=seed,
                   target_size=5, quality_order=False)
        run(r)
        outputs.append((tmp_path / str(i) / "runs/t/curate/train.jsonl").read_bytes())
    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]


@pytest.mark.slow  # runs the curate stage on datatrove's worker pool
def test_stage_infeasible_fails_before_writing(tmp_path):
    src = corpus(tmp_path)
    r = recipe(tmp_path, [{"name": "s", "path": str(src)}], target_size=100)
    with pytest.raises(InfeasibleMix, match="short by"):
        run(r)
    assert not (tmp_path / "runs/t/curate/train.jsonl").exists()
    assert not (tmp_path / "runs/t/curate/manifest.json").exists()


@pytest.mark.slow  # runs the curate stage on datatrove's worker pool
def test_csv_parquet_text_sources(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    csv_path = tmp_path / "a.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instruction", "input", "output"])
        writer.writerows([["Forklar.", "", t] for t in NB[:3]] + [["to", "kolonner"]])
    pq.write_table(pa.table({"prompt": ["Forklar."] * 2, "response": NN[:2]}), tmp_path / "b.parquet")
    (tmp_path / "c.txt").write_text("\n".join(NB[3:]) + "\n", encoding="utf-8")
    r = recipe(tmp_path, [{"name": "a", "path": str(csv_path)}, {"name": "b", "path": str(tmp_path / "b.parquet")},
                          {"name": "c", "path": str(tmp_path / "c.txt")}], shares={"nb": 0.6, "nn": 0.4})
    m = run(r)["metrics"]
    assert m["input_records"] == 9 and m["dropped"]["malformed"] == 1
    assert m["by_bucket"] == {"nb": 3, "nn": 2}


def test_hf_source_uses_streaming_loader(tmp_path, monkeypatch):
    import sys
    import types

    calls = {}

    def load_dataset(name, config, split, revision, streaming):
        calls.update(name=name, split=split, streaming=streaming)
        return iter([{"text": t} for t in NB[:2]])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    from nortune.curate.sources import iter_source

    items = list(iter_source(CurateSource(name="h", hf_dataset="owner/data", hf_split="train")))
    assert calls == {"name": "owner/data", "split": "train", "streaming": True}
    assert items[0][0] == "hf:owner/data:1" and items[0][1] == {"text": NB[0]}


def test_config_errors_name_the_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\ncurate:\n  shares: {nb: 0.5, nn: 0.2}\n  sources:\n"
                    "    - {name: a, path: /nope.jsonl}\n  bogus: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    text = str(err.value)
    assert "curate.shares: shares must add up to 1" in text
    assert "curate.sources.0.path: file not found" in text
    assert "curate.bogus: unknown key" in text


def test_nb_nn_mixed_needs_confident_long_turns_on_both_sides():
    model = default_model()
    neutral_question = label_record(model, chat("Kan du forklare dette for meg?", NN[0])["messages"])
    assert not neutral_question.mixed and neutral_question.lang == "nn"
    both_standards = label_record(model, chat(NB[3], NN[0])["messages"])
    assert both_standards.mixed and set(both_standards.turn_langs) == {"nb", "nn"}

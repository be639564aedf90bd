"""Curate never loses a record it did not count: bad bytes, BOMs, empty sources, line numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nortune.config import CurateSource, Recipe
from nortune.curate.normalize import MalformedRecord, to_messages
from nortune.curate.sources import count_records, iter_source
from nortune.curate import run
from nortune.jsonl import DataError

NB = "Oslo er hovedstaden i Norge og ligger innerst i Oslofjorden, omgitt av skog og åser."


def chat(i: int) -> bytes:
    record = {"messages": [{"role": "user", "content": f"Fortell meg noe om byen, nummer {i}."},
                           {"role": "assistant", "content": f"{NB} Dette er svar nummer {i} av mange."}]}
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def with_bad_byte(line: bytes) -> bytes:
    return line[:10] + b"\xff" + line[10:]


def recipe(tmp_path: Path, sources: list[dict], **curate) -> Recipe:
    return Recipe.model_validate({"name": "t", "runs_dir": str(tmp_path / "runs"),
                                  "curate": {"sources": sources, "shares": {"nb": 1.0},
                                             "dedup": {"near": False}, **curate}})


@pytest.mark.slow  # runs the curate stage on datatrove's worker pool
@pytest.mark.parametrize("bad_line", [1, 500, 1000])
def test_a_bad_byte_costs_exactly_its_own_line(tmp_path, bad_line):
    lines = [chat(i) for i in range(1, 1001)]
    lines[bad_line - 1] = with_bad_byte(lines[bad_line - 1])
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    source = CurateSource(name="s", path=path)
    items = list(iter_source(source))
    assert len(items) == 1000 == count_records(source)
    bad = [(where, payload) for where, payload in items if not isinstance(payload, dict)]
    assert [where for where, _ in bad] == [f"{path}:{bad_line}"]
    assert bad[0][1].reason == "not UTF-8 (byte 0xff at column 11)"
    m = run(recipe(tmp_path, [{"name": "s", "path": str(path)}]))["metrics"]
    assert m["input_records"] == 1000 and m["dropped"]["malformed"] == 1
    assert m["output_records"] + sum(m["dropped"].values()) == 1000
    report = (tmp_path / "runs/t/curate/composition.md").read_text(encoding="utf-8")
    assert "Input records: **1000**" in report and "(adds up)" in report
    assert f"big.jsonl:{bad_line}: not UTF-8 (byte 0xff at column 11)" in report


@pytest.mark.slow  # runs the curate stage on datatrove's worker pool
def test_strict_names_the_right_line(tmp_path):
    lines = [chat(i) for i in range(1, 21)]
    lines[2] = with_bad_byte(lines[2])
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=r"s\.jsonl:3: not UTF-8 \(byte 0xff at column 11\)"):
        run(recipe(tmp_path, [{"name": "s", "path": str(path)}], strict=True))
    assert not (tmp_path / "runs/t/curate/.work").exists()  # no shards left behind


@pytest.mark.slow  # runs the curate stage on datatrove's worker pool
def test_bad_byte_in_csv_and_text_sources(tmp_path):
    NB = globals()["NB"].replace(",", "")  # noqa: N806 - one CSV field
    csv_path = tmp_path / "a.csv"
    csv_path.write_bytes(b"prompt,response\n"
                         + f"Hva er hovedstaden?,{NB}\n".encode()
                         + with_bad_byte(f"Hva er hovedstaden?,{NB} To.\n".encode())
                         + f"\"Hva er\nhovedstaden?\",{NB} Tre.\n".encode()
                         + f"Hva er hovedstaden?,{NB} Fire.\n".encode())
    items = list(iter_source(CurateSource(name="a", path=csv_path)))
    assert [w for w, _ in items] == [f"{csv_path}:{n}" for n in (2, 3, 4, 6)]  # data starts on line 2
    assert not isinstance(items[1][1], dict) and "byte 0xff at column 11" in items[1][1].reason
    assert items[2][1]["prompt"] == "Hva er\nhovedstaden?"
    txt = tmp_path / "b.txt"
    txt.write_bytes(f"{NB} En.\n".encode() + with_bad_byte(f"{NB} To.\n".encode()) + f"{NB} Tre.\n".encode())
    m = run(recipe(tmp_path, [{"name": "a", "path": str(csv_path)}, {"name": "b", "path": str(txt)}]))["metrics"]
    assert m["input_records"] == 7 and m["dropped"]["malformed"] == 2
    assert m["input_by_source"] == {"a": 4, "b": 3}
    assert m["output_records"] + sum(m["dropped"].values()) == 7


@pytest.mark.slow  # runs the curate stage on datatrove's worker pool
def test_byte_order_mark_is_accepted(tmp_path):
    NB = globals()["NB"].replace(",", "")  # noqa: N806 - one CSV field
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes(b"\xef\xbb\xbfprompt,response\n" + f"Hva er hovedstaden?,{NB}\n".encode())
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + chat(1) + b"\n" + chat(2) + b"\n")
    for path, n in ((csv_path, 1), (jsonl, 2)):
        items = list(iter_source(CurateSource(name="x", path=path)))
        assert len(items) == n and all(isinstance(payload, dict) for _, payload in items)
    m = run(recipe(tmp_path, [{"name": "c", "path": str(csv_path)}, {"name": "j", "path": str(jsonl)}]))["metrics"]
    assert m["dropped"].get("malformed", 0) == 0 and m["output_records"] == 3


@pytest.mark.slow  # runs the curate stage on datatrove's worker pool
def test_empty_source_is_reported_and_only_empty_sources_fail(tmp_path, caplog):
    good = tmp_path / "good.jsonl"
    good.write_bytes(chat(1) + b"\n" + chat(2) + b"\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    result = run(recipe(tmp_path, [{"name": "g", "path": str(good)}, {"name": "e", "path": str(empty)}]))
    assert result["metrics"]["input_by_source"] == {"g": 2, "e": 0}
    assert any("empty.jsonl" in note and "no records" in note for note in result["notes"])
    report = (tmp_path / "runs/t/curate/composition.md").read_text(encoding="utf-8")
    assert "| e | 0 |" in report and "| g | 2 |" in report
    with pytest.raises(DataError, match="every source is empty: .*empty.jsonl"):
        run(recipe(tmp_path / "2", [{"name": "e", "path": str(empty)}]))


def test_turn_without_content_is_malformed():
    with pytest.raises(MalformedRecord, match=r"messages\[1\] has no content"):
        to_messages({"messages": [{"role": "user", "content": "Hei"}, {"role": "assistant"}]},
                    CurateSource(name="x", path=Path(__file__)))


def test_text_claiming_to_be_parquet_is_a_data_error(tmp_path):
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet at all\n", encoding="utf-8")
    with pytest.raises(DataError, match="fake.parquet: not a Parquet file"):
        run(recipe(tmp_path, [{"name": "f", "path": str(fake)}]))


def test_a_source_with_no_usable_record_names_file_and_reason(tmp_path):
    path = tmp_path / "all_bad.jsonl"
    path.write_bytes(b"\n".join(with_bad_byte(chat(i)) for i in range(3)) + b"\n")
    with pytest.raises(DataError, match=r"none of the 3 input records is usable \(malformed 3; by source: s 3\); "
                                        r"first: .*all_bad.jsonl:1: not UTF-8"):
        run(recipe(tmp_path, [{"name": "s", "path": str(path)}]))


@pytest.mark.slow  # runs the curate stage on datatrove's worker pool
def test_infeasible_mix_leaves_no_spool(tmp_path):
    from nortune.curate.compose import InfeasibleMix

    path = tmp_path / "few.jsonl"
    path.write_bytes(chat(1) + b"\n" + chat(2) + b"\n")
    with pytest.raises(InfeasibleMix):
        run(recipe(tmp_path, [{"name": "s", "path": str(path)}], target_size=50))
    assert (tmp_path / "runs/t/curate").is_dir()
    assert not (tmp_path / "runs/t/curate/.work").exists()  # no shards left behind

"""Curate on datatrove: 1 and 2 local workers give the same files, byte for byte."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from nortune.config import Recipe
from nortune.curate import run

from test_curate import NB, NN as NN_BASE  # the same handwritten sentences as the single-process tests

NN = [*NN_BASE, "Om hausten er det fint å gå tur i skogen og plukke sopp og bær."]


def line(question: str, answer: str) -> bytes:
    record = {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


def texts(sentences: list[str], n: int, seed: int) -> list[str]:
    """Distinct answers: shuffled words of one standard's sentences (no two share word 5-grams)."""
    rng = random.Random(seed)
    words = " ".join(sentences).replace(",", "").replace(".", "").replace("?", "").split()
    return [" ".join(rng.sample(words, 24)).capitalize() + "." for _ in range(n)]


def corpus(tmp_path: Path) -> tuple[Path, Path, str]:
    """Two sources; the near copy's original sits in the second half of source a (task 1 of 2),
    the copy in the first half of source b (task 0), so task order and record order disagree."""
    nb, nn = texts(NB, 24, 1), texts(NN, 12, 2)
    a = [line(f"Fortell meg noe nytt, nummer {i}.", t) for i, t in enumerate(nb[:16] + nn[:6])]
    original = nb[15]  # a: record 15 of 22, in task 1's half
    a[3] = a[3][:12] + b"\xff" + a[3][12:]  # a bad byte: only its own line
    a.insert(8, b"{not json")
    b = [line("Fortell meg noe nytt, nummer 15.", original + " Ekstra.")]  # near copy, b: record 0
    b += [line(f"Eit spørsmål til, nummer {i}.", t) for i, t in enumerate(nb[16:] + nn[6:])]
    b += [a[0], a[20]]  # exact copies of a's records
    pa, pb = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    pa.write_bytes(b"\n".join(a) + b"\n")
    pb.write_bytes(b"\n".join(b) + b"\n")
    return pa, pb, original


def curate_with(runs: Path, pa: Path, pb: Path, executor: dict) -> tuple[dict, dict[str, bytes]]:
    recipe = Recipe.model_validate({"name": "t", "runs_dir": str(runs), "curate": {
        "sources": [{"name": "a", "path": str(pa)}, {"name": "b", "path": str(pb)}],
        "shares": {"nb": 1.0}, "executor": executor}})
    metrics = run(recipe)["metrics"]
    out = runs / "t" / "curate"
    return metrics, {name: (out / name).read_bytes()
                     for name in ("train.jsonl", "composition.md", "malformed.txt", "dropped.jsonl")}


def curate(tmp_path: Path, pa: Path, pb: Path, workers: int) -> tuple[dict, dict[str, bytes]]:
    return curate_with(tmp_path / f"w{workers}", pa, pb, {"type": "local", "workers": workers})


@pytest.mark.slow  # the curate stage on a pool of two worker processes, and on one
def test_one_and_two_workers_give_identical_files(tmp_path):
    pa, pb, original = corpus(tmp_path)
    m1, files1 = curate(tmp_path, pa, pb, 1)
    m2, files2 = curate(tmp_path, pa, pb, 2)
    assert files1 == files2
    assert m1 == m2
    assert m1["dropped"]["duplicate:exact"] == 2 and m1["dropped"]["duplicate:near"] == 1
    assert m1["dropped"]["malformed"] == 2
    assert m1["input_records"] == m1["output_records"] + sum(m1["dropped"].values()) == 23 + 17
    kept = [json.loads(x)["messages"][1]["content"] for x in files2["train.jsonl"].decode().splitlines()]
    # The earliest record of the near pair (source a) is the one kept, whichever task held it.
    assert original in kept and original + " Ekstra." not in kept
    assert b"a.jsonl:4: not UTF-8 (byte 0xff at column 13)" in files2["malformed.txt"]


def test_a_slice_seeks_to_its_checkpoint_and_reads_the_same_items(tmp_path):
    from nortune.config import CurateSource
    from nortune.curate.sources import count_records, iter_source, line_checkpoints

    pa, _, _ = corpus(tmp_path)
    pa.write_bytes(b"\xef\xbb\xbf" + pa.read_bytes().replace(b"\n", b"\n\n", 3))  # a BOM and blank lines
    source = CurateSource(name="a", path=pa)
    count, points = line_checkpoints(pa, every=4)
    assert count == count_records(source) == 23 and [p[0] for p in points] == [0, 4, 8, 12, 16, 20]
    whole = list(iter_source(source))
    for skip in (0, 3, 4, 9, 22):
        assert list(iter_source(source, skip=skip, checkpoints=points)) == whole[skip:]
    assert whole[3][0].endswith("a.jsonl:7")  # the bad byte's line, counted past the blank lines


def test_executor_setting_is_checked_and_not_part_of_the_fingerprint(tmp_path):
    from pydantic import ValidationError

    from nortune.curate.stage import fingerprint

    with pytest.raises(ValidationError, match="slurm needs a partition"):
        Recipe.model_validate({"name": "t", "curate": {"executor": {"type": "slurm"}}})
    with pytest.raises(ValidationError, match="workers"):
        Recipe.model_validate({"name": "t", "curate": {"executor": {"workers": -1}}})
    pa, pb, _ = corpus(tmp_path)
    base = {"name": "t", "curate": {"sources": [{"name": "a", "path": str(pa)}]}}
    one = Recipe.model_validate({**base, "curate": {**base["curate"], "executor": {"workers": 1}}})
    many = Recipe.model_validate({**base, "curate": {**base["curate"], "executor": {"workers": 8}}})
    assert fingerprint(one) == fingerprint(many)

"""Decontam on datatrove workers: one index, record ranges in parallel, the same report as one worker."""

from __future__ import annotations

import json
from pathlib import Path

from nortune.config import Recipe
from nortune.decontam import run
from nortune.decontam.shards import plan_shards
from nortune.runs import Options

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "noreval_mini"
COPIED = "Hvor legger man vanligvis fra seg de våte støvlene etter en lang tur i fjellet?"
FACT = "Metaller som kobber og aluminium leder varme mye bedre enn tre og plast."


def chat(user: str, answer: str, rid: str) -> str:
    return json.dumps({"id": rid, "messages": [{"role": "user", "content": user},
                                               {"role": "assistant", "content": answer}]}, ensure_ascii=False)


def training(path: Path) -> Path:
    """Hits in both halves, one record hitting two tasks, blank lines that shift the line numbers."""
    lines = [chat(f"Skriv en kort setning om dag {i}.", f"Dag {i} var grå og stille i byen.", f"r{i}")
             for i in range(12)]
    lines[1] = chat(COPIED, "I gangen, selvfølgelig.", "hit-early")
    lines[8] = chat("Hva vet du om varme?", FACT + " " + COPIED, "hit-late")
    lines[10] = chat("Hvilken by var vertskap for vinter-OL i 1994?", "Det var Lillehammer.", "quiz")
    path.write_text("\n".join(lines[:6]) + "\n\n\n" + "\n".join(lines[6:]) + "\n", encoding="utf-8")
    return path


def decontam(tmp_path: Path, data: Path, workers: int) -> tuple[dict, bytes, bytes]:
    recipe = Recipe.model_validate({"name": "dc", "runs_dir": str(tmp_path / "runs"),
                                    "evaluate": {"source": "local", "data_dir": str(FIXTURE)},
                                    "curate": {"executor": {"type": "local", "workers": workers}},
                                    "decontam": {"data": str(data), "write_clean": True}})
    run(recipe, Options(force=True))  # the same folder both times: the executor is not part of the fingerprint
    out = recipe.run_dir / "decontam"
    report = json.loads((out / "contamination.json").read_text(encoding="utf-8"))
    report.pop("seconds")  # timings; everything else must match
    assert report["cleaned"].pop("path") == str(out / "train.clean.jsonl")
    return report, (out / "summary.md").read_bytes(), (out / "train.clean.jsonl").read_bytes()


def test_shards_cut_at_record_starts(tmp_path):
    data = training(tmp_path / "train.jsonl")
    shards = plan_shards(data, 2)
    assert [(s.record, s.count, s.line) for s in shards] == [(0, 6, 1), (6, 6, 9)]
    with open(data, "rb") as handle:
        handle.seek(shards[1].offset)
        assert b'"r6"' in handle.readline()


def test_one_and_two_workers_give_the_same_report(tmp_path):
    data = training(tmp_path / "train.jsonl")
    one, summary1, clean1 = decontam(tmp_path, data, 1)
    two, summary2, clean2 = decontam(tmp_path, data, 2)
    assert one == two and summary1 == summary2 and clean1 == clean2
    assert [(r["id"], r["record"], r["line"]) for r in two["records"]] == \
        [("hit-early", 1, 2), ("hit-late", 8, 11), ("quiz", 10, 13)]
    assert two["training"]["records"] == 12 and two["cleaned"] == {**two["cleaned"], "kept": 9, "removed": 3}
    assert [json.loads(x)["id"] for x in clean2.decode().splitlines()] == \
        [f"r{i}" for i in range(12) if i not in (1, 8, 10)]

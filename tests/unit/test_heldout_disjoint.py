"""The demo's held-out perplexity texts never occur in any training or langid file of the repository.

A held-out line (normalised: casefold, whitespace collapsed) must not be a substring of any
training text, and no 50-character window of a held-out text may occur in one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nortune.config.base import PACKAGE_DATA, packaged_heldout

ROOT = Path(__file__).resolve().parents[2]
HELDOUT = sorted(packaged_heldout().values())
DEV = sorted(packaged_heldout("dev").values())  # the demo tuning study's development split
SHINGLE = 50


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.casefold()).strip()


def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def training_texts(path: Path) -> list[str]:
    """Every string of a training/langid file: JSONL and Parquet rows field by field, other files whole."""
    if path.suffix == ".jsonl":
        out = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                out.extend(_strings(json.loads(line)))
            except json.JSONDecodeError:  # fixtures hold deliberately broken lines: check them as raw text
                out.append(line)
        return out
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [s for row in pq.read_table(path).to_pylist() for s in _strings(row)]
    return [path.read_text(encoding="utf-8", errors="replace")]


def training_files() -> list[Path]:
    files = [ROOT / "data/demo/chat.jsonl", *sorted((ROOT / "data/demo/raw").iterdir()),
             *sorted((ROOT / "data/langid").glob("*.tsv")), *sorted((ROOT / "tests/fixtures").rglob("*.jsonl"))]
    return [f for f in files if f.is_file()]


def shingles(text: str) -> set[str]:
    return {text[i:i + SHINGLE] for i in range(max(len(text) - SHINGLE + 1, 0))}


def overlaps(heldout: list[str], corpus: list[str]) -> list[str]:
    """The held-out lines found in the corpus, as a whole line or through a shared 50-char window."""
    texts = [normalise(t) for t in corpus]
    joined = "\n".join(texts)
    windows = set().union(*(shingles(t) for t in texts)) if texts else set()
    found = []
    for line in heldout:
        norm = normalise(line)
        if norm in joined or shingles(norm) & windows:
            found.append(line)
    return found


def heldout_lines(files: list[Path] = HELDOUT) -> list[str]:
    return [line for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_heldout_files_are_shipped():
    assert {f.stem for f in HELDOUT} >= {"nb", "nn", "en"}
    for f in HELDOUT:
        lines = [line for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        assert len(lines) >= 90, f
        assert len(set(map(normalise, lines))) == len(lines), f"{f}: duplicate lines"


def test_heldout_disjoint_from_training_and_langid():
    corpus = [t for f in training_files() for t in training_texts(f)]
    assert len(training_files()) >= 8 and corpus
    assert overlaps(heldout_lines(), corpus) == []


def test_dev_split_disjoint_from_training_and_from_the_heldout_split():
    """The tuning study chooses on dev and reports on the held-out split once: the two share no text."""
    assert {f.stem for f in DEV} == {"nb", "nn", "en"}
    dev = heldout_lines(DEV)
    assert len(dev) >= 120
    corpus = [t for f in training_files() for t in training_texts(f)]
    assert overlaps(dev, corpus) == []
    assert overlaps(dev, heldout_lines()) == []


def test_heldout_sets_disjoint_from_each_other():
    by_file = {f: [line for line in f.read_text(encoding="utf-8").splitlines() if line.strip()] for f in HELDOUT}
    for name, lines in by_file.items():
        others = [t for other, ls in by_file.items() if other != name for t in ls]
        assert overlaps(lines, others) == [], name


@pytest.mark.parametrize("mangle", [lambda s: s, lambda s: "Innleiing: " + s.upper() + " Slutt.",
                                    lambda s: s[5:60]])
def test_check_catches_a_pasted_line(tmp_path, mangle):
    line = [text for text in heldout_lines() if len(text) >= 80][7]  # long enough for s[5:60] to be a window
    chat = tmp_path / "chat.jsonl"
    rows = (ROOT / "data/demo/chat.jsonl").read_text(encoding="utf-8")
    chat.write_text(rows + json.dumps({"messages": [{"role": "user", "content": "Hei"},
                                                    {"role": "assistant", "content": mangle(line)}]},
                                      ensure_ascii=False) + "\n", encoding="utf-8")
    assert overlaps(heldout_lines(), training_texts(chat)) == [line]


def _recorded_packages() -> list[str]:
    """The packages the Debian guard texts were drawn from, as their SOURCES.md records them."""
    sources = PACKAGE_DATA / "heldout" / "debian" / "SOURCES.md"
    rows = [line.split("|")[1].strip() for line in sources.read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and not line.startswith("| package")]
    assert len(rows) >= 5 and all(re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", r) for r in rows), rows
    return rows


def test_no_guard_text_comes_from_a_reserved_or_langid_package():
    reserved = ROOT.parent / "shared" / "reserved-debian-packages.txt"
    if not reserved.is_file():
        pytest.skip(f"{reserved} is not on this machine")
    listed = {line.strip() for path in (reserved, ROOT / "tools" / "langid" / "packages.txt")
              for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")}
    assert set(_recorded_packages()) & listed == set()


def test_each_language_has_two_independent_sources():
    sets = packaged_heldout()
    assert {name.split(".")[0] for name in sets} == {"handwritten", "debian"}
    for split in ("heldout", "dev"):
        for name, path in packaged_heldout(split).items():
            assert len(heldout_lines([path])) >= (90 if split == "heldout" else 40), (split, name)

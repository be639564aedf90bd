"""Real text for the forgetting guard: translation catalogues of Debian packages that nortune never wrote,
trained on, tuned on or tested its language identifier on.

Usage (repo root, on Debian bookworm with apt):
    python tools/heldout/debian.py WORKDIR OUT PACKAGE [PACKAGE ...] [--reserved FILE] [--seed N]

Refused: a package in the reserved list (``--reserved``, by default ``../shared/reserved-debian-packages.txt``:
texts kept for independent checks) or in ``tools/langid/packages.txt`` (the identifier's own texts). Each
package is fetched with ``apt-get download`` and read as ``tools/langid/extract.py`` reads it: the gettext
catalogues' nb and nn translations and their English msgids, markup and placeholders stripped, strings under
six words dropped, and nb/nn strings dropped that occur under both or read as English. Per language, the
strings are shuffled (``--seed``) within each package and drawn round-robin over the packages, so no package
dominates: the first HELDOUT go to ``OUT/{lang}.txt``, the next DEV to ``OUT/dev/{lang}.txt``. ``OUT/SOURCES.md``
records each package's version, licence (its copyright file) and how many strings it gave each split.
Only the extracted strings ship, never the packages.
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "langid"))
from extract import _ENGLISH, fetch, mo_records, words  # noqa: E402  (the same reading as langid's)

LANGUAGES = ("nb", "nn", "en")
MOJIBAKE = re.compile("[\u00c2\u00c3][\u0080-\u00bf]")  # UTF-8 read as Latin-1 in the catalogue itself
HELDOUT, DEV = 200, 100


SHINGLE = 50  # characters: the window tests/unit/test_heldout_disjoint.py checks


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.casefold()).strip()


def shingles(text: str) -> set[str]:
    return {text[i:i + SHINGLE] for i in range(max(len(text) - SHINGLE + 1, 0))}


class Disjoint:
    """Texts taken so far (and the repository's training, langid and handwritten texts): a new text is refused
    when it is inside one of them, holds a short one, or shares a 50-character window with any."""

    def __init__(self, files: list[Path]) -> None:
        self.joined = "\n".join(normalise(f.read_text(encoding="utf-8", errors="replace")) for f in files)
        self.windows = set().union(*(shingles(normalise(f.read_text(encoding="utf-8", errors="replace")))
                                     for f in files))
        self.short: list[str] = []

    def take(self, text: str) -> bool:
        norm = normalise(text)
        if norm in self.joined or shingles(norm) & self.windows or any(s in norm for s in self.short):
            return False
        self.joined += "\n" + norm
        self.windows |= shingles(norm)
        if len(norm) < SHINGLE:
            self.short.append(norm)
        return True


def avoided() -> list[Path]:
    """What guard texts must share nothing with: the demo's training data, langid's shipped sets, the test
    fixtures and the handwritten guard texts."""
    files = [REPO / "data/demo/chat.jsonl", *sorted((REPO / "data/demo/raw").iterdir()),
             *sorted((REPO / "data/langid").glob("*.tsv")), *sorted((REPO / "tests/fixtures").rglob("*.jsonl")),
             *sorted((REPO / "src/nortune/data/heldout/handwritten").rglob("*.txt"))]
    return [f for f in files if f.is_file()]


def listed(path: Path) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def licence(root: Path, package: str) -> str:
    """The first ``License:`` of the package's DEP-5 copyright file (the catalogues' licence), else 'see copyright'."""
    copyright_file = root / "usr" / "share" / "doc" / package / "copyright"
    text = copyright_file.read_text(encoding="utf-8", errors="replace") if copyright_file.is_file() else ""
    found = re.search(r"^License:[ \t]*(\S.*)$", text, re.MULTILINE)
    return found.group(1).strip() if found else "see its copyright file"


def version(workdir: Path, package: str) -> str:
    deb = sorted(workdir.glob(f"{package}_*.deb"))[0]
    return subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True,
                          check=True).stdout.strip()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("packages", nargs="+")
    parser.add_argument("--reserved", type=Path, default=REPO.parent / "shared" / "reserved-debian-packages.txt")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if not args.reserved.is_file():
        parser.error(f"{args.reserved}: the reserved package list is needed to refuse reserved packages")
    refused = {"reserved": listed(args.reserved), "langid": listed(REPO / "tools" / "langid" / "packages.txt")}
    for package in args.packages:
        for why, names in refused.items():
            if package in names:
                parser.error(f"{package}: in the {why} list; never used for guard texts")
    args.workdir.mkdir(parents=True, exist_ok=True)
    by_package: dict[str, dict[str, list[str]]] = {}
    about: dict[str, tuple[str, str]] = {}
    for package in args.packages:
        root = fetch(args.workdir, package)
        texts: dict[str, list[str]] = defaultdict(list)
        for label, text in mo_records(root):
            if label in LANGUAGES and words(text) >= 6 and "\t" not in text and not MOJIBAKE.search(text):
                texts[label].append(text)
        by_package[package] = texts
        about[package] = (version(args.workdir, package), licence(root, package))
    both = {t for texts in by_package.values() for t in texts["nb"]} & \
           {t for texts in by_package.values() for t in texts["nn"]}
    rng = random.Random(args.seed)
    taken = Disjoint(avoided())  # shared by every language and split: no window in common anywhere
    drawn: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for lang in LANGUAGES:
        queues = []
        for package in args.packages:
            keep = sorted({text for text in by_package[package][lang]
                           if lang == "en" or (text not in both and len(_ENGLISH.findall(text.lower())) < 3)})
            rng.shuffle(keep)
            queues.append((package, keep))
        order = []
        while any(q for _, q in queues) and len(order) < HELDOUT + DEV:  # round-robin over the packages
            for package, queue in queues:
                while queue:
                    text = queue.pop()
                    if taken.take(text):
                        order.append((package, text))
                        break
        if len(order) < HELDOUT + DEV:
            raise SystemExit(f"{lang}: only {len(order)} strings; add packages (need {HELDOUT + DEV})")
        order = order[:HELDOUT + DEV]
        drawn[lang] = {"heldout": order[:HELDOUT], "dev": order[HELDOUT:]}
    (args.out / "dev").mkdir(parents=True, exist_ok=True)
    for lang, splits in drawn.items():
        (args.out / f"{lang}.txt").write_text("".join(t + "\n" for _, t in splits["heldout"]), encoding="utf-8")
        (args.out / "dev" / f"{lang}.txt").write_text("".join(t + "\n" for _, t in splits["dev"]), encoding="utf-8")
    rows = []
    for package in args.packages:
        counts = [sum(1 for p, _ in drawn[lang][split] if p == package) for lang in LANGUAGES
                  for split in ("heldout", "dev")]
        rows.append(f"| {package} | {about[package][0]} | {about[package][1]} | " + " | ".join(map(str, counts)) + " |")
    out = args.out.resolve()
    command = " ".join(["python tools/heldout/debian.py", "WORKDIR",
                        str(out.relative_to(REPO)) if out.is_relative_to(REPO) else str(out), *args.packages,
                        f"--seed {args.seed}"])
    (args.out / "SOURCES.md").write_text("\n".join([
        "# Real text for the forgetting guard: Debian translation catalogues", "",
        "Human-written software strings (the translators' nb and nn, and the English they translate), from the",
        "gettext catalogues of the Debian bookworm packages below, fetched with `apt-get download` and read by",
        "`tools/heldout/debian.py` (its docstring says how). None of these packages is in",
        "`../shared/reserved-debian-packages.txt` (kept for independent checks) or `tools/langid/packages.txt`",
        "(the language identifier's texts), and nobody at nortune wrote these strings. Each string keeps its",
        "package's licence. Per language, held-out (`{lang}.txt`, reported by evaluate) and dev",
        "(`dev/{lang}.txt`, for choosing settings and for the training watch) are disjoint draws.", "",
        f"Made with: `{command}`", "",
        "| package | version | licence | nb held-out | nb dev | nn held-out | nn dev | en held-out | en dev |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|", *rows, ""]), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

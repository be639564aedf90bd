"""Extract labelled sentences from Debian translation catalogues (.mo) for nortune's langid.

Usage (from the repo root, as root on a Debian machine with apt):
    python data/langid/extract_catalogues.py WORKDIR OUT.tsv PACKAGE [PACKAGE ...]

Each PACKAGE is fetched with ``apt-get download`` into WORKDIR (skipped when a .deb is
already there), unpacked with ``dpkg-deb -x``, and every gettext catalogue under a
``nb``/``nn``/``da``/``sv``/``de``/``nl``/``fr`` locale folder is read. The catalogue's
translations become records labelled by locale; the English msgids become ``en`` records.
Markup, accelerators and placeholders are stripped; only strings of six words or more are
kept. Output: TSV ``label<TAB>package<TAB>text``, deduplicated per label.
"""

from __future__ import annotations

import gettext
import html
import re
import subprocess
import sys
from pathlib import Path

LOCALES = {"nb": "nb", "nb_NO": "nb", "nn": "nn", "nn_NO": "nn", "da": "da", "sv": "sv",
           "de": "de", "nl": "nl", "fr": "fr"}
_TAG = re.compile(r"<[^>]{1,80}>")
_PLACEHOLDER = re.compile(r"%\d*\$?[-+ #0-9.]*[sdifuxXlcp]|%\([a-z_]+\)[sd]|\{[^{}]{0,30}\}|\$\{?\w+\}?|&[a-z]+;")
_ACCEL = re.compile(r"(?<=\w)[_&](?=\w)|(?<=\s)[_&](?=\w)|^[_&](?=\w)")
_SPACE = re.compile(r"\s+")


def clean(text: str) -> str:
    text = html.unescape(_TAG.sub(" ", text))
    text = _PLACEHOLDER.sub(" ", text)
    text = _ACCEL.sub("", text)
    text = text.replace("\\n", " ").replace("\\t", " ")
    return _SPACE.sub(" ", text).strip()


def words(text: str) -> int:
    return len(re.findall(r"[^\W\d_]{2,}", text))


def fetch(workdir: Path, package: str) -> Path:
    debs = list(workdir.glob(f"{package}_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", package], cwd=workdir, check=True)
        debs = list(workdir.glob(f"{package}_*.deb"))
    target = workdir / "x" / package
    if not target.is_dir():
        target.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(target)], check=True)
    return target


_CREDITS = {"your names", "your emails", "translator-credits", "name of translators",
            "email of translators", "translator_credits"}


def records(root: Path):
    """Yield (label, msgid, text) for every translated string of every catalogue."""
    for mo in sorted(root.rglob("*.mo")):
        parts = mo.parts
        label = next((LOCALES[p] for p in parts if p in LOCALES), None)
        if label is None:
            continue
        with open(mo, "rb") as handle:
            try:
                catalog = gettext.GNUTranslations(handle)._catalog  # noqa: SLF001
            except Exception:  # noqa: BLE001 - a broken catalogue is skipped, not fatal
                continue
        for key, value in catalog.items():
            msgid = key[0] if isinstance(key, tuple) else key
            if not msgid or not value or "\x04" in msgid and msgid.split("\x04", 1)[1] == "":
                continue
            msgid = msgid.split("\x04", 1)[-1]
            if msgid.strip().lower() in _CREDITS or "@" in value:
                continue
            yield label, msgid, clean(value)
            if label in ("nb", "nn"):
                yield "en", msgid, clean(msgid)


def main(argv: list[str]) -> int:
    workdir, out, packages = Path(argv[0]), Path(argv[1]), argv[2:]
    workdir.mkdir(parents=True, exist_ok=True)
    seen: set[tuple[str, str]] = set()
    with open(out, "w", encoding="utf-8") as handle:
        for package in packages:
            rows = list(records(fetch(workdir, package)))
            # A text that one package has under both nb and nn is valid in both: drop it.
            both = {t for lab, _, t in rows if lab == "nb"} & {t for lab, _, t in rows if lab == "nn"}
            for label, _, text in rows:
                if label in ("nb", "nn") and text in both:
                    continue
                if words(text) < 6 or (label, text) in seen or "\t" in text:
                    continue
                seen.add((label, text))
                handle.write(f"{label}\t{package}\t{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

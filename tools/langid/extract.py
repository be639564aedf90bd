"""Extract labelled strings from Debian translation packages for nortune's langid.

Usage (repo root, as root on a Debian bookworm machine with apt):
    python tools/langid/extract.py WORKDIR OUT.tsv PACKAGE [PACKAGE ...]

Each PACKAGE is fetched with ``apt-get download`` into WORKDIR (skipped when a .deb is
already there) and unpacked with ``dpkg-deb -x``. Read from it:
- gettext catalogues (``*.mo``) under a ``nb``/``nn``/``da``/``sv``/``de``/``nl``/``fr``
  locale folder: translations labelled by locale, the English msgids labelled ``en``;
- Mozilla language packs (``langpack-nb-NO@...xpi`` / ``nn-NO``): the values of their
  Fluent (``.ftl``), ``.properties`` and ``.dtd`` files, labelled nb / nn.
Markup, accelerators and placeholders are stripped. Dropped: strings under six words,
translator credits, strings containing ``@``, and every nb/nn string that occurs under
both nb and nn in the packages of one run (valid in both, or left untranslated in both),
and nb/nn strings that read as English (three or more of a few English function words).
Output: TSV ``label<TAB>package<TAB>text``, deduplicated per label over all packages.
"""

from __future__ import annotations

import gettext
import html
import re
import subprocess
import sys
import zipfile
from pathlib import Path

LOCALES = {"nb": "nb", "nb_NO": "nb", "nn": "nn", "nn_NO": "nn", "da": "da", "sv": "sv",
           "de": "de", "nl": "nl", "fr": "fr"}
_TAG = re.compile(r"<[^>]{1,80}>")
_PLACEHOLDER = re.compile(r"%\d*\$?[-+ #0-9.]*[sdifuxXlcpS]|%\([a-z_]+\)[sd]|\{[^{}]{0,60}\}|\$\{?\w+\}?"
                          r"|&[a-zA-Z.-]+;|#\d")
_ACCEL = re.compile(r"(?<=\w)[_&](?=\w)|(?<=\s)[_&](?=\w)|^[_&](?=\w)")
_SPACE = re.compile(r"\s+")
_ENGLISH = re.compile(r"\b(?:the|and|you|your|this|that|with|from|is|are|to|of|for|will|be)\b")
_CREDITS = {"your names", "your emails", "translator-credits", "name of translators",
            "email of translators", "translator_credits"}


def clean(text: str) -> str:
    text = html.unescape(_TAG.sub(" ", text))
    text = _PLACEHOLDER.sub(" ", text)
    text = _ACCEL.sub("", text)
    text = text.replace("\\n", " ").replace("\\t", " ").replace("\\u00a0", " ")
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


def mo_records(root: Path):
    for mo in sorted(root.rglob("*.mo")):
        label = next((LOCALES[p] for p in mo.parts if p in LOCALES), None)
        if label is None:
            continue
        with open(mo, "rb") as handle:
            try:
                catalog = gettext.GNUTranslations(handle)._catalog  # noqa: SLF001
            except Exception:  # noqa: BLE001 - a broken catalogue is skipped, not fatal
                continue
        for key, value in catalog.items():
            msgid = key[0] if isinstance(key, tuple) else key
            if not msgid or not value:
                continue
            msgid = msgid.split("\x04", 1)[-1]
            if not msgid or msgid.strip().lower() in _CREDITS or "@" in value:
                continue
            yield label, clean(value)
            if label in ("nb", "nn"):
                yield "en", clean(msgid)


_FTL = re.compile(r"^\s*\.?[A-Za-z][\w-]*\s*=\s*(.+)$")
_PROP = re.compile(r"^\s*[^#!\s][^=]*?\s*=\s*(.+)$")
_DTD = re.compile(r'<!ENTITY\s+\S+\s+"([^"]*)"\s*>')


def xpi_records(root: Path):
    for xpi in sorted(root.rglob("langpack-*.xpi")):
        locale = xpi.name.split("@")[0].removeprefix("langpack-")
        label = {"nb-NO": "nb", "nn-NO": "nn"}.get(locale)
        if label is None:
            continue
        with zipfile.ZipFile(xpi) as archive:
            for name in sorted(archive.namelist()):
                if not name.endswith((".ftl", ".properties", ".dtd")):
                    continue
                text = archive.read(name).decode("utf-8", "replace")
                if name.endswith(".dtd"):
                    values = _DTD.findall(text)
                else:
                    pattern = _FTL if name.endswith(".ftl") else _PROP
                    values = [m.group(1) for line in text.splitlines()
                              if not line.lstrip().startswith("#") and (m := pattern.match(line))]
                for value in values:
                    if "->" in value or "@" in value:
                        continue
                    for part in value.split(";"):  # .properties plural forms
                        yield label, clean(part)


def main(argv: list[str]) -> int:
    workdir, out, packages = Path(argv[0]), Path(argv[1]), argv[2:]
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for package in packages:
        root = fetch(workdir, package)
        name = re.sub(r"-l10n-n[bn]-no$", "-l10n", package)  # Mozilla ships nb and nn apart
        rows += [(label, name, text) for label, text in [*mo_records(root), *xpi_records(root)]]
    both = {t for lab, _, t in rows if lab == "nb"} & {t for lab, _, t in rows if lab == "nn"}
    seen: set[tuple[str, str]] = set()
    with open(out, "w", encoding="utf-8") as handle:
        for label, name, text in rows:
            if label in ("nb", "nn") and (text in both or len(_ENGLISH.findall(text.lower())) >= 3):
                continue
            if words(text) < 6 or (label, text) in seen or "\t" in text:
                continue
            seen.add((label, text))
            handle.write(f"{label}\t{name}\t{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

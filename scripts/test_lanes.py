"""Write the test lanes' measured size and wall time into the README, from the lanes' own JUnit files.

`make test` and `make test-fast` leave `.cache/junit-whole.xml` and `.cache/junit-fast.xml`; this
reads them (tests run, passed, seconds of the whole session) and rewrites the README's lanes block
and `docs/test-lanes.json`, so the figures there are a measurement, never typed by hand.
A test (tests/unit/test_lanes_doc.py) checks that the README says what the JSON holds.

    python scripts/test_lanes.py [--fast .cache/junit-fast.xml] [--whole .cache/junit-whole.xml]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RECORD = REPO / "docs" / "test-lanes.json"
BEGIN, END = "<!-- test-lanes: written by scripts/test_lanes.py -->", "<!-- /test-lanes -->"


def measure(junit: Path) -> dict:
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    tests, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    stamp = suite.get("timestamp") or datetime.datetime.fromtimestamp(junit.stat().st_mtime).isoformat()
    return {"tests": tests, "passed": tests - failures - errors - skipped, "failed": failures + errors,
            "skipped": skipped, "seconds": round(float(suite.get("time", 0))), "date": stamp[:10],
            "cores": os.cpu_count()}


def minutes(seconds: int) -> str:
    return f"{seconds // 60} min {seconds % 60:02d} s"


def block(record: dict) -> str:
    lines = [BEGIN, "```bash", "make demo       # set up .venv, then run the whole pipeline on the embedded Gemma 3 270M; "
                               "ends with the report's path"]
    for lane, target, what in (("whole", "make test     ", "every test (what CI runs through .ci/run)"),
                               ("fast", "make test-fast", "no training, conversion, llama.cpp, browser or rank launch")):
        m = record.get(lane)
        took = (f"{m['passed']} passed in {minutes(m['seconds'])} on {m['cores']} cores ({m['date']})"
                if m else "not measured yet")
        lines.append(f"{target}  # {what}: {took}")
    lines += ["```", "The times are pytest's own, after set-up ([tests/README.md](tests/README.md)).", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", type=Path, default=REPO / ".cache" / "junit-fast.xml")
    parser.add_argument("--whole", type=Path, default=REPO / ".cache" / "junit-whole.xml")
    args = parser.parse_args(argv)
    record = json.loads(RECORD.read_text(encoding="utf-8")) if RECORD.is_file() else {}
    for lane, junit in (("fast", args.fast), ("whole", args.whole)):
        if junit.is_file():
            record[lane] = measure(junit)
    RECORD.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    text = README.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{README} has no {BEGIN} block")
    README.write_text(pattern.sub(lambda _: block(record), text, count=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

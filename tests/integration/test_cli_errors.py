"""Issue 13's bad inputs, each through the real CLI in a subprocess: one line, exit 2, no traceback.

Every case names what the user got wrong (file, line, key or option). A case that printed a
traceback, exited 0 or named nothing would fail here.
"""

from __future__ import annotations

import codecs
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_CONFIG

REPO = Path(__file__).resolve().parents[2]
NB = "Oslo er hovedstaden i Norge og ligger innerst i Oslofjorden omgitt av skog og åser."


def nortune(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nortune.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    """A folder of the broken files a new user might hand nortune."""
    d = tmp_path_factory.mktemp("bad")
    runs = d / "runs"
    (d / "ok.yaml").write_text(f"name: x\nruns_dir: {runs}\n", encoding="utf-8")
    # The other cases' failed stages leave failed.json under runs/ (a report would show them): a run of its own.
    (d / "never_run.yaml").write_text(f"name: x\nruns_dir: {d / 'never_run'}\n", encoding="utf-8")
    (d / "utf16.yaml").write_bytes(codecs.BOM_UTF16_LE + "name: x\n".encode("utf-16-le"))
    (d / "dup.yaml").write_text("name: x\nruns_dir: /tmp\nname: y\n", encoding="utf-8")
    (d / "empty_dir").mkdir()
    (d / "broken_cfg").mkdir()
    (d / "broken_cfg" / "config.json").write_text('{"model_type": "gemma3_text",\n  oops}\n', encoding="utf-8")
    (d / "no_type").mkdir()
    (d / "no_type" / "config.json").write_text('{"hidden_size": 32}\n', encoding="utf-8")
    (d / "tiny").mkdir()
    (d / "tiny" / "config.json").write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
    (d / "bad.txt").write_bytes(f"{NB}\n".encode() + b"\xff\xfe broken\n")
    (d / "binary.dat").write_bytes(bytes(range(256)) * 4)
    (d / "fake.gguf").write_text("this is not a GGUF file\n", encoding="utf-8")
    (d / "fake.parquet").write_text("text, not parquet\n", encoding="utf-8")
    (d / "notes.dat").write_text(f"{NB}\n", encoding="utf-8")
    (d / "a.csv").write_bytes(b"prompt,response\n" + f"Hva?,{NB}\n".encode() + b"Hva\xff?,svar\n")
    (d / "empty.jsonl").write_bytes(b"")
    chat = {"messages": [{"role": "user", "content": "Hva er hovedstaden?"}, {"role": "assistant", "content": NB}]}
    (d / "chat.jsonl").write_text(json.dumps(chat, ensure_ascii=False) + "\n", encoding="utf-8")
    (d / "bad.jsonl").write_bytes(json.dumps(chat).encode() + b"\n\xff{}\n")
    for name, source in (("curate_parquet", "{name: a, path: %s/fake.parquet}"),
                         ("curate_format", "{name: a, path: %s/notes.dat}"),
                         ("curate_csv", "{name: a, path: %s/a.csv}")):
        (d / f"{name}.yaml").write_text(f"name: x\nruns_dir: {runs}\ncurate:\n  shares: {{nb: 1.0}}\n  strict: true\n"
                                        f"  sources:\n    - {source % d}\n", encoding="utf-8")
    (d / "train.yaml").write_text(f"name: x\nruns_dir: {runs}\nmodel: {{source: {d / 'tiny'}}}\n"
                                  f"train: {{data: {d / 'chat.jsonl'}}}\n", encoding="utf-8")
    return d


# (case id, argv with {d} for the folder above, text the one-line message must contain)
CASES = [
    # 2. tracebacks before issue 13
    ("config-utf16", ["config", "show", "{d}/utf16.yaml"], "utf16.yaml: the file is UTF-16"),
    ("override-broken-yaml", ["config", "show", "{d}/ok.yaml", "train.lr=[1,"], "override 'train.lr=[1,'"),
    ("curate-fake-parquet", ["curate", "{d}/curate_parquet.yaml"], "fake.parquet: not a Parquet file"),
    ("curate-unknown-format", ["curate", "{d}/curate_format.yaml"], "notes.dat: cannot tell the format"),
    ("curate-csv-bad-byte", ["curate", "{d}/curate_csv.yaml"], "a.csv:3: not UTF-8 (byte 0xff at column 4)"),
    ("langid-missing", ["langid", "{d}/nope.txt"], "nope.txt: file not found"),
    ("langid-folder", ["langid", "{d}/empty_dir"], "empty_dir: is a folder"),
    ("langid-bad-byte", ["langid", "{d}/bad.txt"], "bad.txt:2: not UTF-8 (byte 0xff at column 1)"),
    ("langid-binary", ["langid", "{d}/binary.dat"], "binary.dat:1: binary data"),
    ("plan-empty-folder", ["plan", "{d}/ok.yaml", "--model", "{d}/empty_dir"], "empty_dir is a folder without config.json"),
    ("plan-broken-config", ["plan", "{d}/ok.yaml", "--model", "{d}/broken_cfg"], "config.json:2: not valid JSON"),
    ("plan-config-without-type", ["plan", "{d}/ok.yaml", "--model", "{d}/no_type"], "config.json: no model_type"),
    ("plan-missing-local-path", ["plan", "{d}/ok.yaml", "--model", "{d}/nope"], "--model: path not found"),
    ("plan-missing-relative-path", ["plan", "{d}/ok.yaml", "--model", "src/no-such-model"], "path not found: src/no-such"),
    ("plan-target-typo", ["plan", "{d}/train.yaml", "adapter.target_modules=[q_prj]"], "did you mean q_prj -> q_proj?"),
    ("config-show-layer-type-typo", ["config", "show", "{d}/train.yaml", "adapter.layers.layer_types=[sliding]"],
     "adapter.layers.layer_types: ['sliding'] not in this model"),
    ("plan-layer-type-typo", ["plan", "{d}/train.yaml", "adapter.layers.layer_types=[sliding]"],
     "adapter.layers.layer_types: ['sliding'] not in this model"),
    ("decontam-bad-byte", ["decontam", "configs/demo.yaml", "runs_dir={d}/runs", "--data", "{d}/bad.jsonl"],
     "bad.jsonl:2: not UTF-8 (byte 0xff at column 1)"),
    ("export-fresh-folder", ["export", "configs/demo.yaml", "runs_dir={d}/runs"], "train/manifest.json is missing"),
    ("chat-not-gguf", ["chat", "{d}/fake.gguf"], "fake.gguf: not a GGUF file"),
    ("chat-missing", ["chat", "{d}/nope.gguf"], "nope.gguf: file not found"),
    ("chat-folder", ["chat", "{d}/empty_dir"], "empty_dir: is a folder"),
    # 3. checks before expensive work
    ("train-no-contamination-report", ["train", "{d}/train.yaml"], "no completed contamination report"),
    ("evaluate-limit-0", ["evaluate", "configs/demo.yaml", "runs_dir={d}/runs", "--limit", "0"], "--limit: must be at least 1"),
    ("evaluate-compare-missing", ["evaluate", "configs/demo.yaml", "runs_dir={d}/runs", "--compare", "{d}/nope.json"],
     "nope.json: file not found"),
    # 4. silent acceptance
    ("compare-missing-run", ["compare", "{d}/runs/nope"], "runs/nope: no such run folder"),
    ("runs-missing-folder", ["runs", "{d}/no-runs-here"], "no-runs-here: no such folder"),
    ("langid-missing-field", ["langid", "{d}/chat.jsonl", "--field", "nosuchfield"], "chat.jsonl:1: no field 'nosuchfield'"),
    ("lr-infinite", ["config", "show", "{d}/ok.yaml", "train.lr=.inf"], "train.lr: Input should be a finite number"),
    ("duplicate-key", ["config", "show", "{d}/dup.yaml"], "key 'name' appears twice (first on line 1)"),
    ("decontam-empty-data", ["decontam", "configs/demo.yaml", "runs_dir={d}/runs", "--data", "{d}/empty.jsonl"],
     "empty.jsonl: no records"),
    ("report-empty-run", ["report", "{d}/never_run.yaml"], "nothing to report"),
    ("train-gpus-0", ["train", "{d}/train.yaml", "--gpus", "0"], "--gpus: must be at least 1"),
    ("run-only-and-from", ["run", "{d}/ok.yaml", "--only", "curate", "--from", "train"], "--only, or --from/--to"),
    # 5. usability
    ("override-after-option", ["curate", "{d}/ok.yaml", "--force", "curate.seed=x"], "override 'curate.seed=x'"),
    ("did-you-mean-key", ["config", "show", "{d}/ok.yaml", "train.weight_decy=0.1"], "did you mean weight_decay?"),
    ("override-named-as-origin", ["config", "show", "{d}/ok.yaml", "train.lr=-1"], "override 'train.lr=-1': train.lr"),
    ("unknown-stage", ["run", "{d}/ok.yaml", "--only", "curat"], "unknown stage 'curat' (did you mean curate?)"),
]


@pytest.mark.parametrize("argv, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_named_line(bad, argv, expected):
    result = nortune(*(a.replace("{d}", str(bad)) for a in argv))
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert expected in result.stderr, result.stderr[-2000:]
    # one line: "nortune: ..." (or argparse's "nortune CMD: error: ...") that itself names the problem
    assert any(line.startswith("nortune") and expected in line for line in result.stderr.splitlines()), \
        result.stderr[-2000:]
    if "unknown stage" in expected:
        assert "config error" not in result.stderr  # a command-line mistake, not a recipe one


@pytest.mark.slow  # on an empty cache, turns the embedded demo GGUF into a checkpoint (a minute)
def test_dry_run_on_a_fresh_folder_says_what_waits(bad):
    result = nortune("run", "configs/demo.yaml", f"runs_dir={bad}/fresh", "--dry-run", "-v")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "export" in result.stdout and "waits for upstream" in result.stdout


def test_unknown_exception_keeps_its_traceback(tmp_path):
    """Bugs are not dressed up as user errors: a non-nortune exception still shows where it came from."""
    code = ("import sys, nortune.cli as cli\n"
            "def boom(args):\n"
            "    raise RuntimeError('a bug')\n"
            "cli.cmd_config = boom\n"  # build_parser binds the handler by name when main() runs
            "sys.exit(cli.main(['config', 'show', 'configs/demo.yaml']))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" in result.stderr and "RuntimeError: a bug" in result.stderr


def test_demo_recipe_loads_from_configs_and_data_alone(tmp_path):
    """A user who copies configs/ and data/demo/ to start a project can load the demo recipe."""
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    shutil.copytree(REPO / "data" / "demo", tmp_path / "data" / "demo")
    result = nortune("config", "show", "configs/demo.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tests/" not in result.stdout


@pytest.mark.slow  # runs curate to the end through the CLI
def test_curate_through_the_cli_counts_every_record(tmp_path):
    """Bad byte on line 3 of 20, a BOM CSV and an empty source: exit 0, every record counted, the empty one named."""
    chat = {"messages": [{"role": "user", "content": "Hva er hovedstaden?"}, {"role": "assistant", "content": NB}]}
    lines = [json.dumps({**chat, "id": i}, ensure_ascii=False).encode() for i in range(20)]
    lines[2] = lines[2][:10] + b"\xff" + lines[2][10:]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "b.csv").write_bytes(codecs.BOM_UTF8 + b"prompt,response\n" + f"Hva heter byen?,{NB} To.\n".encode())
    (tmp_path / "c.jsonl").write_bytes(b"")
    (tmp_path / "r.yaml").write_text(
        f"name: x\nruns_dir: {tmp_path / 'runs'}\ncurate:\n  shares: {{nb: 1.0}}\n  dedup: {{near: false}}\n"
        f"  sources:\n    - {{name: a, path: {tmp_path / 'a.jsonl'}}}\n    - {{name: b, path: {tmp_path / 'b.csv'}}}\n"
        f"    - {{name: c, path: {tmp_path / 'c.jsonl'}}}\n", encoding="utf-8")
    result = nortune("curate", str(tmp_path / "r.yaml"))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    metrics = json.loads(result.stdout)
    assert metrics["input_by_source"] == {"a": 20, "b": 1, "c": 0}
    assert metrics["input_records"] == 21 and metrics["dropped"]["malformed"] == 1
    assert metrics["output_records"] + sum(metrics["dropped"].values()) == 21
    assert "c.jsonl) has no records" in result.stderr
    malformed = (tmp_path / "runs/x/curate/malformed.txt").read_text(encoding="utf-8")
    assert f"{tmp_path / 'a.jsonl'}:3: not UTF-8 (byte 0xff at column 11)" in malformed


def test_every_option_has_help_text():
    import argparse

    from nortune.cli import build_parser

    missing = []
    parsers = [build_parser()]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            elif not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{parser.prog} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing

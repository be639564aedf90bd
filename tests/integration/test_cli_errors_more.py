"""Issue 26's bad inputs (parts 6 and 7), each through the real CLI in a subprocess: one line, exit 2.

Broken weight files and GGUF headers, JSON and YAML nested too deeply, lone surrogates, a record
of tens of MiB, an unusable runs_dir, a nonsense sampling temperature and a comparison of runs
with no evaluation. Each was a traceback, a crash later on, or silently accepted before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_CONFIG, write_manifest

REPO = Path(__file__).resolve().parents[2]
NB = "Oslo er hovedstaden i Norge og ligger innerst i Oslofjorden omgitt av skog og åser."
CHAT = {"messages": [{"role": "user", "content": "Hva er hovedstaden?"}, {"role": "assistant", "content": NB}]}
DEEP = 100_000  # JSON/YAML nesting levels: far past Python's recursion limit


def nortune(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nortune.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)


def _safetensors(path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    save_file({"a": np.ones((64, 32), np.float32), "b": np.zeros((32,), np.float32)}, str(path))


def _gguf(path: Path) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_uint32("llama.block_count", 1)
    writer.add_token_list(["<s>", "</s>", "hei"])
    writer.add_tensor("w", np.ones((16, 32), np.float32))
    writer.add_tensor("v", np.ones((32,), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _model_folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    """Broken model folders, GGUFs, deep and surrogate records, recipes and runs."""
    d = tmp_path_factory.mktemp("bad2")
    runs = d / "runs"
    (d / "ok.yaml").write_text(f"name: x\nruns_dir: {runs}\n", encoding="utf-8")
    # 1. weights: a real safetensors file cut short; a garbage header; a .bin that is no zip; a zip cut short
    whole = _model_folder(d, "whole_st")
    _safetensors(whole / "model.safetensors")
    cut = _model_folder(d, "cut_st")
    data = (whole / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[:-100])
    (_model_folder(d, "garbage_st") / "model.safetensors").write_bytes(b"\x0f" + bytes(7) + b"{not json here}")
    (_model_folder(d, "text_bin") / "pytorch_model.bin").write_text("<html>rate limited</html>\n", encoding="utf-8")
    import torch

    torch.save({"a": torch.ones(64, 32)}, d / "whole.bin")  # a zip archive: archive/data.pkl, archive/data/0
    (_model_folder(d, "cut_bin") / "pytorch_model.bin").write_bytes((d / "whole.bin").read_bytes()[:3000])
    (d / "train_cut.yaml").write_text(f"name: t\nruns_dir: {runs}\nmodel: {{source: {cut}}}\n"
                                      f"train: {{data: {d / 'chat.jsonl'}}}\n", encoding="utf-8")
    # 2. GGUF: a real one cut short, and the magic followed by garbage
    _gguf(d / "whole.gguf")
    (d / "cut.gguf").write_bytes((d / "whole.gguf").read_bytes()[:-64])
    (d / "garbage.gguf").write_bytes(b"GGUF" + bytes(range(7, 250)) * 8)
    # 3. and 4. records nested too deeply, and with a lone surrogate (valid JSON, not encodable as UTF-8)
    chat = json.dumps(CHAT, ensure_ascii=False)
    deep = '{"text": ' + "[" * DEEP + "]" * DEEP + "}"
    surrogate = json.dumps({"messages": [{"role": "user", "content": "Hei \ud800 der"},
                                         {"role": "assistant", "content": NB}]})
    assert "\\ud800" in surrogate
    (d / "chat.jsonl").write_text(chat + "\n", encoding="utf-8")
    (d / "deep.jsonl").write_text(chat + "\n" + deep + "\n", encoding="utf-8")
    (d / "surrogate.jsonl").write_text(chat + "\n" + surrogate + "\n", encoding="utf-8")
    (d / "deep_results").mkdir()
    (d / "deep_results" / "results.json").write_text("[" * DEEP + "]" * DEEP, encoding="utf-8")
    (d / "deep.yaml").write_text(f"name: x\nruns_dir: {runs}\nevaluate:\n  model_args: {{a: {'[' * DEEP}"
                                 f"{']' * DEEP}}}\n", encoding="utf-8")
    (d / "cycle.yaml").write_text(f"name: x\nruns_dir: {runs}\nevaluate:\n  model_args: {{a: &a [*a]}}\n",
                                  encoding="utf-8")
    # 6. runs_dir: a file, and a folder that would have to be made under a file
    (d / "a_file").write_text("not a folder\n", encoding="utf-8")
    # 8. a run whose plan finished but that was never evaluated
    write_manifest(runs / "noeval" / "plan", "plan")
    return d


# (case id, argv with {d} for the folder above, text the one-line message must contain)
CASES = [
    # 1. weight files checked before anything loads them
    ("plan-cut-safetensors", ["plan", "{d}/ok.yaml", "model.source={d}/cut_st"],
     "cut_st/model.safetensors: truncated safetensors file: the tensors need"),
    ("plan-model-cut-safetensors", ["plan", "{d}/ok.yaml", "--model", "{d}/cut_st"],
     "cut_st/model.safetensors: truncated safetensors file"),
    ("plan-garbage-safetensors", ["plan", "{d}/ok.yaml", "--model", "{d}/garbage_st"],
     "garbage_st/model.safetensors: broken safetensors file (its JSON header does not read)"),
    ("plan-text-bin", ["plan", "{d}/ok.yaml", "--model", "{d}/text_bin"],
     "text_bin/pytorch_model.bin: broken PyTorch weights file (not a zip archive"),
    ("plan-cut-bin", ["plan", "{d}/ok.yaml", "--model", "{d}/cut_bin"],
     "cut_bin/pytorch_model.bin: broken PyTorch weights file (not a zip archive"),
    ("train-cut-safetensors", ["train", "{d}/train_cut.yaml", "--allow-contaminated", "test"],
     "cut_st/model.safetensors: truncated safetensors file"),
    ("evaluate-cut-bin", ["evaluate", "configs/demo.yaml", "runs_dir={d}/runs", "model.source={d}/cut_bin",
                          "--limit", "1"], "cut_bin/pytorch_model.bin: broken PyTorch weights file"),
    # 2. GGUF headers
    ("plan-cut-gguf", ["plan", "{d}/ok.yaml", "--model", "{d}/cut.gguf"],
     "cut.gguf: broken GGUF file (truncated: tensor"),
    ("plan-garbage-gguf", ["plan", "{d}/ok.yaml", "--model", "{d}/garbage.gguf"],
     "garbage.gguf: broken GGUF file (unsupported GGUF version"),
    ("chat-cut-gguf", ["chat", "{d}/cut.gguf"], "cut.gguf: broken GGUF file (truncated: tensor"),
    ("chat-garbage-gguf", ["chat", "{d}/garbage.gguf"], "garbage.gguf: broken GGUF file"),
    # 3. nested too deeply
    ("decontam-deep", ["decontam", "configs/demo.yaml", "runs_dir={d}/runs", "--data", "{d}/deep.jsonl"],
     "deep.jsonl:2: JSON nested too deeply"),
    ("langid-field-deep", ["langid", "{d}/deep.jsonl", "--field", "messages"], "deep.jsonl:2: JSON nested too deeply"),
    ("evaluate-compare-deep", ["evaluate", "configs/demo.yaml", "runs_dir={d}/runs", "--compare",
                               "{d}/deep_results"], "deep_results/results.json: JSON nested too deeply"),
    ("recipe-deep", ["config", "show", "{d}/deep.yaml"], "deep.yaml:4: nested deeper than 32 levels"),
    ("recipe-cycle", ["config", "show", "{d}/cycle.yaml"], "cycle.yaml: nested deeper than 32 levels (through"),
    ("override-deep", ["config", "show", "{d}/ok.yaml", "evaluate.model_args.a=" + "[" * 5000 + "]" * 5000],
     "override evaluate.model_args.a=...: nested deeper than 32 levels"),
    # 4. a lone surrogate: decontam's policy is that a line it cannot check stops the check, by name
    ("decontam-surrogate", ["decontam", "configs/demo.yaml", "runs_dir={d}/runs", "--data", "{d}/surrogate.jsonl"],
     "surrogate.jsonl:2: lone surrogate \\ud800 in a string"),
    # 6. runs_dir
    ("runs-dir-file", ["config", "show", "{d}/ok.yaml", "runs_dir={d}/a_file"], "runs_dir: {d}/a_file is a file"),
    ("runs-dir-under-file", ["curate", "{d}/ok.yaml", "runs_dir={d}/a_file/runs"],
     "runs_dir: {d}/a_file/runs cannot be created: {d}/a_file is a file"),
    # 7. sampling temperature
    ("chat-temperature-nan", ["chat", "{d}/whole.gguf", "--temperature", "nan"], "argument --temperature: must be"),
    ("chat-temperature-negative", ["chat", "{d}/whole.gguf", "--temperature", "-3"], "argument --temperature: must be"),
    # 8. compare without evaluation results
    ("compare-not-evaluated", ["compare", "{d}/runs/noeval"], "runs/noeval: no evaluation results of the tuned model"),
]


@pytest.mark.parametrize("argv, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_named_line(bad, argv, expected):
    result = nortune(*(a.replace("{d}", str(bad)) for a in argv))
    expected = expected.replace("{d}", str(bad))
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert any(line.startswith("nortune") and expected in line for line in result.stderr.splitlines()), \
        result.stderr[-2000:]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a read-only folder")
def test_read_only_runs_dir_is_named(bad, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = nortune("config", "show", str(bad / "ok.yaml"), f"runs_dir={locked}/runs")
    finally:
        locked.chmod(0o755)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"runs_dir: {locked}/runs cannot be created: {locked} is read-only" in result.stderr


@pytest.mark.slow  # runs stages to the end through the CLI
def test_whole_files_pass_the_checks(bad):
    """The checks refuse only broken files: the same files whole (and GGUFWriter's output) pass."""
    from nortune.cli_checks import _torch_bin_file, gguf_file, model_weights

    model_weights(bad / "whole_st")
    _torch_bin_file(bad / "whole.bin")
    assert gguf_file(bad / "whole.gguf") == bad / "whole.gguf"
    result = nortune("plan", str(bad / "ok.yaml"), "--model", str(bad / "whole_st"))
    assert result.returncode == 0, result.stderr[-2000:]


def _curate(tmp_path: Path, lines: list[bytes], settings: str = "") -> dict:
    """Curate one JSONL source of these lines through the CLI; the manifest's metrics."""
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (tmp_path / "r.yaml").write_text(
        f"name: x\nruns_dir: {tmp_path / 'runs'}\ncurate:\n  shares: {{nb: 1.0}}\n  dedup: {{near: false}}\n"
        f"{settings}  sources:\n    - {{name: a, path: {tmp_path / 'a.jsonl'}}}\n", encoding="utf-8")
    result = nortune("curate", str(tmp_path / "r.yaml"))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "runs/x/curate/manifest.json").read_text(encoding="utf-8"))["metrics"]
    assert metrics["output_records"] + sum(metrics["dropped"].values()) == metrics["input_records"] == len(lines)
    return metrics


def _records(n: int) -> list[bytes]:
    return [json.dumps({"messages": [{"role": "user", "content": f"Spørsmål {i}?"},
                                     {"role": "assistant", "content": f"{NB} Svar nummer {i}."}]},
                       ensure_ascii=False).encode() for i in range(n)]


@pytest.mark.slow  # runs stages to the end through the CLI
def test_curate_counts_deep_and_surrogate_lines_as_malformed(tmp_path):
    """A line nested too deeply and one with a lone surrogate are malformed: each costs its own line."""
    lines = _records(12)
    lines[3] = b'{"text": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    lines[5] = json.dumps({"messages": [{"role": "user", "content": "Hei \udfff"},
                                        {"role": "assistant", "content": NB}]}).encode()
    metrics = _curate(tmp_path, lines, "  executor: {workers: 2}\n")
    assert metrics["dropped"]["malformed"] == 2 and metrics["output_records"] == 10
    malformed = (tmp_path / "runs/x/curate/malformed.txt").read_text(encoding="utf-8")
    assert f"{tmp_path / 'a.jsonl'}:4: JSON nested too deeply" in malformed
    assert f"{tmp_path / 'a.jsonl'}:6: lone surrogate \\udfff in a string" in malformed


@pytest.mark.slow  # runs stages to the end through the CLI
@pytest.mark.parametrize("workers", [1, 2])
def test_curate_drops_a_too_large_line_unread(tmp_path, workers):
    """A 64 MiB line over a 1 MiB curate.max_record_bytes is dropped as too_large, counted as read. On 2
    workers the count comes from line_checkpoints (the line in the second task's slice), on 1 from
    count_records."""
    lines = _records(12)
    lines[9] = json.dumps({**CHAT, "pad": "x" * (64 << 20)}).encode()
    metrics = _curate(tmp_path, lines, f"  max_record_bytes: {1 << 20}\n  executor: {{workers: {workers}}}\n")
    assert metrics["dropped"] == {"too_large": 1} and metrics["output_records"] == 11
    assert not (tmp_path / "runs/x/curate/malformed.txt").exists()  # its own reason, not malformed


def test_a_huge_line_is_never_read_whole(tmp_path):
    """The reader's every read is bounded by the limit (plus one block), however long the line."""
    from nortune.curate import sources

    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"text": "kort"}\n' + b"y" * (64 << 20) + b"\n" + b"   \n" + b'{"text": "slutt"}\n')
    longest = []

    class Recording:
        def __init__(self, handle):
            self.handle = handle

        def readline(self, size=-1):
            assert size > 0, "an unbounded readline"
            line = self.handle.readline(size)
            longest.append(len(line))
            return line

    with open(path, "rb") as handle:
        rows = list(sources._bounded_lines(Recording(handle), limit=1 << 16))
    assert [(n, raw is None, size, blank) for n, raw, size, blank in rows] == [
        (1, False, 17, False), (2, True, (64 << 20) + 1, False), (3, False, 4, True), (4, False, 18, False)]
    assert max(longest) <= max(1 << 16, sources.BLOCK) + 1
    with open(path, "rb") as handle:
        assert sum(1 for *_, blank in sources._bounded_lines(handle) if not blank) == 3


@pytest.mark.slow  # trains a tiny model first
def test_export_names_base_weights_cut_short_after_training(tmp_path):
    """export loads the base model again to merge: weights truncated since training are one line, exit 2."""
    from conftest import save_tiny_model, write_recipe

    from nortune.config import load_recipe
    from nortune.export.toolchain import ensure
    from nortune.runs import Options
    from nortune.train import run as train_run

    ensure(install=False)  # `make setup` installs it; export needs it before it merges
    model = save_tiny_model("gemma3", tmp_path / "model")
    path = write_recipe(tmp_path / "recipe.yaml", model, tmp_path / "runs", train={"max_steps": 1})
    train_run(load_recipe(path), Options(allow_contaminated="tiny fixture data"))
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])  # a copy interrupted, a disk that filled up
    result = nortune("export", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"nortune: data error: {weights}: truncated safetensors file" in result.stderr, result.stderr[-2000:]


def test_decontam_without_the_hub_fails_at_once_with_the_way_to_work_offline(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps(CHAT, ensure_ascii=False) + "\n", encoding="utf-8")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: offline\nruns_dir: {tmp_path / 'runs'}\ntrain: {{data: {data}}}\n", encoding="utf-8")
    # The network refused: nothing listens on port 9 (the discard port) of this machine.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"))
    done = subprocess.run([sys.executable, "-m", "nortune.cli", "decontam", str(recipe)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("INFO ")]
    assert len(lines) == 1 and "Retrying" not in done.stderr, done.stderr  # one line, no retry warnings
    assert "ltg/" in lines[0] and "the Hugging Face Hub cannot be reached at http://127.0.0.1:9" in lines[0]
    assert "set evaluate.source: local with evaluate.data_dir" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0]
    # Offline mode with an empty datasets cache: the same way out, at once.
    env = {**env, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "nortune.cli", "decontam", str(recipe)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("INFO ")]
    assert done.returncode == 2 and len(lines) == 1 and "set evaluate.source: local" in lines[0], done.stderr

"""Export of tiny trained Gemma 3 / Gemma 4 models through llama.cpp's own converter and quantiser.

The tiny models get a real SentencePiece tokenizer (trained here in a second), because llama.cpp's
converter reads a Gemma vocabulary from tokenizer.model (Gemma 3) or an SPM-style tokenizer.json
(Gemma 4); the byte-level BPE of the other tests is not one llama.cpp knows. Hidden sizes are 256
so the K-quants really quantise (their blocks are 256 wide) instead of falling back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import FIXTURES, REPO, logits, tiny_config, write_recipe
from nortune.config.base import PACKAGE_DATA

pytestmark = pytest.mark.slow
OVERRIDE = "tiny fixture data; the gate itself is tested in test_contamination_gate_*"
HELDOUT = PACKAGE_DATA / "verify_no.txt"
ATOL = 1e-4  # logits reach |30| (Gemma 4 soft-caps there): fp32 rounding of a merged weight shows at 1e-5
# Gemma 4 at 10x diverges between llama.cpp and transformers even in F32 (see docs/export.md), so 3x.
EMBED_SCALE = {"gemma3": 10.0, "gemma4": 3.0}
# Q8_0 perplexity drift allowed per tiny model. Measured: Gemma 3 0.5 %, Gemma 4 1.2 % (its F32 GGUF
# already differs slightly from transformers at this embedding scale, so Q8_0 is not alone in it).
Q8_PPL = {"gemma3": 0.01, "gemma4": 0.02}


def save_spm_model(kind: str, folder: Path) -> Path:
    import sentencepiece as spm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nortune.chat_template import GEMMA_CHAT_TEMPLATE

    folder.mkdir(parents=True, exist_ok=True)
    texts = [m["content"] for line in (FIXTURES / "chat_tiny.jsonl").read_text().splitlines()
             for m in json.loads(line)["messages"]] + HELDOUT.read_text().split("\n\n")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(t.replace("\n", " ") for t in texts))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=700, model_type="bpe",
        byte_fallback=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
        bos_piece="<bos>", unk_piece="<unk>", user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        add_dummy_prefix=False, remove_extra_whitespaces=False, normalization_rule_name="identity",
        split_digits=True, num_threads=1, minloglevel=2)
    corpus.unlink()
    (folder / "tokenizer.vocab").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "bos_token": "<bos>",
        "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    config = tiny_config(kind, len(tokenizer))
    config.hidden_size, config.intermediate_size, config.head_dim = 256, 512, 128
    # llama.cpp scales Gemma 3 queries by 1/sqrt(head_dim) and ignores query_pre_attn_scalar (equal in
    # every real Gemma 3); a mismatch here shows up as a perplexity ratio of about 1.7 in verification.
    config.query_pre_attn_scalar = 128
    if kind == "gemma3":  # llama.cpp assumes Gemma 3's 5 sliding : 1 global layout (see check_supported)
        config.num_hidden_layers = 6
        config.layer_types = ["sliding_attention"] * 5 + ["full_attention"]
    if kind == "gemma4":
        config.global_head_dim = 128
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # larger tied embeddings: peaked next-token logits, like a trained model's,
        model.get_input_embeddings().weight.mul_(EMBED_SCALE[kind])  # so top-1 is not a coin toss
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def toolchain():
    from nortune.export.toolchain import ensure

    return ensure(install=False)  # `make setup` installs it; a missing set-up fails loudly, never skips


def _export_recipe(tmp_path: Path, model: Path, **export):
    from nortune.config import load_recipe

    settings = {"gguf_types": ["Q8_0", "Q4_K_M"],
                "verify": {"text": str(HELDOUT), "window": 64, "max_tokens": 1024, "threads": 2}}
    settings.update(export)
    return load_recipe(write_recipe(tmp_path / "recipe.yaml", model, tmp_path / "runs",
                                    train={"lr": 3e-2, "max_steps": 4}, export=settings))


@pytest.fixture(scope="module", params=["gemma3", "gemma4"])
def exported(request, tmp_path_factory, toolchain):
    from nortune.export import run as export_run
    from nortune.runs import Options
    from nortune.train import run as train_run

    root = tmp_path_factory.mktemp(f"export-{request.param}")
    model = save_spm_model(request.param, root / "model")
    thresholds = {"Q8_0": {"min_top1": 0.99, "ppl_tolerance": Q8_PPL[request.param]},
                  "Q4_K_M": {"ppl_tolerance": 0.05}}
    recipe = _export_recipe(root, model, verify={"text": str(HELDOUT), "window": 64, "max_tokens": 1024,
                                                 "threads": 2, "thresholds": thresholds})
    train_run(recipe, Options(allow_contaminated=OVERRIDE))
    return request.param, recipe, model, export_run(recipe)


def _ids():
    torch.manual_seed(1)
    return torch.randint(4, 650, (2, 24))


def test_merged_logits_equal_the_pissa_adapterlogits(exported):
    from transformers import AutoModelForCausalLM

    from nortune.plan import build_plan
    from nortune.adapters import attach_adapter

    _, recipe, model, manifest = exported
    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    residual = attach_adapter(base, recipe, build_plan(base.config, recipe))  # PiSSA: W - B0 A0
    residual.load_adapter(str(recipe.run_dir / "train" / "adapter"), adapter_name="trained")
    residual.set_adapter("trained")
    expected = logits(residual, _ids())
    untouched = logits(AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), _ids())
    assert not torch.allclose(untouched, expected, atol=1e-3)  # training moved the model
    merged = AutoModelForCausalLM.from_pretrained(recipe.run_dir / "export" / "merged", dtype=torch.float32)
    assert torch.allclose(logits(merged, _ids()), expected, atol=ATOL)
    assert manifest["metrics"]["merge"]["pissa"] and manifest["metrics"]["merge"]["max_relative_weight_error"] < 1e-5


def test_gguf_files_are_quantised_by_llama_cpp_and_agree_with_transformers(exported):
    kind, recipe, _, manifest = exported
    metrics = manifest["metrics"]
    files = metrics["files"]
    assert set(files) == {"Q8_0", "Q4_K_M"}
    assert "Q8_0" in files["Q8_0"]["tensor_types"]
    assert "Q4_K" in files["Q4_K_M"]["tensor_types"]  # the K-quant is real, not a fallback
    assert files["Q4_K_M"]["bytes"] < files["Q8_0"]["bytes"]
    checks = {c["gguf_type"]: c for c in json.loads((recipe.run_dir / "export" / "verification.json").read_text())}
    q8, q4 = checks["Q8_0"], checks["Q4_K_M"]
    assert q8["tokens"] == 1024
    assert q8["top1"] >= 0.99 and abs(q8["ppl_ratio"] - 1) <= Q8_PPL[kind], q8
    assert q4["top1"] >= 0.80 and abs(q4["ppl_ratio"] - 1) <= 0.05, q4
    assert q8["tokenizer_match"] == 1.0  # llama.cpp tokenises the text exactly as transformers does
    assert metrics["passed"] and q8["passed"] and q4["passed"]


def test_gemma4_global_layers_convert_without_v_proj(exported):
    import gguf

    kind, recipe, _, manifest = exported
    if kind != "gemma4":
        pytest.skip("Gemma 4 only")
    reader = gguf.GGUFReader(str(recipe.run_dir / "export" / manifest["metrics"]["files"]["Q4_K_M"]["file"]))
    names = {t.name for t in reader.tensors}
    assert "blk.0.attn_v.weight" in names  # sliding layer: its own values
    assert "blk.1.attn_v.weight" not in names  # global layer: keys double as values
    assert "blk.1.attn_k.weight" in names


def test_modelfile_and_model_card(exported):
    _, recipe, _, manifest = exported
    out = recipe.run_dir / "export"
    modelfile = (out / "Modelfile").read_text()
    assert "FROM ./tiny-Q4_K_M.gguf" in modelfile and 'PARAMETER stop "<end_of_turn>"' in modelfile
    card = (out / "README.md").read_text()
    assert "| tiny-Q8_0.gguf | Q8_0 |" in card and "## Contamination check" in card
    assert f"{manifest['metrics']['merge']['checked_modules']} modules" in card
    merged = out / "merged"
    assert (merged / "model.safetensors").is_file() and (merged / "tokenizer.json").is_file()
    assert "start_of_turn" in (merged / "chat_template.jinja").read_text()


def test_chat_runs_through_llama_cpp(exported, capfd):
    from nortune.export.chat import chat

    _, recipe, _, _ = exported
    assert chat(recipe.run_dir / "export" / "tiny-Q4_K_M.gguf", max_tokens=4, n_ctx=128,
                lines=["Hei! Korleis går det?", ""]) == 0
    assert "model> " in capfd.readouterr().out  # printed by the chat child process


def test_rerun_skips(exported):
    from nortune.export import run as export_run

    _, recipe, _, manifest = exported
    assert export_run(recipe)["finished"] == manifest["finished"]  # unchanged: skipped


def _zero_tensor(good: Path, out: Path, name: str) -> Path:
    import shutil

    import gguf

    shutil.copyfile(good, out)
    reader = gguf.GGUFReader(str(out), "r+")
    [tensor] = [t for t in reader.tensors if t.name == name]
    tensor.data[...] = 0  # a memory map of the file: this writes through
    reader.data.flush()
    return out


def _swap_tokens(good: Path, out: Path, ids: list[int]) -> tuple[int, int]:
    """Swap the strings of the two most used tokens of equal length: the vocabulary is now wrong."""
    import shutil
    from collections import Counter

    import gguf

    shutil.copyfile(good, out)
    reader = gguf.GGUFReader(str(out), "r+")
    field = reader.fields["tokenizer.ggml.tokens"]
    strings = [field.parts[i] for i in field.data]
    used = [t for t, _ in Counter(ids).most_common() if t < len(strings)]
    a, b = next((a, b) for i, a in enumerate(used) for b in used[i + 1:]
                if len(strings[a]) == len(strings[b]) and bytes(strings[a]) != bytes(strings[b]))
    first = bytes(strings[a])
    strings[a][...] = bytearray(bytes(strings[b]))
    strings[b][...] = bytearray(first)
    reader.data.flush()
    return a, b


def test_broken_files_fail_verification_at_the_default_thresholds(tmp_path, exported):
    """A zeroed tensor and a wrong vocabulary: real broken GGUFs, not impossible thresholds on good ones."""
    from nortune.config import ExportVerify
    from nortune.export.verify import check_file, reference

    kind, recipe, _, _ = exported
    if kind != "gemma3":
        pytest.skip("once is enough")
    export = recipe.run_dir / "export"
    good = export / "tiny-Q8_0.gguf"
    defaults = ExportVerify()
    ref = reference(export / "merged", HELDOUT.read_text(), 64, 1024)
    assert check_file(good, "Q8_0", ref, defaults.thresholds["Q8_0"], 2, defaults.min_tokenizer_match).passed

    zeroed = check_file(_zero_tensor(good, tmp_path / "zeroed.gguf", "blk.0.attn_v.weight"), "Q8_0", ref,
                        defaults.thresholds["Q8_0"], 2, defaults.min_tokenizer_match)
    assert not zeroed.passed and zeroed.tokenizer_match == 1.0, zeroed

    ids = [i for _, para in ref.paragraphs for i in para]
    _swap_tokens(good, tmp_path / "vocab.gguf", ids)
    wrong_vocab = check_file(tmp_path / "vocab.gguf", "Q8_0", ref, defaults.thresholds["Q8_0"], 2,
                             defaults.min_tokenizer_match)
    assert wrong_vocab.top1 >= 0.99  # same weights: only the tokenizer check can catch this file
    assert not wrong_vocab.passed and any("tokenizer" in r for r in wrong_vocab.reasons), wrong_vocab


def _copied_run(recipe, tmp_path: Path) -> tuple[Path, Path]:
    """The trained run copied under tmp_path, with its recipe: tests that break export leave the fixture alone."""
    import shutil

    import yaml

    tree = yaml.safe_load(recipe.to_yaml())
    tree["runs_dir"] = str(tmp_path / "runs")
    run_dir = tmp_path / "runs" / tree["name"]
    shutil.copytree(recipe.run_dir / "train", run_dir / "train")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(tree))
    return tmp_path / "r.yaml", run_dir


def test_a_failing_file_is_marked_failed_and_the_command_exits_1(tmp_path, exported, monkeypatch):
    """The stage's own handling of a broken file: FAILED in verification.json and the card, exit 1."""
    from nortune.cli import main
    from nortune.export import gguf_files

    kind, recipe, _, _ = exported
    if kind != "gemma3":
        pytest.skip("once is enough")
    path, run_dir = _copied_run(recipe, tmp_path)
    real_quantize = gguf_files.quantize

    def quantize_then_break(source, out, gguf_type, threads=None):  # the quantiser writes a broken file
        real_quantize(source, out, gguf_type, threads)
        _zero_tensor(out, tmp_path / "broken.gguf", "blk.0.attn_v.weight").replace(out)
        return out

    monkeypatch.setattr(gguf_files, "quantize", quantize_then_break)
    assert main(["export", str(path)]) == 1
    checks = {c["gguf_type"]: c for c in json.loads((run_dir / "export" / "verification.json").read_text())}
    assert not checks["Q4_K_M"]["passed"] and checks["Q8_0"]["passed"]
    assert "FAILED" in (run_dir / "export" / "README.md").read_text()


@pytest.mark.parametrize("job", ["quantize", "verify"])
def test_a_llama_cpp_crash_fails_export_loudly_and_leaves_the_run_intact(job, tmp_path, exported, monkeypatch,
                                                                        capsys):
    """A real SIGSEGV in the llama.cpp child (the fault hook): named error, red report, exit 1, rest intact."""
    from nortune.cli import main
    from nortune.export.native import FAULT_ENV
    from nortune.report.ledger import summarize

    kind, recipe, _, _ = exported
    if kind != "gemma3":
        pytest.skip("once is enough")
    path, run_dir = _copied_run(recipe, tmp_path)
    train_manifest = (run_dir / "train" / "manifest.json").read_text()

    monkeypatch.setenv(FAULT_ENV, job)
    assert main(["run", str(path), "--only", "export,report"]) == 1
    err = capsys.readouterr().err
    assert f"llama.cpp crashed with SIGSEGV while running {job} on " in err and ".gguf" in err
    export = run_dir / "export"
    failure = json.loads((export / "failed.json").read_text())
    assert failure["signal"] == "SIGSEGV" and failure["job"] == job
    assert not (export / "manifest.json").exists()  # never looks complete
    assert "Fatal Python error" in Path(failure["log"]).read_text()
    assert (run_dir / "train" / "manifest.json").read_text() == train_manifest
    assert summarize(run_dir).export.startswith(f"FAILED: {job} of ")
    page = (run_dir / "report" / "report.html").read_text()
    assert "This stage FAILED and produced no result" in page and "SIGSEGV" in page

    monkeypatch.delenv(FAULT_ENV)  # the same command recovers once llama.cpp no longer crashes
    assert main(["run", str(path), "--only", "export"]) == 0
    assert (export / "manifest.json").is_file() and not (export / "failed.json").exists()


def test_a_changed_or_unfinished_adapter_is_refused_by_export_and_evaluate(tmp_path, exported, capsys):
    """The train stage's outputs only as its manifest records them: an edited adapter, or no manifest, is one line."""
    from nortune.cli import main

    kind, recipe, _, _ = exported
    if kind != "gemma3":
        pytest.skip("once is enough")
    path, run_dir = _copied_run(recipe, tmp_path)
    weights = run_dir / "train" / "adapter_lora" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")  # same size, other bytes
    for argv in (["export", str(path)], ["evaluate", str(path), "--model", "tuned"]):
        assert main(argv) == 2
        assert "changed since the train stage finished" in capsys.readouterr().err
    (run_dir / "train" / "manifest.json").unlink()
    assert main(["export", str(path)]) == 2
    assert "manifest.json is missing" in capsys.readouterr().err
    assert not (run_dir / "export" / "manifest.json").exists()


def test_the_installed_llama_cpp_is_the_portable_build():
    """No AVX-512 or AMX instruction in the CPU kernels: the wheel runs on any x86-64 from AVX2 up."""
    import platform
    import shutil
    import subprocess

    from nortune.export.toolchain import installed_build

    build = installed_build()
    assert build is not None and build["flavour"] == "portable", build
    import llama_cpp

    libraries = sorted((Path(llama_cpp.__file__).parent / "lib").glob("libggml-cpu.so*"))
    assert libraries, "no libggml-cpu.so in the installed llama_cpp"
    library = libraries[0]
    if platform.machine() != "x86_64":
        pytest.skip(f"the instruction check is for x86-64; this is {platform.machine()}")
    assert shutil.which("objdump"), "objdump (binutils) is needed for this check"
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True,
                          check=True).stdout
    assert "%ymm" in text  # AVX2 kernels are there
    assert "%zmm" not in text, "AVX-512 instructions in the portable build"
    assert "tdpb" not in text and "tileloadd" not in text, "AMX instructions in the portable build"


PROBE = r"""
import json, sys
import numpy as np
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=64, n_batch=64, n_ubatch=64, logits_all=True, verbose=False, n_threads=1)
ids = llm.tokenize(open(sys.argv[2], encoding="utf-8").read().encode(), add_bos=True)[:64]
llm.eval(ids)
scores = np.asarray(llm.scores[:len(ids)], dtype=np.float64)
print(json.dumps({"argmax": scores.argmax(axis=1).tolist(), "logits": scores[:, :32].round(3).tolist()}))
"""


def test_the_portable_build_runs_on_an_avx2_only_cpu(exported, tmp_path):
    """The installed build evaluates a K-quant file under QEMU emulating a Haswell (AVX2, no AVX-512/AMX).

    Measured once with the old -march=native wheel on this AVX-512 machine: the same probe dies
    there with SIGILL (exit 132), so this check has teeth.
    """
    import platform
    import shutil
    import subprocess
    import sys

    kind, recipe, _, _ = exported
    if kind != "gemma3":
        pytest.skip("once is enough")
    if platform.machine() != "x86_64":
        pytest.skip(f"the AVX2 emulation check is for x86-64; this is {platform.machine()}")
    qemu = shutil.which("qemu-x86_64")
    assert qemu, "qemu-x86_64 (Debian's qemu-user) is needed for this check; `make setup` installs it as root"
    gguf = recipe.run_dir / "export" / "tiny-Q4_K_M.gguf"
    command = [sys.executable, "-c", PROBE, str(gguf), str(HELDOUT)]
    host = subprocess.run(command, capture_output=True, text=True, check=True)
    emulated = subprocess.run([qemu, "-cpu", "Haswell", *command], capture_output=True, text=True, timeout=300)
    assert emulated.returncode == 0, f"exit {emulated.returncode}: {emulated.stderr[-1500:]}"
    on_host, on_haswell = json.loads(host.stdout), json.loads(emulated.stdout)
    assert on_haswell["argmax"] == on_host["argmax"] and len(on_host["argmax"]) > 32
    assert torch.allclose(torch.tensor(on_haswell["logits"]), torch.tensor(on_host["logits"]), atol=1e-2)


def test_the_build_benchmark_measures_a_gguf(exported):
    """benchmarks/llama_cpp_build.py's probe on the installed build (CI cannot build the native wheel)."""
    import importlib.util

    import llama_cpp

    kind, recipe, _, _ = exported
    if kind != "gemma3":
        pytest.skip("once is enough")
    spec = importlib.util.spec_from_file_location("llama_cpp_build", REPO / "benchmarks" / "llama_cpp_build.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    site = Path(llama_cpp.__file__).parents[1]
    result = bench.measure(site, recipe.run_dir / "export" / "tiny-Q4_K_M.gguf", HELDOUT, 64, 8, 1)
    assert result["verify_tokens"] > 64 and len(result["argmax"]) == result["verify_tokens"]
    assert result["gen_tokens"] == 8 and result["peak_rss_mib"] > 0 and result["ppl"] > 1

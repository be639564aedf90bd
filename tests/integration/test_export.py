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

pytestmark = pytest.mark.slow
OVERRIDE = "tiny fixture data; the gate itself is tested in test_contamination_gate_*"
HELDOUT = REPO / "data" / "demo" / "heldout_no.txt"
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
    from nortune.train import run as train_run

    root = tmp_path_factory.mktemp(f"export-{request.param}")
    model = save_spm_model(request.param, root / "model")
    thresholds = {"Q8_0": {"min_top1": 0.99, "ppl_tolerance": Q8_PPL[request.param]},
                  "Q4_K_M": {"ppl_tolerance": 0.05}}
    recipe = _export_recipe(root, model, verify={"text": str(HELDOUT), "window": 64, "max_tokens": 1024,
                                                 "threads": 2, "thresholds": thresholds})
    train_run(recipe, allow_contaminated=OVERRIDE)
    return request.param, recipe, model, export_run(recipe)


def _ids():
    torch.manual_seed(1)
    return torch.randint(4, 650, (2, 24))


def test_merged_logits_equal_the_pissa_adapterlogits(exported):
    from transformers import AutoModelForCausalLM

    from nortune.plan import build_plan
    from nortune.train import attach_adapter

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


def test_rerun_skips_and_a_failing_file_is_marked_failed(tmp_path, exported):
    from nortune.cli import main
    from nortune.export import run as export_run

    kind, recipe, model, manifest = exported
    if kind != "gemma3":
        pytest.skip("once is enough")
    assert export_run(recipe)["finished"] == manifest["finished"]  # unchanged: skipped
    strict = {"thresholds": {"Q8_0": {"min_top1": 0.99}, "Q4_K_M": {"min_top1": 1.0, "ppl_tolerance": 0.0}}}
    recipe_path = tmp_path / "strict.yaml"
    import yaml

    tree = yaml.safe_load(recipe.to_yaml())
    tree["export"]["verify"].update(strict)
    tree["export"]["gguf_types"] = ["Q8_0", "Q4_K_M"]
    recipe_path.write_text(yaml.safe_dump(tree))
    assert main(["export", str(recipe_path)]) == 1
    checks = {c["gguf_type"]: c for c in json.loads((recipe.run_dir / "export" / "verification.json").read_text())}
    assert not checks["Q4_K_M"]["passed"] and checks["Q8_0"]["passed"]
    assert "FAILED" in (recipe.run_dir / "export" / "README.md").read_text()

"""Shared fixtures: tiny real-architecture Gemma 3 / Gemma 4 models and a tiny tokenizer.

Everything is built from configs in seconds; nothing is downloaded. The two lanes (fast and whole)
and the markers that choose between them are in tests/README.md.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# The checkout under test is the one imported, in this process and in every CLI subprocess, whichever
# editable install the interpreter has (a second clone or worktree beside the one .venv was made for).
_SRC = str(Path(__file__).resolve().parents[1] / "src")
sys.path.insert(0, _SRC)
os.environ["PYTHONPATH"] = os.pathsep.join([_SRC, *filter(None, [os.environ.get("PYTHONPATH")])])

FIXTURES = Path(__file__).parent / "fixtures"
FAST_LANE_GUARD = Path(__file__).parent / "fast_lane"
# A test with any of these markers does heavy work and is slow too, so `--fast` leaves it out.
HEAVY_MARKERS = ("browser", "distributed", "llama_cpp")


def pytest_addoption(parser):
    parser.addoption("--fast", action="store_true",
                     help="the fast lane: leave out slow tests, and make training, GGUF conversion, "
                          "llama.cpp builds, the browser and rank launches raise (tests/README.md)")


def pytest_configure(config):
    if not config.getoption("fast"):
        return
    import importlib.util

    os.environ["PYTHONPATH"] = os.pathsep.join([str(FAST_LANE_GUARD), os.environ["PYTHONPATH"]])
    spec = importlib.util.spec_from_file_location("nortune_fast_lane_guard", FAST_LANE_GUARD / "sitecustomize.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # guards this process; its children load it


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.get_closest_marker(name) for name in HEAVY_MARKERS):
            item.add_marker(pytest.mark.slow)
    if config.getoption("fast"):
        slow = [item for item in items if item.get_closest_marker("slow")]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [item for item in items if not item.get_closest_marker("slow")]
REPO = Path(__file__).resolve().parents[1]
LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
# A Gemma 3 config.json as a model folder holds it: what the CLI's bad-input tests plan and check.
TINY_CONFIG = {"model_type": "gemma3_text", "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64,
               "num_hidden_layers": 4, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
               "sliding_window": 16, "max_position_embeddings": 512,
               "layer_types": ["sliding_attention", "full_attention"] * 2}


def tiny_tokenizer():
    """A byte-level BPE trained on the fixture chats, with Gemma's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from nortune.chat_template import GEMMA_CHAT_TEMPLATE

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    texts = [m["content"] for line in (FIXTURES / "chat_tiny.jsonl").read_text().splitlines()
             for m in json.loads(line)["messages"]] + ["user model"]
    core.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="<pad>", unk_token="<unk>")
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    return tokenizer


def tiny_config(kind: str, vocab_size: int):
    from transformers import Gemma3TextConfig, Gemma4TextConfig

    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=16,
                  layer_types=LAYER_TYPES, max_position_embeddings=512, pad_token_id=0, eos_token_id=1,
                  bos_token_id=2)
    if kind == "gemma3":
        return Gemma3TextConfig(**common)
    # Gemma 4 defaults (512-wide global heads, 262144 x 256 per-layer embeddings) are overridden.
    return Gemma4TextConfig(**common, global_head_dim=24, num_global_key_value_heads=1,
                            attention_k_eq_v=True, hidden_size_per_layer_input=0,
                            vocab_size_per_layer_input=vocab_size)


def save_tiny_model(kind: str, folder: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(kind, len(tokenizer)))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory) -> Path:
    return save_tiny_model("gemma3", tmp_path_factory.mktemp("gemma3"))


@pytest.fixture(scope="session")
def tiny_gemma4(tmp_path_factory) -> Path:
    return save_tiny_model("gemma4", tmp_path_factory.mktemp("gemma4"))


def write_recipe(path: Path, model: Path, runs: Path, **sections) -> Path:
    """A small recipe for tests: sliding layers only, q/v, fp32, a few steps."""
    import yaml

    tree = {
        "name": "tiny",
        "runs_dir": str(runs),
        "model": {"source": str(model), "dtype": "float32"},
        "adapter": {"init": "pissa", "svd": "full", "r": 4, "alpha": 8,
                    "target_modules": ["q_proj", "v_proj"],
                    "layers": {"layer_types": ["sliding_attention"]}},
        "train": {"data": str(FIXTURES / "chat_tiny.jsonl"), "lr": 5e-3, "max_steps": 6, "batch_size": 2,
                  "max_seq_len": 64, "logging_steps": 1, "save_steps": 3, "warmup_ratio": 0.0,
                  "neftune_noise_alpha": 5, "precision": "fp32", "scheduler": "constant"},
        "plan": {"max_gpus": 2},
    }
    for section, values in sections.items():
        tree.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(tree))
    return path


def write_pairs(path: Path) -> Path:
    """Preference pairs from the fixture chats: chosen is the chat's answer, rejected a refusal."""
    chats = [json.loads(line) for line in (FIXTURES / "chat_tiny.jsonl").read_text().splitlines()]
    path.write_text("".join(json.dumps({"prompt": c["messages"][:-1], "chosen": [c["messages"][-1]],
                                        "rejected": "Det veit eg ikkje."}, ensure_ascii=False) + "\n"
                            for c in chats), encoding="utf-8")
    return path


def write_manifest(folder: Path, stage: str, **fields) -> Path:
    """A stand-in stage's manifest, well-formed as a finished stage writes it (empty fingerprint and
    outputs unless given), for tests that need a stage's record and not its work."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.json"
    path.write_text(json.dumps({"stage": stage, "fingerprint": {}, "outputs": {}, "metrics": {}, **fields}),
                    encoding="utf-8")
    return path


def finish_train_stage(recipe, outputs: list[Path]) -> None:
    """Record ``outputs`` as a finished train stage of ``recipe`` would (its current fingerprint and hashes),
    for tests that build the adapter themselves instead of training it."""
    from nortune.lineage import train_fingerprint
    from nortune.runs import RunLayout, StageRun

    StageRun("train", RunLayout.of(recipe).model_dir("train"), train_fingerprint(recipe)).complete(outputs)


def logits(model, ids):
    """Eval-mode logits without gradients: what the equality tests compare."""
    import torch

    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


# The forgetting watch's tests (train.watch): a tiny model that knows some English, trained on Bokmal only.
WATCH_DEV = Path(__file__).resolve().parents[1] / "src" / "nortune" / "data" / "heldout" / "handwritten" / "dev"


def text_lines(path: Path) -> list[str]:
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def english_gemma3(tmp_path_factory, tiny_gemma3) -> Path:
    """The tiny Gemma 3 after 400 full-weight steps on English sentences (seeded: the same model every run)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("english") / "model"
    tokenizer = AutoTokenizer.from_pretrained(tiny_gemma3)
    model = AutoModelForCausalLM.from_pretrained(tiny_gemma3, dtype=torch.float32)
    english = text_lines(WATCH_DEV / "en.txt") + text_lines(WATCH_DEV.parent / "en.txt")
    encoded = [tokenizer(text, return_tensors="pt").input_ids for text in english]
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(400):
        ids = encoded[step % len(encoded)]
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def norwegian_chats(tmp_path_factory) -> Path:
    """Norwegian only: the Bokmål dev sentences as answers (so the trained language's texts do improve)."""
    path = tmp_path_factory.mktemp("chats") / "nb.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "Skriv en setning."},
                                                     {"role": "assistant", "content": text}]}) + "\n"
                            for text in text_lines(WATCH_DEV / "nb.txt")))
    return path

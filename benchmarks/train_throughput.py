"""Training tokens/s: `nortune train` vs a plain TRL + PEFT script, same model, data and settings.

The peer is what a user would write by hand: SFTTrainer on the chat records with a PiSSA
LoraConfig on the same modules, checkpointing every ``train.save_steps`` like nortune (both
then also save a final checkpoint, ~0.5 s here). The peer trains on the full sequence, as
Gemma's template has no generation markers; label sparsity measured no effect on step time.
Runs come in matched pairs,
because the settings decide the speed, not the tool: TRL's ``SFTConfig`` defaults to bf16
autocast (on CPU too) and gradient checkpointing, and on a CPU with native bf16 that alone is
~20 % faster than the fp32 the demo recipe asks for. Prints a table, then one JSON line.

    .venv/bin/python benchmarks/train_throughput.py [--steps 6] [--rounds 3] [--model embedded:gemma3-270m]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name: (runner, bf16, gradient checkpointing); None = the tool's own default
RUNS = {
    "nortune_fp32": ("nortune", False, False),
    "trl_fp32": ("trl", False, False),
    "nortune_bf16": ("nortune", True, False),
    "trl_bf16": ("trl", True, False),
    "nortune_bf16_checkpointing": ("nortune", True, True),
    "trl_defaults": ("trl", None, None),
}
PAIRS = {  # JSON key: (nortune run, peer run)
    "speedup_vs_trl": ("nortune_fp32", "trl_fp32"),
    "speedup_vs_trl_bf16": ("nortune_bf16", "trl_bf16"),
    "speedup_vs_trl_defaults": ("nortune_bf16_checkpointing", "trl_defaults"),
}


def nortune_run(recipe, workdir: Path, bf16: bool | None, checkpointing: bool | None) -> dict:
    """``bf16`` and ``checkpointing`` are already in the recipe (see ``main``)."""
    from nortune.runs import Options
    from nortune.train import run

    manifest = run(recipe, Options(allow_contaminated="throughput benchmark on the shipped demo chats"))
    m = manifest["metrics"]
    return {"tokens": m["tokens_seen"], "seconds": m["seconds"], "last_loss": m["last_loss"]}


def plain_trl_run(recipe, workdir: Path, bf16: bool | None, checkpointing: bool | None) -> dict:
    """The hand-written peer: TRL tokenises the chats itself; PEFT gets the same module list."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from nortune.chat_template import ensure_chat_template
    from nortune.models import resolve_source
    from nortune.plan import build_plan

    where = resolve_source(recipe.model.source)
    tokenizer = AutoTokenizer.from_pretrained(where)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32)
    ensure_chat_template(tokenizer, model.config.model_type)
    plan = build_plan(model.config, recipe)
    data = load_dataset("json", data_files=str(recipe.train.data), split="train").select_columns(["messages"])
    t = recipe.train
    kwargs = {k: v for k, v in (("bf16", bf16), ("gradient_checkpointing", checkpointing)) if v is not None}
    args = SFTConfig(output_dir=str(workdir / recipe.name), learning_rate=t.lr, weight_decay=t.weight_decay,
                     neftune_noise_alpha=t.neftune_noise_alpha, max_steps=t.max_steps,
                     per_device_train_batch_size=t.batch_size, max_length=t.max_seq_len, seed=t.seed,
                     logging_steps=1, save_steps=t.save_steps, report_to="none", use_cpu=True,
                     include_num_input_tokens_seen="non_padding", **kwargs)
    peft = LoraConfig(r=recipe.adapter.r, lora_alpha=recipe.adapter.alpha, target_modules=plan.module_names,
                      init_lora_weights=f"pissa_niter_{recipe.adapter.svd_niter}", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                         peft_config=peft)
    started = time.time()
    trainer.train()
    seconds = time.time() - started
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"tokens": trainer.state.num_input_tokens_seen, "seconds": round(seconds, 2),
            "last_loss": losses[-1] if losses else None, "bf16": args.bf16,
            "checkpointing": args.gradient_checkpointing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--model", default=None, help="override model.source")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best round counts")
    args = parser.parse_args()

    from nortune.config import load_recipe

    workdir = Path(tempfile.mkdtemp(prefix="nortune-bench-"))
    overrides = [f"train.max_steps={args.steps}", f"runs_dir={workdir}", "train.save_steps=100000",
                 f"train.data={REPO / 'data' / 'demo' / 'chat.jsonl'}",
                 "train.logging_steps=1", "adapter.svd=fast"]
    if args.model:
        overrides.append(f"model.source={args.model}")
    runners = {"nortune": nortune_run, "trl": plain_trl_run}
    rows: dict[str, dict] = {}
    try:
        # Interleaved rounds, order reversed every other round, best round per run: the first run in
        # a process pays one-time costs (allocator, kernels) that would count against whoever goes first.
        for round_no in range(args.rounds):
            order = list(RUNS) if round_no % 2 == 0 else list(reversed(RUNS))
            for name in order:
                tool, bf16, checkpointing = RUNS[name]
                settings = [f"name=bench-{name}-{round_no}"]
                if tool == "nortune":
                    settings += [f"train.precision={'bf16' if bf16 else 'fp32'}",
                                 f"train.gradient_checkpointing={str(checkpointing).lower()}"]
                recipe = load_recipe(args.recipe, overrides + settings)
                row = runners[tool](recipe, workdir, bf16, checkpointing)
                row["tokens_per_s"] = row["tokens"] / max(row["seconds"], 1e-9)
                if name not in rows or row["tokens_per_s"] > rows[name]["tokens_per_s"]:
                    rows[name] = row
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    recipe = load_recipe(args.recipe, overrides)
    print(f"{'run':<28}{'tokens':>8}{'seconds':>9}{'tokens/s':>10}{'last loss':>11}")
    for name, row in rows.items():
        print(f"{name:<28}{row['tokens']:>8}{row['seconds']:>9.1f}{row['tokens_per_s']:>10.1f}{row['last_loss']:>11.3f}")
    print("(nortune's loss covers assistant tokens only, the peer's the whole sequence: losses differ by design)")
    ratios = {key: round(rows[ours]["tokens_per_s"] / rows[peer]["tokens_per_s"], 3) for key, (ours, peer) in PAIRS.items()}
    for key, value in ratios.items():
        print(f"{key:<28}{value:>8.2f}x  ({PAIRS[key][0]} / {PAIRS[key][1]})")
    print(json.dumps({
        "model": recipe.model.source, "steps": args.steps, "rounds": args.rounds, "batch_size": recipe.train.batch_size,
        "max_seq_len": recipe.train.max_seq_len,
        "tokens_per_s": {k: round(v["tokens_per_s"], 1) for k, v in rows.items()},
        "trl_defaults": {"bf16": rows["trl_defaults"]["bf16"], "gradient_checkpointing": rows["trl_defaults"]["checkpointing"]},
        **ratios,
    }))


if __name__ == "__main__":
    main()

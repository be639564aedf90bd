"""Training tokens/s: `nortune train` vs a plain TRL + PEFT script, same model, data and settings.

The peer is what a user would write by hand: SFTTrainer on the chat records with a PiSSA
LoraConfig on the same modules. It runs twice: with TRL's defaults (gradient checkpointing
on) and with checkpointing off like nortune on CPU. Prints a table, then one JSON line.

    .venv/bin/python benchmarks/train_throughput.py [--steps 8] [--model embedded:gemma3-270m]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def nortune_run(recipe, workdir: Path) -> dict:
    from nortune.train import run

    manifest = run(recipe, allow_contaminated="throughput benchmark on the shipped demo chats")
    m = manifest["metrics"]
    return {"tokens": m["tokens_seen"], "seconds": m["seconds"], "last_loss": m["last_loss"]}


def plain_trl_run(recipe, workdir: Path, gradient_checkpointing: bool | None) -> dict:
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
    kwargs = {} if gradient_checkpointing is None else {"gradient_checkpointing": gradient_checkpointing}
    args = SFTConfig(output_dir=str(workdir / "plain"), learning_rate=t.lr, weight_decay=t.weight_decay,
                     neftune_noise_alpha=t.neftune_noise_alpha, max_steps=t.max_steps,
                     per_device_train_batch_size=t.batch_size, max_length=t.max_seq_len, seed=t.seed,
                     logging_steps=1, save_strategy="no", report_to="none", use_cpu=True,
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
            "last_loss": losses[-1] if losses else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--model", default=None, help="override model.source")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best round counts")
    args = parser.parse_args()

    from nortune.config import load_recipe

    workdir = Path(tempfile.mkdtemp(prefix="nortune-bench-"))
    overrides = [f"train.max_steps={args.steps}", f"runs_dir={workdir}", "train.save_steps=100000",
                 f"train.data={REPO / 'data' / 'demo' / 'chat.jsonl'}",
                 "train.logging_steps=1", "adapter.svd=fast"]
    if args.model:
        overrides.append(f"model.source={args.model}")
    runners = {"nortune": lambda r, w: nortune_run(r, w),
               "nortune_checkpointing": lambda r, w: nortune_run(r, w),
               "trl_defaults": lambda r, w: plain_trl_run(r, w, None),
               "trl_no_checkpointing": lambda r, w: plain_trl_run(r, w, False)}
    extra = {"nortune": ["train.gradient_checkpointing=false"],
             "nortune_checkpointing": ["train.gradient_checkpointing=true"]}
    rows: dict[str, dict] = {}
    try:
        # Interleaved rounds, best round per runner: the first run in a process pays one-time costs
        # (allocator, kernels) that would otherwise count against whichever runner goes first.
        for round_no in range(args.rounds):
            for name, runner in runners.items():
                recipe = load_recipe(args.recipe, overrides + extra.get(name, []) + [f"name=bench-{name}-{round_no}"])
                row = runner(recipe, workdir)
                row["tokens_per_s"] = row["tokens"] / max(row["seconds"], 1e-9)
                if name not in rows or row["tokens_per_s"] > rows[name]["tokens_per_s"]:
                    rows[name] = row
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    recipe = load_recipe(args.recipe, overrides)
    base = rows["nortune"]["tokens_per_s"]
    print(f"{'run':<22}{'tokens':>9}{'seconds':>9}{'tokens/s':>10}{'nortune x':>11}")
    for name, row in rows.items():
        print(f"{name:<22}{row['tokens']:>9}{row['seconds']:>9.1f}{row['tokens_per_s']:>10.1f}"
              f"{base / row['tokens_per_s']:>11.2f}")
    print(json.dumps({
        "model": recipe.model.source, "steps": args.steps, "rounds": args.rounds, "batch_size": recipe.train.batch_size,
        "max_seq_len": recipe.train.max_seq_len,
        "tokens_per_s": {k: round(v["tokens_per_s"], 1) for k, v in rows.items()},
        "speedup_vs_trl": round(base / rows["trl_no_checkpointing"]["tokens_per_s"], 3),
        "speedup_vs_trl_defaults": round(base / rows["trl_defaults"]["tokens_per_s"], 3),
        "checkpointing_speedup_nortune": round(rows["nortune_checkpointing"]["tokens_per_s"] / base, 3),
    }))


if __name__ == "__main__":
    main()

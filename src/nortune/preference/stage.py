"""Preference stage (``nortune preference``): IPO/DPO with TRL on top of the SFT run's adapter.

Writes ``<run>/preference``: ``pairs.jsonl`` (normalised), ``pairs_report.{json,md}``,
``adapter/`` (policy), ``adapter_lora/`` (one plain LoRA for the untouched base holding SFT
+ preference), optional ``merged/``, ``log.jsonl``, ``loss.png``, manifest last. The pairs go
through the same contamination gate as SFT data (all three fields, own report in
``<run>/decontam-preference``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from statistics import fmean
from pathlib import Path
from typing import Any

from nortune import adapters
from nortune.config import Recipe
from nortune.jsonl import iter_jsonl
from nortune.runner import StageContext, StageResult
from nortune.runs import Options, RunLayout, atomic_write_text, atomic_writer

log = logging.getLogger(__name__)
STAGE = "preference"


def pair_margins(model: Any, tokenizer: Any, pairs: list[dict[str, Any]]) -> list[float]:
    """log p(chosen | prompt) - log p(rejected | prompt) per pair, under the active adapter."""
    import torch

    def completion_logp(prompt: list[dict], answer: list[dict]) -> float:
        prefix = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(prompt + answer, tokenize=False)
        start = len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
        ids = torch.tensor([tokenizer(full, add_special_tokens=False)["input_ids"]], device=model.device)
        with torch.no_grad():
            logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        targets = ids[0, 1:]
        return float(logps[torch.arange(start - 1, len(targets)), targets[start - 1:]].sum())

    model.eval()
    return [completion_logp(p["prompt"], p["chosen"]) - completion_logp(p["prompt"], p["rejected"])
            for p in pairs]


def _adapter_state(model: Any, name: str) -> dict[str, Any]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model, adapter_name=name).items()}


def dpo_config(recipe: Recipe, output_dir: Path, device: str) -> Any:
    from trl import DPOConfig

    pref = recipe.preference
    return DPOConfig(output_dir=str(output_dir), learning_rate=pref.lr, beta=pref.beta, loss_type=[pref.loss_type],
                     weight_decay=pref.weight_decay, num_train_epochs=pref.epochs, max_steps=pref.max_steps,
                     per_device_train_batch_size=pref.batch_size, gradient_accumulation_steps=pref.grad_accum,
                     max_length=pref.max_len, save_strategy="no", **adapters.trainer_arguments(recipe, device))


def _pairs_source(recipe: Recipe, stage_dir: Path) -> Path:
    if recipe.preference.data is not None:
        return recipe.preference.data
    if recipe.preference.hf_dataset is not None:
        return stage_dir / "hf_pairs.jsonl"
    return stage_dir / "synthetic_pairs.jsonl"


def fetch_hf_pairs(recipe: Recipe, out: Path) -> int:
    """Stream a hub dataset's prompt/chosen/rejected rows into JSONL (the real loader; not run offline)."""
    from datasets import load_dataset

    pref = recipe.preference
    rows = load_dataset(pref.hf_dataset, split=pref.hf_split, streaming=True)
    count = 0
    with atomic_writer(out) as handle:
        for row in rows:
            handle.write(json.dumps({k: row.get(k) for k in ("id", "prompt", "chosen", "rejected")},
                                    ensure_ascii=False, default=str) + "\n")
            count += 1
    return count


def work(ctx: StageContext) -> StageResult:
    """Preference training on the SFT run; the pairs get their own contamination check first."""
    from nortune.decontam import PREFERENCE_STAGE, require_clean
    from nortune.models import load_model
    from nortune.preference.data import normalise_pairs
    from nortune.preference.policy import REF, build_policy
    from nortune.runner import run_stage
    from nortune.training_log import plot_loss, step_progress

    recipe, options, layout, stage_dir = ctx.recipe, ctx.options, ctx.layout, ctx.directory
    synthetic = recipe.preference.data is None and recipe.preference.hf_dataset is None

    from transformers import AutoTokenizer

    device = adapters.device_of_choice(recipe)
    tokenizer = AutoTokenizer.from_pretrained(str(layout.tokenizer("train")))
    if synthetic:
        from nortune.preference.synthetic import build_pairs

        base = load_model(recipe.model.source, recipe.model.dtype, device, recipe.model.revision)
        count = build_pairs(recipe, base, tokenizer, _pairs_source(recipe, stage_dir))
        log.info("preference: built %d synthetic pairs (rejected = base model's answers)", count)
        del base
    if recipe.preference.hf_dataset is not None:
        log.info("preference: %d rows from %s", fetch_hf_pairs(recipe, _pairs_source(recipe, stage_dir)),
                 recipe.preference.hf_dataset)
    pairs_path = layout.preference_pairs
    report = normalise_pairs(_pairs_source(recipe, stage_dir), pairs_path)
    atomic_write_text(stage_dir / "pairs_report.json", json.dumps(report.to_json(), indent=2))
    atomic_write_text(stage_dir / "pairs_report.md", report.markdown())
    run_stage(PREFERENCE_STAGE, recipe, Options(force=options.force), command="preference")
    gate = require_clean(recipe, pairs_path, options.allow_contaminated, folder=PREFERENCE_STAGE.name)

    from datasets import load_dataset
    from transformers.trainer_callback import ProgressCallback
    from trl import DPOTrainer

    pairs = [row for _, row in iter_jsonl(pairs_path)]
    dataset = load_dataset("json", data_files=str(pairs_path), split="train").select_columns(
        ["prompt", "chosen", "rejected"])
    base = load_model(recipe.model.source, recipe.model.dtype, device, recipe.model.revision)
    policy = build_policy(recipe, base)
    start = _adapter_state(policy, "default")
    margins_before = pair_margins(policy, tokenizer, pairs)
    log_path = stage_dir / "log.jsonl"
    log_path.unlink(missing_ok=True)
    trainer = DPOTrainer(model=policy, args=dpo_config(recipe, stage_dir / "checkpoints", device),
                         train_dataset=dataset, processing_class=tokenizer)
    if REF not in policy.peft_config:
        raise RuntimeError("TRL did not create the frozen reference adapter; refusing to train without one")
    ref_before = _adapter_state(policy, REF)
    if ref_before.keys() != start.keys() or any(not (ref_before[k] == start[k]).all() for k in start):
        raise RuntimeError("the reference adapter differs from the policy's starting point; refusing to train")
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(step_progress(log_path))
    started = time.time()
    output = trainer.train()
    seconds = time.time() - started
    policy.set_adapter("default")
    margins_after = pair_margins(policy, tokenizer, pairs)
    ref_after = _adapter_state(policy, REF)
    reference_unchanged = ref_before.keys() == ref_after.keys() and all(
        (ref_before[k] == ref_after[k]).all() for k in ref_before)

    outputs = save_outputs(recipe, layout, policy, tokenizer, REF)
    if log_path.is_file() and log_path.stat().st_size:
        plot_loss(log_path, stage_dir / "loss.png")
        outputs += [log_path, stage_dir / "loss.png"]
    shutil.rmtree(stage_dir / "checkpoints", ignore_errors=True)
    metrics = {"train_loss": output.training_loss, "steps": trainer.state.global_step, "seconds": round(seconds, 2),
               "pairs": report.used, "loss_type": recipe.preference.loss_type, "beta": recipe.preference.beta,
               "margin_before": fmean(margins_before), "margin_after": fmean(margins_after),
               "pairs_margin_rose": sum(a > b for a, b in zip(margins_after, margins_before)),
               "reference_unchanged": bool(reference_unchanged)}
    outputs += [pairs_path, stage_dir / "pairs_report.json", stage_dir / "pairs_report.md"]
    return StageResult(outputs, metrics, {"pairs": report.to_json(), "contamination_gate": gate,
                                          "adapter_mode": recipe.preference.adapter, "device": device})


def save_outputs(recipe: Recipe, layout: RunLayout, policy: Any, tokenizer: Any, ref: str) -> list[Path]:
    """Policy adapter, one plain LoRA for the untouched base (SFT + preference), optional merge."""
    from nortune.preference.policy import concat_lora

    stage_dir = layout.model_dir(STAGE)
    adapter_dir, lora_dir = layout.adapter(STAGE), layout.adapter_lora(STAGE)
    pissa = adapters.is_pissa(recipe)
    policy.delete_adapter(ref)
    policy.set_adapter("default")
    if recipe.preference.adapter == "continue":
        # The policy kept training the SFT adapter: its PiSSA starting point is SFT's.
        adapters.save_with_lora(policy, adapter_dir, lora_dir, layout.adapter_init("train") if pissa else None)
    else:
        own = stage_dir / "adapter_own_lora"
        adapters.save_with_lora(policy, adapter_dir, own, layout.adapter_init(STAGE) if pissa else None)
        concat_lora(layout.adapter_lora("train"), own, lora_dir)
        shutil.rmtree(own)
    tokenizer_dir = layout.tokenizer(STAGE)
    tokenizer.save_pretrained(str(tokenizer_dir))
    outputs = [adapter_dir, lora_dir, tokenizer_dir]
    if recipe.preference.adapter == "stack":
        outputs.append(layout.adapter_init(STAGE))
    if recipe.preference.merge:
        merged = layout.merged(STAGE)
        policy.merge_and_unload().save_pretrained(str(merged))
        tokenizer.save_pretrained(str(merged))
        outputs.append(merged)
    return outputs

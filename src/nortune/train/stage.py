"""Train stage: PiSSA LoRA on the planned modules only, SFT with TRL, NEFTune, assistant-only loss.

Outputs in ``<run>/train``: ``adapter_init`` (the PiSSA starting point), ``adapter`` (trained
PiSSA adapter; applies to the PiSSA residual base), ``adapter_lora`` (converted to a plain
rank-2r LoRA that loads on the untouched base), optionally ``merged``, ``log.jsonl``,
``loss.png``, ``data_report.json`` and the manifest (last).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nortune import adapters, ranks
from nortune.curate import training_data
from nortune.config import Recipe
from nortune.plan import AdapterPlan, check_adapter, recipe_plan
from nortune.errors import UsageError
from nortune.runner import StageContext, StageResult
from nortune.runs import RunLayout, atomic_write_text
from nortune.training_log import plot_loss, step_progress

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"


def sft_config(recipe: Recipe, output_dir: Path, device: str) -> Any:
    from trl import SFTConfig

    t = recipe.train
    return SFTConfig(
        output_dir=str(output_dir), learning_rate=t.lr, weight_decay=t.weight_decay,
        neftune_noise_alpha=t.neftune_noise_alpha, num_train_epochs=t.epochs, max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
        max_length=t.max_seq_len, lr_scheduler_type=t.scheduler, warmup_steps=t.warmup_ratio,
        packing=t.packing, save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        include_num_input_tokens_seen="non_padding", dataset_num_proc=None,
        **adapters.trainer_arguments(recipe, device),
    )


@dataclass
class Prepared:
    """Everything checked before any weights load: data path, plan, tokenizer, dataset, gate."""

    data_path: Path
    plan: AdapterPlan
    tokenizer: Any
    template: str | None
    dataset: Any
    data_report: Any
    gate: dict[str, Any]


def prepare(recipe: Recipe, allow_contaminated: str | None) -> Prepared:
    from nortune.decontam import require_clean

    # Cheapest first: the data and its contamination gate (a hash, before torch is even imported), then
    # the plan (a cached config.json on the meta device); only then the tokenizer, which may convert
    # the embedded model (a minute).
    data_path = training_data(recipe, recipe.train.data)
    gate = require_clean(recipe, data_path, allow_contaminated)
    check_adapter(recipe)

    from transformers import AutoTokenizer

    from nortune.chat_template import ensure_chat_template
    from nortune.models import resolve_source
    from nortune.train.data import build_dataset

    plan = recipe_plan(recipe)
    tokenizer = AutoTokenizer.from_pretrained(resolve_source(recipe.model.source), revision=recipe.model.revision)
    template = ensure_chat_template(tokenizer, plan.model_type)
    dataset, data_report = build_dataset(data_path, tokenizer, recipe.train.max_seq_len)
    log.info("%s", data_report.summary())
    return Prepared(data_path, plan, tokenizer, template, dataset, data_report, gate)


def work(ctx: StageContext, callbacks: tuple[Any, ...] = ()) -> StageResult:
    """Train. ``options.resume`` continues from the last checkpoint, ``options.allow_contaminated`` trains
    past a failing contamination gate; ``callbacks`` are extra TRL callbacks (tests use them)."""
    recipe, options, layout, stage_dir, main = ctx.recipe, ctx.options, ctx.layout, ctx.directory, ctx.main
    checkpoints = stage_dir / CHECKPOINTS
    resume_from = _checkpoint_to_resume(checkpoints, ctx.fingerprint, options.resume)
    ready = prepare(recipe, options.allow_contaminated)

    device = adapters.device_of_choice(recipe)
    log_path = stage_dir / "log.jsonl"
    if main:  # under a launcher only rank 0 writes into the run folder
        checkpoints.mkdir(parents=True, exist_ok=True)
        atomic_write_text(checkpoints / "fingerprint.json", json.dumps(ctx.fingerprint, sort_keys=True))
        if resume_from is None:
            log_path.unlink(missing_ok=True)
    watch = None
    if recipe.train.watch is not None:  # its texts are read now, before any weights load
        from nortune.train.watch import callback as watch_callback

        watch = watch_callback(recipe.train.watch, ready.tokenizer, device, log_path, main, checkpoints, resume_from)
    args = sft_config(recipe, checkpoints, device)
    # Resolving the Trainer's device starts accelerate's PartialState: under a launcher it joins the
    # process group (gloo or NCCL) and makes this rank's GPU the current "cuda" device.
    args.device  # noqa: B018

    from nortune.models import load_model

    model = load_model(recipe.model.source, recipe.model.dtype, device, recipe.model.revision)
    if recipe.train.packing:
        model.config.use_cache = False  # packed sequences stay isolated only without the KV cache
    plan = ready.plan
    if main:
        log.info("adapting %d modules in %d layers: %s trainable parameters (%.4f %%)", len(plan.module_names),
                 sum(1 for l in plan.layers if l.adapted), f"{plan.trainable_params:,}", 100 * plan.trainable_share)
    peft_model = adapters.attach_adapter(model, recipe, plan)
    broadcast = ranks.broadcast_pissa(peft_model)  # every rank starts from rank 0's SVD, bit for bit
    if main:
        adapters.save_adapter(peft_model, layout.adapter_init("train"))
    ranks.barrier()

    from transformers.trainer_callback import ProgressCallback
    from trl import SFTTrainer

    trainer = SFTTrainer(model=peft_model, args=args,
                         train_dataset=ready.dataset, processing_class=ready.tokenizer,
                         callbacks=[*callbacks, *([watch] if watch else [])])
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(step_progress(log_path))
    started = time.time()
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.time() - started

    peak = ranks.peak_gpu_memory(device)  # per rank, before rank 0 gathers the model for saving
    if ranks.world_size() > 1:
        # Collective: FSDP2 shards (or the DDP copy) come back whole on every rank's CPU; rank 0 saves
        # from a rebuilt CPU model with the same code as a single process.
        state = ranks.full_state_dict(trainer.model_wrapped)
        if main:
            peft_model = ranks.rebuild_on_cpu(model.config, adapters.lora_config_for_saving(recipe, plan), state)
        del state
    watched = None
    if watch is not None:
        from nortune.train.watch import keep_best

        watched = keep_best(watch.watch, peft_model if main else None, layout.adapter_init("train"), checkpoints,
                            trainer.state.global_step)
    outputs = save_outputs(recipe, layout, peft_model, ready) if main else []
    if main and watched is not None:
        from nortune.train.watch import markdown

        atomic_write_text(stage_dir / "watch.md", markdown(watched))
        outputs.append(stage_dir / "watch.md")
    if main:
        shutil.rmtree(checkpoints, ignore_errors=True)
    history = [e for e in trainer.state.log_history if "loss" in e]
    tokens = trainer.state.num_input_tokens_seen
    metrics = {"train_loss": output.training_loss, "first_loss": history[0]["loss"] if history else None,
               "last_loss": history[-1]["loss"] if history else None, "steps": trainer.state.global_step,
               "seconds": round(seconds, 2), "tokens_seen": tokens,
               "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
               "trainable_params": plan.trainable_params, "total_params": plan.total_params,
               "peak_gpu_memory": peak}
    extra = {"data": ready.data_report.to_json(), "device": device, "processes": ranks.world_size(),
             "pissa_tensors_broadcast": broadcast,
             "chat_template_installed": ready.template, "contamination_gate": ready.gate,
             "resumed_from": str(resume_from) if resume_from else None}
    if watched is not None:
        extra["watch"] = watched
    return StageResult(outputs, metrics, extra)


def save_outputs(recipe: Recipe, layout: RunLayout, peft_model: Any, ready: Prepared) -> list[Path]:
    """Adapters (PiSSA and converted), tokenizer, optional merge, reports; returns what was written."""
    stage_dir = layout.model_dir("train")
    init_dir, adapter_dir, lora_dir = (layout.adapter_init("train"), layout.adapter("train"),
                                       layout.adapter_lora("train"))
    adapters.save_with_lora(peft_model, adapter_dir, lora_dir, init_dir if adapters.is_pissa(recipe) else None)
    tokenizer_dir = layout.tokenizer("train")
    ready.tokenizer.save_pretrained(str(tokenizer_dir))
    outputs = [init_dir, adapter_dir, lora_dir, tokenizer_dir]
    if recipe.train.merge:
        merged = layout.merged("train")
        peft_model.merge_and_unload().save_pretrained(str(merged))  # last: it unloads the adapter
        ready.tokenizer.save_pretrained(str(merged))
        outputs.append(merged)
    atomic_write_text(stage_dir / "data_report.json", json.dumps(ready.data_report.to_json(), indent=2))
    atomic_write_text(layout.training_plan("train"), json.dumps(ready.plan.to_json(), indent=2))
    outputs += [stage_dir / "data_report.json", layout.training_plan("train")]
    log_path = stage_dir / "log.jsonl"
    if log_path.is_file() and log_path.stat().st_size:
        plot_loss(log_path, stage_dir / "loss.png")
        outputs += [log_path, stage_dir / "loss.png"]
    return outputs


def _checkpoint_to_resume(checkpoints: Path, fingerprint: dict[str, Any], resume: bool) -> Path | None:
    last = _last_checkpoint(checkpoints)
    if last and not resume:
        raise UsageError(f"{checkpoints} holds checkpoints of an unfinished run: pass --resume to "
                           "continue it, or delete that folder to start over")
    if not (resume and last):
        if resume:
            log.info("train: --resume given but no checkpoint in %s; starting from the beginning", checkpoints)
        return None
    if json.loads((checkpoints / "fingerprint.json").read_text()) != fingerprint:
        raise UsageError(f"cannot resume from {last}: the recipe or data changed since; delete {checkpoints} "
                         "to start over")
    return last


def _last_checkpoint(directory: Path) -> Path | None:
    if not directory.is_dir():
        return None
    found = [p for p in directory.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None

"""GPU check: `nortune plan`'s memory estimate vs the measured peak, and tokens/s, on one GPU.

Trains the demo recipe in bf16 (bf16 weights, bf16 autocast, packed full-length sequences so
every micro-batch has the shape the estimate assumes) for a few steps and reads PyTorch's peak
allocated and reserved memory. With ``--random-weights`` the model is built from the source's
config and tokenizer alone: memory and speed do not depend on weight values, and the
demo checkpoint (1 GB) cannot travel to a lent GPU machine, while its config and tokenizer can.
On any device it also sums the unique tensors autograd saves for backward (parameters
excluded): the activations the estimate models, the same on CPU as on a GPU for the same dtype
and attention kernel, so that term is checked even where no GPU is lent. On a machine without
CUDA it reports no peak memory.

With 2 or more GPUs (or ``--processes N``) it then runs the same training as N processes through
``nortune train --gpus N`` (accelerate launch, the shipped FSDP2 config) and compares every
rank's peak with the plan's N-GPU estimate; ``train.device=cpu`` runs that part on CPU
processes, without peak figures (the test suite does, so the path is exercised without a GPU).

    python benchmarks/gpu_memory.py [--steps 10] [--model embedded:gemma3-270m] [--random-weights]
                                    [--processes N]

For a lent GPU machine (its python3 has torch, transformers, peft and accelerate, but not trl,
datasets or pydantic: carry those as wheels), first write the model's shape here with
``--write-shape DIR`` (config and tokenizer, 32 MB), carry DIR, and run there
``PYTHONPATH=src python3 benchmarks/gpu_memory.py --model DIR --random-weights``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GIB = 1024 ** 3


def random_weights_folder(source: str, target: Path, seed: int) -> Path:
    """A loadable HF folder with ``source``'s config and tokenizer and seeded random bf16 weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    write_shape(source, target)
    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(str(target))
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(str(target))
    return target


def saved_activations_probe() -> Any:
    """A callback that records, per step, the bytes of tensors saved for backward."""
    from transformers import TrainerCallback

    from nortune.plan import saved_for_backward

    class SavedActivations(TrainerCallback):
        def __init__(self) -> None:
            self.per_step: list[int] = []

        def on_step_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
            self.block = saved_for_backward(model)
            self.saved = self.block.__enter__()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            self.block.__exit__(None, None, None)
            self.per_step.append(sum(self.saved.values()))

    return SavedActivations()


def write_shape(source: str, target: Path) -> None:
    """A weightless folder (config + tokenizer) that ``--random-weights`` accepts as ``--model``."""
    from transformers import AutoTokenizer

    from nortune.models import load_config, resolve_source

    load_config(source).save_pretrained(str(target))
    AutoTokenizer.from_pretrained(resolve_source(source)).save_pretrained(str(target))


def several_processes(recipe_path: str, overrides: list[str], workdir: Path, processes: int,
                      estimates: list[Any]) -> dict[str, Any]:
    """The same training as ``nortune train --gpus N``; every rank's peak against the N-GPU estimate.

    Each rank trains the 1-GPU run's micro-batch, so only the sharded weights and optimiser state
    shrink in the estimate.
    """
    import json as json_module

    from nortune.config import load_recipe
    from nortune.train.launch import launch_command, run_launched

    overrides = [o for o in overrides if not o.startswith("runs_dir=")] + [f"runs_dir={workdir / 'several'}"]
    recipe = load_recipe(recipe_path, overrides)
    command = launch_command(recipe, recipe_path, overrides, gpus=processes,
                             allow_contaminated="GPU memory check on the shipped demo chats")
    print("launching:", " ".join(command), flush=True)
    run_launched(recipe, command)
    metrics = json_module.loads((recipe.run_dir / "train" / "manifest.json").read_text())["metrics"]
    estimate = [e for e in estimates if e.gpus == processes][0]
    per_rank = None
    plan_estimate = round(estimate.total_gib - estimate.overhead_gib, 3)
    peaks = metrics.get("peak_gpu_memory")
    if peaks:
        per_rank = [{**p, "estimate_over_peak_allocated": round(plan_estimate / p["allocated_gib"], 3)}
                    for p in peaks]
    print(f"{processes} processes: estimate without overhead {plan_estimate:.3f} GiB per GPU; "
          f"measured per rank: {per_rank or 'n/a (no GPU)'}; tokens/s {metrics['tokens_per_s']}")
    return {"processes": processes, "estimate_without_overhead_gib": plan_estimate, "per_rank": per_rank,
            "tokens_per_s": metrics["tokens_per_s"], "last_loss": metrics["last_loss"], "steps": metrics["steps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model", default=None, help="override model.source")
    parser.add_argument("--random-weights", action="store_true", help="build the model from its config")
    parser.add_argument("--write-shape", metavar="DIR", help="write the model's config and tokenizer to DIR and stop")
    parser.add_argument("--processes", type=int, default=None,
                        help="also run N processes through nortune train --gpus N (default: 2 when 2+ GPUs)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="train.device")
    args = parser.parse_args()

    import torch

    from nortune.config import load_recipe
    from nortune.plan import plan_from_recipe
    from nortune.runs import Options
    from nortune.train import run

    recipe = load_recipe(args.recipe, [f"model.source={args.model}"] if args.model else [])
    source = recipe.model.source
    if args.write_shape:
        write_shape(source, Path(args.write_shape))
        print(json.dumps({"wrote": args.write_shape, "model": source,
                          "files": sorted(p.name for p in Path(args.write_shape).iterdir())}))
        return
    t = recipe.train
    workdir = Path(tempfile.mkdtemp(prefix="nortune-gpu-check-"))
    try:
        if args.random_weights:
            source = str(random_weights_folder(source, workdir / "model", t.seed))
        processes = args.processes or (2 if torch.cuda.device_count() >= 2 else 1)
        overrides = [
            f"model.source={source}", "model.dtype=bfloat16", "train.precision=bf16", "train.packing=true",
            f"train.max_steps={args.steps}", "train.save_steps=100000", "train.logging_steps=1",
            f"runs_dir={workdir}", f"train.data={REPO / 'data' / 'demo' / 'chat.jsonl'}",
            "train.gradient_checkpointing=false", f"train.device={args.device}", f"plan.max_gpus={processes}"]
        recipe = load_recipe(args.recipe, overrides)
        estimates = plan_from_recipe(recipe).memory
        estimate = estimates[0]
        cuda = torch.cuda.is_available() and args.device != "cpu"
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        probe = saved_activations_probe()
        metrics = run(recipe, Options(allow_contaminated="GPU memory check on the shipped demo chats"),
                      callbacks=(probe,))["metrics"]
        several = several_processes(args.recipe, overrides, workdir, processes, estimates) if processes > 1 else None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    allocated = torch.cuda.max_memory_allocated() / GIB if cuda else None
    reserved = torch.cuda.max_memory_reserved() / GIB if cuda else None
    without_overhead = estimate.total_gib - estimate.overhead_gib
    saved = max(probe.per_step) / GIB
    device = torch.cuda.get_device_name() if cuda else "cpu (no CUDA: peak GPU memory not measured)"

    print(f"device: {device}; {args.steps} steps, batch {t.batch_size} x {t.max_seq_len} tokens (packed), bf16")
    print(f"{'':<36}{'GiB':>8}")
    for label, value in (("estimate: weights", estimate.weights_gib),
                         ("estimate: adapter + optimiser", estimate.adapter_and_optimizer_gib),
                         ("estimate: activations", estimate.activations_gib),
                         ("estimate: logits (upper bound)", estimate.logits_gib),
                         ("estimate: total without overhead", without_overhead),
                         ("estimate: total", estimate.total_gib),
                         ("measured: saved for backward, max/step", saved),
                         ("measured: peak allocated", allocated), ("measured: peak reserved", reserved)):
        print(f"{label:<36}{'n/a' if value is None else f'{value:.3f}':>8}")
    print(f"tokens/s: {metrics['tokens_per_s']}")
    print(json.dumps({
        "device": device, "model": f"{args.model or 'demo'} (random weights)" if args.random_weights else source,
        "steps": args.steps, "batch_size": t.batch_size, "seq_len": t.max_seq_len,
        "estimate_gib": round(estimate.total_gib, 3),
        "estimate_activations_and_logits_gib": round(estimate.activations_gib + estimate.logits_gib, 3),
        "estimate_activations_gib": round(estimate.activations_gib, 3),
        "saved_for_backward_gib": round(saved, 3), "estimate_without_overhead_gib": round(without_overhead, 3),
        "peak_allocated_gib": None if allocated is None else round(allocated, 3),
        "peak_reserved_gib": None if reserved is None else round(reserved, 3),
        "estimate_over_peak_allocated": None if allocated is None else round(without_overhead / allocated, 3),
        "tokens_per_s": metrics["tokens_per_s"], "last_loss": metrics["last_loss"],
        "processes": several,
    }))


if __name__ == "__main__":
    main()

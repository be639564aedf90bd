"""nortune's prefix-sharing backend vs lm-eval's `hf` and `vllm` models on one GPU, same tasks and items.

The reference recipe evaluates with lm-eval's vLLM backend on GPUs. For multiple choice that path
sends every (context, choice) pair as its own prompt with ``prompt_logprobs``, which makes vLLM
skip its prefix cache, so each context is computed once per choice (docs/evaluate-gpu.md has
the code references). This script measures what that costs against nortune's backend (each
context once, then only the choices) and lm-eval `hf`.

Defaults: the recipe's 8 NorEval families x 5 prompts (40 lm-eval tasks), open-book QA 16-shot,
``--limit 20`` items per task (all of each demo sample set), the embedded Gemma 3 270M in bf16
on ``cuda``; `hf` at lm-eval's ``auto`` batch size (largest that fits, from 64 down), vLLM with
prefix caching on at 50 % of the GPU's memory, nortune at its GPU default (4096 positions per
forward). Each side runs in its own fresh process; the order flips every round (``--rounds``)
and the best wall time per side is reported. A side whose engine is not installed or cannot run
is reported as skipped, with the reason; the script still finishes.

Prints a table (evaluation wall time, model load, peak GPU memory, peak RSS, requests/s) and, as
its last line, one JSON object: ``speedup_vs_lm_eval_hf``, ``speedup_vs_lm_eval_vllm`` (peer
wall / nortune wall, null when the peer did not run), ``agree`` (per peer, nortune against it
item by item: acc, acc_norm and greedy flags equal and every log-likelihood within the stated
tolerance), ``sides`` and ``settings``.

    python benchmarks/evaluate_gpu.py                                  # one GPU, the defaults
    python benchmarks/evaluate_gpu.py --model DIR --random-weights     # a config + tokenizer folder
    python benchmarks/evaluate_gpu.py --device cpu --limit 1 --model TINY --tasks A,B --obqa-shots 1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

from evaluate_sides import (REPO, benchmark_tasks, compact_samples, compare, evaluate, guarded_hf_class, request_count,
                            run_side)

from nortune.config.names import NOREVAL_FAMILIES, PROMPTS

SIDES = ("nortune", "hf", "vllm")
LABELS = {"nortune": "nortune", "hf": "lm-eval hf", "vllm": "lm-eval vllm"}
GIB = 1024 ** 3
# Log-likelihood agreement: |ours - theirs| <= atol + rtol * |theirs|. In float32 the sides agree to
# float rounding (the CPU benchmark sees 3e-5), so 1e-3. In bf16 / fp16 every kernel rounds its
# own way (vLLM's attention and sampler are not transformers'), about 2^-8 relative per value, so
# the bound is loose on purpose; the measured largest difference is reported beside it.
TOLERANCE = {"float32": (1e-3, 0.0), "16-bit": (0.05, 0.02)}


class PeakSampler:
    """Peak memory of this process and its children (vLLM's engine runs in a child process):
    device-wide GPU memory in use above the level at start (``torch.cuda.mem_get_info``), and the
    summed RSS of the process tree (psutil), read every 50 ms on a background thread."""

    def __init__(self, cuda: bool) -> None:
        self.cuda, self.gpu_peak, self.rss_peak = cuda, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._base = self._gpu_used() if cuda else 0

    def _gpu_used(self) -> int:
        import torch

        free, total = torch.cuda.mem_get_info()
        return total - free

    def _rss(self) -> int:
        try:
            import psutil
        except ImportError:
            return 0
        me = psutil.Process()
        total = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(0.05)

    def sample(self) -> None:
        self.rss_peak = max(self.rss_peak, self._rss())
        if self.cuda:
            self.gpu_peak = max(self.gpu_peak, self._gpu_used() - self._base)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def tolerance(args) -> tuple[float, float]:
    atol, rtol = TOLERANCE["float32" if args.dtype == "float32" else "16-bit"]
    return (atol if args.atol is None else args.atol), (rtol if args.rtol is None else args.rtol)


def why_not(side: str, device: str) -> str | None:
    """Why ``side`` cannot run here, before any process is started (None: it can)."""
    if side == "vllm" and importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install 'lm_eval[vllm]'; benchmarks/gpu/evaluate_gpu.sh)"
    if side == "vllm" and device != "cuda":
        return "vllm runs on the GPU here (--device cuda)"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "--device cuda, but torch sees no CUDA device"
    return None


def load_side(args, side: str):
    """The lm-eval model object for ``side``, built from the same folder and dtype as the others."""
    if side == "nortune":
        from nortune.evaluate.backend import PrefixSharingLM

        return PrefixSharingLM(pretrained=args.model, dtype=args.dtype, device=args.device, batch_size=1,
                               batch_tokens=args.batch_tokens)
    if side == "hf":
        size = args.hf_batch_size if args.hf_batch_size == "auto" else int(args.hf_batch_size)
        if args.device == "cpu":
            from nortune.evaluate.memory import available_bytes

            return guarded_hf_class(0.6 * available_bytes())(pretrained=args.model, dtype=args.dtype, device="cpu",
                                                             batch_size=size, max_batch_size=64)
        from lm_eval.models.huggingface import HFLM

        return HFLM(pretrained=args.model, dtype=args.dtype, device=args.device, batch_size=size, max_batch_size=64)
    from lm_eval.models.vllm_causallms import VLLM

    return VLLM(pretrained=args.model, dtype=args.dtype, batch_size="auto", seed=1234,
                max_model_len=args.max_model_len, gpu_memory_utilization=args.vllm_memory,
                enable_prefix_caching=True)


def worker(args, side: str, out: Path) -> None:
    """One side in this process: load, evaluate, write timings, peaks and compact samples."""
    cuda = args.device == "cuda"
    tasks = benchmark_tasks(args.tasks.split(","), args.data, args.obqa_shots, args.prompts.split(","))
    result: dict = {"side": side}
    with PeakSampler(cuda) as peak:
        loading = time.perf_counter()
        lm = load_side(args, side)
        result["load_s"] = time.perf_counter() - loading
        start = time.perf_counter()
        raw = evaluate(lm, tasks, args.limit)
        result["wall_s"] = time.perf_counter() - start
    samples = compact_samples(raw["samples"])
    result.update(samples=samples, requests=request_count(samples),
                  peak_gpu_gib=peak.gpu_peak / GIB if cuda else None,
                  peak_rss_gib=max(peak.rss_peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / GIB)
    if cuda:
        import torch

        result["torch_peak_allocated_gib"] = torch.cuda.max_memory_allocated() / GIB
        result["gpu"] = torch.cuda.get_device_name()
    for name in ("batch_tokens", "forward_tokens"):
        if hasattr(lm, name):
            result[name] = getattr(lm, name)
    if getattr(lm, "batch_sizes", None):
        result["batch_sizes"] = list(lm.batch_sizes.values())
    out.write_text(json.dumps(result))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--model", default="embedded:gemma3-270m", help="a folder, hub id or embedded: name")
    parser.add_argument("--random-weights", action="store_true",
                        help="--model is a config + tokenizer folder: seeded random weights (speed does not "
                             "depend on weight values; what a lent GPU machine can be sent)")
    parser.add_argument("--tasks", default=",".join(NOREVAL_FAMILIES), help="NorEval families, comma-separated")
    parser.add_argument("--prompts", default=",".join(PROMPTS), help="prompt variants, comma-separated")
    parser.add_argument("--data", default=str(REPO / "data" / "demo" / "noreval"))
    parser.add_argument("--limit", type=int, default=20, help="items per task")
    parser.add_argument("--obqa-shots", type=int, default=16)
    parser.add_argument("--sides", default=",".join(SIDES))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="default: bfloat16 on cuda, float32 on cpu")
    parser.add_argument("--hf-batch-size", default=None, help="default: auto on cuda, 8 on cpu")
    parser.add_argument("--batch-tokens", type=int, default=None, help="nortune (default: its device default)")
    parser.add_argument("--vllm-memory", type=float, default=0.5, help="vLLM gpu_memory_utilization")
    parser.add_argument("--max-model-len", type=int, default=4096, help="vLLM max_model_len")
    parser.add_argument("--atol", type=float, default=None, help="log-likelihood tolerance (default by dtype)")
    parser.add_argument("--rtol", type=float, default=None)
    parser.add_argument("--side-timeout", type=int, default=900, help="seconds before a side is reported as hung")
    parser.add_argument("--worker", nargs=3, metavar=("SIDE", "SETTING", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    args.hf_batch_size = args.hf_batch_size or ("auto" if args.device == "cuda" else "8")
    unknown = [s for s in args.sides.split(",") if s not in SIDES]
    if unknown:
        parser.error(f"--sides: unknown side(s) {unknown}; known: {list(SIDES)}")
    bad = [f for f in args.tasks.split(",") if f not in NOREVAL_FAMILIES]
    if bad:
        parser.error(f"--tasks: unknown NorEval famil{'ies' if len(bad) > 1 else 'y'} {bad}; "
                     f"known: {list(NOREVAL_FAMILIES)}")
    bad = [p for p in args.prompts.split(",") if p not in PROMPTS]
    if bad:
        parser.error(f"--prompts: unknown prompt(s) {bad}; known: {list(PROMPTS)}")
    if not Path(args.data).is_dir():
        parser.error(f"--data: not a folder: {args.data}")
    return args


def table(args, best: dict, skipped: dict) -> None:
    print(f"\nmodel {args.model} ({args.dtype}, {args.device}), {len(args.tasks.split(','))} families x "
          f"{len(args.prompts.split(','))} prompts, "
          f"limit {args.limit}, open-book QA {args.obqa_shots}-shot, rounds {args.rounds} (best wall per side)")
    print(f"{'backend':<13} {'wall s':>8} {'load s':>7} {'requests/s':>11} {'peak GPU GiB':>13} {'peak RSS GiB':>13}")
    for side in args.sides.split(","):
        if side in skipped:
            print(f"{LABELS[side]:<13} skipped: {skipped[side]}")
            continue
        r = best[side]
        gpu = f"{r['peak_gpu_gib']:>13.2f}" if r.get("peak_gpu_gib") is not None else f"{'-':>13}"
        print(f"{LABELS[side]:<13} {r['wall_s']:>8.1f} {r['load_s']:>7.1f} {r['requests'] / r['wall_s']:>11.1f} "
              f"{gpu} {r['peak_rss_gib']:>13.2f}")


def main() -> int:
    args = parse()
    if args.worker:
        worker(args, args.worker[0], Path(args.worker[2]))
        return 0
    from nortune.models import resolve_source

    sides = args.sides.split(",")
    skipped = {s: why for s in sides if (why := why_not(s, args.device))}
    runs: dict[str, list[dict]] = {s: [] for s in sides if s not in skipped}
    failures: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if args.random_weights:
            from gpu_memory import random_weights_folder

            model = str(random_weights_folder(model, Path(tmp) / "model", seed=0))
        elif runs:
            model = resolve_source(model)  # once here, not in every worker
        argv = [a for a in sys.argv[1:] if a != "--random-weights"] + ["--model", model]
        for round_ in range(args.rounds):
            order = list(runs) if round_ % 2 == 0 else list(runs)[::-1]
            for n, side in enumerate(order):
                if side in skipped:
                    continue
                result, why = run_side(__file__, argv, side, "-", Path(tmp) / f"{round_}-{n}.json",
                                       timeout=args.side_timeout)
                if result is None:  # a side that ran in an earlier round keeps its figures; the failure is shown
                    if runs[side]:
                        failures.setdefault(side, []).append(f"round {round_ + 1}: {why}")
                    else:
                        skipped[side] = why
                    continue
                runs[side].append(result)
                print(f"round {round_ + 1}: {LABELS[side]}: {result['wall_s']:.1f} s, {result['requests']} requests",
                      flush=True)
    best = {s: min(rs, key=lambda r: r["wall_s"]) for s, rs in runs.items() if rs}
    for side in best:
        best[side]["peak_rss_gib"] = max(r["peak_rss_gib"] for r in runs[side])
    table(args, best, skipped)

    atol, rtol = tolerance(args)
    ours = best.get("nortune")
    figures = {"speedup_vs_lm_eval_hf": None, "speedup_vs_lm_eval_vllm": None, "agree": {}}
    for peer in ("hf", "vllm"):
        if peer not in sides:
            continue
        if ours is None or peer not in best:
            figures["agree"][peer] = {"agree": None, "skipped": skipped.get(peer) or f"nortune: {skipped.get('nortune')}"}
            continue
        figures[f"speedup_vs_lm_eval_{peer}"] = best[peer]["wall_s"] / ours["wall_s"]
        figures["agree"][peer] = compare(ours["samples"], best[peer]["samples"], atol, rtol)
        d = figures["agree"][peer]
        print(f"nortune vs {LABELS[peer]}: {figures[f'speedup_vs_lm_eval_{peer}']:.2f}x; agree {d['agree']} "
              f"(flag mismatches {d['flag_mismatches']}, max |loglik diff| {d['max_abs_loglikelihood_diff']:.2e} "
              f"over {d['loglikelihoods_compared']} choices, tolerance {atol} + {rtol} x |ll|)")
    figures["sides"] = {s: ({"skipped": skipped[s]} if s in skipped else
                            {k: v for k, v in best[s].items() if k not in ("samples", "side")}
                            | {"requests_per_s": best[s]["requests"] / best[s]["wall_s"]}) for s in sides}
    for side, why in failures.items():
        figures["sides"][side]["failed_rounds"] = why
    figures["settings"] = {
        "model": args.model, "random_weights": args.random_weights, "device": args.device, "dtype": args.dtype,
        "tasks": args.tasks.split(","), "prompts": args.prompts.split(","), "limit": args.limit, "obqa_shots": args.obqa_shots,
        "data": args.data, "rounds": args.rounds, "hf_batch_size": args.hf_batch_size,
        "nortune_batch_tokens": args.batch_tokens or (ours or {}).get("batch_tokens"),
        "vllm": {"enable_prefix_caching": True, "gpu_memory_utilization": args.vllm_memory,
                 "max_model_len": args.max_model_len, "batch_size": "auto"},
        "tolerance": {"atol": atol, "rtol": rtol, "rule": "|nortune - peer| <= atol + rtol * |peer|"},
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

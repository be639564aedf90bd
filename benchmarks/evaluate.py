"""nortune's prefix-sharing backend vs lm-eval's own `hf` model at the recipe's settings.

Defaults are the recipe's shape: the 8 NorEval families x 5 prompts (40 lm-eval tasks),
open-book QA 16-shot, 20 items per task (all of each demo sample set), on the demo's embedded
Gemma 3 270M in fp32. Every side runs in its own fresh process (so its peak resident memory is
its own), sides alternate within a round and the order flips every round, so load from other
jobs falls on both. lm-eval `hf` runs at each batch size of --hf-batch-sizes (1, 8, auto) and
the fastest one is the peer. An `hf` batch whose [batch, length, vocab] logits and log-softmax
would not fit in 60 % of the free RAM is refused inside the worker with torch's own CPU
out-of-memory message (lm-eval's `auto` then halves, as it does on a real OOM; a fixed batch
size is reported as not runnable) instead of letting the kernel's OOM killer loose on a shared
machine.

Prints wall time (evaluation only; model loading is shown apart) and peak RSS (the worker's
whole life) per side, and ends with one JSON line: ``speedup_vs_lm_eval_hf_best``,
``memory_ratio_vs_lm_eval_hf``, ``agree`` (acc, acc_norm, greedy flags identical on every item;
``max_abs_loglikelihood_diff`` beside it).

    python benchmarks/evaluate.py                                     # the recipe's shape (hours on 2 cores)
    python benchmarks/evaluate.py --limit 4 --obqa-shots 4 --hf-batch-sizes 8
    python benchmarks/evaluate.py --batch-tokens 256,512,1024,2048,4096 --hf-batch-sizes none   # the sweep
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from evaluate_sides import REPO, benchmark_tasks, compact_samples, compare, evaluate, guarded_hf_class, run_side
from nortune.config.names import RECIPE_FAMILIES


def worker(args, side: str, setting: str, out: Path) -> None:
    """One side in this process: evaluate, then write timings, peak RSS and compact samples."""
    import torch

    from nortune.evaluate.backend import PrefixSharingLM
    from nortune.evaluate.memory import available_bytes
    from nortune.models import resolve_source

    if args.threads:
        torch.set_num_threads(args.threads)
    loading = time.perf_counter()
    common = {"pretrained": resolve_source(args.model), "dtype": args.dtype, "device": "cpu"}
    if side == "nortune":
        lm = PrefixSharingLM(**common, batch_size=1, batch_tokens=int(setting), memory_gib=args.memory_gib)
    else:
        lm = guarded_hf_class(0.6 * available_bytes())(
            **common, batch_size=setting if setting == "auto" else int(setting), max_batch_size=64)
    load_s = time.perf_counter() - loading
    tasks = benchmark_tasks(args.families.split(","), args.data, args.obqa_shots)
    result = {"side": side, "setting": setting, "load_s": load_s}
    start = time.perf_counter()
    try:
        raw = evaluate(lm, tasks, args.limit)
    except RuntimeError as err:
        if "can't allocate memory" not in str(err):
            raise
        result["skipped"] = str(err)
    else:
        result["wall_s"] = time.perf_counter() - start
        result["forward_tokens"] = lm.forward_tokens
        result["batch_sizes"] = list(getattr(lm, "batch_sizes", {}).values())
        result["samples"] = compact_samples(raw["samples"])
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out.write_text(json.dumps(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded:gemma3-270m")
    parser.add_argument("--data", default=str(REPO / "data" / "demo" / "noreval"))
    parser.add_argument("--families", default=",".join(RECIPE_FAMILIES))  # the log-likelihood tasks it measures
    parser.add_argument("--limit", type=int, default=20, help="items per task")
    parser.add_argument("--obqa-shots", type=int, default=16)
    parser.add_argument("--batch-tokens", default="256",
                        help="nortune settings; the first is compared (default: evaluate's CPU default)")
    parser.add_argument("--memory-gib", type=float, default=None, help="nortune budget (default: from the machine)")
    parser.add_argument("--hf-batch-sizes", default="1,8,auto", help="'none' to time nortune only")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--worker", nargs=3, metavar=("SIDE", "SETTING", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args, args.worker[0], args.worker[1], Path(args.worker[2]))
        return 0

    ours_ = [("nortune", b) for b in args.batch_tokens.split(",")]
    theirs_ = [] if args.hf_batch_sizes == "none" else [("lm-eval hf", b) for b in args.hf_batch_sizes.split(",")]
    sides = [s for pair in zip(ours_, theirs_) for s in pair]  # alternate the two backends
    sides += ours_[len(theirs_):] + theirs_[len(ours_):]
    passthrough = sys.argv[1:]
    runs: dict[tuple[str, str], list[dict]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for n, (side, setting) in enumerate(sides if round_ % 2 == 0 else sides[::-1]):
                out = Path(tmp) / f"{round_}-{n}.json"
                result, why = run_side(__file__, passthrough, side.split()[-1], setting, out)
                if result is None:
                    raise SystemExit(f"{side} {setting}: {why}")
                runs[(side, setting)].append(result)
                r = runs[(side, setting)][-1]
                print(f"round {round_ + 1}: {side} {setting}: " + (f"{r['wall_s']:.1f} s" if "wall_s" in r
                      else "not runnable") + f", peak RSS {r['peak_rss_gib']:.2f} GiB", flush=True)

    best = {key: min((r for r in rs if "wall_s" in r), key=lambda r: r["wall_s"], default=rs[0])
            for key, rs in runs.items()}
    print(f"\nmodel {args.model} ({args.dtype}), families {len(args.families.split(','))} x 5 prompts, "
          f"limit {args.limit}, open-book QA {args.obqa_shots}-shot, data {args.data}, rounds {args.rounds} "
          "(best wall per side), one fresh process per side and round")
    print(f"{'backend':<11} {'setting':>8} {'wall s':>8} {'load s':>7} {'peak RSS GiB':>13} {'fwd tokens':>12}")
    for (side, setting), r in best.items():
        wall = f"{r['wall_s']:>8.1f}" if "wall_s" in r else f"{'-':>8}"
        tokens = f"{r['forward_tokens']:>12,}" if "forward_tokens" in r else f"{'-':>12}"
        extra = f"  (auto chose {r['batch_sizes']})" if setting == "auto" and r.get("batch_sizes") else ""
        print(f"{side:<11} {setting:>8} {wall} {r['load_s']:>7.1f} {max(x['peak_rss_gib'] for x in runs[(side, setting)]):>13.2f} "
              f"{tokens}{extra}" + (f"  not runnable: {r['skipped']}" if "skipped" in r else ""))
    ours = best[ours_[0]]
    result = {"limit": args.limit, "obqa_shots": args.obqa_shots, "families": len(args.families.split(",")),
              "nortune_batch_tokens": int(ours_[0][1]), "nortune_wall_s": ours["wall_s"],
              "nortune_peak_rss_gib": max(x["peak_rss_gib"] for x in runs[ours_[0]])}
    hf = {k: r for k, r in best.items() if k[0] == "lm-eval hf" and "wall_s" in r}
    if hf:
        key = min(hf, key=lambda k: hf[k]["wall_s"])
        peer = hf[key]
        result.update({
            "lm_eval_hf_best_batch_size": key[1], "lm_eval_hf_wall_s": peer["wall_s"],
            "lm_eval_hf_peak_rss_gib": max(x["peak_rss_gib"] for x in runs[key]),
            "lm_eval_hf_walls": {k[1]: (r.get("wall_s")) for k, r in best.items() if k[0] == "lm-eval hf"},
            "speedup_vs_lm_eval_hf_best": peer["wall_s"] / ours["wall_s"],
        })
        result["memory_ratio_vs_lm_eval_hf"] = result["nortune_peak_rss_gib"] / result["lm_eval_hf_peak_rss_gib"]
        result["agree_detail"] = compare(ours["samples"], peer["samples"])
        d = result["agree_detail"]
        result["agree"] = d["agree"]  # flags identical, every log-likelihood within 1e-3
        print(f"nortune (batch_tokens {ours_[0][1]}) vs lm-eval hf at its fastest batch size ({key[1]}): "
              f"{result['speedup_vs_lm_eval_hf_best']:.2f}x faster, peak RSS {result['memory_ratio_vs_lm_eval_hf']:.2f}x; "
              f"acc/acc_norm/greedy identical: {result['agree']}; max |loglik diff| "
              f"{d['max_abs_loglikelihood_diff']:.2e} over {d['loglikelihoods_compared']} choices")
    print(json.dumps(result))
    return 0 if not hf or result["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())

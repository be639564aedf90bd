"""nortune's prefix-sharing backend vs lm-eval's own `hf` model at the recipe's settings.

Defaults are the recipe's shape: the 8 NorEval families x 5 prompts (40 lm-eval tasks),
open-book QA 16-shot, 20 items per task (the demo sample sets hold 15 open-book QA items, so
those tasks run all 15), on the demo's embedded Gemma 3 270M in fp32. Every side runs in its
own fresh process (so its peak resident memory is its own), sides alternate within a round and
the order flips every round, so load from other jobs falls on both. lm-eval `hf` runs at each
batch size of --hf-batch-sizes (1, 8, auto) and the fastest one is the peer. An `hf` batch
whose [batch, length, vocab] logits and log-softmax would not fit in 60 % of the free RAM is
refused inside the worker with torch's own CPU out-of-memory message (lm-eval's `auto` then
halves, as it does on a real OOM; a fixed batch size is reported as not runnable) instead of
letting the kernel's OOM killer loose on a shared machine.

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nortune.config.names import RECIPE_FAMILIES

REPO = Path(__file__).resolve().parents[1]


def worker(args, side: str, setting: str, out: Path) -> None:
    """One side in this process: evaluate, then write timings, peak RSS and compact samples."""
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM

    from nortune.evaluate.backend import PrefixSharingLM
    from nortune.evaluate.memory import available_bytes
    from nortune.evaluate.tasks import PROMPTS, build_tasks, task_specs
    from nortune.models import resolve_source

    if args.threads:
        torch.set_num_threads(args.threads)
    guard = 0.6 * available_bytes()

    class GuardedHFLM(HFLM):
        forward_tokens = 0

        def _model_call(self, inps, attn_mask=None, labels=None):
            need = 2 * inps.numel() * self.model.config.get_text_config().vocab_size * 4
            if need > guard:
                raise RuntimeError(f"DefaultCPUAllocator: can't allocate memory: batch {tuple(inps.shape)} needs "
                                   f"{need / 2**30:.1f} GiB of logits + log-softmax, over 60 % of the free RAM")
            self.forward_tokens += inps.numel()
            return super()._model_call(inps, attn_mask, labels)

    loading = time.perf_counter()
    common = {"pretrained": resolve_source(args.model), "dtype": args.dtype, "device": "cpu"}
    if side == "nortune":
        lm = PrefixSharingLM(**common, batch_size=1, batch_tokens=int(setting), memory_gib=args.memory_gib)
    else:
        lm = GuardedHFLM(**common, batch_size=setting if setting == "auto" else int(setting), max_batch_size=64)
    load_s = time.perf_counter() - loading
    settings = argparse.Namespace(tasks=args.families.split(","), prompts=list(PROMPTS), source="local",
                                  data_dir=args.data, revision=None, extra_tasks=[])
    shots = {f: args.obqa_shots for f in settings.tasks if f.startswith("noropenbookqa")}
    tasks = build_tasks(task_specs(settings, shots)[0])
    result = {"side": side, "setting": setting, "load_s": load_s}
    start = time.perf_counter()
    try:
        raw = lm_eval.simple_evaluate(model=lm, tasks=list(tasks.values()), limit=args.limit, log_samples=True,
                                      fewshot_random_seed=1234)
    except RuntimeError as err:
        if "can't allocate memory" not in str(err):
            raise
        result["skipped"] = str(err)
    else:
        result["wall_s"] = time.perf_counter() - start
        result["forward_tokens"] = lm.forward_tokens
        result["batch_sizes"] = list(getattr(lm, "batch_sizes", {}).values())
        result["samples"] = {task: {str(s["doc_id"]): {"ll": [r[0][0] for r in s["resps"]],
                                                       "greedy": [bool(r[0][1]) for r in s["resps"]],
                                                       "acc": s.get("acc"), "acc_norm": s.get("acc_norm")}
                                    for s in rows} for task, rows in raw["samples"].items()}
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out.write_text(json.dumps(result))


def compare(ours: dict, theirs: dict) -> dict:
    """Item by item: acc, acc_norm and greedy flags identical; the largest log-likelihood difference."""
    same = {"acc": True, "acc_norm": True, "greedy": True}
    worst, compared = 0.0, 0
    for task, items in theirs.items():
        for doc, ref in items.items():
            mine = ours[task][doc]
            same["acc"] &= mine["acc"] == ref["acc"]
            same["acc_norm"] &= mine["acc_norm"] == ref["acc_norm"]
            same["greedy"] &= mine["greedy"] == ref["greedy"]
            worst = max([worst] + [abs(a - b) for a, b in zip(mine["ll"], ref["ll"])])
            compared += len(ref["ll"])
    complete = set(ours) == set(theirs) and all(set(ours[t]) == set(theirs[t]) for t in theirs)
    return {"acc": same["acc"], "acc_norm": same["acc_norm"], "greedy_flags": same["greedy"],
            "max_abs_loglikelihood_diff": worst, "loglikelihoods_compared": compared, "same_items": complete}


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
                cmd = [sys.executable, __file__, *passthrough, "--worker", side.split()[-1], setting, str(out)]
                done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.stderr.write(done.stderr[-4000:])
                    raise SystemExit(f"{side} {setting}: worker failed (exit {done.returncode})")
                runs[(side, setting)].append(json.loads(out.read_text()))
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
        result["agree"] = bool(d["acc"] and d["acc_norm"] and d["greedy_flags"] and d["same_items"]
                               and d["max_abs_loglikelihood_diff"] < 1e-3)
        print(f"nortune (batch_tokens {ours_[0][1]}) vs lm-eval hf at its fastest batch size ({key[1]}): "
              f"{result['speedup_vs_lm_eval_hf_best']:.2f}x faster, peak RSS {result['memory_ratio_vs_lm_eval_hf']:.2f}x; "
              f"acc/acc_norm/greedy identical: {result['agree']}; max |loglik diff| "
              f"{d['max_abs_loglikelihood_diff']:.2e} over {d['loglikelihoods_compared']} choices")
    print(json.dumps(result))
    return 0 if not hf or result["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())

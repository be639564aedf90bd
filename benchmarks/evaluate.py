"""nortune's prefix-sharing backend vs lm-eval's own `hf` model: the 8 NorEval tasks x 5 prompts.

Same model (the demo's embedded Gemma 3 270M unless --model), same data (the demo sample
sets), same lm-eval task objects, one process. Prompts are split into text-choice prompts
(the answers are texts: the shared context is where the time goes) and letter-choice prompts
(" A".." E": lm-eval `hf` already reuses one forward per question there). Prints wall time
and forward tokens (padded positions fed to the model) per side and their ratios, asserts
that every prediction agrees and log-likelihoods match, and ends with one JSON line.

    python benchmarks/evaluate.py --limit 4 --obqa-shots 4   # a few minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="embedded:gemma3-270m")
    parser.add_argument("--data", default=str(REPO / "data" / "demo" / "noreval"))
    parser.add_argument("--limit", type=int, default=6, help="items per task (keeps a 2-core run to minutes)")
    parser.add_argument("--obqa-shots", type=int, default=16,
                        help="open-book QA shots (the recipe's 16 makes ~1.5k-token contexts: slow on 2 cores)")
    parser.add_argument("--hf-batch-size", type=int, default=8)
    parser.add_argument("--batch-tokens", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()

    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM

    from nortune.evaluate.backend import PrefixSharingLM
    from nortune.evaluate.tasks import CATALOGUE, DEFAULT_FEWSHOT, PROMPTS, build_tasks, task_specs
    from nortune.models import resolve_source

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = resolve_source(args.model)

    class CountingHFLM(HFLM):
        forward_tokens = 0

        def _model_call(self, inps, attn_mask=None, labels=None):
            self.forward_tokens += inps.numel()
            return super()._model_call(inps, attn_mask, labels)

    common = {"pretrained": folder, "dtype": "float32", "device": "cpu"}
    backends = {"nortune": PrefixSharingLM(**common, batch_tokens=args.batch_tokens),
                "lm-eval hf": CountingHFLM(**common, batch_size=args.hf_batch_size)}
    settings = SimpleNamespace(tasks=list(CATALOGUE), prompts=list(PROMPTS), source="local",
                               data_dir=args.data, revision=None, extra_tasks=[])
    specs = task_specs(settings, {family: args.obqa_shots for family in DEFAULT_FEWSHOT})[0]
    probe = build_tasks(specs)
    letter = {name for name, task in probe.items()
              if all(len(c.strip()) == 1 for d in list(task.eval_docs)[:3] for c in task.doc_to_choice(d))}
    kinds = {"text-choice": [s for s in specs if s["task"] not in letter],
             "letter-choice": [s for s in specs if s["task"] in letter]}

    rows, samples = [], {}
    for kind, kind_specs in kinds.items():
        for name, lm in backends.items():
            tasks = build_tasks(kind_specs)  # fresh task objects: lm-eval keeps instances on them
            before = lm.forward_tokens
            start = time.perf_counter()
            out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks.values()), limit=args.limit,
                                          log_samples=True, fewshot_random_seed=1234)
            wall = time.perf_counter() - start
            rows.append({"prompts": kind, "backend": name, "tasks": len(kind_specs), "wall_s": wall,
                         "forward_tokens": lm.forward_tokens - before})
            samples[(kind, name)] = out["samples"]

    agree, worst, compared = True, 0.0, 0
    for kind in kinds:
        ours, theirs = samples[(kind, "nortune")], samples[(kind, "lm-eval hf")]
        for task, items in theirs.items():
            mine = {s["doc_id"]: s for s in ours[task]}
            for item in items:
                other = mine[item["doc_id"]]
                a = [r[0][0] for r in item["resps"]]
                b = [r[0][0] for r in other["resps"]]
                worst = max([worst] + [abs(x - y) for x, y in zip(a, b)])
                compared += len(a)
                same_pred = a.index(max(a)) == b.index(max(b))
                same_metrics = item.get("acc") == other.get("acc") and item.get("acc_norm") == other.get("acc_norm")
                agree &= same_pred and same_metrics

    print(f"model {args.model}, {args.limit} items per task, open-book QA {args.obqa_shots}-shot, data {args.data} (sample sets, not NorEval), "
          f"torch threads {torch.get_num_threads()}, hf batch_size {args.hf_batch_size}")
    print(f"{'prompts':<14} {'backend':<11} {'tasks':>5} {'wall s':>8} {'fwd tokens':>11}")
    for r in rows:
        print(f"{r['prompts']:<14} {r['backend']:<11} {r['tasks']:>5} {r['wall_s']:>8.1f} {r['forward_tokens']:>11,}")
    result = {"agree": bool(agree), "loglikelihoods_compared": compared, "max_abs_loglikelihood_diff": worst,
              "limit": args.limit, "obqa_shots": args.obqa_shots}
    for kind in kinds:
        ours = next(r for r in rows if r["prompts"] == kind and r["backend"] == "nortune")
        theirs = next(r for r in rows if r["prompts"] == kind and r["backend"] == "lm-eval hf")
        key = kind.split("-")[0]
        result[f"speedup_{key}"] = theirs["wall_s"] / ours["wall_s"]
        result[f"token_ratio_{key}"] = theirs["forward_tokens"] / max(ours["forward_tokens"], 1)
        print(f"{kind}: {result[f'speedup_{key}']:.2f}x faster, "
              f"{result[f'token_ratio_{key}']:.2f}x fewer forward tokens")
    total_ours = sum(r["wall_s"] for r in rows if r["backend"] == "nortune")
    total_theirs = sum(r["wall_s"] for r in rows if r["backend"] == "lm-eval hf")
    result["speedup_vs_lm_eval_hf"] = total_theirs / total_ours
    print(f"all 40 tasks: {result['speedup_vs_lm_eval_hf']:.2f}x; predictions agree: {agree}; "
          f"max |loglik diff| {worst:.2e} over {compared} choices")
    print(json.dumps(result))
    assert agree, "predictions differ between nortune and lm-eval hf"
    assert worst < 1e-3, f"log-likelihoods differ by {worst}"
    return 0


if __name__ == "__main__":
    sys.exit(main())

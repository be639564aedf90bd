"""Curate throughput: today's single-process curate vs the datatrove pipeline on 1 and 2 workers.

    python benchmarks/curate_throughput.py [--records 1000000] [--today-rev 2ab7c11^]

Generates chat records from real, varied sentences (the ~28,000 nb/nn/en/other strings of
``data/langid/*.tsv``: 5-8 per answer, about 500 characters), with planted exact duplicates,
near duplicates (one word changed) and degenerate repetitive answers, each at a known rate.
The repetition filter is on (the default ``max_repetition``). Then, each in a fresh process,
one after another: today's curate (the code at ``--today-rev``, single process), and the
datatrove pipeline with ``curate.executor.workers`` 1 and 2. Reports records/s, the 2-vs-1
ratio, peak RSS of the driver and of the largest task (measured inside each task), how many planted copies each found,
and whether the two datatrove runs wrote the same train.jsonl. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATES = {"exact": 0.02, "near": 0.02, "repetitive": 0.01}


def sentences() -> dict[str, list[str]]:
    pool: dict[str, set[str]] = {}
    for path in sorted((ROOT / "data" / "langid").glob("*.tsv")):
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and len(parts[2].split()) >= 4:
                text = parts[2].strip()
                pool.setdefault(parts[0], set()).add(text if text[-1] in ".!?:" else text + ".")
    return {lang: sorted(texts) for lang, texts in pool.items()}


def generate(path: Path, n: int, seed: int = 0) -> dict[str, int]:
    """Write n records; return how many copies of each kind were planted."""
    rng = random.Random(seed)
    pool = sentences()
    langs = ["nb", "nn", "en", "da", "sv", "de"]
    weights = [58, 32, 5, 2, 2, 1]
    planted = {kind: 0 for kind in RATES}
    originals: list[tuple[str, list[str]]] = []  # earlier ordinary records (question, answer words)
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(n):
            roll = rng.random()
            if originals and roll < RATES["exact"]:
                question, words = rng.choice(originals)
                planted["exact"] += 1
            elif originals and roll < RATES["exact"] + RATES["near"]:
                question, words = rng.choice(originals)
                words = list(words)
                words[rng.randrange(len(words) // 4, 3 * len(words) // 4)] = rng.choice(["også", "kanskje", "berre"])
                planted["near"] += 1
            else:
                lang = rng.choices(langs, weights)[0]
                question = rng.choice(pool[lang]).rstrip(".!") + "?"
                if roll < RATES["exact"] + RATES["near"] + RATES["repetitive"]:
                    words = (rng.choice(pool[lang]) + " ").split() * 8  # a degenerate, looping answer
                    planted["repetitive"] += 1
                else:
                    words = " ".join(rng.sample(pool[lang], rng.randint(5, 8))).split()
                    if len(originals) < 50_000:
                        originals.append((question, words))
                    elif rng.random() < 0.05:
                        originals[rng.randrange(len(originals))] = (question, words)
            record = {"messages": [{"role": "user", "content": question},
                                   {"role": "assistant", "content": " ".join(words)}]}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return planted


def child(kind: str, src: Path, runs: Path, workers: int) -> None:
    """One curate run in this process; prints its wall time, peak RSS and metrics as JSON."""
    sys.path.insert(0, str(src))
    from nortune.config import Recipe
    from nortune.curate.stage import run

    curate = {"sources": [{"name": "gen", "path": str(runs.parent / "gen.jsonl")}]}
    if kind == "datatrove":
        curate["executor"] = {"type": "local", "workers": workers}
    recipe = Recipe.model_validate({"name": "bench", "runs_dir": str(runs), "curate": curate})
    start = time.perf_counter()
    try:  # today's stage contract; the old single-process code took force=True
        from nortune.runs import Options
        manifest = run(recipe, Options(force=True))
    except ImportError:
        manifest = run(recipe, force=True)
    wall = time.perf_counter() - start
    out = runs / "bench" / "curate" / "train.jsonl"
    executor = manifest.get("executor", {})  # datatrove runs: each task's own peak RSS and CPU seconds
    print(json.dumps({"wall_s": wall, "metrics": manifest["metrics"], "task_rss_mb": executor.get("task_peak_rss_mb"),
                      "task_cpu_s": executor.get("task_cpu_s"), "cpu_s": time.process_time(),
                      "load_avg": os.getloadavg(),
                      "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
                      "driver_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(kind: str, src: Path, tmp: Path, workers: int) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--src", str(src), "--runs", str(tmp / f"runs-{kind}-{workers}"),
           "--workers", str(workers)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{kind} x{workers} failed ({done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--today-rev", default="2ab7c11^", help="git revision of the single-process curate")
    parser.add_argument("--child", choices=["today", "datatrove"])
    parser.add_argument("--src", type=Path)
    parser.add_argument("--runs", type=Path)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.src, args.runs, args.workers)
        return 0
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        started = time.perf_counter()
        planted = generate(tmp / "gen.jsonl", args.records)
        size_mb = (tmp / "gen.jsonl").stat().st_size / 1e6
        print(f"generated {args.records} records ({size_mb:.0f} MB) in {time.perf_counter() - started:.0f} s; "
              f"planted {planted}", flush=True)
        today_src = tmp / "today"
        today_src.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.today_rev, "src"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(today_src)], input=archive, check=True)
        runs = {"today": measure("today", today_src / "src", tmp, 1)}
        for workers in (1, 2):
            runs[f"datatrove_{workers}"] = measure("datatrove", ROOT / "src", tmp, workers)
    rows = []
    for key, r in runs.items():
        drops = r["metrics"]["dropped"]
        r["records_per_s"] = args.records / r["wall_s"]
        r["found"] = {"exact": drops.get("duplicate:exact", 0), "near": drops.get("duplicate:near", 0),
                      "repetitive": drops.get("filter:repetition", 0)}
        worker_mb = max(r["task_rss_mb"]) if r["task_rss_mb"] else r["driver_rss_mb"]
        r["worker_rss_mb"] = worker_mb
        rows.append(f"{key:<13} {r['wall_s']:>8.1f} {r['records_per_s']:>10.0f} {r['driver_rss_mb']:>10.0f} "
                    f"{worker_mb:>10.0f} {r['metrics']['output_records']:>8} {json.dumps(r['found'])}")
    print(f"{'run':<13} {'wall s':>8} {'records/s':>10} {'driver MB':>10} {'worker MB':>10} {'output':>8} found")
    print("\n".join(rows))
    one, two, today = runs["datatrove_1"], runs["datatrove_2"], runs["today"]
    result = {
        "records": args.records, "mb": round(size_mb, 1), "planted": planted,
        "records_per_s": {k: round(r["records_per_s"], 1) for k, r in runs.items()},
        "ratio_2_vs_1": round(two["records_per_s"] / one["records_per_s"], 3),
        "speedup_vs_single_process": round(two["records_per_s"] / today["records_per_s"], 3),
        "per_worker_records_per_s": round(one["records_per_s"], 1),
        # CPU seconds per record, load-independent: today's whole process; a datatrove task from read to signatures.
        "cpu_records_per_s": {"today": round(args.records / today["cpu_s"], 1),
                              **{k: round(args.records / sum(r["task_cpu_s"]), 1)
                                 for k, r in runs.items() if r["task_cpu_s"]}},
        "load_avg_at_end": {k: [round(x, 2) for x in r["load_avg"]] for k, r in runs.items()},
        "peak_rss_mb": {k: {"driver": round(r["driver_rss_mb"]), "worker": round(r["worker_rss_mb"])}
                        for k, r in runs.items()},
        "found": {k: r["found"] for k, r in runs.items()},
        "dropped": {k: r["metrics"]["dropped"] for k, r in runs.items()},
        "same_output_1_vs_2_workers": one["sha256"] == two["sha256"],
        "output_records": {k: r["metrics"]["output_records"] for k, r in runs.items()},
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

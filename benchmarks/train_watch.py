"""What the forgetting watch (train.watch) costs: the demo's training with the watch off and on, side by side.

Each run is `nortune train` in its own process (so its peak RSS is its own) on the shipped demo
chats, the demo recipe's settings (30 steps of LR 4e-4 unless --steps / --set say otherwise),
the watch at its defaults unless --watch-set changes them. Rounds interleave off and on (A B A B, the
order reversed every other round); each side's fastest round counts. The train stage's own
wall time (``metrics.seconds``, the Trainer's loop, where the watch runs) is compared:
``overhead_ratio`` = on / off. Prints a table, then one JSON line.

    .venv/bin/python benchmarks/train_watch.py [--rounds 2] [--steps 30] [--model M] [--watch-set every_steps=15]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OVERRIDE = "watch cost benchmark on the shipped demo chats"


def train(workdir: Path, name: str, overrides: list[str]) -> dict:
    """One `nortune train` in a child process: its manifest's figures and the child's peak RSS."""
    command = [sys.executable, "-m", "nortune.cli", "train", str(REPO / "configs" / "demo.yaml"),
               "--allow-contaminated", OVERRIDE, f"name={name}", f"runs_dir={workdir}", *overrides]
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    stderr = child.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{name} failed:\n{stderr[-3000:]}")
    manifest = json.loads((workdir / name / "train" / "manifest.json").read_text())
    watch = manifest.get("watch") or {}
    return {"seconds": manifest["metrics"]["seconds"], "steps": manifest["metrics"]["steps"],
            "watch_seconds": watch.get("seconds", 0.0), "measurements": len(watch.get("evaluations", [])),
            "stop_reason": watch.get("stop_reason"), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="train.max_steps (default: the demo's)")
    parser.add_argument("--model", default=None, help="model.source (default: the demo's)")
    parser.add_argument("--set", action="append", default=[], help="another recipe override for both sides")
    parser.add_argument("--watch-set", action="append", default=[], help="a train.watch setting, e.g. every_steps=15")
    args = parser.parse_args()

    common = [f"train.data={REPO / 'data' / 'demo' / 'chat.jsonl'}", "train.save_steps=100000", *args.set]
    if args.steps:
        common.append(f"train.max_steps={args.steps}")
    if args.model:
        common.append(f"model.source={args.model}")
    sides = {"watch off": common, "watch on": [*common, "train.watch={}",
                                              *(f"train.watch.{item}" for item in args.watch_set)]}
    workdir = Path(tempfile.mkdtemp(prefix="nortune-watch-bench-"))
    best: dict[str, dict] = {}
    try:
        for round_no in range(args.rounds):
            for side in (list(sides) if round_no % 2 == 0 else list(reversed(sides))):
                row = train(workdir, f"{side.replace(' ', '-')}-{round_no}", sides[side])
                if side not in best or row["seconds"] < best[side]["seconds"]:
                    best[side] = row
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    off, on = best["watch off"], best["watch on"]
    print(f"{'run':<12}{'steps':>6}{'train s':>9}{'watch s':>9}{'measurements':>14}{'peak RSS GiB':>14}")
    for side, row in best.items():
        print(f"{side:<12}{row['steps']:>6}{row['seconds']:>9.1f}{row['watch_seconds']:>9.1f}"
              f"{row['measurements']:>14}{row['peak_rss_gib']:>14.2f}")
    ratio = on["seconds"] / off["seconds"]
    per = on["watch_seconds"] / max(on["measurements"], 1)
    print(f"overhead: {ratio:.2f}x the training time without the watch ({on['watch_seconds']:.1f} s in "
          f"{on['measurements']} measurements, {per:.1f} s each); fastest of {args.rounds} round(s) per side")
    if on["stop_reason"]:
        print(f"(the watch stopped the run: {on['stop_reason']})")
    print(json.dumps({"model": args.model or "embedded:gemma3-270m", "rounds": args.rounds, "steps": on["steps"],
                      "watch_settings": args.watch_set or "defaults", "off_seconds": off["seconds"],
                      "on_seconds": on["seconds"], "watch_seconds": on["watch_seconds"],
                      "measurements": on["measurements"], "seconds_per_measurement": round(per, 2),
                      "peak_rss_gib": {"off": off["peak_rss_gib"], "on": on["peak_rss_gib"]},
                      "overhead_ratio": round(ratio, 3)}))


if __name__ == "__main__":
    main()

"""Verification and chat speed: nortune's portable llama.cpp build vs a ``-march=native`` build.

The portable build (toolchain.py: AVX2 baseline, no AVX-512 / AMX kernels) runs on any x86-64
from AVX2 up; a native build may use every instruction this CPU has. This script puts a price on
portability: both wheels (built once and cached, ~8 min each on 2 cores) are installed side by
side into temporary folders, and each GGUF is scored in a fresh child process per build, A B
then B A per round, best round counted:

* verify: the held-out text in windows with all logits, as `nortune export` verifies a file
  (tokens/s of prompt processing);
* chat: greedy generation after a short prompt (tokens/s).

Both builds must give the same perplexity on the text (within 1 %) and the same greedy
generation (``agree``); their top-1 agreement per position is reported beside it (the AVX-512 and
AVX2 kernels round differently, and a 270M model's logits are flat enough for that to flip close
calls). Prints a table, then one JSON line (``speedup_vs_native_build`` < 1 means the portable
build is slower).

    .venv/bin/python benchmarks/llama_cpp_build.py [--gguf runs/demo/export/demo-Q4_K_M.gguf ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, resource, sys, time
import numpy as np
from llama_cpp import Llama
import llama_cpp
path, text, window, gen = sys.argv[1], open(sys.argv[2], encoding="utf-8").read(), int(sys.argv[3]), int(sys.argv[4])
threads = int(sys.argv[5])
llm = Llama(model_path=path, n_ctx=window, n_batch=window, n_ubatch=window, logits_all=True, verbose=False,
            n_threads=threads, n_threads_batch=threads)
ids = llm.tokenize(text.encode(), add_bos=False)
bos = llm.token_bos()
windows = [[bos] + ids[i:i + window - 1] for i in range(0, len(ids), window - 1)]
windows = [w for w in windows if len(w) > 1]
start = time.perf_counter(); argmax = []; tokens = 0; nll = 0.0; scored = 0
for w in windows:
    llm.reset(); llm.eval(w)
    scores = np.asarray(llm.scores[:len(w)], dtype=np.float32)
    argmax += scores.argmax(axis=1).tolist(); tokens += len(w)
    top = scores[:-1].max(axis=1, keepdims=True)
    logz = top[:, 0] + np.log(np.exp(scores[:-1] - top).sum(axis=1))
    nll -= float((scores[np.arange(len(w) - 1), w[1:]] - logz).sum()); scored += len(w) - 1
verify_s = time.perf_counter() - start
llm.reset()
prompt = llm.tokenize("Kva er hovudstaden i Noreg, og kvifor?".encode(), add_bos=True)
start = time.perf_counter(); out = []
for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
    out.append(token)
    if len(out) >= gen: break
gen_s = time.perf_counter() - start
llm.close()
print(json.dumps({"verify_s": verify_s, "verify_tokens": tokens, "ppl": float(np.exp(nll / scored)), "gen_s": gen_s, "gen_tokens": len(out),
                  "argmax": argmax, "generated": out, "library": llama_cpp.__file__,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def install(build_name: str, into: Path) -> Path:
    """The cached wheel of one build (built now if missing), unpacked into its own folder."""
    from nortune.export import toolchain

    build = toolchain.build_for_this_machine(build_name)
    root = toolchain.cache_dir()
    wheels = root / "wheels" / build.key
    wheel = toolchain._cached_wheel(wheels, build)
    if wheel is None:
        print(f"building the {build_name} llama.cpp wheel once (about 8 min on 2 cores) ...", flush=True)
        sdist = toolchain._sdist(root, toolchain.LLAMA_CPP_PYTHON_VERSION, sys.executable)
        wheel = toolchain._build_wheel(sdist, wheels, sys.executable, build)
    target = into / build_name
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True)
    return target


def measure(site: Path, gguf: Path, text: Path, window: int, gen: int, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", CHILD, str(gguf), str(text), str(window), str(gen), str(threads)],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{site.name} build failed on {gguf} (exit {done.returncode}):\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert str(site) in result["library"], f"the child loaded {result['library']}, not the {site.name} build"
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", nargs="+", type=Path,
                        default=sorted((REPO / "runs" / "demo" / "export").glob("*.gguf")),
                        help="GGUF files (default: the demo's exported files; run `make demo` first)")
    parser.add_argument("--text", type=Path, default=REPO / "src/nortune/data/verify_no.txt")
    parser.add_argument("--window", type=int, default=256, help="as export.verify.window")
    parser.add_argument("--gen", type=int, default=64, help="tokens to generate for the chat figure")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    if not args.gguf:
        raise SystemExit("no GGUF files: run `make demo` first or pass --gguf FILE ...")
    sys.path.insert(0, str(REPO / "src"))
    with tempfile.TemporaryDirectory(prefix="llama-builds-") as tmp:
        sites = {name: install(name, Path(tmp)) for name in ("portable", "native")}
        best: dict[tuple[str, str], dict] = {}
        for round_ in range(args.rounds):
            order = ["portable", "native"] if round_ % 2 == 0 else ["native", "portable"]
            for gguf in args.gguf:
                for name in order:
                    result = measure(sites[name], gguf, args.text, args.window, args.gen, args.threads)
                    key = (gguf.name, name)
                    if key not in best or result["verify_s"] < best[key]["verify_s"]:
                        best[key] = {**result, "gen_s": min(result["gen_s"], best.get(key, result)["gen_s"])}
    rows, verify_ratios, gen_ratios, agreement, ppl_ratios, same_text = [], [], [], [], [], True
    print("| file | build | verify tokens/s | chat tokens/s | peak RSS MiB |\n|---|---|---:|---:|---:|")
    for gguf in args.gguf:
        p, n = best[(gguf.name, "portable")], best[(gguf.name, "native")]
        for name, r in (("portable", p), ("native", n)):
            print(f"| {gguf.name} | {name} | {r['verify_tokens'] / r['verify_s']:.0f} | "
                  f"{r['gen_tokens'] / r['gen_s']:.1f} | {r['peak_rss_mib']:.0f} |")
        verify_ratios.append(n["verify_s"] / p["verify_s"])
        gen_ratios.append((p["gen_tokens"] / p["gen_s"]) / (n["gen_tokens"] / n["gen_s"]))
        agreement.append(sum(a == b for a, b in zip(p["argmax"], n["argmax"])) / max(len(p["argmax"]), 1))
        same_text &= p["generated"] == n["generated"]
        ppl_ratios.append(p["ppl"] / n["ppl"])
        rows.append({"file": gguf.name, "verify_speedup": round(verify_ratios[-1], 3),
                     "chat_speedup": round(gen_ratios[-1], 3), "top1_agreement": round(agreement[-1], 4),
                     "ppl_portable": round(p["ppl"], 4), "ppl_native": round(n["ppl"], 4),
                     "portable_peak_rss_mib": round(p["peak_rss_mib"]), "native_peak_rss_mib": round(n["peak_rss_mib"])})
    geo = lambda xs: math.exp(sum(math.log(x) for x in xs) / len(xs))  # noqa: E731
    summary = {"speedup_vs_native_build": round(geo(verify_ratios), 3),
               "chat_speedup_vs_native_build": round(geo(gen_ratios), 3),
               "top1_agreement_min": round(min(agreement), 4), "same_greedy_text": same_text,
               "max_ppl_ratio_off": round(max(abs(r - 1) for r in ppl_ratios), 5),
               "agree": same_text and max(abs(r - 1) for r in ppl_ratios) <= 0.01, "rounds": args.rounds, "threads": args.threads, "files": rows}
    print(f"\nportable / native: verification {summary['speedup_vs_native_build']:.2f}x, "
          f"chat {summary['chat_speedup_vs_native_build']:.2f}x (above 1 = portable faster); "
          f"perplexity within {summary['max_ppl_ratio_off']:.2%}, same greedy text: {same_text}, "
          f"top-1 agreement per position >= {summary['top1_agreement_min']:.2%}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

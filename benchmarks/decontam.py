"""Benchmark: nortune's contamination scan vs a naive Python set-of-substrings and lm-eval's Janitor.

    python benchmarks/decontam.py --train-mb 50 --test-mb 10

Generates Norwegian-like text (a test side of short questions, a chat-JSONL training side
with planted copies of test spans), runs each tool in its own subprocess (so peak RSS is
its own), prints a table, and as its LAST line one JSON object with the figures.
The naive baseline and lm-eval's pure-Python Janitor are slow, so they scan the first
``--baseline-mb`` of the training side; every MB/s is measured on what that tool scanned,
and ``agree`` says every tool's hits are exactly the planted copies in what it scanned. The
short slice runs (nortune and the naive baseline on the same ``--baseline-mb``) are repeated
``--repeat`` times and the median run is reported, so one hiccup of a shared machine does not
decide the ratio.

    python benchmarks/decontam.py --train-mb 1000 --test-mb 10 --nortune-only   # the 1 GB run
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SYLLABLES = ("ka ne lo rø vå sk tr in er de på fj ell hus by gå æ ord ing en et an st ol "
             "sj kj bl gr mo tå ul ør va").split()


def make_vocab(rng: random.Random, size: int = 6000) -> list[str]:
    common = "og i det er som på en til å ikke med for har de av jeg var men seg hun han vi".split()
    made = {"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4))) for _ in range(size)}
    return common * 20 + sorted(made)


def sentence(rng: random.Random, vocab: list[str], chars: int) -> str:
    out, length = [], 0
    while length < chars:
        word = rng.choice(vocab)
        out.append(word)
        length += len(word) + 1
    text = " ".join(out)
    return text[0].upper() + text[1:] + "?"


def generate(folder: Path, train_mb: float, test_mb: float, seed: int,
             plant_every: int) -> tuple[Path, Path, list[tuple[int, int]]]:
    """Test and training files; also every planted copy as (line, byte offset where its line ends)."""
    rng = random.Random(seed)
    vocab = make_vocab(rng)
    tests: list[str] = []
    size = 0
    with open(folder / "test.jsonl", "w", encoding="utf-8") as handle:
        while size < test_mb * 1e6:
            text = sentence(rng, vocab, rng.randint(80, 400))
            tests.append(text)
            size += len(text.encode()) + 1
            handle.write(json.dumps({"id": f"q{len(tests)}", "question": text}, ensure_ascii=False) + "\n")
    planted: list[tuple[int, int]] = []
    size = 0
    with open(folder / "train.jsonl", "w", encoding="utf-8") as handle:
        line = 0
        while size < train_mb * 1e6:
            line += 1
            user = sentence(rng, vocab, rng.randint(100, 600))
            answer = sentence(rng, vocab, rng.randint(400, 2000))
            if line % plant_every == 0:
                source = rng.choice([t for t in (rng.choice(tests) for _ in range(20)) if len(t) >= 130] or tests)
                start = rng.randint(0, max(0, len(source) - 120))
                cut = source[start:start + rng.randint(110, 130)]
                at = rng.randint(0, len(answer))
                answer = answer[:at] + " " + cut + " " + answer[at:]
            record = {"id": f"r{line}", "messages": [{"role": "user", "content": user},
                                                       {"role": "assistant", "content": answer}]}
            text = json.dumps(record, ensure_ascii=False) + "\n"
            size += len(text.encode())
            handle.write(text)
            if line % plant_every == 0:
                planted.append((line, size))
    return folder / "train.jsonl", folder / "test.jsonl", planted


# ---- workers (each runs in its own process) -------------------------------------------------------------
def _train_texts(path: Path, limit: int):
    done = 0
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            done += len(line.encode())
            if done > limit:
                return
            row = json.loads(line)
            yield line_no, "\n".join(m["content"] for m in row["messages"]), len(line.encode())


def _tests(path: Path) -> list[str]:
    return [json.loads(line)["question"] for line in open(path, encoding="utf-8")]


def worker(kind: str, train: Path, test: Path, n: int, limit: int) -> dict:
    started = time.perf_counter()
    hits: set[int] = set()
    scanned = 0
    if kind in ("nortune", "nortune-word"):
        from nortune.decontam.scan import Scanner, ScanSettings
        from nortune.decontam.sources import TestText, iter_training

        methods = ["char_ngram"] if kind == "nortune" else ["word_ngram"]
        scanner = Scanner([TestText(f"t{i}", "bench", t) for i, t in enumerate(_tests(test))],
                          ScanSettings(methods=methods, char_ngrams=[n]))
        indexed = time.perf_counter()

        def limited():
            nonlocal scanned
            for record in iter_training(train, None):
                size = len(record.raw.encode())
                if scanned + size > limit:
                    return
                scanned += size
                yield record

        scanner.scan(limited())
        hits = {r["line"] for r in scanner.summary()["records"]}
        index_info = scanner.summary()["test_side"]["index"]
    elif kind == "naive":
        table: set[str] = set()
        for text in _tests(test):
            text = " ".join(text.casefold().split())
            table.update(text[i:i + n] for i in range(len(text) - n + 1))
        indexed = time.perf_counter()
        for line_no, text, size in _train_texts(train, limit):
            scanned += size
            text = " ".join(text.casefold().split())
            if any(text[i:i + n] in table for i in range(len(text) - n + 1)):
                hits.add(line_no)
        index_info = {"substrings": len(table)}
    elif kind == "lm-eval":
        from lm_eval.decontamination.janitor import Janitor, word_ngrams_indices

        janitor = Janitor(ngram_n=13)
        for text in _tests(test):
            janitor.register_contaminant_python(text)
        indexed = time.perf_counter()
        for line_no, text, size in _train_texts(train, limit):
            scanned += size
            if any(janitor.normalize_string(g) in janitor.dirt_ngrams for g, _ in word_ngrams_indices(text, 13)):
                hits.add(line_no)
        index_info = {"ngrams": len(janitor.dirt_ngrams)}
    else:
        raise SystemExit(f"unknown worker {kind}")
    done = time.perf_counter()
    return {"kind": kind, "index_s": indexed - started, "scan_s": done - indexed, "bytes": scanned,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "hits": sorted(hits),
            "index": index_info}


def agreement(planted: list[tuple[int, int]], runs: dict[str, tuple[dict, int]]) -> dict[str, bool]:
    """Per tool: are its hits exactly the planted copies in the part of the file it scanned?

    ``runs`` maps a name to (worker result, byte limit it scanned). A tool that misses a planted copy
    or flags a record nobody planted disagrees; comparing tools with each other alone would not see
    a miss they share.
    """
    out = {}
    for name, (result, limit) in runs.items():
        expected = sorted(line for line, end in planted if end <= limit)
        out[name] = result["hits"] == expected
    return out


def run_worker(kind: str, train: Path, test: Path, n: int, limit: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", kind, "--train", str(train), "--test", str(test),
                          "--n", str(n), "--limit", str(limit)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-mb", type=float, default=50)
    parser.add_argument("--test-mb", type=float, default=10)
    parser.add_argument("--baseline-mb", type=float, default=3, help="training MB the slow baselines scan")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plant-every", type=int, default=97)
    parser.add_argument("--no-lm-eval", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each slice worker; the median is used")
    parser.add_argument("--nortune-only", action="store_true", help="only the full nortune scan (e.g. 1 GB)")
    parser.add_argument("--worker"), parser.add_argument("--train"), parser.add_argument("--test")
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.train), Path(args.test), args.n, args.limit or 1 << 62)))
        return

    with tempfile.TemporaryDirectory(prefix="nortune-bench-") as tmp:
        t0 = time.perf_counter()
        train, test, planted = generate(Path(tmp), args.train_mb, args.test_mb, args.seed, args.plant_every)
        print(f"generated {train.stat().st_size / 1e6:.1f} MB train ({len(planted)} planted copies), "
              f"{test.stat().st_size / 1e6:.1f} MB test in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        base = int(args.baseline_mb * 1e6)
        everything = 1 << 62
        full = run_worker("nortune", train, test, args.n, 0)
        if args.nortune_only:
            found = agreement(planted, {"full": (full, everything)})["full"]
            print(f"nortune char {args.n}-gram: {full['bytes'] / 1e6:.1f} MB in {full['scan_s']:.1f} s scan "
                  f"+ {full['index_s']:.1f} s index, {full['bytes'] / 1e6 / full['scan_s']:.1f} MB/s, "
                  f"peak RSS {full['peak_rss_mb']:.0f} MB, {len(full['hits'])} contaminated records "
                  f"({len(planted)} planted; hits == planted: {found})")
            full.pop("hits")
            print(json.dumps({**full, "planted": len(planted), "agree": found}))
            return
        half_limit = train.stat().st_size // 2
        half = run_worker("nortune", train, test, args.n, half_limit)

        def median_run(kind: str) -> dict:
            runs = sorted((run_worker(kind, train, test, args.n, base) for _ in range(max(args.repeat, 1))),
                          key=lambda r: r["scan_s"])
            return runs[len(runs) // 2]

        small = median_run("nortune")
        naive = median_run("naive")
        lm = word = None
        if not args.no_lm_eval:
            try:
                import lm_eval  # noqa: F401
                lm = run_worker("lm-eval", train, test, args.n, base)
                word = run_worker("nortune-word", train, test, args.n, base)
            except ImportError:
                print("lm-eval not installed: skipping its 13-gram comparison", file=sys.stderr)

    def mbs(r: dict) -> float:
        return r["bytes"] / 1e6 / max(r["scan_s"], 1e-9)

    rows = [(f"nortune char {args.n}-gram (all)", full), ("nortune, first half", half),
            (f"nortune char {args.n}-gram (baseline slice)", small), (f"naive set of {args.n}-char substrings", naive)]
    if lm:
        rows += [("lm-eval Janitor 13-gram (python)", lm), ("nortune word 13-gram", word)]
    print(f"{'tool':44} {'MB scanned':>10} {'index s':>8} {'scan s':>8} {'MB/s':>8} {'peak RSS MB':>12} {'hits':>6}")
    for name, r in rows:
        print(f"{name:44} {r['bytes'] / 1e6:10.1f} {r['index_s']:8.1f} {r['scan_s']:8.2f} {mbs(r):8.1f} "
              f"{r['peak_rss_mb']:12.0f} {len(r['hits']):6d}")
    figures = {
        "train_mb": round(full["bytes"] / 1e6, 1), "test_mb": args.test_mb, "n": args.n, "planted": len(planted),
        "nortune_mb_s": round(mbs(full), 1), "nortune_index_s": round(full["index_s"], 1),
        "naive_mb_s": round(mbs(naive), 2), "speedup_vs_naive": round(mbs(small) / max(mbs(naive), 1e-9), 1),
        "speedup_vs_naive_full": round(mbs(full) / max(mbs(naive), 1e-9), 1),
        # every tool's hits are exactly the planted copies in what it scanned
        "agree_planted": agreement(planted, {"full": (full, everything), "half": (half, half_limit),
                                             "slice": (small, base), "naive": (naive, base)}),
        "nortune_hits": len(full["hits"]), "naive_hits": len(naive["hits"]),
        "peak_rss_mb": round(full["peak_rss_mb"]), "peak_rss_half_mb": round(half["peak_rss_mb"]),
        "naive_peak_rss_mb": round(naive["peak_rss_mb"]),
        "index_mb": round(full["index"]["char"]["bytes"] / 1e6, 1),
    }
    figures["agree"] = all(figures["agree_planted"].values())
    if lm:
        figures["agree_planted"].update(agreement(planted, {"lm_eval": (lm, base), "word": (word, base)}))
        figures.update({"lm_eval_mb_s": round(mbs(lm), 2), "nortune_word_mb_s": round(mbs(word), 1),
                        "speedup_vs_lm_eval": round(mbs(word) / max(mbs(lm), 1e-9), 1),
                        "agree_lm_eval": lm["hits"] == word["hits"], "lm_eval_peak_rss_mb": round(lm["peak_rss_mb"])})
    print(f"speedup vs naive: {figures['speedup_vs_naive']}x; agree: {figures['agree']}; peak RSS full/half "
          f"{figures['peak_rss_mb']}/{figures['peak_rss_half_mb']} MB (index {figures['index_mb']} MB)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""Records/s and peak memory of a full `nortune curate` run on generated data.

    python benchmarks/curate_throughput.py [--records 1000000]

Generates chat records of about 500 characters (Bokmål, Nynorsk and English sentences
shuffled per record, a few exact duplicates), curates them with the reference shares
(67/31/2/0) and reports wall time, records/s and peak RSS. With a smaller --records the
1 M figure is a linear extrapolation, printed as such. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SENTENCES = {
    "nb": ["Jeg tror ikke at vi rekker bussen hvis vi ikke går nå.", "Hva skal vi spise til middag i dag?",
           "Det var mye snø i fjellet i helgen, men sola kom fram på søndag.", "Hvordan kan jeg hjelpe deg videre?",
           "Kommunen har bestemt at skolen skal pusses opp neste år.", "Vi må huske å handle melk og brød.",
           "Hun sa at hun ville komme tilbake senere i kveld.", "Boka handler om en gutt som vokser opp ved kysten."],
    "nn": ["Eg trur ikkje at vi rekk bussen viss vi ikkje går no.", "Kva skal vi ete til middag i dag?",
           "Det var mykje snø på fjellet i helga, men sola kom fram på søndag.", "Korleis kan eg hjelpe deg vidare?",
           "Kommunen har bestemt at skulen skal pussast opp neste år.", "Vi må hugse å handle mjølk og brød.",
           "Ho sa at ho ville kome tilbake seinare i kveld.", "Boka handlar om ein gut som veks opp ved kysten."],
    "en": ["I do not think we will catch the bus unless we leave now.", "What should we have for dinner today?",
           "There was a lot of snow in the mountains this weekend.", "How can I help you further?"],
}


def generate(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    langs = rng.choices(["nb", "nn", "en"], weights=[60, 35, 5], k=n)
    with open(path, "w", encoding="utf-8") as handle:
        for i, lang in enumerate(langs):
            pool = SENTENCES[lang]
            answer = " ".join(rng.choice(pool) for _ in range(7)) + f" Nr. {i}."
            question = rng.choice(pool)
            if i % 50 == 49:  # a few exact duplicates
                handle.write(last + "\n")
                continue
            last = json.dumps({"messages": [{"role": "user", "content": question},
                                            {"role": "assistant", "content": answer}]}, ensure_ascii=False)
            handle.write(last + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    from nortune.config import Recipe
    from nortune.curate.stage import run

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "gen.jsonl"
        generate(src, args.records)
        size_mb = src.stat().st_size / 1e6
        recipe = Recipe.model_validate({"name": "bench", "runs_dir": str(Path(tmp) / "runs"), "curate": {
            "sources": [{"name": "gen", "path": str(src)}], "filters": {"max_repetition": 1.0},
            "dedup": {"near": True}}})
        start = time.perf_counter()
        manifest = run(recipe, force=True)
        wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rate = args.records / wall
    extrapolated = args.records < 1_000_000
    est_1m = 1_000_000 / rate
    print(f"curate throughput on {args.records} generated records ({size_mb:.0f} MB JSONL)")
    print(f"{'records':>10} {'wall s':>8} {'records/s':>10} {'peak RSS MB':>12} {'1M records, min':>16}")
    print(f"{args.records:>10} {wall:>8.1f} {rate:>10.0f} {peak_mb:>12.0f} {est_1m / 60:>15.1f}"
          + (" (extrapolated)" if extrapolated else ""))
    print(json.dumps({"records": args.records, "wall_s": round(wall, 2), "records_per_s": round(rate, 1),
                      "peak_rss_mb": round(peak_mb), "minutes_for_1m": round(est_1m / 60, 1),
                      "extrapolated": extrapolated, "output_records": manifest["metrics"]["output_records"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

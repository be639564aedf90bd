"""Train the shipped langid model from labelled TSVs (``label<TAB>source<TAB>text``).

    python -m nortune.curate.langid_train TRAIN.tsv [...] OUT.json.gz

Multinomial naive Bayes counts over the features of ``nortune.curate.langid.features``
(words, character 1-4-grams, and the nb-only / nn-only lexicon flags). Only used to
rebuild ``langid_model.json.gz``; nothing imports this module at run time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path

from nortune.curate.langid import features, load_lexicon, tokens

SCALE = 100  # log-probabilities are stored as integers in centi-nats


def read_tsv(path: Path) -> list[tuple[str, str, str]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 3:
                rows.append((parts[0], parts[1], parts[-1]))
    return rows


def train(rows, lexicon: dict[str, str] | None, max_n: int = 4, min_count: int = 2,
          alpha: float = 0.5, max_features: int = 120_000, word_weight: float = 2.0,
          lexicon_weight: float = 1.0) -> dict:
    counts: dict[str, Counter] = defaultdict(Counter)
    for label, _, text in rows:
        counts[label].update(features(tokens(text), max_n, lexicon))
    classes = sorted(counts)
    overall: Counter = Counter()
    for name in classes:
        overall.update(counts[name])
    kept = [f for f, n in overall.most_common(max_features) if n >= min_count]
    totals = {c: sum(counts[c][f] for f in kept) for c in classes}
    denom = {c: math.log(totals[c] + alpha * len(kept)) for c in classes}
    table = {f: [round(SCALE * (math.log(counts[c][f] + alpha) - denom[c])) for c in classes] for f in kept}
    return {"classes": classes, "max_n": max_n, "scale": SCALE, "word_weight": word_weight,
            "lexicon_weight": lexicon_weight, "temperature": 2.0, "table": table}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--word-weight", type=float, default=2.0)
    parser.add_argument("--lexicon-weight", type=float, default=1.0)
    parser.add_argument("--max-features", type=int, default=120_000)
    parser.add_argument("--no-lexicon", action="store_true")
    parser.add_argument("tsv", nargs="+", help="training TSVs, then the output .json.gz")
    args = parser.parse_args(argv)
    *inputs, out = args.tsv
    rows = [row for path in inputs for row in read_tsv(Path(path))]
    lexicon = None if args.no_lexicon else load_lexicon()
    model = train(rows, lexicon, alpha=args.alpha, max_features=args.max_features,
                  word_weight=args.word_weight, lexicon_weight=args.lexicon_weight)
    with gzip.open(out, "wt", encoding="utf-8", compresslevel=9) as handle:
        json.dump(model, handle, ensure_ascii=False, separators=(",", ":"))
    print(f"{len(rows)} rows, {len(model['table'])} features -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

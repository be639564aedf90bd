"""Train nortune's langid model (``src/nortune/curate/langid_model.json.gz``).

    python tools/langid/train.py OUT.json.gz TRAIN.tsv [TRAIN.tsv ...] [--exclude TEST.tsv]
        [--bits 19] [--alpha 0.5] [--binary nblr] [--c-binary 0.03] [--eval DEV.tsv]

Rows are ``label<TAB>package<TAB>text`` (``tools/langid/extract.py``). Features are
``nortune.curate.langid.feature_indices`` (hashed character 1-5-grams, words, word bigrams)
plus the nb-only / nn-only hunspell lexicon counts, exactly as at run time. Two models:
a multinomial naive Bayes over every label (smoothing ``--alpha``; its centred
log-probabilities are the class columns), and a scikit-learn logistic regression (L2,
lbfgs) for nb-vs-nn fitted on the nb and nn rows only (the last column); by default an
NB-LR (``--binary nblr``): the counts are scaled by the nb-vs-nn naive Bayes log-count
ratio (smoothing ``--binary-alpha``) before the fit, which generalises better to other
translator teams than a plain LR (``--binary lr``); to its logit
``--lexicon-logit`` is added per nb-only word (subtracted per nn-only word) at run time. Weights are quantised to int8 per column
(scale = max |w| / 127); buckets whose weights all round to 0 are not stored. Any text
that occurs in an ``--exclude`` file is dropped from training (keeps the test set
untouched). ``--eval`` prints nb-vs-nn and 4-way accuracy of the written model on a TSV.
scikit-learn and scipy are only needed here, not at run time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from nortune.curate.langid import (LangId, Lexicon, encode_array, feature_indices,  # noqa: E402
                                   normalise)


def read_tsv(path: Path) -> list[tuple[str, str]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 3:
                rows.append((parts[0], parts[-1]))
    return rows


def matrix(texts: list[str], bits: int, lexicon: Lexicon) -> sparse.csr_matrix:
    base = 1 << bits
    indptr, indices = [0], []
    for text in texts:
        norm = normalise(text)
        if norm:
            idx, words = feature_indices(norm, bits)
            nb, nn = lexicon.counts(words)
            idx = np.concatenate([idx, np.full(nb, base), np.full(nn, base + 1)])
        else:
            idx = np.zeros(0, dtype=np.int64)
        indices.append(idx)
        indptr.append(indptr[-1] + len(idx))
    cols = np.concatenate(indices)
    data = np.ones(len(cols), dtype=np.float32)
    x = sparse.csr_matrix((data, cols, np.asarray(indptr)), shape=(len(texts), base + 2))
    x.sum_duplicates()  # repeated buckets become counts
    return x


def nb_log_ratio(x: sparse.csr_matrix, y: np.ndarray, alpha: float) -> np.ndarray:
    """Per bucket log(P(bucket | nb) / P(bucket | nn)) of a smoothed multinomial naive Bayes."""
    p = np.asarray(x[y == 1].sum(axis=0)).ravel() + alpha
    q = np.asarray(x[y == 0].sum(axis=0)).ravel() + alpha
    return np.log(p / p.sum()) - np.log(q / q.sum())


def quantise(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scale = np.abs(weights).max(axis=0) / 127.0
    q = np.rint(weights / scale).astype(np.int8)
    rows = np.flatnonzero(np.any(q != 0, axis=1)).astype(np.int32)
    return rows, q[rows], scale


def evaluate(model: LangId, rows: list[tuple[str, str]]) -> dict:
    four = binary = binary_n = 0
    for label, text in rows:
        public, _ = model.predict(text)
        four += public == (label if label in ("nb", "nn", "en") else "other")
        if label in ("nb", "nn") and len([w for w in normalise(text).split() if len(w) >= 2]) >= 6:
            binary_n += 1
            binary += ("nb" if model.nb_probability(text) >= 0.5 else "nn") == label
    return {"nb_vs_nn": round(binary / max(binary_n, 1), 4), "nb_nn_rows": binary_n,
            "4way": round(four / max(len(rows), 1), 4), "rows": len(rows)}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("train", nargs="+")
    parser.add_argument("--exclude", action="append", default=[])
    parser.add_argument("--eval", action="append", default=[])
    parser.add_argument("--bits", type=int, default=19)
    parser.add_argument("--alpha", type=float, default=0.5, help="naive Bayes smoothing")
    parser.add_argument("--temperature", type=float, default=2.0,
                        help="naive Bayes scores are divided by temperature * sqrt(words)")
    parser.add_argument("--binary", choices=["nblr", "lr"], default="nblr",
                        help="nb-vs-nn model: NB-scaled logistic regression (default) or plain LR")
    parser.add_argument("--binary-alpha", type=float, default=1.0, help="smoothing of the NB-LR ratio")
    parser.add_argument("--c-binary", type=float, default=0.03, help="inverse L2 strength, nb-vs-nn")
    parser.add_argument("--lexicon-logit", type=float, default=0.0,
                        help="added to the nb-vs-nn logit per nb-only word, subtracted per nn-only word")
    parser.add_argument("--binary-temperature", type=float, default=1.0,
                        help="the nb-vs-nn logit is divided by this (calibration)")
    parser.add_argument("--cache", help="feature matrix .npz, reused when present (same inputs!)")
    parser.add_argument("--max-iter", type=int, default=300)
    args = parser.parse_args(argv)
    excluded = {text for path in args.exclude for _, text in read_tsv(Path(path))}
    seen: set[tuple[str, str]] = set()
    rows = []
    for path in args.train:
        for label, text in read_tsv(Path(path)):
            if text not in excluded and (label, text) not in seen:
                seen.add((label, text))
                rows.append((label, text))
    labels = np.array([label for label, _ in rows])
    classes = sorted(set(labels))
    print(f"{len(rows)} training rows ({', '.join(f'{c} {np.sum(labels == c)}' for c in classes)}),"
          f" {len(excluded)} excluded texts", flush=True)
    lexicon = Lexicon.load()
    start = time.perf_counter()
    cache = Path(args.cache) if args.cache else None
    if cache and cache.exists():
        x = sparse.load_npz(cache)
    else:
        x = matrix([text for _, text in rows], args.bits, lexicon)
        if cache:
            sparse.save_npz(cache, x)
    print(f"features: {x.shape}, {x.nnz} non-zeros, {time.perf_counter() - start:.0f} s", flush=True)
    # Multinomial naive Bayes over all labels: centred log-probabilities per bucket.
    onehot = sparse.csr_matrix((np.ones(len(rows)), (np.searchsorted(classes, labels), np.arange(len(rows)))),
                               shape=(len(classes), len(rows)))
    counts = np.asarray((onehot @ x).todense())
    logp = np.log(counts + args.alpha) - np.log(counts.sum(axis=1, keepdims=True) + args.alpha * x.shape[1])
    logp[:, counts.sum(axis=0) == 0] = 0.0  # buckets never seen carry no evidence
    nb_weights = (logp - logp.mean(axis=0, keepdims=True)).T
    norsk = np.flatnonzero(np.isin(labels, ["nb", "nn"]))
    xn, yn = x[norsk], (labels[norsk] == "nb").astype(int)  # positive class: nb
    if args.binary == "nblr":
        # NB-LR (Wang & Manning 2012): each bucket's count is scaled by its nb-vs-nn naive Bayes
        # log-count ratio before the logistic regression; the product is one linear weight.
        ratio = nb_log_ratio(xn, yn, args.binary_alpha)
    else:
        ratio = np.ones(x.shape[1])
    binary = LogisticRegression(C=args.c_binary, max_iter=args.max_iter, tol=1e-5)
    binary.fit(xn @ sparse.diags(ratio), yn)
    print(f"fitted in {time.perf_counter() - start:.0f} s", flush=True)
    weights = np.concatenate([nb_weights, (binary.coef_[0] * ratio)[:, None]], axis=1)
    rows_kept, values, scale = quantise(weights)
    model = {"format": 2, "classes": classes, "bits": args.bits, "max_n": 5,
             "bias": [0.0] * len(classes) + [float(binary.intercept_[0])],
             "temperature": args.temperature, "lexicon_logit": args.lexicon_logit,
             "binary_temperature": args.binary_temperature,
             "scale": [*map(float, scale)], "rows": encode_array(rows_kept),
             "values": encode_array(values),
             "training": {"rows": len(rows), "alpha": args.alpha, "c_binary": args.c_binary,
                          "binary": args.binary, "binary_alpha": args.binary_alpha,
                          "files": [Path(p).name for p in args.train]}}
    with gzip.open(args.out, "wt", encoding="utf-8", compresslevel=9) as handle:
        json.dump(model, handle, separators=(",", ":"))
    size = Path(args.out).stat().st_size / 1e6
    print(f"{len(rows_kept)} of {weights.shape[0]} buckets stored -> {args.out} ({size:.1f} MB)", flush=True)
    if args.eval:
        loaded = LangId(model, lexicon)
        for path in args.eval:
            print(path, json.dumps(evaluate(loaded, read_tsv(Path(path)))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The demo's tuning study (issue 20): choose the demo's training settings on a development split.

Each variant is the demo recipe plus dotted overrides, trained in its own run folder
(``runs/tune-demo-<variant>``: curate, decontam and train through the pipeline, so the
contamination gate and the recipe's language mix hold as in ``make demo``). Each trained adapter
and the base model are scored on the development texts of every source (``src/nortune/data/heldout/<source>/dev``:
handwritten and Debian's catalogues, disjoint from training and from the held-out split:
``tests/unit/test_heldout_disjoint.py``), and the relative change of perplexity per source and language is
printed with its paired bootstrap interval. Each variant
that meets the thesis is also exported (the demo's Q8_0 and Q4_K_M, verified against transformers): a variant
the demo cannot ship, because a GGUF fails its verification floor, is not chosen.

``--final VARIANT`` scores the chosen variant on the held-out split (``src/nortune/data/heldout/<source>``) once,
after the choice; ``--final auto`` chooses by the rule in ``choose``. ``make demo`` then reports the
held-out numbers through ``evaluate.perplexity``.

Usage: python scripts/tune_demo.py [--variants NAME ...] [--final NAME]
Results accumulate in runs/tune-demo-sources/study.json (a killed study resumes: trained variants skip).
The last line printed is one JSON object with every variant's figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nortune.config.base import language_of, packaged_heldout

ROOT = Path(__file__).resolve().parents[1]
DEV = packaged_heldout("dev")
HELDOUT = packaged_heldout()
# The variants tried: the demo's settings, then one change at a time. On both sources (issue 44) the demo's LR 4e-4
# (chosen on handwritten dev text) raised Debian English by 15 %: lower rates and fewer steps are what is tried.
VARIANTS: dict[str, list[str]] = {
    "demo": [],
    "lr1e-4": ["train.lr=1e-4"],
    "lr5e-5": ["train.lr=5e-5"],
    "lr2e-5": ["train.lr=2e-5"],
    "steps15": ["train.max_steps=15"],
}
OUT = ROOT / "runs" / "tune-demo-sources"  # the study on both sources (issue 44); tune-demo was handwritten only
TOLERANCE = 0.02  # English may rise at most 2 % (evaluate.perplexity.tolerance)


def recipe_for(variant: str, overrides: list[str]):
    from nortune.config import load_recipe

    return load_recipe(ROOT / "configs/demo.yaml", [f"name=tune-demo-{variant}", *overrides])


def scored_sets(recipe, label: str, texts: dict[str, Path]) -> dict[str, dict]:
    """Per-text NLL and token counts of each text file, for base or the variant's tuned adapter."""
    from nortune.evaluate import perplexity
    from nortune.evaluate.stage import model_spec

    settings = recipe.evaluate.perplexity
    model, tokenizer, device = perplexity.load_model(recipe, model_spec(recipe, label)[0])
    out = {}
    for name, path in texts.items():
        scored = perplexity.score(model, tokenizer, perplexity.read_texts(path), settings.max_tokens_per_text,
                                  settings.batch_size, device, settings.memory_mib * 2**20)
        out[name] = {"nll": [s[0] for s in scored], "tokens": [s[1] for s in scored]}
    return out


def changes(base: dict[str, dict], tuned: dict[str, dict]) -> dict[str, dict]:
    from nortune.evaluate.perplexity import ratio_bootstrap

    out = {}
    for name in base:
        point, (lo, hi) = ratio_bootstrap(base[name]["nll"], base[name]["tokens"], tuned[name]["nll"],
                                          tuned[name]["tokens"], samples=2000, confidence=0.95)
        out[name] = {"change": round(point, 4), "ci": [round(lo, 4), round(hi, 4)]}
    return out


def meets_thesis(change: dict[str, dict]) -> bool:
    """On every source: nb and nn significantly lower, English's upper bound within the tolerance."""
    return all(row["ci"][1] < 0 if language_of(name) in ("nb", "nn") else row["ci"][1] <= TOLERANCE
               for name, row in change.items())


def trained_drop(change: dict[str, dict]) -> float:
    """The mean relative change of the nb and nn sets of every source (negative: better)."""
    rows = [row["change"] for name, row in change.items() if language_of(name) in ("nb", "nn")]
    return sum(rows) / len(rows)


def choose(dev: dict[str, dict]) -> str:
    """The rule: of the variants that meet the thesis on dev (every source) and whose GGUF files pass
    verification, the one with the largest mean drop of nb and nn perplexity over the sources (the demo's own
    settings when none does)."""
    passing = {v: r for v, r in dev.items() if r["meets_thesis"] and r.get("export_passed")}
    if not passing:
        return "demo"
    return min(passing, key=lambda v: trained_drop(passing[v]["change"]))


def export_passed(variant: str, overrides: list[str]) -> tuple[bool, str]:
    """Export the variant's merged model to the demo's GGUF types and verify them, as `make demo` does."""
    from nortune.pipeline import problems, run_pipeline

    recipe = recipe_for(variant, overrides)
    found = problems(run_pipeline(recipe, only=["export"]), recipe)  # what would make `nortune run` exit 1
    return not found, "; ".join(found) or "verified"


def train(variant: str, overrides: list[str]) -> tuple[object, float]:
    from nortune.pipeline import failures, run_pipeline

    recipe = recipe_for(variant, overrides)
    started = time.perf_counter()
    results = run_pipeline(recipe, stop="train")
    if failures(results):
        sys.exit(f"{variant}: {failures(results)} failed")
    return recipe, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--final", choices=[*VARIANTS, "auto"],
                        help="score this variant on the held-out split (once); auto: the rule in choose()")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    study_file = OUT / "study.json"
    study = json.loads(study_file.read_text()) if study_file.is_file() else {"dev": {}}
    base_recipe = recipe_for("demo", [])
    if "base" not in study:
        study["base"] = scored_sets(base_recipe, "base", DEV)
    for variant in args.variants:
        if variant in study["dev"]:
            continue
        recipe, seconds = train(variant, VARIANTS[variant])
        tuned = scored_sets(recipe, "tuned", DEV)
        change = changes(study["base"], tuned)
        study["dev"][variant] = {"overrides": VARIANTS[variant], "train_s": round(seconds, 1), "change": change,
                                 "meets_thesis": meets_thesis(change)}
        study_file.write_text(json.dumps(study, indent=2))
    for variant in args.variants:  # only a variant that meets the thesis can be chosen, so only those are exported
        if study["dev"][variant]["meets_thesis"] and "export_passed" not in study["dev"][variant]:
            passed, why = export_passed(variant, VARIANTS[variant])
            study["dev"][variant].update(export_passed=passed, export=why)
            study_file.write_text(json.dumps(study, indent=2))
    if args.final:
        chosen = choose(study["dev"]) if args.final == "auto" else args.final
        recipe = recipe_for(chosen, VARIANTS[chosen])  # its adapter: trained and scored on dev above
        held_base = scored_sets(base_recipe, "base", HELDOUT)
        change = changes(held_base, scored_sets(recipe, "tuned", HELDOUT))
        study.setdefault("finals", {})[chosen] = {"rule": args.final == "auto", "change": change,
                                                  "meets_thesis": meets_thesis(change)}
        study_file.write_text(json.dumps(study, indent=2))
    print(f"{'variant':<11} {'overrides':<34} {'train s':>8}  " + "  ".join(f"{lang:>24}" for lang in DEV))
    for variant, row in study["dev"].items():
        cells = "  ".join(f"{100 * c['change']:+6.1f}% [{100 * c['ci'][0]:+5.1f},{100 * c['ci'][1]:+5.1f}]"
                          for c in row["change"].values())
        mark = ("  meets the thesis" if row["meets_thesis"] else "  misses the thesis") + (
            "" if "export_passed" not in row else ", GGUF verified" if row["export_passed"] else ", GGUF FAILED")
        print(f"{variant:<11} {' '.join(row['overrides']) or '(demo)':<34} {row['train_s']:>8}  {cells}{mark}")
    for variant, final in study.get("finals", {}).items():
        print(f"held-out split, {variant}: {json.dumps(final['change'])}")
    print(json.dumps({"dev": {v: {**r["change"], "meets_thesis": r["meets_thesis"],
                                  "export_passed": r.get("export_passed")} for v, r in study["dev"].items()},
                      "chosen": choose(study["dev"]), "finals": study.get("finals", {})}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

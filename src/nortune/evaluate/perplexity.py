"""Held-out perplexity per language (``evaluate.perplexity``): the forgetting guard.

For one evaluated model (base, tuned, preference) every held-out text is scored on its own:
summed negative log-likelihood of its tokens (each token given the ones before it; the first
token, BOS when the tokenizer adds one, is context only) and the number of scored tokens. They
are kept per text in ``evaluate/<label>/perplexity.json`` so two models can be paired text by
text. Perplexity of a set = exp(sum NLL / sum tokens).

The comparison with the model it was trained from (``evaluate/<label>/compare/perplexity.json``
and ``perplexity.md``) gives per set the relative change of perplexity with a paired bootstrap
interval over texts, and the **forgetting flag**: for a set the recipe does not train toward, a
significant rise (interval above 0) beyond ``tolerance``; for a trained set, any significant
rise (they should improve). A finding is printed loudly and, unless ``allow_forgetting``, makes
``nortune run`` and ``nortune evaluate`` exit 1.

The model is loaded from the model args the NorEval pass resolved (``stage.model_spec``, passed in
by the stage): the base from ``model.source``, the tuned model as base + ``adapter_lora`` (PEFT,
merged into the weights as the nortune backend does) or the merged folder; same dtype and device.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from nortune import markup
from nortune.config.base import language_of
from nortune.jsonl import DataError
from nortune.runs import atomic_write_text
from nortune.text_perplexity import ratio_bootstrap, read_texts, score, verdict

log = logging.getLogger(__name__)
FILE = "perplexity.json"


def load_model(recipe: Any, args: dict[str, Any]) -> tuple[Any, Any, str]:
    """(model, tokenizer, device) from the NorEval pass's model args (``stage.model_spec``): the same model."""
    from transformers import AutoTokenizer

    from nortune.adapters import resolve_device
    from nortune.models import load_model as load_weights

    device = args.get("device") or resolve_device(recipe.evaluate.device)
    model = load_weights(args["pretrained"], args.get("dtype") or "auto", device, args.get("revision"))
    adapter = args.get("peft") or args.get("lora_local_path")
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(args.get("tokenizer") or args["pretrained"], revision=args.get("revision"))
    return model, tokenizer, device


def measure(recipe: Any, label: str, args: dict[str, Any]) -> dict[str, Any]:
    """Per-text NLL and token counts of every held-out set for ``label`` (loaded from ``args``, the model args
    ``stage.model_spec`` resolved for it), with its perplexity and the time taken."""
    settings = recipe.evaluate.perplexity
    started = time.perf_counter()
    model, tokenizer, device = load_model(recipe, args)
    loaded = time.perf_counter()
    sets: dict[str, Any] = {}
    for name, path in settings.texts.items():
        texts = read_texts(Path(path))
        scored = score(model, tokenizer, texts, settings.max_tokens_per_text, settings.batch_size, device,
                       settings.memory_mib * 2**20)
        nll, tokens = [s[0] for s in scored], [s[1] for s in scored]
        sets[name] = {"file": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
                      "texts": len(texts), "tokens": sum(tokens), "ppl": math.exp(sum(nll) / sum(tokens)),
                      "nll_per_text": nll, "tokens_per_text": tokens}
    done = time.perf_counter()
    del model
    return {"label": label, "device": device, "dtype": str(recipe.evaluate.dtype or recipe.model.dtype),
            "max_tokens_per_text": settings.max_tokens_per_text, "sets": sets,
            "seconds": {"load": round(loaded - started, 2), "score": round(done - loaded, 2),
                        "total": round(done - started, 2)}}


def write(out_dir: Path, result: dict[str, Any]) -> Path:
    path = Path(out_dir) / FILE
    atomic_write_text(path, json.dumps(result, indent=1))
    return path


def load(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (evaluate with evaluate.perplexity configured)") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None


def _ppl(scored: dict[str, Any]) -> float:
    """exp(sum NLL / sum tokens), from the per-text values the bootstrap pairs (never from a stored total)."""
    return math.exp(sum(scored["nll_per_text"]) / sum(scored["tokens_per_text"]))


def compare(base: dict[str, Any], tuned: dict[str, Any], settings: Any, samples: int,
            confidence: float) -> dict[str, Any]:
    """Per set: base and tuned perplexity, relative change with its interval, verdict; and the findings."""
    rows = []
    for name, b in base["sets"].items():
        t = tuned["sets"].get(name)
        if t is None:
            continue
        if b["sha256"] != t["sha256"] or len(b["nll_per_text"]) != len(t["nll_per_text"]) \
                or b.get("tokens_per_text") != t.get("tokens_per_text"):
            raise DataError(f"perplexity set {name}: base and {tuned['label']} scored different texts "
                            "(re-evaluate both with the same evaluate.perplexity)")
        change, ci = ratio_bootstrap(b["nll_per_text"], b["tokens_per_text"], t["nll_per_text"],
                                     t["tokens_per_text"], samples, confidence)
        trained = language_of(name) in settings.trained
        text, flagged = verdict(change, ci, trained, settings.tolerance, len(b["nll_per_text"]))
        rows.append({"set": name, "trained": trained, "texts": b["texts"], "base_ppl": _ppl(b),
                     "tuned_ppl": _ppl(t), "change": change, "ci": list(ci), "verdict": text,
                     "forgetting": flagged})
    return {"base": base["label"], "tuned": tuned["label"], "confidence": confidence, "bootstrap_samples": samples,
            "tolerance": settings.tolerance, "trained": list(settings.trained),
            "allow_forgetting": settings.allow_forgetting, "rows": rows,
            "forgetting": [r["set"] for r in rows if r["forgetting"]],
            "seconds": {base["label"]: base["seconds"]["total"], tuned["label"]: tuned["seconds"]["total"]}}


def markdown(result: dict[str, Any]) -> str:
    conf = f"{result['confidence']:.0%}"
    tuned, base = markup.text(result["tuned"]), markup.text(result["base"])
    lines = [f"# Held-out perplexity: {tuned} vs {base}", ""]
    if result["forgetting"]:
        lines += [f"> **FORGETTING: {', '.join(map(markup.text, result['forgetting']))}** "
                  f"(significant rise; {'allowed by the recipe' if result['allow_forgetting'] else 'the run fails'})",
                  ""]
    lines += [table(result), "",
              f"Change = {tuned}/{base} perplexity - 1; {conf} paired bootstrap over texts "
              f"({result['bootstrap_samples']} resamples). Trained toward: "
              f"{', '.join(map(markup.text, result['trained'])) or 'none'}; "
              f"other sets may rise by at most {result['tolerance']:.0%}. Seconds: "
              + ", ".join(f"{markup.text(k)} {markup.text(v)}" for k, v in result["seconds"].items()) + "."]
    return "\n".join(lines) + "\n"


def table(result: dict[str, Any], red: bool = True) -> str:
    """The per-set markdown table (base ppl, tuned ppl, change with interval, verdict; ``red``: a flagged
    verdict in bold)."""
    lines = [f"| set | texts | {markup.text(result['base'])} ppl | {markup.text(result['tuned'])} ppl "
             f"| change [{result['confidence']:.0%} CI] | verdict |", "|---|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        verdict = f"**{markup.text(r['verdict'])}**" if r["forgetting"] and red else markup.text(r["verdict"])
        lines.append(f"| {markup.text(r['set'])}{' (trained)' if r['trained'] else ''} | {r['texts']} | "
                     f"{r['base_ppl']:.2f} | {r['tuned_ppl']:.2f} | {r['change']:+.1%} "
                     f"[{r['ci'][0]:+.1%}, {r['ci'][1]:+.1%}] | {verdict} |")
    return "\n".join(lines)


def label_markdown(result: dict[str, Any], noreval_seconds: float | None = None) -> str:
    """The section of ``evaluate/<label>/report.md``: perplexity per set of this one model, and its cost."""
    lines = ["", "## Held-out perplexity", "", "| set | texts | tokens | perplexity |", "|---|---:|---:|---:|"]
    lines += [f"| {markup.text(name)} | {s['texts']} | {s['tokens']} | {s['ppl']:.2f} |"
              for name, s in result["sets"].items()]
    took = result["seconds"]
    cost = f"{took['total']} s ({took['load']} s loading, {took['score']} s scoring)"
    if noreval_seconds:
        cost += f", against {noreval_seconds} s for the NorEval pass"
    lines += ["", f"Each text scored on its own (first {result['max_tokens_per_text']} tokens at most), "
                  f"{markup.text(result['device'])}, {markup.text(result['dtype'])}: {cost}. The comparison with "
                  "the model it was trained from is in compare/perplexity.md.", ""]
    return "\n".join(lines)


def forgetting_banner(result: dict[str, Any]) -> list[str]:
    """The loud terminal lines for forgetting in ``compare/perplexity.json``, like NorEval's regression banner."""
    if not result["forgetting"]:
        return []
    bar = "!" * 78
    lines = ["", bar, f"FORGETTING ({result['tuned']} vs {result['base']}, held-out perplexity, "
                      f"{result['confidence']:.0%} paired bootstrap):"]
    lines += [f"  {r['set']}: ppl {r['base_ppl']:.2f} -> {r['tuned_ppl']:.2f}, {r['change']:+.1%} "
              f"[{r['ci'][0]:+.1%}, {r['ci'][1]:+.1%}]" for r in result["rows"] if r["forgetting"]]
    if result["allow_forgetting"]:
        lines.append("  (evaluate.perplexity.allow_forgetting: true, the run does not fail)")
    return [*lines, bar, ""]


def compare_with_baseline(recipe: Any, label: str, baseline: Path | None = None) -> dict[str, Any] | None:
    """The perplexity comparison of ``label`` with the model it was trained from (or ``baseline``'s folder),
    written to ``evaluate/<label>/compare/perplexity.{json,md}``; None when off or nothing to compare with."""
    from nortune.evaluate.compare import BASELINE_OF
    from nortune.runs import RunLayout

    settings = recipe.evaluate.perplexity
    if settings is None:
        return None
    layout = RunLayout.of(recipe)
    if baseline is None:
        if label not in BASELINE_OF:
            return None
        base_file = layout.evaluate_dir(BASELINE_OF[label]) / FILE
    else:
        base_file = (Path(baseline) if Path(baseline).is_dir() else Path(baseline).parent) / FILE
    if not base_file.is_file():
        return None
    result = compare(load(base_file), load(layout.evaluate_dir(label) / FILE), settings,
                     recipe.evaluate.bootstrap_samples, recipe.evaluate.confidence)
    out = layout.compare_dir(label)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / FILE, json.dumps(result, indent=2))
    atomic_write_text(out / "perplexity.md", markdown(result))
    return result

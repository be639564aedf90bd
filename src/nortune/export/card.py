"""The model card (README.md): built only from what the run folder records, nothing typed by hand."""

from __future__ import annotations

import json
from typing import Any

from nortune import markup
from nortune.config import Recipe
from nortune.runs import RunLayout, read_manifest


def _share_table(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    rows = [f"| {k} | {v} | {100 * v / total:.1f} % |" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    return "\n".join(["| bucket | records | share |", "|---|---:|---:|", *rows])


def _composition(layout: RunLayout) -> str:
    curate = read_manifest(layout.curate_dir)
    if curate and curate.get("metrics", {}).get("by_bucket"):
        return ("Curated by `nortune curate` (language identified per record):\n\n"
                + _share_table(curate["metrics"]["by_bucket"]))
    train = read_manifest(layout.model_dir("train")) or {}
    data = train.get("data") or {}
    if data:
        return (f"Training file {markup.code(data.get('path'))}: {data.get('used')} records used, "
                f"{data.get('tokens')} tokens. No curate report in this run, so no language mix is recorded.")
    return "Not recorded in this run folder."


def _contamination(layout: RunLayout) -> str:
    decontam = read_manifest(layout.decontam_dir())
    if decontam:
        m = decontam.get("metrics", {})
        hits = ", ".join(f"{k.removeprefix('hits_')}: {v}" for k, v in sorted(m.items()) if k.startswith("hits_"))
        verdict = "passed" if m.get("passed") else "FAILED"
        return (f"{verdict}: {m.get('contaminated_records')} contaminated of {m.get('records')} training records "
                f"against {m.get('test_texts')} benchmark test texts ({hits}).")
    gate = ((read_manifest(layout.model_dir("train")) or {}).get("contamination_gate")) or {}
    if gate:
        note = gate.get("override") or gate.get("reason") or ""
        return (f"No decontam report in this run folder; the train gate recorded: {markup.code(json.dumps(gate))} "
                f"{markup.text(note)}").strip()
    return "No contamination check is recorded in this run folder."


def _evaluation(layout: RunLayout) -> str:
    """The first of: a comparison with the base (preference, then tuned), the tuned report, any report."""
    candidates = [layout.compare_dir(label) / "compare.md" for label in ("preference", "tuned")] + \
                 [layout.evaluate_dir(label) / "report.md" for label in ("tuned", "preference", "base")]
    for path in candidates:
        if path.is_file():
            body = path.read_text(encoding="utf-8").strip()
            return f"From {markup.code(path.relative_to(layout.root))}:\n\n{body}"
    return "No evaluation in this run folder (run `nortune evaluate`)."


def front_matter(recipe: Recipe) -> str:
    """The card's metadata as YAML, written by huggingface_hub's own serialiser (never by formatting
    strings), so a recipe value stays one value however it is spelled."""
    from huggingface_hub import ModelCardData

    card = recipe.export.card
    return ModelCardData(license=card.license, language=list(card.language), base_model=recipe.model.source,
                         tags=["nortune", "norwegian", "gguf", "pissa", "lora"]).to_yaml()


def model_card(recipe: Recipe, checks: list[dict[str, Any]], files: dict[str, str],
               merge_info: dict[str, Any], verification_table: str) -> str:
    layout = RunLayout.of(recipe)
    card = recipe.export.card
    name = card.model_name or recipe.name
    train = read_manifest(layout.model_dir("train")) or {}
    metrics = train.get("metrics", {})
    trainable, total = metrics.get("trainable_params"), metrics.get("total_params")
    share = f" ({100 * trainable / total:.4f} % of {total:,})" if trainable and total else ""
    adapter, tr = recipe.adapter, recipe.train
    layers = markup.text(_adapted_layers(layout) or ", ".join(adapter.layers.layer_types or [])
                         or adapter.layers.indices or "the recipe's default")
    gguf_lines = "\n".join(f"- {markup.code(f)} ({t})" for t, f in files.items()) or "- none"
    failed = [markup.text(c["file"]) for c in checks if not c["passed"]]
    warning = (f"\n> **Verification failed for {', '.join(failed)}**: do not ship those files.\n"
               if failed else "")
    return f"""---
{front_matter(recipe)}
---

# {markup.text(name)}

A Norwegian (Bokmål and Nynorsk) fine-tune of {markup.code(recipe.model.source)} made with nortune.
{warning}
## Files
- `merged/`: the merged checkpoint (safetensors, config, tokenizer with chat template)
{gguf_lines}
- `Modelfile`: for Ollama ({markup.code(f"ollama create {name} -f Modelfile")})

## Recipe
| item | value |
|---|---|
| adapter | LoRA, {adapter.init} init, r = {adapter.r}, alpha = {adapter.alpha:g} |
| target modules | {markup.text(", ".join(adapter.target_modules))} |
| target layers | {layers} |
| trainable parameters | {f"{trainable:,}" if trainable else "not recorded"}{share} |
| optimiser | LR {tr.lr:g}, weight decay {tr.weight_decay:g}, NEFTune alpha {tr.neftune_noise_alpha} |
| steps | {metrics.get("steps", "not recorded")} (loss {metrics.get("first_loss", float("nan")):.3f} -> {metrics.get("last_loss", float("nan")):.3f}) |
| merge | {"PiSSA adapter converted to plain LoRA and merged" if merge_info.get("pissa") else "LoRA merged"}; weight identity checked on {merge_info.get("checked_modules")} modules (max relative error {merge_info.get("max_relative_weight_error", 0):.1e}) |

## Data composition
{_composition(layout)}

## Contamination check
{_contamination(layout)}

## Evaluation
{_evaluation(layout)}

## GGUF verification
Every GGUF file was loaded in llama.cpp and compared with the merged model (transformers, float32)
on held-out Norwegian text ({markup.code(recipe.export.verify.text)}), same token ids for both:

{verification_table}

## License
{markup.text(card.license)}. The base model's own license and terms of use also apply.
"""


def _adapted_layers(layout: RunLayout) -> str | None:
    """'15 of 18 layers (sliding_attention)', from the plan the train stage saved beside its adapter."""
    path = layout.training_plan("train")
    if not path.is_file():
        return None
    plan = json.loads(path.read_text(encoding="utf-8"))
    adapted = [layer for layer in plan["layers"] if layer["adapted"]]
    types = sorted({layer["layer_type"] for layer in adapted if layer["layer_type"]})
    return f"{len(adapted)} of {plan['num_layers']} layers" + (f" ({', '.join(types)})" if types else "")

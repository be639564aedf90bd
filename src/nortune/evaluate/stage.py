"""``nortune evaluate``: run the NorEval tasks through lm-eval on the base or tuned model.

Writes ``<run>/evaluate/<label>/``: ``results.json`` (lm-eval's results plus a ``nortune``
summary), ``samples.jsonl`` (one row per item and prompt), ``report.md``, ``chart.png``,
and ``manifest.json`` last. Every lm-eval request result is cached in ``cache/`` as it is
computed (lm-eval's CachingLM), so a killed run continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from nortune.adapters import adapter_rank, resolve_device
from nortune.config import Recipe
from nortune.config.evaluate import shots_for
from nortune.evaluate import card, chat_mode, report
from nortune.evaluate.memory import PeakMemory
from nortune.evaluate.stats import family_summary, headlines, missing_metrics, result_scores, small_sets
from nortune.config.names import SAMPLE_SETS_MARK, SMOKE_MARK, is_sample_sets
from nortune.evaluate.tasks import family_and_prompt, not_computed, task_specs
from nortune.jsonl import DataError
from nortune.runner import StageContext, StageResult
from nortune.runs import MODEL_STAGE_OF_LABEL, RunLayout, atomic_write_text, inputs_fingerprint, read_manifest

log = logging.getLogger(__name__)
# base: the untouched model; tuned: + the SFT adapter; preference: + SFT and preference.
LABELS = ("base", *MODEL_STAGE_OF_LABEL)


def data_note(settings) -> str | None:
    """The line every report carries when the numbers are not a NorEval measurement: a smoke test, the sample
    sets, or local copies of the data."""
    smoke = (f"{SMOKE_MARK}, NO VERDICT: {settings.limit or 'all'} items per task and prompt, "
             f"{'0 shots' if not any(settings.num_fewshot.values()) else 'the recipe shots'}; it shows that the "
             "evaluation runs, and no number here is a measurement. " if settings.smoke else "")
    if settings.source != "local":
        return smoke.strip() or None
    root = Path(settings.data_dir)
    if is_sample_sets(settings.source, root):
        return (f"{smoke}{SAMPLE_SETS_MARK}: {root} holds small NorEval-format sample sets written for "
                "nortune; the numbers only show that the pipeline works and are not comparable to NorEval.")
    return f"{smoke}Local copies of the NorEval data from {root} (not fetched from the hub)."


# vLLM accepts only these max_lora_rank values (``MaxLoRARanks`` in vllm/config/lora.py).
VLLM_MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_max_lora_rank(rank: int, adapter: Path | str = "the adapter") -> int:
    """The smallest max_lora_rank vLLM accepts that serves an adapter of this rank.

    ``adapter_lora`` has rank 2r after PiSSA's conversion (4r when preference is stacked on SFT).
    """
    for allowed in VLLM_MAX_LORA_RANKS:
        if rank <= allowed:
            return allowed
    from nortune.errors import ConfigError

    raise ConfigError(f"evaluate.backend: vllm serves LoRA adapters up to rank {VLLM_MAX_LORA_RANKS[-1]}, but "
                      f"{adapter} has rank {rank}; use evaluate.backend=nortune or hf, evaluate.tuned=merged, "
                      "or a smaller adapter.r")


def model_spec(recipe: Recipe, label: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """lm-eval model_args for base or tuned, and what identifies that model (for the fingerprint)."""
    from nortune.models import resolve_source

    settings = recipe.evaluate
    base = resolve_source(recipe.model.source)
    args: dict[str, Any] = {"pretrained": base}
    identity: dict[str, Any] = {"source": recipe.model.source, "revision": recipe.model.revision}
    if recipe.model.revision:
        args["revision"] = recipe.model.revision
    if label in MODEL_STAGE_OF_LABEL:
        from nortune.lineage import require_current_model

        layout, made_by = RunLayout.of(recipe), MODEL_STAGE_OF_LABEL[label]
        train_dir = layout.model_dir(made_by)
        manifest = read_manifest(train_dir)
        if manifest is None:
            raise DataError(f"{train_dir / 'manifest.json'}: no completed {made_by} stage to "
                            f"evaluate as {label} (run `nortune {made_by}` first, or evaluate --model base)")
        identity["train"] = manifest.get("fingerprint")
        identity["train_finished"] = manifest.get("finished")
        if settings.tuned == "merged":
            merged = layout.merged(made_by)
            if not (merged / "config.json").is_file():
                raise DataError(f"{merged}: no merged model (set train.merge: true, or evaluate.tuned: adapter)")
            require_current_model(recipe, made_by, {merged: "the merged model"})
            args = {"pretrained": str(merged)}
        else:
            adapter = layout.adapter_lora(made_by)
            if not (adapter / "adapter_config.json").is_file():
                raise DataError(f"{adapter / 'adapter_config.json'}: file not found")
            require_current_model(recipe, made_by, {adapter: "the adapter"})
            identity["adapter"] = inputs_fingerprint([adapter])
            key = "lora_local_path" if settings.backend == "vllm" else "peft"
            args[key] = str(adapter)
            if settings.backend == "vllm":
                args["enable_lora"] = True
                args["max_lora_rank"] = vllm_max_lora_rank(adapter_rank(adapter), adapter)
            else:
                args["tokenizer"] = base
    dtype = settings.dtype or recipe.model.dtype
    args["dtype"] = dtype
    if settings.backend == "nortune":
        if settings.batch_tokens is not None:
            args["batch_tokens"] = settings.batch_tokens
        if settings.memory_gib is not None:
            args["memory_gib"] = settings.memory_gib
    if settings.backend in ("nortune", "hf"):
        args["device"] = resolve_device(settings.device)
    args.update(settings.model_args)
    identity.update(backend=settings.backend, dtype=dtype, model_args=settings.model_args)
    return args, identity


def _fingerprint(recipe: Recipe, identity: dict[str, Any], origins: dict[str, Any]) -> dict[str, Any]:
    settings = recipe.evaluate
    data_inputs = inputs_fingerprint([Path(settings.data_dir)]) if settings.source == "local" else origins
    out = {"evaluate": recipe.section_fingerprint("evaluate"), "model": identity, "data": data_inputs,
           "lm_eval": _version("lm_eval")}
    skipped = not_computed(settings.families)
    if skipped:  # installing what a metric needs makes the run current no more (absent when all is computed)
        out["not_computed"] = skipped
    if settings.perplexity is not None:  # the held-out texts' content (the key is absent when perplexity is off)
        out["perplexity_texts"] = inputs_fingerprint([Path(p) for p in settings.perplexity.texts.values()])
    return out


def fingerprint(recipe: Recipe, label: str, baseline: Path | None = None,
                force_compare: bool = False) -> dict[str, Any]:
    """What decides whether an evaluation (and its comparison with its baseline) is current, without loading
    any model: the baseline's results are part of it, so a re-evaluated baseline makes the comparison stale."""
    _, origins = task_specs(recipe.evaluate, dict(recipe.evaluate.num_fewshot))
    out = _fingerprint(recipe, model_spec(recipe, label)[1], origins)
    base = baseline_results(recipe, label, baseline)
    if base is not None:
        from nortune.evaluate.perplexity import FILE

        measured = [base.parent / FILE] if (base.parent / FILE).is_file() else []
        out["baseline"] = inputs_fingerprint([base, base.parent / "samples.jsonl", *measured])
        if force_compare:
            out["force_compare"] = True
    return out


def baseline_results(recipe: Recipe, label: str, baseline: Path | None) -> Path | None:
    """The results.json ``label`` is compared with: ``baseline`` when given, else that of the model it was
    trained from when it has been evaluated (none for base)."""
    from nortune.evaluate.compare import BASELINE_OF

    if baseline is not None:
        return Path(baseline) / "results.json" if Path(baseline).is_dir() else Path(baseline)
    if label not in BASELINE_OF:
        return None
    results = RunLayout.of(recipe).results(BASELINE_OF[label])
    return results if results.is_file() else None


def work(ctx: StageContext, label: str = "base", baseline: Path | None = None,
         force_compare: bool = False) -> StageResult:
    """Evaluate one model (``base``, ``tuned``, ``preference``) and compare it with its baseline."""
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}")
    recipe, layout, out_dir = ctx.recipe, ctx.layout, ctx.directory
    settings = recipe.evaluate
    fewshot = dict(settings.num_fewshot)
    specs, origins = task_specs(settings, fewshot)  # checks local data before any model loads
    if settings.source != "local" and settings.families:  # once, before lm-eval retries every download
        from nortune.evaluate.tasks import CATALOGUE
        from nortune.hub import require_reachable

        require_reachable(CATALOGUE[settings.families[0]].dataset, settings.revision,
                          "evaluate reads the NorEval tasks' documents from it")
    args, identity = model_spec(recipe, label)
    # Per-request results are keyed by request text; the folder is keyed by the model identity.
    cache_key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    cache = out_dir / "cache" / cache_key / "requests"

    import lm_eval

    from nortune.evaluate import backend as _  # noqa: F401  registers the "nortune" model type
    from nortune.evaluate.tasks import build_tasks, task_manager

    tasks = build_tasks(specs)
    log.info("evaluate %s: %d lm-eval tasks with %s (%s)", label, len(tasks), settings.backend, args)
    # The nortune backend batches log-likelihoods by batch_tokens; batch_size is what lm-eval's own
    # generate_until path (which it inherits) uses for generation tasks.
    batch_size = settings.batch_size
    started = time.perf_counter()
    with PeakMemory() as peak:
        lm = lm_eval.api.registry.get_model(settings.backend).create_from_arg_obj(args, {"batch_size": batch_size})
        chat = chat_mode.resolve(settings, recipe.model.source, lm)  # before any item is scored
        log.info("evaluate %s: %s (%s)", label, chat_mode.label(chat), chat["reason"])
        raw = lm_eval.simple_evaluate(model=lm, model_args=args, tasks=list(tasks.values()),
                                      batch_size=batch_size, limit=settings.limit, log_samples=True,
                                      use_cache=str(cache), fewshot_random_seed=settings.fewshot_seed,
                                      # the tasks are built; without this lm-eval indexes all its tasks (~24 s)
                                      task_manager=task_manager(),
                                      **chat_mode.simple_evaluate_args(chat))
    execution = {"backend": settings.backend, "device": str(getattr(lm, "device", settings.device)),
                 "dtype": args.get("dtype"), "wall_s": round(time.perf_counter() - started, 1), **peak.as_dict(),
                 "batch_size": batch_size, **(lm.settings() if hasattr(lm, "settings") else {})}
    del lm
    samples = list(_sample_rows(raw.pop("samples", {})))
    # Task scores are lm-eval's aggregated results (corpus metrics too); the rows give chance levels.
    scores = result_scores(raw["results"], raw.get("n-samples"))
    summary = family_summary(scores, settings.metric, samples, settings.confidence)
    summary_all = {
        "label": label, "metric": settings.metric, "note": data_note(settings), "origins": origins,
        "confidence": settings.confidence,
        "num_fewshot": {f: shots_for(fewshot, f) for f in settings.families}, "limit": settings.limit,
        "scores": scores, "tasks": summary, "headline": headlines(summary), "small_sets": small_sets(summary),
        # {task: why}: skipped up front (a missing package) or a metric lm-eval did not report; never dropped silently
        "not_computed": {**not_computed(settings.families), **missing_metrics(scores, summary, settings.metric)},
        "extra_tasks": {t: raw["results"].get(t, {}) for t in settings.extra_tasks},
        "samples_file": "samples.jsonl", "backend": settings.backend, "execution": execution,
    }
    summary_all["card"] = card.build(raw, tasks, settings, chat, execution, recipe.model.source)
    raw["nortune"] = summary_all
    if summary_all["small_sets"]:
        log.warning("evaluate %s: small test sets (< 100 items), intervals are wide: %s", label, summary_all["small_sets"])
    samples_path = out_dir / "samples.jsonl"
    atomic_write_text(samples_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in samples))
    results_path = layout.results(label)
    atomic_write_text(results_path, json.dumps(raw, indent=2, ensure_ascii=False, default=str))
    md_path = out_dir / "report.md"
    held_out = None
    if settings.perplexity is not None:  # held-out perplexity per language: same model resolution, timed
        from nortune.evaluate import perplexity

        held_out = perplexity.measure(recipe, label, model_spec(recipe, label)[0])
        log.info("evaluate %s: held-out perplexity %s in %.1f s", label,
                 {k: round(v["ppl"], 2) for k, v in held_out["sets"].items()}, held_out["seconds"]["total"])
    atomic_write_text(md_path, report.markdown(summary_all) + card.markdown(summary_all["card"])
                      + (perplexity.label_markdown(held_out, execution["wall_s"]) if held_out else ""))
    chart = report.chart(out_dir / "chart.png", {label: summary_all}, summary_all["note"])
    outputs = [results_path, samples_path, md_path] + ([chart] if chart else [])
    head = summary_all["headline"]
    metrics = {"best_of_prompts": head["best_of_prompts"], "mean_of_prompts": head["mean_of_prompts"],
               "tasks": {f: s["best"] for f, s in summary.items()}, "note": summary_all["note"],
               "tasks_mean": {f: s["mean"] for f, s in summary.items()},
               "tasks_ci": {f: s["ci"] for f, s in summary.items()},
               "normalised_overall": (head["overall"]["normalised_best"] or {}).get("value"),
               "normalised_categories": {c: (g["normalised_best"] or {}).get("value")
                                         for c, g in head["categories"].items()},
               "small_sets": summary_all["small_sets"], "not_computed": summary_all["not_computed"],
               "chat_template": chat_mode.label(chat)}
    if held_out is not None:
        outputs.append(perplexity.write(out_dir, held_out))
        metrics["perplexity"] = {name: s["ppl"] for name, s in held_out["sets"].items()}
        metrics["perplexity_seconds"] = held_out["seconds"]["total"]
    extra = _compare(recipe, layout, label, baseline_results(recipe, label, baseline), force_compare, outputs)
    return StageResult(outputs, metrics, extra)


def _compare(recipe: Recipe, layout: RunLayout, label: str, baseline: Path | None, force: bool,
             outputs: list[Path]) -> dict[str, Any]:
    """Paired comparisons with the baseline (NorEval tasks, held-out perplexity), written into ``compare/``
    before the manifest, which lists them; their verdicts go into the manifest for the pipeline and the CLI."""
    from nortune.evaluate import perplexity
    from nortune.evaluate.compare import compare

    settings = recipe.evaluate
    compare_dir = layout.compare_dir(label)
    shutil.rmtree(compare_dir, ignore_errors=True)  # an earlier comparison, perhaps with another baseline
    if baseline is None or settings.smoke:  # a smoke test draws no verdict
        return {}
    result = compare(layout.results(label), baseline, compare_dir, settings.metric, settings.bootstrap_samples,
                     settings.confidence, force=force)
    extra = {"regressions": result["regressions"], "overall_regression": bool(result["overall"].get("regression")),
             "comparison": str(compare_dir / "compare.md")}
    held_out = perplexity.compare_with_baseline(recipe, label, baseline)
    if held_out is not None:
        extra.update(forgetting=held_out["forgetting"], allow_forgetting=held_out["allow_forgetting"],
                     perplexity_comparison=str(compare_dir / "perplexity.md"))
    outputs.append(compare_dir)
    found = []
    if extra["regressions"] or extra["overall_regression"]:
        found.append("SIGNIFICANT REGRESSION in " + ", ".join(extra["regressions"] or ["the average"]))
    if extra.get("forgetting"):
        found.append("FORGETTING in " + ", ".join(extra["forgetting"]))
    if found:
        log.warning("evaluate %s: %s (see %s)", label, "; ".join(found), compare_dir)
    return extra


def _sample_rows(samples: dict[str, list[dict]]):
    """lm-eval's logged samples -> flat rows: one per task, prompt and item.

    Every row carries ``metrics``: each per-item number lm-eval logged for it (acc, acc_norm, em,
    exact_match, bleu_max, ...; corpus metrics such as bleu / chrf log a (reference, prediction)
    pair per item, not a number, and are scored from lm-eval's aggregate instead). Generation rows
    also carry the model's ``generation``; log-likelihood rows their per-choice scores.
    """
    for task_name, rows in samples.items():
        family, prompt = family_and_prompt(task_name)
        for row in rows:
            doc = json.dumps(row.get("doc"), sort_keys=True, ensure_ascii=False, default=str)
            generated = bool(row["resps"]) and isinstance(row["resps"][0][0], str)
            if generated:
                lls, greedy = [], []
            else:
                lls = [float(r[0][0]) if isinstance(r[0], (list, tuple)) else float(r[0]) for r in row["resps"]]
                greedy = [bool(r[0][1]) if isinstance(r[0], (list, tuple)) else None for r in row["resps"]]
            out = {
                "task": task_name, "family": family, "prompt": prompt, "doc_id": row["doc_id"],
                "doc_hash": hashlib.sha256(doc.encode()).hexdigest()[:16], "target": _plain(row.get("target")),
                "loglikelihoods": lls, "is_greedy": greedy,
                "pred": max(range(len(lls)), key=lls.__getitem__) if lls else None,
                "acc": row.get("acc"), "acc_norm": row.get("acc_norm"),
                "context": row["arguments"][0][0] if row.get("arguments") else None,
                "choices": [] if generated else [a[1] for a in row.get("arguments", [])],
                "metrics": {name: float(row[name]) for name in row.get("metrics", [])
                            if isinstance(row.get(name), (bool, int, float)) or _is_number(row.get(name))},
            }
            if generated:
                out["generation"] = str(row["filtered_resps"][0] if row.get("filtered_resps") else row["resps"][0][0])
            yield out


def _is_number(value: Any) -> bool:
    """numpy scalars (lm-eval's process_results often returns them)."""
    return hasattr(value, "dtype") and getattr(value, "shape", None) == () and value.dtype.kind in "biuf"


def _plain(value: Any) -> Any:
    """A target as JSON: numpy scalars become numbers."""
    return value.item() if _is_number(value) else value


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)

"""`nortune run`: the stages in order, each skipped when its manifest still matches.

Each stage is a (name, fingerprint, run) triple; the fingerprint is cheap (settings and
input hashes) so ``--dry-run`` can say what would run and why without running anything.
A stage whose inputs do not exist yet (an upstream stage will make them) is reported as
"waits for upstream". Killing a run and starting it again resumes at the first stage
without a matching manifest.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nortune.config import ConfigError, Recipe
from nortune.jsonl import DataError
from nortune.runs import StageFailed, atomic_write_text, begin_stage, read_manifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    allow_contaminated: str | None = None
    resume: bool = False


@dataclass(frozen=True)
class Stage:
    name: str
    folder: str
    fingerprint: Callable[[Recipe], dict[str, Any]]
    run: Callable[[Recipe, Options], dict[str, Any]]
    enabled: Callable[[Recipe], str | None] = lambda recipe: None  # a reason to leave it out, or None


# ---- the stages: thin adapters from the pipeline's calling convention to each stage module ----

def _call(module: str, function: str) -> Callable[..., dict[str, Any]]:
    """``module.function(recipe)``, imported only when a stage runs (nothing heavy at import)."""

    def call(recipe: Recipe, *_: Any) -> dict[str, Any]:
        return getattr(importlib.import_module(module), function)(recipe)

    return call


def _plan_fp(recipe: Recipe) -> dict[str, Any]:
    source = recipe.model.config or recipe.model.source
    return {"recipe": recipe.section_fingerprint("model", "adapter", "plan"), "model": str(source)}


def _plan_run(recipe: Recipe, options: Options) -> dict[str, Any]:
    from nortune.plan import format_plan, plan_from_recipe

    directory = recipe.run_dir / "plan"
    stage = begin_stage("plan", directory, _plan_fp(recipe), recipe.to_yaml())
    plan = plan_from_recipe(recipe)
    atomic_write_text(directory / "plan.json", json.dumps(plan.to_json(), indent=2))
    atomic_write_text(directory / "plan.txt", format_plan(plan) + "\n")
    print(format_plan(plan), flush=True)
    return stage.complete([directory / "plan.json", directory / "plan.txt"],
                          {"trainable_params": plan.trainable_params, "total_params": plan.total_params})


def _train_run(recipe: Recipe, options: Options) -> dict[str, Any]:
    from nortune.runs import Options as StageOptions
    from nortune.train import run

    return run(recipe, StageOptions(resume=options.resume, allow_contaminated=options.allow_contaminated))


def _preference_run(recipe: Recipe, options: Options) -> dict[str, Any]:
    from nortune.preference.stage import run
    from nortune.runs import Options as StageOptions

    return run(recipe, StageOptions(allow_contaminated=options.allow_contaminated))


def _evaluate_stage(label: str, against: str | None) -> tuple[Callable, Callable]:
    """Fingerprint and run of one evaluation; tuned is compared with base, preference with tuned."""

    def fingerprint(recipe: Recipe) -> dict[str, Any]:
        from nortune.evaluate.stage import stage_fingerprint

        return stage_fingerprint(recipe, label)

    def run(recipe: Recipe, options: Options) -> dict[str, Any]:
        from nortune.evaluate.compare import compare
        from nortune.evaluate.stage import run as evaluate

        manifest = evaluate(recipe, label=label)
        if against is not None:
            settings, folder = recipe.evaluate, recipe.run_dir / "evaluate"
            result = compare(folder / label / "results.json", folder / against / "results.json",
                             folder / label / "compare", settings.metric, settings.bootstrap_samples,
                             settings.confidence)
            manifest = {**manifest, "regressions": result["regressions"],
                        "overall_regression": bool(result["overall"].get("regression"))}
        return manifest

    return fingerprint, run


def _preference_enabled(recipe: Recipe) -> str | None:
    return None if recipe.preference.configured else "no preference data configured"


def _curate_enabled(recipe: Recipe) -> str | None:
    return None if recipe.curate.sources else "no curate.sources (train.data is used as given)"


STAGES: tuple[Stage, ...] = (
    Stage("curate", "curate", _call("nortune.curate.stage", "fingerprint"),
          _call("nortune.curate.stage", "run"), _curate_enabled),
    Stage("decontam", "decontam", _call("nortune.decontam.stage", "stage_fingerprint"),
          _call("nortune.decontam.stage", "run")),
    Stage("plan", "plan", _plan_fp, _plan_run),
    Stage("train", "train", _call("nortune.train", "fingerprint"), _train_run),
    Stage("preference", "preference", _call("nortune.preference.stage", "fingerprint"), _preference_run,
          _preference_enabled),
    Stage("evaluate-base", "evaluate/base", *_evaluate_stage("base", None)),
    Stage("evaluate-tuned", "evaluate/tuned", *_evaluate_stage("tuned", "base")),
    Stage("evaluate-preference", "evaluate/preference", *_evaluate_stage("preference", "tuned"),
          _preference_enabled),
    Stage("export", "export", _call("nortune.export.stage", "fingerprint"),
          _call("nortune.export.stage", "run")),
    Stage("report", "report", _call("nortune.report", "stage_fingerprint"), _call("nortune.report", "run")),
)


def select(names: list[str], start: str | None, stop: str | None, only: list[str] | None) -> list[str]:
    """The stage names to consider, in pipeline order; unknown names fail with the known ones."""
    for name in [start, stop, *(only or [])]:
        if name is not None and name not in names:
            raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(names)}")
    if only:
        return [n for n in names if n in only]
    lo = names.index(start) if start else 0
    hi = names.index(stop) if stop else len(names) - 1
    if hi < lo:
        raise ConfigError(f"--from {start} comes after --to {stop}")
    return names[lo:hi + 1]


def status(stage: Stage, recipe: Recipe) -> tuple[str, str]:
    """('skip' | 'run' | 'off', why) without running anything."""
    off = stage.enabled(recipe)
    if off:
        return "off", off
    try:
        fingerprint = stage.fingerprint(recipe)
    except (DataError, FileNotFoundError) as exc:
        return "run", f"waits for upstream ({exc})"
    manifest = read_manifest(recipe.run_dir / stage.folder)
    if manifest is None:
        return "run", "no finished result yet"
    old = manifest.get("fingerprint") or {}
    if old == fingerprint:
        return "skip", "manifest matches the recipe and inputs"
    changed = sorted(k for k in set(old) | set(fingerprint)
                     if k not in old or k not in fingerprint or old[k] != fingerprint[k])
    return "run", f"changed since the last run: {', '.join(changed)}"


def run_pipeline(recipe: Recipe, start: str | None = None, stop: str | None = None,
                 only: list[str] | None = None, dry_run: bool = False,
                 options: Options = Options()) -> list[dict[str, Any]]:
    names = [s.name for s in STAGES]
    chosen = select(names, start, stop, only)
    results: list[dict[str, Any]] = []
    failed: list[str] = []
    for stage in (s for s in STAGES if s.name in chosen):
        if failed and stage.name != "report":  # the report still runs: it shows the failure in red
            print(f"{stage.name:<20} {'not run':<11} {failed[0]} failed", flush=True)
            results.append({"stage": stage.name, "action": "not run", "why": f"{failed[0]} failed"})
            continue
        verdict, why = status(stage, recipe)
        line = {"stage": stage.name, "action": verdict, "why": why}
        if dry_run or verdict == "off":
            action = f"would {verdict}" if dry_run and verdict != "off" else verdict
            print(f"{stage.name:<20} {action:<11} {why}", flush=True)
            results.append(line)
            continue
        log.info("%s: %s (%s)", stage.name, "skipping" if verdict == "skip" else "running", why)
        started = time.time()
        try:
            manifest = stage.run(recipe, options)
        except StageFailed as exc:
            log.error("%s", exc)
            failed.append(stage.name)
            results.append({**line, "action": "failed", "error": str(exc),
                            "seconds": round(time.time() - started, 2)})
            continue
        line.update(seconds=round(time.time() - started, 2), metrics=manifest.get("metrics", {}))
        if manifest.get("regressions") or manifest.get("overall_regression"):
            line["regressions"] = manifest.get("regressions") or ["average"]
        results.append(line)
    if not dry_run:
        atomic_write_text(recipe.run_dir / "pipeline.json", json.dumps(results, indent=2, default=str))
    return results


def failures(results: list[dict[str, Any]]) -> list[str]:
    """The error of every stage of this run that failed (see ``runs.StageFailed``)."""
    return [r["error"] for r in results if r.get("action") == "failed"]


def regressions(results: list[dict[str, Any]]) -> list[str]:
    """'stage: task' for every significant regression the evaluation stages of this run found."""
    return [f"{r['stage']}: {task}" for r in results for task in r.get("regressions", [])]

"""`nortune run`: the stages in order, each through the runner, which skips it when its manifest still matches.

Each stage is a declaration (``runner.Stage``); its fingerprint is cheap (settings and input
hashes) so ``--dry-run`` can say what would run and why without running anything. A stage whose
inputs do not exist yet (an upstream stage will make them) is reported as "waits for upstream".
Killing a run and starting it again resumes at the first stage without a matching manifest.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from nortune import curate, decontam, evaluate, export, plan, preference, report, train
from nortune.config import ConfigError, Recipe
from nortune.errors import IncompleteUpstream, NortuneError, StageFailed
from nortune.jsonl import DataError
from nortune.runner import Outcome, Stage, decide, run_lock, run_stage
from nortune.runs import MANIFEST, STAGE_FOLDERS, Options, RunLayout, atomic_write_text

log = logging.getLogger(__name__)

STAGES: tuple[Stage, ...] = (curate.STAGE, decontam.STAGE, plan.STAGE, train.STAGE, preference.STAGE,
                             *evaluate.STAGES, export.STAGE, report.STAGE)
assert [s.name for s in STAGES] == list(STAGE_FOLDERS), "pipeline.STAGES and runs.STAGE_FOLDERS disagree"


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
    except (DataError, FileNotFoundError, IncompleteUpstream) as exc:
        return "run", f"waits for upstream ({exc})"
    action, why, _ = decide(RunLayout.of(recipe).stage_dir(stage.name), fingerprint)
    return action, why


# The command that runs a stage on its own, where it is not `nortune <stage> RECIPE`.
COMMANDS = {"evaluate-base": "evaluate {recipe} --model base", "evaluate-tuned": "evaluate {recipe} --model tuned",
            "evaluate-preference": "run {recipe} --only evaluate-preference"}


def command_line(recipe_arg: str, overrides: list[str]) -> str:
    """The recipe and its overrides as the user gave them, quoted for a shell: what a ``next:`` line repeats."""
    import shlex

    return " ".join(shlex.quote(part) for part in [recipe_arg, *overrides])


def next_step(recipe: Recipe, recipe_arg: str, overrides: list[str], found_problems: bool, command: str,
              after: str | None = None, current: frozenset[str] = frozenset()) -> str:
    """The one ``next:`` line a command ends with: the command of the first stage after ``after`` (every stage
    for ``nortune run``) that would run now, or why there is none. A stage this command ran or skipped is
    ``current``; one without a result is next at once; any other is asked ``status``, as ``--dry-run`` asks it,
    so no fingerprint is worked out twice in one command."""
    again = command_line(recipe_arg, overrides)
    if found_problems:
        return f"next: fix what is reported above, then `nortune {command} {again}` again"
    names = [s.name for s in STAGES]
    layout = RunLayout.of(recipe)
    finished = {name for name in names if (layout.stage_dir(name) / MANIFEST).is_file()}
    for stage in STAGES[names.index(after) + 1 if after else 0:]:
        if stage.name in current or stage.enabled(recipe):  # current: this very command ran or skipped it
            continue
        if stage.name not in finished:
            missing = [name for name in stage.upstream if name not in finished]
            if missing:  # what it reads comes first (evaluate --model base before any training: train)
                stage = STAGES[names.index(missing[0])]
            verdict, why = "run", "no finished result yet"
        else:
            try:
                verdict, why = status(stage, recipe)
            except NortuneError as exc:
                verdict, why = "run", str(exc)
        if verdict == "run":
            spelled = COMMANDS.get(stage.name, stage.name + " {recipe}").format(recipe=again)
            return f"next: nortune {spelled}   ({stage.name}: {why})"
    if after == names[-1]:
        return f"next: none, the report is the last stage: {layout.report_page}"
    return f"next: none, every {'later ' if after else ''}stage is current; the report is {layout.report_page}"


def run_pipeline(recipe: Recipe, start: str | None = None, stop: str | None = None,
                 only: list[str] | None = None, dry_run: bool = False,
                 options: Options = Options()) -> list[dict[str, Any]]:
    """Each chosen stage through the runner, under one lock for the whole run.

    After a failure of any kind the later stages do not run, except the report, which shows the
    failure in red; ``pipeline.json`` is written either way. A failure that is not a finished
    stage's verdict (a user's mistake, a bug, an interrupt) is raised again at the end.
    """
    names = [s.name for s in STAGES]
    chosen = select(names, start, stop, only)
    results: list[dict[str, Any]] = []
    if dry_run:
        for stage in (s for s in STAGES if s.name in chosen):
            verdict, why = status(stage, recipe)
            results.append({"stage": stage.name, "action": verdict, "why": why})
        return results
    layout = RunLayout.of(recipe)
    with run_lock(layout.root, "run"):
        pending = _run_stages(recipe, [s for s in STAGES if s.name in chosen], options, results)
        atomic_write_text(layout.pipeline_record, json.dumps(results, indent=2, default=str))
    if pending is not None:
        raise pending
    return results


def _run_stages(recipe: Recipe, stages: list[Stage], options: Options,
                results: list[dict[str, Any]]) -> BaseException | None:
    """Fill ``results``; return the first failure that must be raised again once the record is written."""
    failed: list[str] = []
    pending: BaseException | None = None
    for stage in stages:
        # After a failure the report still runs (it shows the failure in red); after an interrupt nothing does.
        if failed and (stage.name != "report" or not isinstance(pending, Exception | None)):
            why = f"{failed[0]} {'failed' if isinstance(pending, Exception | None) else 'interrupted'}"
            log.info("%s: not run, %s", stage.name, why)
            results.append({"stage": stage.name, "action": "not run", "why": why})
            continue
        off = stage.enabled(recipe)
        if off:
            log.info("%s: off, %s", stage.name, off)
            results.append({"stage": stage.name, "action": "off", "why": off})
            continue
        started = time.time()
        try:
            outcome = run_stage(stage, recipe, options, command="run")
        except BaseException as exc:  # recorded in the stage's folder by the runner
            interrupted = isinstance(exc, KeyboardInterrupt)
            log.error("%s %s: %s", stage.name, "interrupted" if interrupted else "failed", exc)
            failed.append(stage.name)
            results.append({"stage": stage.name, "action": "interrupted" if interrupted else "failed",
                            "error": _failure_line(stage.name, exc), "seconds": round(time.time() - started, 2)})
            if pending is None and not isinstance(exc, StageFailed):
                pending = exc
            continue
        results.append({**result_line(stage.name, outcome), "seconds": round(time.time() - started, 2)})
    return pending


def result_line(name: str, outcome: Outcome) -> dict[str, Any]:
    """What a finished (run or skipped) stage says in ``pipeline.json``, and what ``problems`` reads."""
    manifest = outcome.manifest
    line: dict[str, Any] = {"stage": name, "action": outcome.action, "why": outcome.why,
                            "metrics": manifest.get("metrics", {})}
    if manifest.get("regressions") or manifest.get("overall_regression"):
        line["regressions"] = manifest.get("regressions") or ["average"]
    if manifest.get("forgetting"):  # held-out perplexity rose significantly (evaluate.perplexity)
        line.update(forgetting=manifest["forgetting"], allow_forgetting=bool(manifest.get("allow_forgetting")))
    return line


def _failure_line(name: str, exc: BaseException) -> str:
    if isinstance(exc, StageFailed):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return f"{name} interrupted"
    return f"{name} failed: {exc}" if isinstance(exc, NortuneError) else f"{name} failed: {type(exc).__name__}: {exc}"


def failures(results: list[dict[str, Any]]) -> list[str]:
    """The error of every stage of this run that failed (see ``runs.StageFailed``)."""
    return [r["error"] for r in results if r.get("action") in ("failed", "interrupted")]


def regressions(results: list[dict[str, Any]]) -> list[str]:
    """'stage: task' for every significant regression the evaluation stages of this run found."""
    return [f"{r['stage']}: {task}" for r in results for task in r.get("regressions", [])]


def unverified(results: list[dict[str, Any]]) -> list[str]:
    """'export: FILE' for every GGUF file whose verification failed (the export stage still writes its files)."""
    return [f"{r['stage']}: {name}" for r in results for name in (r.get("metrics") or {}).get("failed", [])]


def forgetting(results: list[dict[str, Any]]) -> list[str]:
    """'stage: set' for every held-out perplexity set flagged as forgetting that the recipe does not allow."""
    return [f"{r['stage']}: {name} perplexity" for r in results if not r.get("allow_forgetting")
            for name in r.get("forgetting", [])]


def contaminated(results: list[dict[str, Any]]) -> list[str]:
    """'stage: N records' for every contamination check of this run over its limit."""
    return [f"{r['stage']}: {r['metrics'].get('contaminated_records')} contaminated records"
            for r in results if r["stage"].startswith("decontam") and r.get("metrics", {}).get("passed") is False]


def problems(results: list[dict[str, Any]], recipe: Recipe, contamination_accepted: bool = False) -> list[str]:
    """The one rule for exit status 1, for every command that can find a problem: one line per reason.
    Failed stages first (nothing after them ran), else significant regressions (when
    ``evaluate.fail_on_regression``), forgetting the recipe does not allow, GGUF files that failed
    verification, and contamination over ``decontam.max_contaminated_records`` (unless accepted, as
    ``--allow-contaminated`` does, with a recorded reason)."""
    if failures(results):
        return failures(results)
    page = RunLayout.of(recipe).report_page
    found, forgot, bad_files = regressions(results), forgetting(results), unverified(results)
    dirty = [] if contamination_accepted else contaminated(results)
    lines = []
    if found and recipe.evaluate.fail_on_regression:
        lines.append(f"SIGNIFICANT REGRESSION in {'; '.join(found)} (see {page})")
    if forgot:
        lines.append(f"FORGETTING in {'; '.join(forgot)} (held-out perplexity rose significantly; see {page}; "
                     "evaluate.perplexity.allow_forgetting: true accepts it)")
    if bad_files:
        lines.append(f"GGUF verification FAILED for {'; '.join(bad_files)} (see verification.md)")
    if dirty:
        lines.append(f"CONTAMINATED: {'; '.join(dirty)}, over decontam.max_contaminated_records="
                     f"{recipe.decontam.max_contaminated_records} (see summary.md)")
    return lines

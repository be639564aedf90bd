"""What a run folder says about itself, read only from its stage manifests and reports.

Used by `nortune runs` (one row per run), `nortune compare` and the HTML report, so the
three never disagree about a number.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nortune.config.names import SAMPLE_SETS_MARK, SMOKE_MARK
from nortune.config.names import MIN_VERDICT_ITEMS, too_few
from nortune.markup import text
from nortune.runs import EXTRA_FOLDERS, RESOLVED_RECIPE, STAGE_FOLDERS, RunLayout, read_failure, read_manifest


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


@dataclass
class RunSummary:
    run: str
    recipe: str | None
    base_model: str | None
    trainable_params: int | None
    data_records: int | None
    data_mix: dict[str, float] | None
    contamination: str
    noreval_tuned: float | None
    noreval_base: float | None
    delta_vs_base: float | None
    regressions: list[str]
    export: str
    stages_done: list[str]
    contamination_ok: bool | None = None  # from the gate records training wrote; None: nothing trained yet
    # Held-out perplexity per set, tuned vs base (evaluate/tuned/compare/perplexity.json); [] when not measured.
    perplexity: list[dict[str, Any]] = field(default_factory=list)
    forgetting: list[str] = field(default_factory=list)  # "label: set +x.x % [lo, hi]" for each flagged set
    chat_template: str | None = None  # how evaluate prompted: "chat template on (...)" / "off"; None: not recorded
    # What the NorEval verdict rests on: "not evaluated", "not compared (...)", "too few items (...)" or
    # "compared" (then ``regressions`` is the verdict).
    noreval_state: str = "not evaluated"
    sample_sets: bool = False  # the NorEval numbers (and the clean verdict) come from nortune's sample sets

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


PASSED, FAILED_CHECK, NOT_RUN = "passed", "failed", "not run"


def checks(s: RunSummary) -> list[tuple[str, str, str]]:
    """(check, passed | failed | not run, words) for each verdict a run can have: a check that has not run
    is said to be not run, never shown as passed."""
    mark = f" ({SAMPLE_SETS_MARK})" if s.sample_sets else ""
    if s.regressions:
        noreval = (FAILED_CHECK, "SIGNIFICANT REGRESSION: " + "; ".join(s.regressions) + mark)
    elif s.noreval_state == "compared":
        noreval = (PASSED, "no significant regression vs base" + mark)
    else:
        noreval = (NOT_RUN, s.noreval_state + mark)
    if s.forgetting:
        forgetting = (FAILED_CHECK, "FORGETTING (held-out perplexity): " + "; ".join(s.forgetting))
    else:
        forgetting = (PASSED, "no forgetting") if s.perplexity else (NOT_RUN, "not measured")
    export = (FAILED_CHECK if s.export.startswith("FAILED") else PASSED if s.export == "verified" else NOT_RUN,
              "every GGUF file verified" if s.export == "verified" else s.export)
    contamination = ({True: PASSED, False: FAILED_CHECK, None: NOT_RUN}[s.contamination_ok], s.contamination)
    return [("NorEval", *noreval), ("forgetting", *forgetting), ("export", *export),
            ("contamination", *contamination)]


def headline(run_dir: Path, label: str) -> float | None:
    """Best-of-prompts NorEval headline of one evaluated model, if that evaluation finished."""
    manifest = read_manifest(RunLayout(run_dir).evaluate_dir(label))
    if manifest is None:
        return None
    value = manifest.get("metrics", {}).get("best_of_prompts")
    return None if value is None else float(value)


def regressions(run_dir: Path) -> list[str]:
    """Tasks the evaluation's paired comparison flagged as significant regressions."""
    found: list[str] = []
    for label in ("tuned", "preference"):
        compare = _json(RunLayout(run_dir).compare_dir(label) / "compare.json")
        for item in (compare or {}).get("regressions", []):
            found.append(f"{label}: {item.get('family', item) if isinstance(item, dict) else item}")
    return found


def perplexity_comparison(run_dir: Path, label: str = "tuned") -> dict[str, Any] | None:
    """The held-out perplexity comparison evaluate wrote for ``label``, if any."""
    return _json(RunLayout(run_dir).compare_dir(label) / "perplexity.json")


def forgetting(run_dir: Path) -> list[str]:
    """Held-out perplexity sets the evaluation flagged as forgetting (allowed or not: the recipe says which)."""
    found = []
    for label in ("tuned", "preference"):
        result = perplexity_comparison(run_dir, label) or {}
        for row in result.get("rows", []):
            if row.get("forgetting"):
                lo, hi = row["ci"]
                found.append(f"{label}: {row['set']} perplexity {row['change']:+.1%} [{lo:+.1%}, {hi:+.1%}]"
                             + (" (allowed by the recipe)" if result.get("allow_forgetting") else ""))
    return found


def _ppl_change(row: dict[str, Any]) -> str:
    """A set's relative perplexity change with its interval, and the mark when it is flagged (Markdown)."""
    mark = " **FORGETTING**" if row.get("forgetting") else ""
    return f"{row['change']:+.1%} [{row['ci'][0]:+.1%}, {row['ci'][1]:+.1%}]{mark}"


def _ppl_cell(row: dict[str, Any]) -> str:
    return f"{text(row['set'])} {_ppl_change(row)}"


_PROBLEM = {"not_checked": "NOT CHECKED", "other_file": "REPORT FOR ANOTHER FILE", "stale": "STALE REPORT",
            "contaminated": "CONTAMINATED"}


def _gate_verdict(run_dir: Path, gate: dict[str, Any] | None, folder: str) -> tuple[bool, str]:
    """(ok, words) for one gate record that training wrote into its manifest."""
    if not gate:
        return False, "NOT CHECKED: training recorded no contamination gate"
    reason = gate.get("reason") or ""
    if not gate.get("passed"):
        kind = gate.get("problem") or ("not_checked" if "no completed contamination report" in reason
                                       else "other_file" if "another file" in reason else "contaminated")
        overridden = f", trained anyway with override: {gate['override']}" if gate.get("override") else ""
        return False, f"{_PROBLEM.get(kind, 'CONTAMINATED')} ({reason}{overridden})"
    report = _json(RunLayout(run_dir).contamination_report(folder))
    if report is None:
        return False, f"NOT CHECKED (the report the gate read, {folder}/contamination.json, is gone)"
    if (report.get("data") or {}).get("sha256") != gate.get("data_sha256"):
        return False, (f"REPORT FOR ANOTHER FILE ({folder}/contamination.json now describes "
                       f"{(report.get('data') or {}).get('path')}, not the data training used)")
    sample = f"; {SAMPLE_SETS_MARK}" if report.get("sample_sets") else ""
    return True, f"clean ({gate.get('contaminated_records', 0)} records hit; training gate passed{sample})"


def contamination_verdict(run_dir: Path) -> tuple[bool | None, str]:
    """The run's contamination verdict, from the gate records of SFT (and preference) training, never from
    ``decontam/contamination.json`` alone: a report nobody trained through proves nothing about the model."""
    verdicts = []
    for stage, folder, what in (("train", "decontam", "SFT data"), ("preference", "decontam-preference",
                                                                    "preference pairs")):
        manifest = read_manifest(RunLayout(run_dir).model_dir(stage))
        if manifest is not None:
            verdicts.append((what, *_gate_verdict(run_dir, manifest.get("contamination_gate"), folder)))
    if not verdicts:
        return None, "not trained (no training gate record yet)"
    if len(verdicts) == 1:
        return verdicts[0][1], verdicts[0][2]
    bad = [(what, words) for what, ok, words in verdicts if not ok]
    if bad:
        return False, "; ".join(f"{words} [{what}]" for what, words in bad)
    return True, "clean (" + "; ".join(f"{what}: {words.removeprefix('clean (').rstrip(')')}"
                                       for what, _, words in verdicts) + ")"


def summarize(run_dir: Path) -> RunSummary:
    layout = RunLayout(run_dir)
    recipe_text = None
    for stage in ("train", "plan", "curate", "decontam"):
        candidate = layout.stage_dir(stage) / RESOLVED_RECIPE
        if candidate.is_file():
            recipe_text = candidate.read_text(encoding="utf-8")
            break
    import yaml

    recipe = yaml.safe_load(recipe_text) if recipe_text else {}
    train = read_manifest(layout.model_dir("train")) or {}
    plan = _json(layout.training_plan("train")) or _json(layout.plan_dir / "plan.json") or {}
    curate = read_manifest(layout.curate_dir) or {}
    contamination_ok, verdict = contamination_verdict(run_dir)
    buckets = (curate.get("metrics") or {}).get("by_bucket") or {}
    total = sum(buckets.values())
    mix = {k: round(v / total, 4) for k, v in buckets.items()} if total else None
    tuned, base = headline(run_dir, "tuned"), headline(run_dir, "base")
    export = read_manifest(layout.export_dir)
    crashed = read_failure(layout.export_dir)
    if crashed is not None:
        export_state = f"FAILED: {crashed.get('job', 'export')} of {Path(crashed.get('file', '?')).name} " \
                       f"crashed ({crashed.get('signal', 'error')})"
    elif export is None:
        export_state = "not exported"
    else:
        failed = export.get("metrics", {}).get("failed") or []
        export_state = f"FAILED: {', '.join(failed)}" if failed else "verified"
    return RunSummary(
        run=str(run_dir), recipe=recipe.get("name"), base_model=(recipe.get("model") or {}).get("source"),
        trainable_params=plan.get("trainable_params"),
        data_records=(train.get("data") or {}).get("used"), data_mix=mix, contamination=verdict,
        noreval_tuned=tuned, noreval_base=base,
        delta_vs_base=None if tuned is None or base is None else tuned - base,
        regressions=regressions(run_dir), export=export_state,
        stages_done=[folder for stage, folder in STAGE_FOLDERS.items()
                     if stage != "report" and read_manifest(layout.stage_dir(stage)) is not None],
        contamination_ok=contamination_ok,
        perplexity=(perplexity_comparison(run_dir) or {}).get("rows", []), forgetting=forgetting(run_dir),
        chat_template=_chat_template(run_dir), noreval_state=_noreval_state(run_dir),
        sample_sets=_sample_sets(run_dir))


def _noreval_state(run_dir: Path) -> str:
    """What the NorEval verdict of the tuned model rests on (see ``RunSummary.noreval_state``)."""
    layout = RunLayout(run_dir)
    notes = _evaluation_notes(run_dir)
    if any(SMOKE_MARK in notes[label] for label in ("base", "tuned")):
        return "smoke test: no verdict"
    if read_manifest(layout.evaluate_dir("tuned")) is None:
        return "not evaluated"
    compare = _json(layout.compare_dir("tuned") / "compare.json")
    if compare is None:
        return "not compared (the base model is not evaluated)"
    overall = compare.get("overall") or {}
    if overall.get("judged") is False:
        return f"too few items for a verdict ({overall.get('items')} < {MIN_VERDICT_ITEMS})"
    return "compared"


def _sample_sets(run_dir: Path) -> bool:
    """Whether an evaluation or the contamination check used nortune's sample sets instead of NorEval."""
    report = _json(RunLayout(run_dir).contamination_report()) or {}
    return any(SAMPLE_SETS_MARK in n for n in _evaluation_notes(run_dir).values()) or bool(report.get("sample_sets"))


def _evaluation_notes(run_dir: Path) -> dict[str, str]:
    """Each evaluation's data note (smoke test, sample sets, local copies; '' when none or not evaluated)."""
    return {label: (read_manifest(RunLayout(run_dir).evaluate_dir(label)) or {}).get("metrics", {}).get("note") or ""
            for label in ("base", "tuned", "preference")}


def _chat_template(run_dir: Path) -> str | None:
    """The chat mode the evaluation ran with (tuned, else base), from its manifest."""
    for label in ("tuned", "base"):
        manifest = read_manifest(RunLayout(run_dir).evaluate_dir(label)) or {}
        if (manifest.get("metrics") or {}).get("chat_template"):
            return manifest["metrics"]["chat_template"]
    return None


def find_runs(runs_dir: Path) -> list[Path]:
    """The run folders with at least one finished stage (an evaluation alone counts: ``evaluate/<label>``)."""
    if not runs_dir.is_dir():
        return []
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and any(
        (p / folder / "manifest.json").is_file() for folder in [*STAGE_FOLDERS.values(), *EXTRA_FOLDERS.values()]))


def _pct(value: float | None) -> str:
    """Evaluation scores are stored in percent."""
    return "-" if value is None else f"{value:.1f}"


def _chat_mark(chat: str | None) -> str:
    """' (chat on)' / ' (chat off)' after the NorEval score: the prompting mode shows on every ledger line."""
    return "" if not chat or chat.endswith("not recorded") else f" (chat {'on' if ' on' in chat else 'off'})"


def format_runs(summaries: list[RunSummary]) -> str:
    header = ("| run | base model | trainable | data | contamination | NorEval tuned | base | delta | "
              "regressions | held-out ppl vs base | export |")
    lines = [header, "|" + "---|" * 11]
    for s in summaries:
        delta = "-" if s.delta_vs_base is None else f"{s.delta_vs_base:+.1f} pp"
        said = [SMOKE_MARK] * s.noreval_state.startswith("smoke") + [SAMPLE_SETS_MARK] * s.sample_sets
        mark = f" ({'; '.join(said)})" if said else ""  # beside every NorEval number
        regressions = "; ".join(s.regressions) or ("none" if s.noreval_state == "compared" else s.noreval_state)
        lines.append(f"| {text(s.recipe or Path(s.run).name)} | {text(s.base_model or '-')} | "
                     f"{'-' if s.trainable_params is None else f'{s.trainable_params:,}'} | "
                     f"{'-' if s.data_records is None else s.data_records} | {text(s.contamination)} | "
                     f"{_pct(s.noreval_tuned)}{_chat_mark(s.chat_template)}{mark * (s.noreval_tuned is not None)} | "
                     f"{_pct(s.noreval_base)}{mark * (s.noreval_base is not None)} | "
                     f"{delta} | {text(regressions)} | "
                     f"{'; '.join(_ppl_cell(r) for r in s.perplexity) or 'not measured'} | {text(s.export)} |")
    return "\n".join(lines)


def eval_card(run_dir: Path, label: str = "tuned") -> tuple[bool, dict[str, Any] | None]:
    """(evaluated, card) of one evaluated model: its eval card from results.json (None: written before cards)."""
    results = _json(RunLayout(run_dir).results(label))
    return results is not None, ((results or {}).get("nortune") or {}).get("card")


def compare_runs(run_dirs: list[Path], force: bool = False) -> str:
    """Runs side by side per NorEval task (best of prompts), each with its paired delta vs base.

    Refused (``IncomparableRuns``, one line naming what differs) when the tuned models' eval cards
    differ, unless ``force``; forced, the table starts with a line saying so."""
    from nortune.evaluate.card import forced_markdown, require_comparable
    from nortune.evaluate.tasks import CATALOGUE

    for run_dir in run_dirs:  # a run without results would be a column of "-" that looks like a comparison
        if read_manifest(RunLayout(run_dir).evaluate_dir("tuned")) is None:
            from nortune.errors import UsageError

            raise UsageError(f"{run_dir}: no evaluation results of the tuned model "
                             f"({RunLayout(run_dir).evaluate_dir('tuned')}/manifest.json is missing); "
                             "run `nortune evaluate` for that run first")
    cards = [(run_dir.name, card) for run_dir in run_dirs for evaluated, card in [eval_card(run_dir)] if evaluated]
    forced = require_comparable(cards, force)
    columns, no_paired = [], {}
    for run_dir in run_dirs:
        tuned = (read_manifest(RunLayout(run_dir).evaluate_dir("tuned")) or {}).get("metrics", {})
        compare = _json(RunLayout(run_dir).compare_dir("tuned") / "compare.json") or {}
        deltas = {d["family"]: d for d in compare.get("deltas", [])}
        columns.append((run_dir.name, tuned, deltas, compare.get("confidence")))
        no_paired[run_dir.name] = compare.get("no_paired_ci") or {}
    header = "| task | " + " | ".join(text(name) for name, *_ in columns) + " |"
    lines = [header, "|---|" + "---|" * len(columns)]

    def cell(tuned: dict, deltas: dict, family: str | None) -> str:
        value = tuned.get("best_of_prompts") if family is None else tuned.get("tasks", {}).get(family)
        if value is None:
            return "-"
        half = tuned.get("tasks_ci", {}).get(family) if family else None
        text = f"{value:.1f}" + ("" if half is None else f" ± {half:.1f}")
        if family in tuned.get("small_sets", {}):
            text += f" (n={tuned['small_sets'][family]}, small)"
        delta = deltas.get(family) if family else None
        if delta:
            lo, hi = delta["best_ci"]
            mark = " **REGRESSION**" if delta.get("regression") else (" (gain)" if delta.get("gain") else "")
            if delta.get("judged") is False:
                mark = f" ({too_few(delta['n_items'])})"
            text += f" ({delta['best']:+.1f} pp [{lo:+.1f}, {hi:+.1f}]{mark})"
        return text

    present = {f for _, t, _, _ in columns for f in t.get("tasks", {})}
    for family in [f for f in CATALOGUE if f in present] + sorted(present - set(CATALOGUE)):
        label = CATALOGUE[family].label if family in CATALOGUE else family
        lines.append(f"| {text(label)} | " + " | ".join(cell(t, d, family) for _, t, d, _ in columns) + " |")
    lines.append("| **average (best of prompts)** | " + " | ".join(cell(t, d, None) for _, t, d, _ in columns) + " |")
    lines.append("| average (mean of prompts) | " + " | ".join(
        _pct(t.get("mean_of_prompts")) for _, t, _, _ in columns) + " |")
    categories = list(dict.fromkeys(c for _, t, _, _ in columns for c in t.get("normalised_categories", {})))
    for category in categories:
        lines.append(f"| {text(category)}, normalised (best of prompts) | " + " | ".join(
            _pct(t.get("normalised_categories", {}).get(category)) for _, t, _, _ in columns) + " |")
    lines.append("| all tasks, normalised (best of prompts) | " + " | ".join(
        _pct(t.get("normalised_overall")) for _, t, _, _ in columns) + " |")
    levels = sorted({f"{c:.0%}" for *_, c in columns if c})
    lines += ["", "Cells: tuned score ± its interval (combined SE over items and prompts), then the paired-bootstrap "
                  f"delta vs that run's own base ({', '.join(levels) or 'no'} confidence interval, pp); averages over "
                  "the recipe's tasks; normalised: 0 = chance, 100 = perfect, over every task summarised."]
    skipped = [f"{name}: {family} ({why})" for name, no_ci in no_paired.items() for family, why in no_ci.items()]
    if skipped:
        lines += ["", "No paired interval: " + text("; ".join(skipped)) + "."]
    not_computed = [f"{name}: {task} ({why})" for name, t, *_ in columns for task, why in t.get("not_computed", {}).items()]
    if not_computed:
        lines += ["", "Not computed: " + text("; ".join(not_computed)) + "."]
    marked = [f"{name}: {note}" for name, t, *_ in columns for note in [t.get("note") or ""]
              if SAMPLE_SETS_MARK in note or SMOKE_MARK in note]
    said = [f"**{text(line)}**" for line in marked] + ([""] if marked else [])
    return forced_markdown(forced) + "\n".join(said + lines) + _compare_perplexity(run_dirs)


def _compare_perplexity(run_dirs: list[Path]) -> str:
    """Held-out perplexity per set side by side: tuned ppl and its change vs that run's base; '' when none."""
    results = [(run_dir.name, perplexity_comparison(run_dir) or {}) for run_dir in run_dirs]
    sets = list(dict.fromkeys(r["set"] for _, res in results for r in res.get("rows", [])))
    if not sets:
        return ""
    lines = ["", "", "| held-out perplexity | " + " | ".join(text(name) for name, _ in results) + " |",
             "|---|" + "---|" * len(results)]
    for name in sets:
        cells = []
        for _, res in results:
            row = next((r for r in res.get("rows", []) if r["set"] == name), None)
            cells.append("-" if row is None else f"{row['tuned_ppl']:.2f} ({_ppl_change(row)})")
        lines.append(f"| {text(name)} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: tuned perplexity, then its relative change vs that run's own base with the paired "
                  "bootstrap interval over texts; FORGETTING: a significant rise the recipe's rule flags."]
    return "\n".join(lines)

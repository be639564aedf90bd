"""Markdown tables laid out like the recipe's, comparison tables, and the PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nortune.config.evaluate import shots_for
from nortune.config.names import too_few
from nortune.evaluate.stats import SMALL_SET, z_of
from nortune.evaluate.tasks import CATALOGUE, REFERENCE_AVERAGES, REFERENCE_COLUMNS
from nortune.markup import code, text
from nortune.runs import atomic_writer


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _note_lines(note: str | None) -> list[str]:
    return [f"> **{text(note)}**", ""] if note else []


def _execution_lines(run: dict[str, Any] | None) -> list[str]:
    """How the evaluation ran: batch settings, wall time and peak memory (results.json: nortune.execution)."""
    if not run:
        return []
    batch = ", ".join(f"{k} {text(run[k])}" for k in ("batch_tokens", "memory_gib", "batch_size") if k in run)
    cuda = f", peak CUDA allocated {run['peak_cuda_allocated_gib']:.2f} GiB" \
        if run.get("peak_cuda_allocated_gib") is not None else ""
    return [f"Ran on {text(run['device'])} ({text(run.get('dtype') or 'model dtype')}), {batch}: "
            f"{run['wall_s']:.0f} s including model load, peak resident memory {run['peak_rss_gib']:.2f} GiB"
            f"{cuda}.", ""]


def _refs(family: str) -> str:
    """The published reference columns of a task ("-" for families without published numbers)."""
    task = CATALOGUE.get(family)
    refs = task.references if task is not None and task.references else (None,) * len(REFERENCE_COLUMNS)
    return " | ".join(_pct(r) for r in refs)


def _ordered(tasks: dict[str, Any]) -> list[str]:
    return [f for f in CATALOGUE if f in tasks] + [f for f in tasks if f not in CATALOGUE]


def _pm(value: float | None, half: float | None) -> str:
    """A number with its interval beside it: ``61.2 ± 4.3``."""
    return "-" if value is None else (f"{value:.1f}" if half is None else f"{value:.1f} ± {half:.1f}")


def _avg_cell(group: dict[str, Any] | None, key: str, z: float) -> str:
    entry = (group or {}).get(key)
    return "-" if not entry else f"{_pm(entry['value'], z * entry['se'])} ({entry['tasks']})"


def small_set_lines(summary: dict[str, Any]) -> list[str]:
    """The warning for test sets under 100 items (the interval is then wide; it stands beside the number)."""
    small = summary.get("small_sets") or {f: s["n_items"] for f, s in summary["tasks"].items() if s.get("small")}
    if not small:
        return []
    names = ", ".join(f"{text(summary['tasks'][f]['label'])} ({n})" for f, n in small.items())
    return [f"> **Small test sets (< 100 items): {names}.** Their ± intervals are wide; a difference inside "
            "the interval is noise, not a finding.", ""]


def not_computed_lines(not_computed: dict[str, str] | None) -> list[str]:
    """The tasks whose metric could not be computed here, with the reason (never dropped silently)."""
    if not not_computed:
        return []
    return ["## Not computed", "", *(f"- {code(name)}: {text(reason)}" for name, reason in not_computed.items()), ""]


def markdown(summary: dict[str, Any]) -> str:
    """One model: per task best / mean / median / min over prompts with the combined SE and its interval,
    normalised scores, references; the recipe headlines; per-category and overall averages; per prompt."""
    tasks = summary["tasks"]
    head = summary["headline"]
    label = text(summary["label"])
    confidence = summary.get("confidence", 0.95)
    z = z_of(confidence)
    lines = [f"# NorEval: {label}", "", *_note_lines(summary.get("note"))]
    lines += [f"Multiple-choice metric: {code(summary['metric'])} (truthfulness has acc only); other tasks use the "
              f"metric their lm-eval task declares. lm-evaluation-harness's `noreval` tasks; backend "
              f"{code(summary['backend'])}. Scores 0..100; ± is {confidence:.0%} (±{z:.2f} combined SE).", ""]
    lines += _execution_lines(summary.get("execution"))
    if summary.get("limit"):
        lines += [f"> limit={text(summary['limit'])} items per task: a smoke run, not comparable to published "
                  "numbers.", ""]
    lines += small_set_lines(summary)
    ref = " | ".join(REFERENCE_COLUMNS)
    lines += [f"| task | category | metric | shots | n | {label} best (prompt) ± CI | mean ± CI | median | min | "
              f"SD prompts | SE combined | normalised best / mean | {ref} |",
              "|" + "---|" * (12 + len(REFERENCE_COLUMNS))]
    for family in _ordered(tasks):
        s = tasks[family]
        norm = " / ".join(_pct(s.get(k)) for k in ("normalised_best", "normalised_mean"))
        n_cell = f"{s['n_items']} (small)" if s.get("small") else str(s["n_items"])
        lines.append(f"| {text(s['label'])} | {text(s.get('category') or '-')} | {text(s['metric'])} | "
                     f"{shots_for(summary['num_fewshot'], family)} | {n_cell} | "
                     f"**{_pm(s['best'], s.get('ci'))}** ({text(s['best_prompt'])}) | {_pm(s['mean'], s.get('ci'))} | "
                     f"{_pct(s.get('median'))} | {_pct(s['min'])} | {s['std']:.1f} | "
                     f"{_pct(s.get('se'))} | {norm} | {_refs(family)} |")
    refs = " | ".join(_pct(r) for r in REFERENCE_AVERAGES)
    lines += ["", "| headline | value | " + ref + " |", "|---|---|" + "---|" * len(REFERENCE_COLUMNS),
              f"| best of prompts | **{_pct(head['best_of_prompts'])}** | {refs} |",
              f"| mean of prompts | **{_pct(head['mean_of_prompts'])}** | |" + " |" * (len(REFERENCE_COLUMNS) - 1)]
    lines += ["", f"- **{_pct(head['best_of_prompts'])}**: {text(head['best_of_prompts_label'])}.",
              f"- **{_pct(head['mean_of_prompts'])}**: {text(head['mean_of_prompts_label'])}.", ""]
    if head.get("categories"):
        lines += ["## Per category and overall", "",
                  "Unweighted means over the tasks summarised (task count in brackets); ± from the tasks' combined "
                  "SEs as sqrt(sum SE^2) / N. Raw averages mix metrics; the normalised ones (0 = chance, "
                  "100 = perfect) are comparable across tasks.", "",
                  "| category | best of prompts | mean of prompts | normalised best | normalised mean |",
                  "|---|---|---|---|---|"]
        for name, group in [*((text(c), g) for c, g in head["categories"].items()),
                            ("**overall**", head.get("overall"))]:
            lines.append(f"| {name} | " + " | ".join(_avg_cell(group, k, z) for k in (
                "best", "mean", "normalised_best", "normalised_mean")) + " |")
        lines.append("")
    lines += ["## Per prompt (value ± standard error)", "", "| task | prompt | headline metric | other metrics |",
              "|---|---|---|---|"]
    for family in _ordered(tasks):
        name = tasks[family]["metric"]
        for prompt, metrics in sorted(summary["scores"].get(family, {}).items()):
            cell = metrics.get(name, {})
            others = ", ".join(f"{text(m)} {v['value']:.1f}" for m, v in metrics.items() if m != name)
            lines.append(f"| {text(tasks[family]['label'])} | {text(prompt)} | {text(name)} "
                         f"{_pm(cell.get('value'), cell.get('stderr'))} | {others or '-'} |")
    lines += ["", *not_computed_lines(summary.get("not_computed"))]
    if summary.get("extra_tasks"):
        lines += ["## Extra lm-eval tasks (not in the average)", ""]
        for name, result in summary["extra_tasks"].items():
            shown = ", ".join(f"{text(k)} {v:.4f}" for k, v in result.items() if isinstance(v, float))
            lines.append(f"- {code(name)}: {shown}")
    lines += ["", *_note_lines(summary.get("note"))]
    return "\n".join(lines).rstrip() + "\n"


def compare_markdown(base: dict[str, Any], tuned: dict[str, Any], deltas, overall: dict[str, Any],
                     confidence: float) -> str:
    base_label, tuned_label = text(base["label"]), text(tuned["label"])
    lines = [f"# NorEval: {tuned_label} vs {base_label} (baseline)", "",
             *_note_lines(tuned.get("note") or base.get("note"))]
    regressions = [d for d in deltas if d.regression()]
    if regressions or overall.get("regression"):
        names = ", ".join(text(tuned["tasks"].get(d.family, {}).get("label", d.family)) for d in regressions) \
            or "the average"
        lines += [f"> **SIGNIFICANT REGRESSION: {names}** — the {confidence:.0%} paired bootstrap interval of "
                  f"{tuned_label} - {base_label} lies entirely below zero.", ""]
    lines += small_set_lines(tuned) if tuned.get("tasks") else []
    pct = f"{confidence:.0%}"
    ref = " | ".join(REFERENCE_COLUMNS)
    lines += [f"| task | metric | n | {base_label} | {tuned_label} | delta best-of-prompts [{pct} CI] | "
              f"delta mean-of-prompts [{pct} CI] | {ref} | verdict |",
              "|" + "---|" * (8 + len(REFERENCE_COLUMNS))]
    for d in deltas:
        verdict = "**REGRESSION**" if d.regression() else d.verdict()
        label = text(tuned["tasks"].get(d.family, {}).get("label", d.family))
        method = " (corpus metric recomputed)" if d.method == "corpus" else ""
        n_cell = f"{d.n_items} (small)" if d.n_items < SMALL_SET else str(d.n_items)
        lines.append(f"| {label} | {text(d.metric)}{method} | {n_cell} | "
                     f"{_pct(base['tasks'].get(d.family, {}).get('best'))} | "
                     f"{_pct(tuned['tasks'].get(d.family, {}).get('best'))} | "
                     f"{d.best:+.1f} [{d.best_ci[0]:+.1f}, {d.best_ci[1]:+.1f}] | "
                     f"{d.mean:+.1f} [{d.mean_ci[0]:+.1f}, {d.mean_ci[1]:+.1f}] | {_refs(d.family)} | {verdict} |")
    if overall.get("tasks"):
        refs = " | ".join(_pct(r) for r in REFERENCE_AVERAGES)
        verdict = "**REGRESSION**" if overall["regression"] else (
            "" if overall["judged"] else too_few(overall["items"]))
        lines.append(f"| average ({overall['tasks']} recipe tasks) | | | {_pct(base['headline']['best_of_prompts'])} | "
                     f"{_pct(tuned['headline']['best_of_prompts'])} | {overall['best']:+.1f} "
                     f"[{overall['best_ci'][0]:+.1f}, {overall['best_ci'][1]:+.1f}] | {overall['mean']:+.1f} "
                     f"[{overall['mean_ci'][0]:+.1f}, {overall['mean_ci'][1]:+.1f}] | {refs} | {verdict} |")
    if overall.get("no_paired_ci"):
        lines += ["", "**No paired interval** (these tasks are not compared):", "",
                  *(f"- {text(tuned['tasks'].get(f, {}).get('label', f))}: {text(why)}"
                    for f, why in overall["no_paired_ci"].items())]
    lines += ["", "Deltas in points (0..100 scale). Intervals: paired bootstrap over items (the same resampled items "
              "for both models and all prompts); best-of-prompts is re-picked inside every resample; corpus metrics "
              "(BLEU, chrF) are recomputed on every resample.", "",
              *not_computed_lines({**(base.get("not_computed") or {}), **(tuned.get("not_computed") or {})}),
              *_note_lines(tuned.get("note") or base.get("note"))]
    return "\n".join(lines).rstrip() + "\n"


def chart(path: Path, runs: dict[str, dict[str, Any]], note: str | None) -> Path | None:
    """Grouped bars per task: each run's best-of-5 beside the three reference columns."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    families = list(dict.fromkeys(f for r in runs.values() for f in _ordered(r["tasks"])))
    if not families:
        return None
    # each run's best of prompts with its ± interval as an error bar, then the published numbers (0 where none)
    series = [(name, [r["tasks"].get(f, {}).get("best", 0.0) for f in families],
               [r["tasks"].get(f, {}).get("ci") or 0.0 for f in families]) for name, r in runs.items()]
    if any(f in CATALOGUE and CATALOGUE[f].references for f in families):
        series += [(ref, [CATALOGUE[f].references[i] if f in CATALOGUE and CATALOGUE[f].references else 0.0
                          for f in families], None) for i, ref in enumerate(REFERENCE_COLUMNS)]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(12, 0.6 * len(families)), 5))
    for i, (name, values, errors) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(families))]
        hatch = "//" if name in REFERENCE_COLUMNS else None
        ax.bar(xs, values, width, label=name, hatch=hatch, alpha=0.55 if hatch else 0.95, yerr=errors, capsize=2)
    labels = [next((r["tasks"][f]["label"] for r in runs.values() if f in r["tasks"]), f) for f in families]
    ax.set_xticks(range(len(families)), labels, rotation=25, ha="right")
    ax.set_ylabel("score, best of prompts (0..100), ± interval")
    ax.set_ylim(0, 115)  # headroom for the legend above 100 %
    ax.set_yticks(range(0, 101, 20))
    ax.legend(fontsize=8, ncol=len(series), loc="upper center")
    ax.set_title("NorEval" + (" — SAMPLE SETS, NOT NorEval" if note and note.startswith("SAMPLE") else ""))
    fig.tight_layout()
    with atomic_writer(path, binary=True) as handle:
        fig.savefig(handle, dpi=110, format="png")
    plt.close(fig)
    return path

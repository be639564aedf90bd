"""Markdown tables laid out like the recipe's, comparison tables, and the PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nortune.evaluate.tasks import CATALOGUE, REFERENCE_AVERAGES, REFERENCE_COLUMNS


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _note_lines(note: str | None) -> list[str]:
    return [f"> **{note}**", ""] if note else []


def _execution_lines(run: dict[str, Any] | None) -> list[str]:
    """How the evaluation ran: batch settings, wall time and peak memory (results.json: nortune.execution)."""
    if not run:
        return []
    batch = ", ".join(f"{k} {run[k]}" for k in ("batch_tokens", "memory_gib", "batch_size") if k in run)
    cuda = f", peak CUDA allocated {run['peak_cuda_allocated_gib']:.2f} GiB" \
        if run.get("peak_cuda_allocated_gib") is not None else ""
    return [f"Ran on {run['device']} ({run.get('dtype') or 'model dtype'}), {batch}: {run['wall_s']:.0f} s including "
            f"model load, peak resident memory {run['peak_rss_gib']:.2f} GiB{cuda}.", ""]


def markdown(summary: dict[str, Any]) -> str:
    """One model: the recipe's table (task, dataset, references) plus best/mean/min/std and per prompt."""
    tasks = summary["tasks"]
    head = summary["headline"]
    label = summary["label"]
    lines = [f"# NorEval: {label}", "", *_note_lines(summary.get("note"))]
    lines += [f"Metric: `{summary['metric']}` (truthfulness has acc only), log-likelihood scoring via "
              f"lm-evaluation-harness's `noreval` tasks; backend `{summary['backend']}`.", ""]
    lines += _execution_lines(summary.get("execution"))
    if summary.get("limit"):
        lines += [f"> limit={summary['limit']} items per task: a smoke run, not comparable to published numbers.", ""]
    ref = " | ".join(REFERENCE_COLUMNS)
    lines += [f"| task | dataset (HF id, config) | shots | {label} best-of-5 | {ref} | best prompt | mean | min | std | n |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for family, task in CATALOGUE.items():
        if family not in tasks:
            continue
        s = tasks[family]
        refs = " | ".join(_pct(r) for r in (task.references or (None,) * len(REFERENCE_COLUMNS)))
        lines.append(f"| {task.label} | {task.dataset} ({task.config}) | {summary['num_fewshot'].get(family, 0)} | "
                     f"**{_pct(s['best'])}** | {refs} | {s['best_prompt']} | {_pct(s['mean'])} | {_pct(s['min'])} | "
                     f"{s['std']:.1f} | {s['n_items']} |")
    refs = " | ".join(_pct(r) for r in REFERENCE_AVERAGES)
    lines.append(f"| average | | | **{_pct(head['best_of_prompts'])}** | {refs} | | "
                 f"{_pct(head['mean_of_prompts'])} | | | |")
    lines += ["", f"- **{_pct(head['best_of_prompts'])}**: {head['best_of_prompts_label']}.",
              f"- **{_pct(head['mean_of_prompts'])}**: {head['mean_of_prompts_label']}.", "",
              "## Per prompt (value ± standard error)", "",
              "| task | prompt | acc | acc_norm |", "|---|---|---|---|"]
    for family, prompts in summary["scores"].items():
        for prompt, metrics in sorted(prompts.items()):
            cells = [f"{metrics[m]['value']:.1f} ± {metrics[m]['stderr']:.1f}" if m in metrics else "-"
                     for m in ("acc", "acc_norm")]
            lines.append(f"| {tasks[family]['label']} | {prompt} | {cells[0]} | {cells[1]} |")
    if summary.get("extra_tasks"):
        lines += ["", "## Extra lm-eval tasks (not in the average)", ""]
        for name, result in summary["extra_tasks"].items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))
            lines.append(f"- `{name}`: {shown}")
    lines += ["", *_note_lines(summary.get("note"))]
    return "\n".join(lines).rstrip() + "\n"


def compare_markdown(base: dict[str, Any], tuned: dict[str, Any], deltas, overall: dict[str, Any],
                     confidence: float) -> str:
    lines = [f"# NorEval: {tuned['label']} vs {base['label']} (baseline)", "",
             *_note_lines(tuned.get("note") or base.get("note"))]
    regressions = [d for d in deltas if d.regression()]
    if regressions or overall.get("regression"):
        names = ", ".join(CATALOGUE[d.family].label for d in regressions) or "the average"
        lines += [f"> **SIGNIFICANT REGRESSION: {names}** — the {confidence:.0%} paired bootstrap interval of "
                  f"{tuned['label']} - {base['label']} lies entirely below zero.", ""]
    pct = f"{confidence:.0%}"
    ref = " | ".join(REFERENCE_COLUMNS)
    lines += [f"| task | {base['label']} | {tuned['label']} | delta best-of-5 [{pct} CI] | delta mean-of-prompts [{pct} CI] | {ref} | verdict |",
              "|---|---|---|---|---|---|---|---|---|"]
    for d in deltas:
        task = CATALOGUE[d.family]
        verdict = "**REGRESSION**" if d.regression() else ("gain" if d.gain() else "no significant change")
        refs = " | ".join(_pct(r) for r in (task.references or (None,) * len(REFERENCE_COLUMNS)))
        lines.append(f"| {task.label} | {_pct(base['tasks'][d.family]['best'])} | "
                     f"{_pct(tuned['tasks'][d.family]['best'])} | {d.best:+.1f} [{d.best_ci[0]:+.1f}, {d.best_ci[1]:+.1f}] | "
                     f"{d.mean:+.1f} [{d.mean_ci[0]:+.1f}, {d.mean_ci[1]:+.1f}] | {refs} | {verdict} |")
    if overall:
        refs = " | ".join(_pct(r) for r in REFERENCE_AVERAGES)
        verdict = "**REGRESSION**" if overall["regression"] else ""
        lines.append(f"| average | {_pct(base['headline']['best_of_prompts'])} | "
                     f"{_pct(tuned['headline']['best_of_prompts'])} | {overall['best']:+.1f} "
                     f"[{overall['best_ci'][0]:+.1f}, {overall['best_ci'][1]:+.1f}] | {overall['mean']:+.1f} "
                     f"[{overall['mean_ci'][0]:+.1f}, {overall['mean_ci'][1]:+.1f}] | {refs} | {verdict} |")
    lines += ["", "Deltas in percentage points. Intervals: paired bootstrap over items (the same resampled items "
              "for both models and all prompts); best-of-5 is re-picked inside every resample.", "",
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
    families = [f for f in CATALOGUE if any(f in r["tasks"] for r in runs.values())]
    if not families:
        return None
    series = [(name, [r["tasks"].get(f, {}).get("best", 0.0) for f in families]) for name, r in runs.items()]
    series += [(ref, [(CATALOGUE[f].references or (0.0,) * len(REFERENCE_COLUMNS))[i] for f in families])
               for i, ref in enumerate(REFERENCE_COLUMNS)]  # no bar where nothing is published
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(12, 5))
    for i, (name, values) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(families))]
        hatch = "//" if name in REFERENCE_COLUMNS else None
        ax.bar(xs, values, width, label=name, hatch=hatch, alpha=0.55 if hatch else 0.95)
    ax.set_xticks(range(len(families)), [CATALOGUE[f].label for f in families], rotation=25, ha="right")
    ax.set_ylabel("accuracy, best of prompts (%)")
    ax.set_ylim(0, 115)  # headroom for the legend above 100 %
    ax.set_yticks(range(0, 101, 20))
    ax.legend(fontsize=8, ncol=len(series), loc="upper center")
    ax.set_title("NorEval" + (" — SAMPLE SETS, NOT NorEval" if note and note.startswith("SAMPLE") else ""))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path

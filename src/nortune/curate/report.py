"""Composition report: a Markdown table and a PNG chart whose numbers add up."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from nortune.markup import code, text
from nortune.runs import atomic_write_text, atomic_writer


def _table(title: str, counts: Counter, total: int, targets: dict[str, float] | None = None) -> list[str]:
    head = "| " + title + " | records | share |" + (" target |" if targets is not None else "")
    rule = "|---|---:|---:|" + ("---:|" if targets is not None else "")
    lines = [head, rule]
    keys = sorted(set(counts) | set(targets or {}))
    for key in keys:
        share = counts[key] / total if total else 0.0
        row = f"| {text(key)} | {counts[key]} | {share:.1%} |"
        if targets is not None:
            row += f" {targets.get(key, 0.0):.1%} |"
        lines.append(row)
    lines.append(f"| **total** | **{sum(counts.values())}** | |" + (" |" if targets is not None else ""))
    return lines


def write_markdown(path: Path, *, inputs: int, by_lang: Counter, by_source: Counter, by_task: Counter,
                   drops: Counter, shares: dict[str, float], notes: list[str], malformed: list[str],
                   read: Counter | None = None) -> None:
    out = sum(by_lang.values())
    lines = ["# Curate: composition report", "",
             f"Input records: **{inputs}**. Output records: **{out}**. Dropped: **{sum(drops.values())}**.",
             f"Check: {out} + {sum(drops.values())} = {out + sum(drops.values())} "
             f"({'adds up' if out + sum(drops.values()) == inputs else 'DOES NOT ADD UP'}).", ""]
    for note in notes:
        lines += [f"> **Note:** {text(note)}", ""]
    if read is not None:
        lines += ["## Input by source (every record read, before any drop)", "", "| source | records |",
                  "|---|---:|"] + [f"| {text(name)} | {count} |" for name, count in read.items()]
        lines += [f"| **total** | **{sum(read.values())}** |", ""]
    lines += ["## Output by bucket (language / translation / mixed)", ""]
    lines += _table("bucket", by_lang, out, shares) + [""]
    lines += ["## Output by source", ""] + _table("source", by_source, out) + [""]
    lines += ["## Output by task type", ""] + _table("task", by_task, out) + [""]
    lines += ["## Dropped records by reason", "", "| reason | records |", "|---|---:|"]
    lines += [f"| {text(reason)} | {count} |" for reason, count in sorted(drops.items())]
    lines += [f"| **total** | **{sum(drops.values())}** |", ""]
    if malformed:
        lines += ["## Malformed records (first 20)", ""] + [f"- {code(m)}" for m in malformed[:20]] + [""]
    atomic_write_text(path, "\n".join(lines))


def write_chart(path: Path, *, by_lang: Counter, by_source: Counter, by_task: Counter, drops: Counter) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = [("Output by bucket", by_lang), ("Output by source", by_source),
              ("Output by task type", by_task), ("Dropped by reason", drops)]
    for ax, (title, counts) in zip(axes.flat, panels):
        keys = sorted(counts)
        ax.barh(keys, [counts[k] for k in keys], color="#3b6ea5")
        ax.set_title(title)
        ax.invert_yaxis()
        for i, key in enumerate(keys):
            ax.text(counts[key], i, f" {counts[key]}", va="center", fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    with atomic_writer(path, binary=True) as handle:
        fig.savefig(handle, dpi=110, format="png")
    plt.close(fig)
    return True

"""One self-contained HTML page (and a Markdown summary) per run.

Everything comes from the run folder: stage manifests, their Markdown reports (rendered
by ``markup.to_html``: raw HTML in them shows as text) and PNG charts (embedded as data URIs,
so the page needs no network and survives being mailed around). Every artifact is linked,
relative to the page. The page forbids scripts (``CSP``), and the browser check fails the stage
when a dialog, a script error or a policy violation shows up anyway.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
from pathlib import Path
from typing import Any

from nortune import markup
from nortune.config import Recipe
from nortune.report.ledger import FAILED_CHECK, PASSED, RunSummary, checks, format_runs, summarize
from nortune.errors import StageFailed
from nortune.runner import StageContext, StageResult
from nortune.runs import EXTRA_FOLDERS, FAILED, MANIFEST, STAGE_FOLDERS, RunLayout, atomic_write_text, \
    read_failure, read_manifest

log = logging.getLogger(__name__)
# Section titles, in page order: the pipeline's stages (runs.STAGE_FOLDERS), the preference pairs'
# contamination check after preference. The report does not show itself.
TITLES = {
    "curate": "Data composition", "decontam": "Contamination check", "plan": "Adapter plan",
    "train": "Training (SFT)", "preference": "Preference optimisation",
    "decontam-preference": "Contamination check of the preference pairs",
    "evaluate-base": "Evaluation: base model", "evaluate-tuned": "Evaluation: tuned model",
    "evaluate-preference": "Evaluation: SFT + preference", "export": "Export and verification",
}
assert set(TITLES) == (set(STAGE_FOLDERS) | set(EXTRA_FOLDERS)) - {"report"}, "a stage without a report title"
CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
td[align=right],th[align=right]{text-align:right} td[align=center],th[align=center]{text-align:center}
th{background:#f3f3f3} img{max-width:100%;border:1px solid #eee;margin:.5em 0}
.warn{background:#fde2e1;border:2px solid #c0392b;padding:.8em;font-weight:bold}
.ok{background:#e4f6e7;border:1px solid #2e8b57;padding:.6em 2em}
.pending{background:#fff8e1;border:1px solid #b8860b;padding:.6em 2em} ul.warn{font-weight:normal;padding:.6em 2em}
.files{font-size:.9em} code{background:#f6f6f6;padding:0 .2em} details{margin:.5em 0}
"""
# No script of any kind, no fetch, no plugin, no form: the charts are data-URI images, the CSS is inline.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def _stage_dirs(run_dir: Path) -> list[str]:
    """The stages with a result or a failure in this run folder, in page order."""
    layout = RunLayout(run_dir)
    return [s for s in TITLES
            if (layout.stage_dir(s) / MANIFEST).is_file() or (layout.stage_dir(s) / FAILED).is_file()]


def _head(title: str) -> str:
    """From ``<!doctype html>`` to ``<body>``: the policy first, before anything it governs."""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>")


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _metrics_table(metrics: dict[str, Any]) -> str:
    rows = []
    for key, value in metrics.items():
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value
        rows.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(shown))}</td></tr>")
    return f"<table>{''.join(rows)}</table>" if rows else ""


def _files(stage_dir: Path, page_dir: Path) -> str:
    links = []
    for path in sorted(p for p in stage_dir.rglob("*") if p.is_file() and "cache" not in p.parts):
        rel = Path("..") / path.relative_to(page_dir.parent)
        links.append(f'<li><a href="{html.escape(rel.as_posix())}">{html.escape(str(path.relative_to(stage_dir)))}'
                     f"</a> ({path.stat().st_size:,} bytes)</li>")
        if len(links) >= 200:
            links.append("<li>(more files not listed)</li>")
            break
    return f"<details class='files'><summary>{len(links)} files</summary><ul>{''.join(links)}</ul></details>"


def _section(run_dir: Path, stage: str, page_dir: Path) -> str:
    stage_dir = RunLayout(run_dir).stage_dir(stage)
    manifest = read_manifest(stage_dir) or {}
    parts = [f"<h2 id='{stage}'>{html.escape(TITLES.get(stage, stage))}</h2>",
             _metrics_table(manifest.get("metrics", {}))]
    failure = read_failure(stage_dir)
    if failure is not None:
        parts.append(f"<p class='warn'>&#9888; This stage FAILED and produced no result: "
                     f"{html.escape(failure.get('error', ''))}</p>")
    for md in sorted(stage_dir.glob("*.md")):
        if md.name.lower() != "readme.md" or stage == "export":
            parts.append(f"<details open><summary>{html.escape(md.name)}</summary>"
                         f"{markup.to_html(md.read_text(encoding='utf-8'))}</details>")
    for png in sorted(stage_dir.glob("*.png")):
        parts.append(_image(png))
    parts.append(_files(stage_dir, page_dir))
    return "\n".join(parts)


def _banner(summary: RunSummary) -> str:
    """Every verdict, each as passed, failed or not run: a run that has not been evaluated or exported is
    never shown green for it."""
    found = checks(summary)
    failed = [f"{name}: {words}" for name, state, words in found if state == FAILED_CHECK]
    rest = "".join(f"<li>{'&#10003;' if state == PASSED else '&#8211; not run yet:'} {html.escape(name)}: "
                   f"{html.escape(words)}</li>" for name, state, words in found if state != FAILED_CHECK)
    style = "warn" if failed else "ok" if all(state == PASSED for _, state, _ in found) else "pending"
    return ("".join(f"<p class='warn'>&#9888; {html.escape(w)}</p>" for w in failed)
            + f"<ul class='{style}'>{rest}</ul>" + _perplexity_table(summary))


def _perplexity_table(summary: RunSummary) -> str:
    """Held-out perplexity per set (base, tuned, change with interval, verdict); flagged rows in red."""
    if not summary.perplexity:
        return ""
    rows = "".join(
        f"<tr{' class=warn' if r['forgetting'] else ''}><td>{html.escape(r['set'])}"
        f"{' (trained)' if r['trained'] else ''}</td><td>{r['base_ppl']:.2f}</td><td>{r['tuned_ppl']:.2f}</td>"
        f"<td>{r['change']:+.1%} [{r['ci'][0]:+.1%}, {r['ci'][1]:+.1%}]</td><td>{html.escape(r['verdict'])}</td></tr>"
        for r in summary.perplexity)
    return ("<h3>Held-out perplexity, tuned vs base</h3><table><tr><th>set</th><th>base ppl</th><th>tuned ppl</th>"
            f"<th>change [CI]</th><th>verdict</th></tr>{rows}</table>")


def standalone_page(title: str, markdown_text: str) -> str:
    """One Markdown text as a self-contained page, with the report's policy and style."""
    return f"{_head(title)}<h1>{html.escape(title)}</h1>{markup.to_html(markdown_text)}</body></html>"


def _data_notes(run_dir: Path) -> str:
    """Say up front when the evaluation data are sample sets, not NorEval; which tasks were not computed
    (and why), which test sets are small (their intervals are wide), and which tasks have no paired interval."""
    layout = RunLayout(run_dir)
    metrics = {label: (read_manifest(layout.evaluate_dir(label)) or {}).get("metrics", {})
               for label in ("base", "tuned", "preference")}
    notes = {m.get("note") for m in metrics.values()}
    out = "".join(f"<p class='warn'>{html.escape(n)}</p>" for n in sorted(n for n in notes if n))
    for label, m in metrics.items():
        for task, why in (m.get("not_computed") or {}).items():
            out += f"<p class='warn'>Not computed ({html.escape(label)}): {html.escape(task)}: {html.escape(why)}</p>"
    small = {task: n for m in metrics.values() for task, n in (m.get("small_sets") or {}).items()}
    if small:
        listed = ", ".join(f"{html.escape(t)} ({n})" for t, n in small.items())
        out += (f"<p>Small test sets (&lt; 100 items): {listed}; their intervals are wide and shown beside "
                "each number in the evaluation tables.</p>")
    for label in ("tuned", "preference"):
        compare = layout.compare_dir(label) / "compare.json"
        no_ci = json.loads(compare.read_text(encoding="utf-8")).get("no_paired_ci", {}) if compare.is_file() else {}
        for task, why in no_ci.items():
            out += f"<p>No paired interval ({html.escape(label)} vs its baseline): {html.escape(task)}: {html.escape(why)}</p>"
    return out


def render(run_dir: Path, page_dir: Path) -> tuple[str, str]:
    summary = summarize(run_dir)
    stages = _stage_dirs(run_dir)
    overview = markup.to_html(format_runs([summary]))
    nav = " · ".join(f"<a href='#{s}'>{html.escape(TITLES.get(s, s))}</a>" for s in stages)
    body = "\n".join(_section(run_dir, s, page_dir) for s in stages)
    page = (f"{_head(f'nortune run {summary.recipe or run_dir.name}')}"
            f"<h1>nortune run: {html.escape(summary.recipe or run_dir.name)}</h1>"
            f"<p>Run folder <code>{html.escape(str(run_dir))}</code>; stages finished: "
            f"{html.escape(', '.join(summary.stages_done) or 'none')}.</p>"
            f"{_banner(summary)}{_data_notes(run_dir)}{overview}<p>{nav}</p>{body}</body></html>")
    markdown_summary = "\n".join([f"# nortune run: {markup.text(summary.recipe or run_dir.name)}", "",
                                  format_runs([summary]), "",
                                  *(f"- {'**FAILED**' if state == FAILED_CHECK else state}: {name}: "
                                    f"{markup.text(words)}" for name, state, words in checks(summary)), ""])
    return page, markdown_summary


def fingerprint(recipe: Recipe) -> dict[str, Any]:
    """The report is current while nothing it shows has changed: each shown stage's records, Markdown
    reports and charts (by content) and its file list (by name and size), and the browser-check setting."""
    from nortune import browser

    layout = RunLayout.of(recipe)
    return {"stages": {s: _shown(layout.stage_dir(s)) for s in _stage_dirs(layout.root)},
            "browser_check": "off" if browser.opted_out() else "on"}


def _shown(stage_dir: Path) -> str:
    """A digest of what the page shows of one stage folder (see ``_section`` and ``_files``)."""
    from nortune.runs import file_sha256

    digest = hashlib.sha256()
    for path in sorted(p for p in stage_dir.rglob("*") if p.is_file() and "cache" not in p.parts):
        rel = path.relative_to(stage_dir)
        rendered = len(rel.parts) == 1 and path.suffix in (".md", ".png", ".json")
        digest.update(f"{rel}\0{path.stat().st_size}\0{file_sha256(path) if rendered else ''}\n".encode())
    return digest.hexdigest()[:16]


def work(ctx: StageContext) -> StageResult:
    """Write ``<run>/report/report.html`` and ``summary.md``, then check the page in a real browser."""
    from nortune import browser

    layout, page_dir = ctx.layout, ctx.directory
    page, summary = render(layout.root, page_dir)
    atomic_write_text(layout.report_page, page)
    atomic_write_text(page_dir / "summary.md", summary)
    outputs = [layout.report_page, page_dir / "summary.md"]
    metrics: dict[str, Any] = {"stages": len(ctx.fingerprint["stages"])}
    if browser.opted_out():
        metrics["browser_check"] = f"off ({browser.OPT_OUT_ENV}=off)"
        log.info("report: browser check switched off by %s=off", browser.OPT_OUT_ENV)
    elif not browser.available():
        raise StageFailed("report", browser.MISSING)
    else:
        checked = browser.check_page(layout.report_page, page_dir / "screenshot.png")
        problems = browser.problems(checked)
        if problems:  # no result; the runner moves the page to report/.partial/ for inspection
            raise StageFailed("report", f"{layout.report_page}: the browser check found {'; '.join(problems)}",
                              {"browser_check": {k: checked[k] for k in browser.FINDINGS}})
        metrics.update(console_errors=len(checked["console_errors"]), images=checked["images"],
                       broken_images=len(checked["broken_images"]))
        outputs.append(page_dir / "screenshot.png")
    return StageResult(outputs, metrics)

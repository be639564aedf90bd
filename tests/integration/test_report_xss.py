"""Issue 26: data that looks like markup shows as text in the report and the compare page, and runs nothing.

A run folder is built cheaply through the real CLI (``nortune curate`` and ``nortune decontam`` on
tiny files; no model): record ids, free text, source file names, the training file's name, an
allow-list phrase and extra-benchmark ids all carry script, event-handler, backtick and link
payloads. The evaluate stage is written from its own Markdown builders with payload task, prompt
and category names (a real evaluation needs a model). ``nortune report`` and ``nortune compare
--html`` then run, and real headless Chromium (``nortune.browser``) must see no dialog, no script
error, no policy violation and no console error, and must show every payload as literal text.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_manifest
import yaml

from nortune import browser

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parents[2]
NOREVAL = REPO / "tests" / "fixtures" / "noreval_mini"
SCRIPT, HANDLER, TICKS, LINK = ("<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "`tick``s`",
                                "[x](javascript:alert(3))")
PAYLOADS = (SCRIPT, HANDLER, TICKS, LINK)
ALL = " ".join(PAYLOADS)
NAMED = f"{HANDLER} {TICKS} {LINK}"  # a file or folder name cannot hold the "/" of </script>
NB = ["Oslo er hovedstaden i Norge og ligger innerst i Oslofjorden ved skogen.",
      "Fotosyntese er prosessen der planter bruker sollys og vann til å lage sukker.",
      "Hvis du vil sove bedre, bør du legge deg til samme tid hver eneste dag.",
      "Det finnes mange fine turstier rundt byen, og de fleste er godt merket."]
COPIED = "Hvor legger man vanligvis fra seg de våte støvlene etter en lang tur i fjellet?"  # a noreval_mini question


def nortune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nortune.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def chat(user: str, answer: str, **extra) -> str:
    return json.dumps({**extra, "messages": [{"role": "user", "content": user},
                                             {"role": "assistant", "content": answer}]}, ensure_ascii=False)


def _evaluate_stage(run: Path) -> None:
    """evaluate/tuned as the stage writes it (manifest + report.md), with payload task/prompt/category names."""
    from nortune.evaluate import card, report
    from nortune.evaluate.stats import family_summary, headlines, prompt_scores

    samples = [{"family": SCRIPT, "prompt": LINK, "doc_id": i, "doc_hash": f"h{i}", "acc": float(c),
                "acc_norm": float(c)} for i, c in enumerate([1, 0, 1, 1])]
    scores = prompt_scores(samples)
    tasks = family_summary(scores, "acc")
    summary = {"label": "tuned", "metric": "acc", "note": f"note {ALL}", "confidence": 0.95, "num_fewshot": {},
               "limit": None, "backend": HANDLER, "tasks": tasks, "headline": headlines(tasks), "scores": scores,
               "small_sets": {SCRIPT: 4}, "not_computed": {HANDLER: f"because {ALL}"},
               "extra_tasks": {TICKS: {LINK: 0.5}}}
    eval_card = {"lm_eval": "0.4.13", "tasks": {SCRIPT: {"version": 1, "num_fewshot": 0}}, "fewshot_seed": 1,
                 "data": {"source": "local", "data_dir": f"/data/{NAMED}", "revision": None, "files": []},
                 "chat": {"applied": False, "reason": ALL}, "limit": None, "backend": HANDLER, "dtype": TICKS}
    out = run / "evaluate" / "tuned"
    out.mkdir(parents=True)
    (out / "report.md").write_text(report.markdown(summary) + card.markdown(eval_card), encoding="utf-8")
    metrics = {"best_of_prompts": 75.0, "mean_of_prompts": 75.0, "tasks": {SCRIPT: 75.0}, "tasks_ci": {SCRIPT: 9.0},
               "small_sets": {SCRIPT: 4}, "normalised_categories": {ALL: 10.0}, "not_computed": {HANDLER: ALL}}
    write_manifest(out, "evaluate-tuned", metrics=metrics, finished=1.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, Path]:
    """(recipe, run folder) of a curated and contamination-checked run whose data is full of payloads."""
    d = tmp_path_factory.mktemp("xss")
    source = d / f"source {NAMED}.jsonl"
    source.write_text("\n".join([chat("Kan du forklare dette?", t) for t in NB]
                                + [json.dumps({"messages": [{"role": SCRIPT, "content": ALL}]})]) + "\n",
                      encoding="utf-8")
    empty = d / f"empty {NAMED}.jsonl"
    empty.write_text("", encoding="utf-8")
    train = d / f"train {NAMED}.jsonl"
    train.write_text("\n".join([chat("Skriv et dikt.", f"{COPIED} {ALL}", id=HANDLER),
                                chat("Hei", f"{HANDLER} {NB[1]}", id=ALL)]) + "\n", encoding="utf-8")
    extra = d / "extra.jsonl"  # the test side: a benchmark whose id and text are payloads
    extra.write_text(json.dumps({"id": ALL, "q": f"{HANDLER} {NB[1]}"}, ensure_ascii=False) + "\n", encoding="utf-8")
    recipe = d / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "xss", "runs_dir": str(d / "runs"),
        "curate": {"shares": {"nb": 1.0}, "allow_shortfall": True,
                   "sources": [{"name": "good", "path": str(source)}, {"name": "empty", "path": str(empty)}]},
        "evaluate": {"source": "local", "data_dir": str(NOREVAL)},
        "decontam": {"data": str(train), "allow": [ALL],
                     "extra": [{"name": "extra", "path": str(extra), "fields": ["q"], "id_field": "id"}]},
    }, allow_unicode=True), encoding="utf-8")
    curated = nortune("curate", str(recipe))
    assert curated.returncode == 0, curated.stderr
    checked = nortune("decontam", str(recipe))
    assert checked.returncode == 1, checked.stderr  # contaminated on purpose: the ids reach the table
    folder = d / "runs" / "xss"
    assert (folder / "decontam" / "manifest.json").is_file()
    _evaluate_stage(folder)
    return recipe, folder


def _needs_chromium() -> None:
    if browser.opted_out():  # explicit and visible; a missing browser fails the report stage instead
        pytest.skip(f"{browser.OPT_OUT_ENV}=off")


def _shows_literally(page: Path, screenshot: Path, wanted: list[str]) -> dict:
    checked = browser.check_page(page, screenshot)
    assert browser.problems(checked) == []
    missing = [w for w in wanted if w not in checked["text"]]
    assert not missing, f"not shown as text: {missing}"
    return checked


def test_the_report_shows_payloads_as_text_and_runs_nothing(run, tmp_path):
    _needs_chromium()
    recipe, folder = run
    made = nortune("report", str(recipe))
    assert made.returncode == 0, made.stderr  # before issue 26: the alert fired, then a traceback
    manifest = json.loads((folder / "report" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["metrics"]["console_errors"] == 0 and manifest["metrics"]["broken_images"] == 0
    page = folder / "report" / "report.html"
    html = page.read_text(encoding="utf-8")
    assert "http-equiv='Content-Security-Policy'" in html and "default-src 'none'" in html
    for markup in ("<script", "<img src=x", 'href="javascript', "href='javascript"):  # as markup, not as text
        assert markup not in html
    checked = _shows_literally(page, tmp_path / "shot.png", [
        ALL,  # a record id, an extra benchmark's id (the test id), the allow-list phrase
        f"{HANDLER} fotosyntese",  # free text of a record (the matched snippet, casefolded)
        str(folder.parent.parent / f"train {NAMED}.jsonl"),  # the training file's name
        f"source {NAMED}.jsonl:5: messages[0] has unknown role '{SCRIPT}'",  # a malformed record, its file
        f"empty {NAMED}.jsonl) has no records",  # a note naming a source file
        SCRIPT, f"({LINK})", f"note {ALL}", f"because {ALL}", f"/data/{NAMED}",  # evaluate: task, prompt, note
    ])
    assert checked["images"] >= 1  # the data-URI charts load under the policy


def test_compare_html_escapes_run_names_and_cells(run, tmp_path):
    _needs_chromium()
    _, folder = run
    named = tmp_path / NAMED  # a run folder whose name is markup
    shutil.copytree(folder, named)
    out = tmp_path / "compare.html"
    compared = nortune("compare", str(named), "--html", str(out))
    assert compared.returncode == 0, compared.stderr
    text = _shows_literally(out, tmp_path / "shot.png", [NAMED, SCRIPT, f"{ALL}, normalised", HANDLER])["text"]
    assert f"{NAMED}\n" in text or f"{NAMED}\t" in text  # the run name is the column's header
    html = out.read_text(encoding="utf-8")
    assert "http-equiv='Content-Security-Policy'" in html and "<img src=x" not in html and "<script" not in html


def test_the_browser_check_names_a_dialog_a_blocked_script_and_a_console_error(tmp_path):
    _needs_chromium()
    open_page = tmp_path / "open.html"  # no policy: the handler runs and calls alert
    open_page.write_text(f"<!doctype html><html><body><p>x</p>{HANDLER}</body></html>", encoding="utf-8")
    found = browser.problems(browser.check_page(open_page, tmp_path / "a.png"))
    assert any(p.startswith("1 JavaScript dialog (alert(2))") for p in found), found
    from nortune.report.stage import standalone_page

    strict = tmp_path / "strict.html"  # the report's policy: the inline script is blocked and logged
    strict.write_text(standalone_page("t", "x").replace("<h1>", f"{SCRIPT}<h1>"), encoding="utf-8")
    found = browser.problems(browser.check_page(strict, tmp_path / "b.png"))
    assert any("Content-Security-Policy violation" in p for p in found), found
    assert any("console error" in p for p in found) and not any("dialog" in p for p in found), found


def test_a_finding_fails_the_report_stage_and_keeps_the_page(run, monkeypatch):
    """Were raw HTML to reach the page again (an unescaped writer, a renderer that passes HTML), the report
    stage fails: failed.json, exit 1, the page kept for inspection."""
    _needs_chromium()
    import markdown

    from nortune import markup
    from nortune.cli import main
    from nortune.runs import read_failure

    recipe, folder = run
    raw = folder / "curate" / "raw.md"
    raw.write_text(f"An unescaped writer: {HANDLER}\n", encoding="utf-8")
    monkeypatch.setattr(markup, "to_html", lambda text: markdown.markdown(text, extensions=["tables"]))
    try:
        assert main(["report", str(recipe)]) == 1
        failure = read_failure(folder / "report")
        assert failure is not None and "the browser check found" in failure["error"]
        assert "Content-Security-Policy violation" in failure["error"]
        # kept for inspection: in place, or moved aside with the failed attempt's other outputs
        assert any((folder / "report" / kept / "report.html").is_file() for kept in (".", ".partial"))
        assert not (folder / "report" / "manifest.json").exists()
    finally:
        monkeypatch.undo()
        raw.unlink()
        assert nortune("report", str(recipe)).returncode == 0  # leave the module's run as it was


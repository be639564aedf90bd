"""nortune.markup: data in Markdown stays data (text, code spans, table cells), and the renderer makes no markup
of raw HTML. Also: the stage reports' Markdown builders pass what they are given through these helpers."""

from __future__ import annotations

import pytest

from nortune import markup

PAYLOADS = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "`tick``s`", "[x](javascript:alert(3))",
            "a | b", "**bold** _em_ *em*", "# heading", "- item", "+ item", "12. item", "=== rule", "&lt;amp&gt;",
            "back\\slash\\", "line\nbreak\r\ntab\tend", "![img](x.png)", "<!-- comment -->", "<http://a.example>"]

UNSAFE = ("<script", "<img", "<a ", "<!--", "<h1", "<li", "<em", "<strong", "<hr")


def _cell(html: str) -> str:
    """The one body cell of a rendered two-column table, as HTML."""
    body = html.split("<tbody>")[1]
    return body.split("<td>")[1].split("</td>")[0]


def _unescape(html: str) -> str:
    import html as html_module

    return html_module.unescape(html)


@pytest.mark.parametrize("value", PAYLOADS)
def test_text_shows_literally_in_a_table_cell_and_in_prose(value):
    shown = " ".join(value.split()).strip()  # one line, whitespace runs as one space (as HTML shows them)
    rendered = markup.to_html(f"| a | b |\n|---|---|\n| {markup.text(value)} | 1 |\n")
    cell = _cell(rendered)
    assert not any(tag in cell for tag in UNSAFE), cell
    assert " ".join(_unescape(cell).split()) == shown
    prose = markup.to_html(markup.text(value))
    assert prose.startswith("<p>") and " ".join(_unescape(prose[3:-4]).split()) == shown


@pytest.mark.parametrize("value", PAYLOADS)
def test_code_is_one_span_holding_the_value(value):
    shown = value.replace("\n", " ").replace("\r", " ").replace("\t", " ").strip()
    rendered = markup.to_html(f"| a | b |\n|---|---|\n| {markup.code(value)} | 1 |\n")
    cell = _cell(rendered)
    assert cell.startswith("<code>") and cell.endswith("</code>") and cell.count("<code>") == 1, cell
    assert _unescape(cell[len("<code>"):-len("</code>")]) == shown


def test_code_fences_past_the_longest_backtick_run():
    assert markup.code("plain") == "`plain`"
    assert markup.code("a`b") == "``a`b``"
    assert markup.code("x ``` y `") == "```` x ``` y ` ````"  # a value that ends in a backtick is padded
    assert markup.code("`start") == "`` `start ``"
    assert markup.code("  ") == "" and markup.code("") == ""


def test_text_escapes_markdown_and_html_but_keeps_plain_names_readable():
    assert markup.text("nb_wiki-2.jsonl") == "nb_wiki-2.jsonl"  # intraword _ and a dash mid-name stay
    assert markup.text("<b> & c") == "&lt;b> & c"  # a lone "&" or ">" makes no markup
    assert markup.text("&lt; &#60; &#x3c;") == "&amp;lt; &amp;#60; &amp;#x3c;"  # entities stay text
    assert markup.text("> quote") == "&#62; quote"
    assert markup.text("a|b") == "a\\|b"
    assert markup.text("`x`") == "\\`x\\`"
    assert markup.text("[x](y)") == "\\[x\\](y)"
    assert markup.text("_x_ *y*") == "\\_x\\_ \\*y\\*"
    assert markup.text("# h") == "\\# h" and markup.text("- i") == "\\- i" and markup.text("3. n") == "3\\. n"
    assert markup.text("=== ") == "&#61;=="
    assert markup.text(10.21) == "10.21" and markup.text(-3) == "-3" and markup.text("#1") == "\\#1"
    assert markup.text("a\nb") == "a b"
    assert markup.text(None) == "None" and markup.text(3) == "3"


def test_the_renderer_shows_raw_html_as_text_and_drops_unsafe_links():
    rendered = markup.to_html("<script>alert(1)</script>\n\n<div onclick=x>d</div> <img src=x onerror=alert(2)> "
                              "[a](javascript:alert(3)) [b](&#106;avascript:alert(4)) [c](https://ok.example)")
    assert "<script" not in rendered and "<div" not in rendered and "<img" not in rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered and "&lt;img src=x onerror=alert(2)&gt;" in rendered
    assert "javascript" not in rendered.replace("&lt;", "")  # no link keeps a javascript: target
    assert 'href="https://ok.example"' in rendered


def test_the_renderer_keeps_what_the_reports_use():
    rendered = markup.to_html("# T\n\n> **note**\n\n| a | n |\n|---|---:|\n| x | 1 |\n\n- `code` *em*\n\n"
                              "```\n<pre>\n```\n")
    for tag in ("<h1>T</h1>", "<blockquote>", "<strong>note</strong>", '<td align="right">1</td>',
                "<code>code</code>", "<em>em</em>", "<pre><code>&lt;pre&gt;"):
        assert tag in rendered, rendered


def test_the_report_builders_escape_what_they_are_given():
    """decontam, curate, evaluate, card, perplexity and ledger Markdown, fed payloads, renders no markup."""
    import tempfile
    from collections import Counter
    from pathlib import Path

    from nortune.curate import report as curate_report
    from nortune.decontam import report as decontam_report
    from nortune.evaluate import card, perplexity
    from nortune.evaluate.report import not_computed_lines
    from nortune.report.ledger import RunSummary, format_runs

    evil = "<img src=x onerror=alert(2)> `a``b` [x](javascript:alert(3)) | *"
    rendered = []
    decontam = {
        "data": {"path": evil, "sha256": "0" * 64}, "settings": {"normalize": {"x": evil}},
        "training": {"records": 1, "chars": 1, "empty_records": 0, "contaminated_records": 1},
        "test_side": {"texts": 1, "texts_by_task": {evil: 1}, "empty_texts": 0},
        "gate": {"max_contaminated_records": 0, "passed": False},
        "methods": {"exact": {"hits": 1, "contaminated_records": 1, "allowed_hits": 0, "longest_match": 3,
                              "by_task": {evil: {"hits": 1}}}},
        "allowed": {"phrases": [evil], "hits_by_phrase": {}},
        "records": [{"line": 1, "id": evil, "methods": {"exact": {"longest_match": 3, "matches": [
            {"test_id": evil, "text": evil}]}}}],
        "cleaned": {"path": evil, "kept": 0, "removed": 1}}
    rendered.append(markup.to_html(decontam_report.markdown(decontam)))
    result = {"confidence": 0.95, "tuned": evil, "base": evil, "forgetting": [evil], "allow_forgetting": False,
              "rows": [{"set": evil, "trained": False, "texts": 1, "base_ppl": 1.0, "tuned_ppl": 2.0, "change": 1.0,
                        "ci": [0.5, 1.5], "verdict": evil, "forgetting": True}],
              "bootstrap_samples": 10, "trained": [evil], "tolerance": 0.05, "seconds": {evil: 1}}
    scored = {"sets": {evil: {"texts": 1, "tokens": 2, "ppl": 2.0}}, "max_tokens_per_text": 8, "device": evil,
              "dtype": evil, "seconds": {"total": 2, "load": 1, "score": 1}}
    rendered.append(markup.to_html(perplexity.markdown(result) + perplexity.label_markdown(scored)))
    rendered.append(markup.to_html(card.forced_markdown([evil]) + "\n".join(not_computed_lines({evil: evil}))))
    summary = RunSummary(run=evil, recipe=evil, base_model=evil, trainable_params=None, data_records=None,
                         data_mix=None, contamination=evil, noreval_tuned=None, noreval_base=None, delta_vs_base=None,
                         regressions=[evil], export=evil, stages_done=[],
                         perplexity=result["rows"])
    rendered.append(markup.to_html(format_runs([summary])))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "composition.md"
        curate_report.write_markdown(path, inputs=1, by_lang=Counter({evil: 1}), by_source=Counter({evil: 1}),
                                     by_task=Counter({evil: 1}), drops=Counter({evil: 1}), shares={evil: 1.0},
                                     notes=[evil], malformed=[evil], read=Counter({evil: 1}))
        rendered.append(markup.to_html(path.read_text(encoding="utf-8")))
    for html in rendered:
        assert "<img" not in html and "href" not in html, html
        assert "&lt;img src=x onerror=alert(2)&gt;" in html
        assert "`a``b`" in html  # backticks as characters, in text or inside a wider code span
        # every table keeps its columns: a payload's "|" never splits a cell
        for table in html.split("<table>")[1:]:
            rows = table.split("</table>")[0].split("<tr>")[1:]
            assert len({row.count("<td") + row.count("<th") for row in rows}) == 1, table

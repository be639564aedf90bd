"""Markdown built from data, and its rendering to HTML, without letting the data become markup.

Every stage report (``composition.md``, ``summary.md``, ``report.md``, ...) is Markdown, and the
HTML report renders it. Strings that come from data, file names, run names, task names or the
recipe go through :func:`text` (prose and table cells) or :func:`code` (an inline code span), so a
record id such as ``<img src=x onerror=alert(1)>`` or a file name with backticks shows as itself.
:func:`to_html` is the one renderer: it does not pass raw HTML through and sanitises what it makes,
so Markdown that skipped the escaping still cannot put a script on the page.
"""

from __future__ import annotations

import re
from typing import Any

# Backslash-escaped wherever they stand: code spans, emphasis, links and images, table cells.
_ALWAYS = frozenset("\\`*[]|")
# "<" opens every tag, comment and autolink: always an entity (Python-Markdown has no backslash escape
# for it). "&" only where it would start an entity; a lone "&" or ">" is shown as it is.
_ENTITY_LIKE = re.compile(r"&(?=#[0-9]+;|#[xX][0-9a-fA-F]+;|[a-zA-Z0-9]+;)")
# What would start a block when the text begins a line: a quote, a setext rule, a heading (Python-Markdown
# needs no space after "#"), or a list or numbered item, which need one ("10.21" and "-3" stay as they are).
_BLOCK_START = re.compile(r"[>=#]|(?:[+\-]|\d+\\?\.)(?=\s|$)")
_BACKTICKS = re.compile(r"`+")


def _one_line(value: Any) -> str:
    return " ".join(str(value).split("\n")).replace("\r", " ").replace("\t", " ")


def text(value: Any) -> str:
    """``value`` as literal Markdown text on one line: for prose and table cells, never for a code block.

    Line breaks become spaces and surrounding whitespace is dropped (a table cell drops it anyway).
    What cannot become markup stays as it is, so the Markdown reads well in a terminal too: an
    underscore inside a word (``nb_wiki``), a lone ``&`` or ``>``."""
    s = _ENTITY_LIKE.sub("&amp;", _one_line(value).strip())
    out = []
    for i, ch in enumerate(s):
        if ch == "<":
            out.append("&lt;")
        elif ch in _ALWAYS:
            out.append("\\" + ch)
        elif ch == "_" and not (0 < i < len(s) - 1 and s[i - 1].isalnum() and s[i + 1].isalnum()):
            out.append("\\_")
        else:
            out.append(ch)
    escaped = "".join(out)
    start = _BLOCK_START.match(escaped)
    if start is None:
        return escaped
    if escaped[0] in "=>":
        return f"&#{ord(escaped[0])};" + escaped[1:]
    cut = start.end() - 1  # before the marker's last character: "\#", "\-", "12\."
    return escaped[:cut] + "\\" + escaped[cut:]


def code(value: Any) -> str:
    """``value`` as one inline code span, fenced by more backticks than any run inside it.

    Line breaks become spaces and surrounding whitespace is dropped (Markdown drops it in a span)."""
    s = _one_line(value).strip()
    if not s:
        return ""
    fence = "`" * (max((len(run) for run in _BACKTICKS.findall(s)), default=0) + 1)
    pad = " " if s[0] == "`" or s[-1] == "`" else ""
    return f"{fence}{pad}{s}{pad}{fence}"


# What Markdown rendering may produce; everything else is removed by the sanitiser.
_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "code", "pre",
         "em", "strong", "blockquote", "ul", "ol", "li", "a", "br", "hr"}
_ATTRIBUTES = {"th": {"align"}, "td": {"align"}, "a": {"href", "title"}, "ol": {"start"}}
_URL_SCHEMES = {"http", "https", "mailto"}


def _no_raw_html():
    """A Python-Markdown extension: raw HTML blocks and inline tags are text, not markup."""
    from markdown.extensions import Extension

    class NoRawHtml(Extension):
        def extendMarkdown(self, md):  # noqa: N802 (Python-Markdown's name)
            md.preprocessors.deregister("html_block")
            md.inlinePatterns.deregister("html")

    return NoRawHtml()


def to_html(markdown_text: str) -> str:
    """Render Markdown to an HTML fragment that holds no script, event handler, style or foreign tag.

    Raw HTML in the Markdown is shown as text (the extension above), and the result is sanitised
    with nh3 (the Ammonia sanitiser): only the tags Markdown makes, no ``javascript:`` links."""
    import markdown
    import nh3
    from markdown.extensions.tables import TableExtension

    rendered = markdown.markdown(markdown_text, extensions=[TableExtension(use_align_attribute=True), "fenced_code",
                                                            _no_raw_html()])
    return nh3.clean(rendered, tags=_TAGS, attributes=_ATTRIBUTES, url_schemes=_URL_SCHEMES,
                     link_rel="noopener noreferrer")

"""The one HTML/CSS base of every document scrapy-gdpr writes for people.

The review document, the public crawler information page and the per-crawl
compliance report are all built from these helpers, so that they look alike, print
alike and are checked alike (``tests/test_document_layout.py`` measures them in
Chromium). Every document is self-contained: no scripts, no external resources.

Table cells never break inside a word (``overflow-wrap: break-word`` only breaks a
word that could not fit on any line); long values that do not belong in a table
cell (URLs, fingerprints) are shortened for display with :func:`short_url` and
:func:`short_fingerprint`, the full value staying in the JSON beside the document.
"""

from __future__ import annotations

import html
import re
from typing import Any

CSS = """
:root{--ink:#1c2430;--muted:#5a6573;--line:#d9dee5;--soft:#f3f5f8;--accent:#1f5fa8;--bad:#a4262c;--warn:#8a5a00;--ok:#1e6b3a}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:#fff;color:var(--ink);font:16px/1.6 "Segoe UI",system-ui,-apple-system,"Helvetica Neue",Arial,sans-serif}
main{max-width:62rem;margin:0 auto;padding:2.5rem 1.5rem 4rem}
header.doc{border-bottom:3px solid var(--accent);padding-bottom:1rem;margin-bottom:1.5rem}
.kicker{text-transform:uppercase;letter-spacing:.08em;font-size:.78rem;color:var(--accent);font-weight:600;margin:0}
h1{font-size:2rem;line-height:1.2;margin:.2rem 0 .4rem}
h2{font-size:1.35rem;margin:2.4rem 0 .8rem;padding-bottom:.3rem;border-bottom:1px solid var(--line);break-after:avoid}
h3{font-size:1.08rem;margin:1.6rem 0 .5rem;break-after:avoid}
p{margin:.5rem 0}
a{color:var(--accent)}
.meta{color:var(--muted);font-size:.92rem;margin:.2rem 0}
code,pre{font:.88em/1.45 ui-monospace,"SFMono-Regular","DejaVu Sans Mono",Menlo,Consolas,monospace}
code{background:var(--soft);padding:.05em .3em;border-radius:3px;overflow-wrap:break-word}
pre{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:.8rem 1rem;overflow-x:auto;white-space:pre-wrap;overflow-wrap:break-word}
pre code{background:none;padding:0}
table{width:100%;border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.94rem}
th,td{text-align:left;vertical-align:top;padding:.5rem .65rem;border-bottom:1px solid var(--line);overflow-wrap:break-word}
thead th{background:var(--soft);border-bottom:2px solid var(--line);font-weight:600}
td.num,th.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even) td{background:#fafbfc}
table.signoff th,table.signoff td{height:3.2rem;vertical-align:bottom}
table.kv th{width:16rem;background:none;font-weight:600;color:var(--muted);border-bottom:1px solid var(--line)}
table.kv td{font-variant-numeric:tabular-nums}
ul{padding-left:1.3rem}li{margin:.25rem 0}
td ul{margin:0;padding-left:1.1rem}
.tag{display:inline-block;font-size:.75rem;font-weight:700;letter-spacing:.04em;text-transform:uppercase;padding:.1rem .45rem;border-radius:3px;border:1px solid currentColor;white-space:nowrap}
.tag.error,.tag.no,.tag.bad{color:var(--bad)}.tag.warning{color:var(--warn)}.tag.review{color:var(--accent)}.tag.check{color:var(--muted)}
.tag.yes,.tag.ok{color:var(--ok)}
.box{border:1px solid var(--line);border-left:4px solid var(--accent);border-radius:4px;padding:.8rem 1rem;margin:1rem 0;background:#fbfcfe}
.box.bad{border-left-color:var(--bad)}.box.ok{border-left-color:var(--ok)}.box.warn{border-left-color:var(--warn)}
.figures{display:grid;grid-template-columns:repeat(5,1fr);gap:.75rem;margin:1rem 0}
@media (max-width:50rem){.figures{grid-template-columns:repeat(2,1fr)}}
.figure{border:1px solid var(--line);border-radius:6px;padding:.6rem .8rem;background:#fbfcfe}
.figure b{display:block;font-size:1.7rem;line-height:1.2;font-variant-numeric:tabular-nums}
.figure span{display:block;color:var(--muted);font-size:.88rem;line-height:1.35}
.figure.bad b{color:var(--bad)}
.small{font-size:.88rem;color:var(--muted)}
.nowrap{white-space:nowrap}
footer{margin-top:3rem;padding-top:.8rem;border-top:1px solid var(--line);color:var(--muted);font-size:.85rem}
@media print{
  body{font-size:10.5pt;color:#000}
  main{max-width:none;padding:0}
  a{color:#000;text-decoration:none}
  h2{break-after:avoid;page-break-after:avoid}
  tr,li,.box,pre,.figure{break-inside:avoid;page-break-inside:avoid}
  thead{display:table-header-group}
  tbody tr:nth-child(even) td{background:none}
  @page{margin:18mm 16mm}
}
"""


def e(value: Any) -> str:
    """Escaped text; ``None`` is empty."""
    return html.escape("" if value is None else str(value))


def c(value: Any) -> str:
    """A value as code."""
    return f"<code>{e(value)}</code>"


def table(header: list[str], rows: list[list[str]], cls: str = "", num: tuple[int, ...] = ()) -> str:
    """A table with a header row. Rows are already HTML; columns in ``num`` are right-aligned figures."""
    head = "".join(f"<th{' class=num' if i in num else ''}>{e(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if i in num else ''}>{cell}</td>" for i, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table{f' class={cls!r}' if cls else ''}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def kv(rows: list[tuple[str, str]]) -> str:
    """A two-column table of labels (plain text) and values (HTML)."""
    body = "".join(f"<tr><th scope='row'>{e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table class='kv'><tbody>{body}</tbody></table>"


def ul(items: list[str], empty: str = "<p>None.</p>") -> str:
    """A list of HTML items, or ``empty``."""
    return "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>" if items else empty


def tag(text: str, kind: str) -> str:
    """A small uppercase badge (``kind``: yes, no, ok, bad, error, warning, review, check)."""
    return f"<span class='tag {e(kind)}'>{e(text)}</span>"


def figures(items: list[tuple[str, str, bool]]) -> str:
    """The summary figures: (the number, its unit and what it counts, whether it is bad news)."""
    cells = "".join(
        f"<div class='figure{' bad' if bad else ''}'><b>{e(value)}</b><span>{e(label)}</span></div>"
        for value, label, bad in items
    )
    return f"<div class='figures'>{cells}</div>"


def short_url(url: str, limit: int = 64) -> str:
    """A link showing at most ``limit`` characters of ``url`` (the middle elided)."""
    shown = url if len(url) <= limit else url[: limit * 2 // 3] + "…" + url[-(limit // 3 - 1):]
    if url.startswith(("http://", "https://")):
        return f"<a href='{e(url)}' title='{e(url)}'>{breakable(shown)}</a>"
    return f"<span title='{e(url)}'>{breakable(shown)}</span>"


def breakable(text: str) -> str:
    """Escaped ``text`` that may wrap after ``/ ? & = …`` (a URL or a path), never inside a name."""
    pieces = re.split(r"(?<=[/?&=…])(?=[^/])", text)
    return "<wbr>".join(e(piece) for piece in pieces)


def short_fingerprint(value: str | None, digits: int = 12) -> str:
    """``sha256:0123456789ab…`` with the full value as its tooltip; the JSON has it whole."""
    if not value:
        return "<span class='small'>none recorded</span>"
    algo, _, hexdigits = value.partition(":")
    shown = f"{algo}:{hexdigits[:digits]}…" if hexdigits and len(hexdigits) > digits else value
    return f"<code title='{e(value)}'>{e(shown)}</code>"


def plural(n: float, one: str, many: str | None = None) -> str:
    """``1 page``, ``2 pages``, ``1,234 pages``."""
    word = one if n == 1 else (many or one + "s")
    shown = f"{n:,}" if isinstance(n, int) else f"{n:,.2f}".rstrip("0").rstrip(".")
    return f"{shown} {word}"


def page(title: str, body: str, lang: str = "en") -> str:
    """A whole self-contained document."""
    return (
        f"<!doctype html>\n<html lang='{lang}'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{e(title)}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n</main></body></html>\n"
    )

"""What a data subject and a privacy officer read of an access or erasure request.

* :func:`access_html`: the ``index.html`` of an access archive, for the person asking.
* :func:`receipt_html` and :func:`receipt_markdown`: the receipt of a request, for the
  privacy officer's file.

Built on the one HTML/CSS base (:mod:`scrapy_gdpr._html`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy_gdpr._html import c, e, page, table

if TYPE_CHECKING:
    from collections.abc import Mapping

NO_IDENTITY = "No identity document was asked for; no time window or limit applied."


def access_html(summary: dict[str, Any], items: list[dict[str, Any]], files: list[dict[str, Any]],
                stamps: Mapping[str, Mapping[str, Any]], controller: str, contact: str) -> str:
    """The index of an access archive; ``stamps`` maps each item id to its retention stamp."""
    rows = []
    for it in items:
        stamp = stamps.get(it["item_id"]) or {}
        rows.append([
            f"<a href='{e(it['source_url'])}'>{e(it['source_url'])}</a>",
            e(stamp.get("collected_at")),
            e(stamp.get("expires_at")),
            f"{e(stamp.get('purpose'))} ({e(stamp.get('lawful_basis'))})",
            "<br>".join(e(x) for x in it["stored_in"]),
        ])
    file_rows = [
        [f"<a href='{e(f['archive_path'])}'>{e(f['archive_path'])}</a>", e(f["kind"]), e(f["object_url"]),
         e(f["source_url"]), e(f["expires_at"])]
        for f in files
    ]
    none = [["None", "", "", "", ""]]
    who = f"<p>Controller: {e(controller)}{' &ndash; ' + e(contact) if contact else ''}</p>" if controller else ""
    body = (
        f"<h1>The data we hold that matches your request</h1>{who}"
        f"<p>Request {c(summary['request_id'])}, received {e(summary['received'])}. "
        f"Matched by: {', '.join(c(s) for s in summary['selectors'])}. "
        "Everything held is included, with no time limit.</p>"
        f"<p>{summary['items']} item(s), {summary['files']} file(s), {summary['audit_entries']} log entries.</p>"
        "<h2>Items</h2><p>Full content in <code>items.json</code>.</p>"
        + table(["Source page", "Collected", "Deleted by", "Purpose (lawful basis)", "Stored in"], rows or none)
        + "<h2>Images and files</h2>"
        + table(["File", "Kind", "Original URL", "Found on", "Deleted by"], file_rows or none)
        + "<h2>Log entries</h2><p>Every processing log entry about these URLs is in <code>audit.jsonl</code>; "
        "the storage records are in <code>ledger.json</code>.</p>"
        "<h2>Your rights</h2><p>You can ask us to erase all of this, or object to further collection, "
        "at any time, without giving a reason or proving your identity.</p>"
    )
    return page(f"Your data: request {summary['request_id']}", body)


def _receipt_value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_receipt_value(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def receipt_lines(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The receipt as (label, text) rows, in the order of ``data``."""
    lines = [("Request", str(data["request_id"])), ("Kind", str(data.get("kind", "")))]
    for key, value in data.items():
        if key in ("request_id", "kind"):
            continue
        if isinstance(value, dict):
            text = "; ".join(f"{k.replace('_', ' ')}: {_receipt_value(v)}" for k, v in value.items()) or "none"
        elif isinstance(value, list):
            text = _receipt_value(value)
            if key in ("feed_files", "objects", "pending", "failed", "damaged", "problems") and value:
                text = f"{len(value)}: " + text
        else:
            text = str(value)
        lines.append((key.replace("_", " ").capitalize(), text))
    return lines


def _title(data: dict[str, Any]) -> str:
    return f"{'Erasure' if data.get('kind') == 'erasure' else 'Access'} request {data['request_id']}"


def receipt_markdown(data: dict[str, Any]) -> str:
    out = [f"# {_title(data)}", "", "| | |", "|---|---|"]
    out += ["| {} | {} |".format(k, v.replace("|", "\\|")) for k, v in receipt_lines(data)]
    out += ["", NO_IDENTITY, ""]
    return "\n".join(out)


def receipt_html(data: dict[str, Any]) -> str:
    rows = [[e(label), e(text)] for label, text in receipt_lines(data)]
    return page(_title(data), f"<h1>{e(_title(data))}</h1>{table(['', ''], rows)}<p>{NO_IDENTITY}</p>")

"""Data-subject rights: access (one archive), erasure (everywhere), receipts, and the
record of processing.

A request is matched by selectors, never by identity documents:

* ``url``: a page or image URL, exactly;
* ``prefix``: every URL starting with it;
* ``domain``: a host and its subdomains;
* ``contains``: any stored item whose URL or text contains it (a name, a handle).

There is no time window and no limit on how much is returned or erased.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import secrets
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scrapy_gdpr import feedfiles
from scrapy_gdpr.audit import AuditLog
from scrapy_gdpr.ledger import OBJECT_KINDS, Ledger, Record, Selector, parse_ts
from scrapy_gdpr.objections import append_objection
from scrapy_gdpr.retention import line_record, manifest_path, read_manifest, write_manifest
from scrapy_gdpr.stores import ItemStore, add_store_holdings, erase_from_stores

logger = logging.getLogger(__name__)

#: Selector kinds that also go to the objection list (``contains`` cannot: the
#: request gate sees URLs, not content).
OBJECTION_KINDS = {"url": "url", "prefix": "prefix", "domain": "domain"}


def new_request_id(kind: str, now: datetime | None = None) -> str:
    """``ACC-20261123T162300Z-3f9a1c`` / ``ERA-...``."""
    now = now or datetime.now(UTC)
    prefix = {"access": "ACC", "erasure": "ERA"}[kind]
    return f"{prefix}-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


@dataclass
class FoundItem:
    item_id: str
    source_url: str
    data: Any
    locations: list[str] = field(default_factory=list)
    stamp: dict[str, Any] = field(default_factory=dict)
    #: the format ``data`` was read from; JSON formats keep types, so they are preferred
    source_format: str = ""


@dataclass
class Holdings:
    """Everything held that matches a request."""

    selectors: list[Selector]
    items: dict[str, FoundItem] = field(default_factory=dict)
    rows: list[Record] = field(default_factory=list)
    feed_files: list[str] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    #: the item stores searched (``GDPR_ITEM_STORES``, see scrapy_gdpr.stores)
    stores_searched: list[str] = field(default_factory=list)
    #: item stores that could not be searched, with why
    store_errors: list[str] = field(default_factory=list)

    @property
    def objects(self) -> list[Record]:
        seen: dict[str, Record] = {}
        for r in self.rows:
            if r.kind in OBJECT_KINDS:
                seen.setdefault(r.location, r)
        return list(seen.values())


def _record_text(rec: feedfiles.FeedRecord) -> str:
    raw = rec.raw
    if isinstance(raw, str):
        return raw
    if isinstance(raw, tuple):  # CSV: (header, row)
        return "\n".join(raw[1])
    if hasattr(raw, "itertext"):
        return " ".join(raw.itertext())
    return json.dumps(raw, ensure_ascii=False)


def _record_data(rec: feedfiles.FeedRecord, fmt: str) -> Any:
    raw = rec.raw
    if fmt == "jsonlines":
        return json.loads(raw)
    if fmt == "csv":
        header, row = raw
        flat = dict(zip(header, row, strict=False))
        data = {k: v for k, v in flat.items() if not k.startswith(feedfiles.CSV_PREFIX)}
        data[feedfiles.STAMP_FIELD] = {k[len(feedfiles.CSV_PREFIX):]: v for k, v in flat.items()
                                       if k.startswith(feedfiles.CSV_PREFIX)}
        return data
    if fmt == "xml":
        return _xml_to_data(raw)
    return raw


def _xml_to_data(elem: Any) -> Any:
    children = list(elem)
    if not children:
        return elem.text or ""
    if all(c.tag == "value" for c in children):
        return [_xml_to_data(c) for c in children]
    return {c.tag: _xml_to_data(c) for c in children}


def record_matches(rec: feedfiles.FeedRecord, selectors: Sequence[Selector]) -> bool:
    for sel in selectors:
        if sel.matches_url(rec.source_url):
            return True
        if sel.kind == "contains" and sel.value in _record_text(rec):
            return True
    return False


def feed_locations(ledger: Ledger) -> list[str]:
    """Every feed file the ledger knows (files and files of recorded lines)."""
    return ledger.locations(["feed_file", "feed_line"])


def _format_of(path: Path) -> str | None:
    manifest = read_manifest(path)
    if manifest and manifest.get("format") in feedfiles.FORMATS:
        return str(manifest["format"])
    return feedfiles.guess_format(path)


def find_holdings(ledger: Ledger, selectors: Sequence[Selector], audit_paths: Iterable[Path] = (),
                  stores: Sequence[ItemStore] = ()) -> Holdings:
    """Scan the ledger, every known feed file, the item stores and the audit logs for ``selectors``."""
    out = Holdings(selectors=list(selectors))
    rows: dict[int, Record] = {}
    for sel in selectors:
        for r in ledger.find(sel):
            rows[r.id or 0] = r
    # every feed file is read: lines the ledger has not recorded yet are found too
    for location in feed_locations(ledger):
        path = Path(location)
        fmt = _format_of(path)
        if fmt is None or not path.exists():
            continue
        hit = False
        for rec in feedfiles.read_records(path, fmt):
            if not rec.stamp or not record_matches(rec, selectors):
                continue
            hit = True
            found = out.items.get(rec.item_id)
            if found is None:
                found = out.items[rec.item_id] = FoundItem(
                    item_id=rec.item_id, source_url=rec.source_url, data=_record_data(rec, fmt), stamp=dict(rec.stamp),
                    source_format=fmt,
                )
            elif fmt in ("jsonlines", "json") and found.source_format not in ("jsonlines", "json"):
                found.data, found.stamp, found.source_format = _record_data(rec, fmt), dict(rec.stamp), fmt
            found.locations.append(location)
        if hit:
            out.feed_files.append(location)
    # items in the registered item stores (before the media and rows of matched items)
    add_store_holdings(out, stores, selectors)
    # the media and rows of matched items (an image found through its page's text)
    for r in ledger.find_items(list(out.items)):
        rows[r.id or 0] = r
    for r in rows.values():
        if r.kind in ("item", "feed_line") and r.item_id and r.item_id not in out.items:
            out.items[r.item_id] = FoundItem(item_id=r.item_id, source_url=r.url, data=None)
    out.rows = sorted(rows.values(), key=lambda r: r.id or 0)
    item_ids = set(out.items)
    for path in audit_paths:
        out.audit += _matching_audit(path, selectors, item_ids)
    return out


def _matching_audit(path: Path, selectors: Sequence[Selector], item_ids: set[str]) -> list[dict[str, Any]]:
    matches: list[dict[str, Any]] = []
    try:
        fh = path.open("r", encoding="utf-8")
    except FileNotFoundError:
        return matches
    with fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            urls = [str(entry.get(k) or "") for k in ("url", "object_url")]
            if entry.get("item_id") in item_ids or any(s.matches_url(u) for s in selectors for u in urls):
                matches.append({"log": str(path), **entry})
    return matches


def audit_paths_for(template: str | None, explicit: Sequence[str] = ()) -> list[Path]:
    """Audit logs to search: the given files, or every file the template can name."""
    if explicit:
        return [Path(p) for p in explicit]
    if not template:
        return []
    if "%(" not in template:
        return [Path(template)]
    pattern = Path(template.replace("%(name)s", "*"))
    base = pattern.parent if pattern.is_absolute() else Path.cwd() / pattern.parent
    return sorted(base.glob(pattern.name))


# --------------------------------------------------------------------------- access


def _jsonable(r: Record) -> dict[str, Any]:
    return r.as_json()


def export_access(holdings: Holdings, out: Path, *, request_id: str, received: datetime,
                  controller: str = "", contact: str = "") -> dict[str, Any]:
    """Write one zip with everything held, an ``index.html`` for people and JSON for machines."""
    out.parent.mkdir(parents=True, exist_ok=True)
    files: list[dict[str, Any]] = []
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        items = [
            {"item_id": f.item_id, "source_url": f.source_url, "stored_in": f.locations, "item": f.data}
            for f in holdings.items.values()
        ]
        zf.writestr("items.json", json.dumps(items, indent=2, ensure_ascii=False, default=str))
        zf.writestr("ledger.json", json.dumps([_jsonable(r) for r in holdings.rows], indent=2, ensure_ascii=False))
        zf.writestr("audit.jsonl", "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in holdings.audit))
        for i, obj in enumerate(holdings.objects):
            path = Path(obj.location)
            if not path.is_file():
                continue
            name = f"files/{obj.kind}/{i:04d}-{path.name}"
            zf.write(path, name)
            files.append({"archive_path": name, "kind": obj.kind, "object_url": obj.object_url,
                          "source_url": obj.url, "stored_at": obj.location,
                          "expires_at": obj.expires_at.isoformat()})
        summary = {
            "request_id": request_id,
            "kind": "access",
            "received": received.isoformat(),
            "selectors": [str(s) for s in holdings.selectors],
            "items": len(items),
            "files": len(files),
            "ledger_rows": len(holdings.rows),
            "audit_entries": len(holdings.audit),
            "feed_files": holdings.feed_files,
            "stores_searched": holdings.stores_searched,
            "store_errors": holdings.store_errors,
        }
        zf.writestr("request.json", json.dumps(summary, indent=2, ensure_ascii=False))
        zf.writestr("index.html", _access_html(summary, items, files, holdings, controller, contact))
    return summary


_CSS = (
    "body{font:15px/1.5 system-ui,sans-serif;max-width:960px;margin:0 auto;padding:24px;color:#1d2733}"
    "table{border-collapse:collapse;width:100%}th,td{border:1px solid #dde3ea;padding:6px 8px;text-align:left;"
    "vertical-align:top;font-size:14px}th{background:#eef2f7}code{font-size:13px}h2{margin-top:28px}"
)


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _access_html(summary: dict[str, Any], items: list[dict[str, Any]], files: list[dict[str, Any]],
                 holdings: Holdings, controller: str, contact: str) -> str:
    rows = []
    for it in items:
        stamp = (holdings.items[it["item_id"]].stamp or {})
        rows.append(
            f"<tr><td><a href='{_esc(it['source_url'])}'>{_esc(it['source_url'])}</a></td>"
            f"<td>{_esc(stamp.get('collected_at'))}</td><td>{_esc(stamp.get('expires_at'))}</td>"
            f"<td>{_esc(stamp.get('purpose'))} ({_esc(stamp.get('lawful_basis'))})</td>"
            f"<td>{'<br>'.join(_esc(x) for x in it['stored_in'])}</td></tr>"
        )
    file_rows = "".join(
        f"<tr><td><a href='{_esc(f['archive_path'])}'>{_esc(f['archive_path'])}</a></td><td>{_esc(f['kind'])}</td>"
        f"<td>{_esc(f['object_url'])}</td><td>{_esc(f['source_url'])}</td><td>{_esc(f['expires_at'])}</td></tr>"
        for f in files
    )
    who = f"<p>Controller: {_esc(controller)}{' &ndash; ' + _esc(contact) if contact else ''}</p>" if controller else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Your data: request {_esc(summary['request_id'])}</title><style>{_CSS}</style></head><body>"
        f"<h1>The data we hold that matches your request</h1>{who}"
        f"<p>Request <code>{_esc(summary['request_id'])}</code>, received {_esc(summary['received'])}. "
        f"Matched by: {', '.join('<code>' + _esc(s) + '</code>' for s in summary['selectors'])}. "
        "Everything held is included, with no time limit.</p>"
        f"<p>{summary['items']} item(s), {summary['files']} file(s), {summary['audit_entries']} log entries.</p>"
        "<h2>Items</h2><p>Full content in <code>items.json</code>.</p>"
        "<table><tr><th>Source page</th><th>Collected</th><th>Deleted by</th><th>Purpose (lawful basis)</th>"
        f"<th>Stored in</th></tr>{''.join(rows) or '<tr><td colspan=5>None</td></tr>'}</table>"
        "<h2>Images and files</h2><table><tr><th>File</th><th>Kind</th><th>Original URL</th><th>Found on</th>"
        f"<th>Deleted by</th></tr>{file_rows or '<tr><td colspan=5>None</td></tr>'}</table>"
        "<h2>Log entries</h2><p>Every processing log entry about these URLs is in <code>audit.jsonl</code>; "
        "the storage records are in <code>ledger.json</code>.</p>"
        "<h2>Your rights</h2><p>You can ask us to erase all of this, or object to further collection, "
        "at any time, without giving a reason or proving your identity.</p></body></html>"
    )


# --------------------------------------------------------------------------- erasure


@dataclass
class ErasureResult:
    request_id: str
    received: str
    selectors: list[str]
    objections_added: list[str] = field(default_factory=list)
    feed_lines: int = 0
    feed_files: list[str] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    ledger_rows: int = 0
    pending: list[str] = field(default_factory=list)
    #: items deleted per item store searched (scrapy_gdpr.stores)
    store_items: dict[str, int] = field(default_factory=dict)
    #: item stores that could not be searched or erased, with why (the erasure is incomplete)
    store_errors: list[str] = field(default_factory=list)
    completed: str = ""

    @property
    def complete(self) -> bool:
        return not self.pending and not self.store_errors

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "status": "complete" if self.complete else "incomplete"}


def erase(
    ledger: Ledger,
    selectors: Sequence[Selector],
    *,
    objections_path: Path | None,
    audit: AuditLog | None = None,
    request_id: str | None = None,
    received: datetime | None = None,
    lock_timeout: float = 30.0,
    stores: Sequence[ItemStore] = (),
) -> ErasureResult:
    """Erase everything matching ``selectors`` and object to it for later crawls.

    The objection is written first, so a crawl starting meanwhile already skips it;
    then feed files are rewritten, media deleted, and the ledger rows removed last
    (a re-run finds whatever an interrupted erasure left).
    """
    received = received or datetime.now(UTC)
    request_id = request_id or new_request_id("erasure", received)
    result = ErasureResult(request_id=request_id, received=received.isoformat(), selectors=[str(s) for s in selectors])
    if objections_path is not None:
        for sel in selectors:
            kind = OBJECTION_KINDS.get(sel.kind)
            if kind is not None:
                append_objection(objections_path, kind, sel.value, note=f"erasure {request_id}")
                result.objections_added.append(f"{kind} {sel.value}")
    holdings = find_holdings(ledger, selectors, stores=stores)
    item_ids = set(holdings.items)
    # the item stores (scrapy_gdpr.stores): every matched item, whichever store held it
    result.store_items, failed = erase_from_stores(stores, item_ids)
    result.store_errors = holdings.store_errors + failed
    for location in holdings.feed_files:
        path = Path(location)
        fmt = _format_of(path)
        if fmt is None:
            continue

        def matches(rec: feedfiles.FeedRecord) -> bool:
            return rec.item_id in item_ids or record_matches(rec, selectors)

        try:
            outcome = feedfiles.rewrite(path, fmt, matches, lock_timeout=lock_timeout)
        except feedfiles.FileBusy:
            result.pending.append(location)
            continue
        result.feed_lines += outcome.removed
        result.feed_files.append(location)
        if path.exists():
            old = read_manifest(path) or {}
            write_manifest(path, fmt, outcome, **{k: v for k, v in old.items()
                                                  if k in ("purpose", "policy_fingerprint", "spider", "created")})
            ledger.delete_location(location, kinds=["feed_line"])
            if outcome.earliest:
                row = ledger.feed_file(location)
                if row is not None:
                    row.expires_at = parse_ts(outcome.earliest)
                    ledger.set_feed_file(row)
            # the lines that stay are recorded again by the next crawl or purge; record them now
            _rerecord_lines(ledger, path, fmt)
        else:
            with contextlib.suppress(FileNotFoundError):
                manifest_path(path).unlink()
            ledger.delete_location(location)
    deleted_locations = set()
    for obj in holdings.objects:
        path = Path(obj.location)
        if feedfiles.remove_durably(path) or not path.exists():
            result.objects.append(obj.location)
            deleted_locations.add(obj.location)
    ids = [r.id for r in holdings.rows if r.id is not None and (r.kind not in ("feed_line", "feed_file")
                                                                 or r.location not in result.pending)]
    result.ledger_rows = ledger.delete_ids(ids)
    for location in deleted_locations:
        result.ledger_rows += ledger.delete_location(location)
    result.completed = datetime.now(UTC).isoformat()
    if audit is not None:
        audit.write({"spider": "", "url": "", "decision": "erased", **result.as_dict()})
    return result


def _rerecord_lines(ledger: Ledger, path: Path, fmt: str) -> None:
    ledger.add([line_record(path, rec) for rec in feedfiles.read_records(path, fmt) if rec.stamp and rec.expires_at])


# --------------------------------------------------------------------------- receipts


def write_receipts(data: dict[str, Any], folder: Path) -> dict[str, Path]:
    """``<id>.json``, ``<id>.md`` and ``<id>.html`` for the privacy officer's file."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / str(data["request_id"])
    paths = {"json": stem.with_suffix(".json"), "md": stem.with_suffix(".md"), "html": stem.with_suffix(".html")}
    paths["json"].write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    paths["md"].write_text(receipt_markdown(data), encoding="utf-8")
    paths["html"].write_text(receipt_html(data), encoding="utf-8")
    return paths


def _receipt_lines(data: dict[str, Any]) -> list[tuple[str, str]]:
    lines = [("Request", str(data["request_id"])), ("Kind", str(data.get("kind", "")))]
    for key, value in data.items():
        if key in ("request_id", "kind"):
            continue
        if isinstance(value, list):
            text = ", ".join(str(v) for v in value) if value else "none"
            if key in ("feed_files", "objects", "pending") and value:
                text = f"{len(value)}: " + text
        else:
            text = str(value)
        lines.append((key.replace("_", " ").capitalize(), text))
    return lines


def receipt_markdown(data: dict[str, Any]) -> str:
    title = "Erasure" if data.get("kind") == "erasure" else "Access"
    out = [f"# {title} request {data['request_id']}", "", "| | |", "|---|---|"]
    out += ["| {} | {} |".format(k, v.replace("|", "\\|")) for k, v in _receipt_lines(data)]
    out += ["", "No identity document was asked for; no time window or limit applied.", ""]
    return "\n".join(out)


def receipt_html(data: dict[str, Any]) -> str:
    title = "Erasure" if data.get("kind") == "erasure" else "Access"
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in _receipt_lines(data))
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title} request "
        f"{_esc(data['request_id'])}</title><style>{_CSS}</style></head><body>"
        f"<h1>{title} request {_esc(data['request_id'])}</h1><table>{rows}</table>"
        "<p>No identity document was asked for; no time window or limit applied.</p></body></html>"
    )


# --------------------------------------------------------------------------- record of processing


def _read_audit(paths: Iterable[Path], since: datetime | None, until: datetime | None) -> Iterable[dict[str, Any]]:
    for path in paths:
        try:
            fh = Path(path).open("r", encoding="utf-8")
        except FileNotFoundError:
            continue
        with fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                    moment = parse_ts(entry["time"])
                except (ValueError, KeyError, TypeError):
                    continue
                if (since is None or moment >= since) and (until is None or moment < until):
                    yield entry


def processing_record(ledger_url: str, audit_paths: Sequence[str | Path], since: datetime | None = None,
                      until: datetime | None = None) -> dict[str, Any]:
    """What was stored, for how long, and what was purged or erased in a period."""
    from scrapy_gdpr.ledger import open_ledger

    since = parse_ts(since) if since is not None else None
    until = parse_ts(until) if until is not None else None
    with open_ledger(ledger_url) as ledger:
        groups = ledger.summary(since, until)
    stored: Counter[str] = Counter()
    expiry: Counter[str] = Counter()
    purposes: Counter[str] = Counter()
    for g in groups:
        stored[g["kind"]] += g["count"]
        expiry[g["expires_month"]] += g["count"]
        purposes[f"{g['purpose']} ({g['lawful_basis']})" if g["purpose"] else "(none)"] += g["count"]
    purges: list[dict[str, Any]] = []
    erasures: list[dict[str, Any]] = []
    refusals: Counter[str] = Counter()
    crawls = 0
    for entry in _read_audit([Path(p) for p in audit_paths], since, until):
        decision = entry.get("decision")
        if decision == "purge_finished":
            purges.append({k: entry.get(k) for k in ("time", "spider", "feed_lines", "objects", "ledger_rows")})
        elif decision == "erased":
            erasures.append({k: entry.get(k) for k in ("time", "request_id", "selectors", "feed_lines",
                                                     "ledger_rows", "status")})
        elif decision == "refused":
            refusals[str(entry.get("reason"))] += 1
        elif decision == "crawl_started":
            crawls += 1
    return {
        "period": {"since": since.isoformat() if since else None, "until": until.isoformat() if until else None},
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "ledger": ledger_url.split("@")[-1] if "@" in ledger_url else ledger_url,
        "stored": dict(sorted(stored.items())),
        "stored_by_purpose": dict(sorted(purposes.items())),
        "expiry_by_month": dict(sorted(expiry.items())),
        "purges": purges,
        "purged_totals": {
            "feed_lines": sum(int(p.get("feed_lines") or 0) for p in purges),
            "objects": sum(int(p.get("objects") or 0) for p in purges),
            "ledger_rows": sum(int(p.get("ledger_rows") or 0) for p in purges),
        },
        "erasures": erasures,
        "crawls": crawls,
        "refusals": dict(sorted(refusals.items())),
    }


def render_processing_record_markdown(record: dict[str, Any]) -> str:
    p = record["period"]
    out = [
        "# Record of processing: retention", "",
        f"Period: {p['since'] or 'start'} to {p['until'] or 'now'} (generated {record['generated']}).", "",
        "## Stored", "", "| Kind | Count |", "|---|---|",
        *(f"| {k} | {v} |" for k, v in record["stored"].items()), "",
        "## By purpose (lawful basis)", "", "| Purpose | Count |", "|---|---|",
        *(f"| {k} | {v} |" for k, v in record["stored_by_purpose"].items()), "",
        "## Expiry distribution", "", "| Expires in | Count |", "|---|---|",
        *(f"| {k} | {v} |" for k, v in record["expiry_by_month"].items()), "",
        "## Purges", "",
        f"{len(record['purges'])} purge run(s): {record['purged_totals']['feed_lines']} feed lines, "
        f"{record['purged_totals']['objects']} files, {record['purged_totals']['ledger_rows']} ledger rows deleted.", "",
        "## Erasure requests", "",
        *(f"- {e['request_id']} ({e['time']}): {', '.join(e.get('selectors') or [])}, {e.get('status')}"
          for e in record["erasures"]),
        "" if record["erasures"] else "None.", "",
        f"Crawls started: {record['crawls']}. Refusals: "
        + (", ".join(f"{k} {v}" for k, v in record["refusals"].items()) or "none") + ".", "",
    ]
    return "\n".join(out)


def render_processing_record_html(record: dict[str, Any]) -> str:
    def table(title: str, data: dict[str, Any], head: tuple[str, str]) -> str:
        body = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in data.items())
        return (f"<h2>{_esc(title)}</h2><table><tr><th>{_esc(head[0])}</th><th>{_esc(head[1])}</th></tr>"
                f"{body or '<tr><td colspan=2>None</td></tr>'}</table>")

    p = record["period"]
    erasures = "".join(
        f"<tr><td>{_esc(e['request_id'])}</td><td>{_esc(e['time'])}</td><td>{_esc(', '.join(e.get('selectors') or []))}"
        f"</td><td>{_esc(e.get('status'))}</td></tr>" for e in record["erasures"]
    )
    t = record["purged_totals"]
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Record of processing: retention</title>"
        f"<style>{_CSS}</style></head><body><h1>Record of processing: retention</h1>"
        f"<p>Period: {_esc(p['since'] or 'start')} to {_esc(p['until'] or 'now')} (generated {_esc(record['generated'])})</p>"
        + table("Stored", record["stored"], ("Kind", "Count"))
        + table("By purpose (lawful basis)", record["stored_by_purpose"], ("Purpose", "Count"))
        + table("Expiry distribution", record["expiry_by_month"], ("Expires in", "Count"))
        + f"<h2>Purges</h2><p>{len(record['purges'])} run(s): {t['feed_lines']} feed lines, {t['objects']} files, "
        f"{t['ledger_rows']} ledger rows deleted.</p>"
        + "<h2>Erasure requests</h2><table><tr><th>Request</th><th>Time</th><th>Selectors</th><th>Status</th></tr>"
        + (erasures or "<tr><td colspan=4>None</td></tr>") + "</table></body></html>"
    )

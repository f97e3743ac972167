"""The record of processing (Art. 30 GDPR), retention part: what was stored, for how long,
and what was purged or erased in a period, from the ledger and the audit logs.

``scrapy gdpr-report --processing-record`` writes it as HTML (on the one HTML/CSS base,
:mod:`scrapy_gdpr._html`) and Markdown.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy_gdpr._html import e, page, table
from scrapy_gdpr.retention.ledger import open_ledger, parse_ts
from scrapy_gdpr.urls import mask_password

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


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
        "ledger": mask_password(ledger_url),
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


def _period(record: dict[str, Any]) -> str:
    p = record["period"]
    return f"Period: {p['since'] or 'start'} to {p['until'] or 'now'} (generated {record['generated']})."


def _purged(record: dict[str, Any]) -> str:
    t = record["purged_totals"]
    return (f"{len(record['purges'])} purge run(s): {t['feed_lines']} feed lines, {t['objects']} files, "
            f"{t['ledger_rows']} ledger rows deleted.")


def _refusals(record: dict[str, Any]) -> str:
    return (f"Crawls started: {record['crawls']}. Refusals: "
            + (", ".join(f"{k} {v}" for k, v in record["refusals"].items()) or "none") + ".")


_TABLES = (
    ("Stored", "stored", ("Kind", "Count")),
    ("By purpose (lawful basis)", "stored_by_purpose", ("Purpose", "Count")),
    ("Expiry distribution", "expiry_by_month", ("Expires in", "Count")),
)


def render_processing_record_markdown(record: dict[str, Any]) -> str:
    out = ["# Record of processing: retention", "", _period(record), ""]
    for title, key, (label, count) in _TABLES:
        out += [f"## {title}", "", f"| {label} | {count} |", "|---|---|",
                *(f"| {k} | {v} |" for k, v in record[key].items()), ""]
    out += ["## Purges", "", _purged(record), "", "## Erasure requests", "",
            *(f"- {x['request_id']} ({x['time']}): {', '.join(x.get('selectors') or [])}, {x.get('status')}"
              for x in record["erasures"]),
            "" if record["erasures"] else "None.", "", _refusals(record), ""]
    return "\n".join(out)


def render_processing_record_html(record: dict[str, Any]) -> str:
    body = [f"<h1>Record of processing: retention</h1><p class='meta'>{e(_period(record))}</p>"]
    for title, key, (label, count) in _TABLES:
        rows = [[e(k), e(v)] for k, v in record[key].items()] or [["None", ""]]
        body.append(f"<h2>{e(title)}</h2>" + table([label, count], rows, num=(1,)))
    body.append(f"<h2>Purges</h2><p>{e(_purged(record))}</p>")
    erasures = [[e(x["request_id"]), e(x["time"]), e(", ".join(x.get("selectors") or [])), e(x.get("status"))]
                for x in record["erasures"]] or [["None", "", "", ""]]
    body.append("<h2>Erasure requests</h2>" + table(["Request", "Time", "Selectors", "Status"], erasures))
    body.append(f"<p>{e(_refusals(record))}</p>")
    return page("Record of processing: retention", "".join(body))

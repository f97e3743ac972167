"""The per-crawl compliance report, written at spider close (JSON and HTML).

It is built from three sources, so that no component has to know about it:
the ``gdpr/*`` stats, the refusals counted by :mod:`scrapy_gdpr.audit` (with sample
URLs), and the sections components put in ``runtime.report_sections``.
"""

from __future__ import annotations

import html
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy import signals

from scrapy_gdpr._component import component_runtime

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from typing_extensions import Self

    from scrapy_gdpr.runtime import GdprRuntime

logger = logging.getLogger(__name__)


class ComplianceReport:
    """Extension writing ``<GDPR_REPORT_DIR>/<spider>-<time>.json`` and ``.html``."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)
        self.started = datetime.now(UTC)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def spider_closed(self, reason: str) -> None:
        report_dir = self.runtime.config.report_dir
        if not report_dir:
            return
        data = build_report(self.runtime, reason=reason, started=self.started)
        out = Path(report_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{self.runtime.spider_name}-{self.started.strftime('%Y%m%dT%H%M%SZ')}"
        json_path = out / f"{stem}.json"
        html_path = out / f"{stem}.html"
        json_path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        html_path.write_text(render_html(data), encoding="utf-8")
        self.crawler.stats.set_value("gdpr/report/json", str(json_path))
        self.crawler.stats.set_value("gdpr/report/html", str(html_path))
        logger.info("GDPR compliance report: %(html)s", {"html": html_path}, extra={"spider": self.crawler.spider})


def build_report(rt: GdprRuntime, *, reason: str, started: datetime) -> dict[str, Any]:
    stats = rt.crawler.stats.get_stats() if rt.crawler.stats is not None else {}
    gdpr_stats = {k: v for k, v in sorted(stats.items()) if k.startswith("gdpr/")}
    refusals = {
        reason_code: {"count": count, "samples": list(rt.refusals.samples.get(reason_code, []))}
        for reason_code, count in sorted(rt.refusals.counts.items())
    }
    return {
        "spider": rt.spider_name,
        "finish_reason": reason,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "policy": {
            "id": rt.policy.policy_id,
            "path": str(rt.policy.path),
            "fingerprint": rt.policy.fingerprint,
            "controller": rt.policy.controller.name,
        },
        "totals": {
            "requests": stats.get("downloader/request_count", 0),
            "responses": stats.get("downloader/response_count", 0),
            "items_scraped": stats.get("item_scraped_count", 0),
            "items_dropped": stats.get("item_dropped_count", 0),
            "refusals": sum(rt.refusals.counts.values()),
        },
        "refusals": refusals,
        "sections": rt.report_sections,
        "stats": gdpr_stats,
        "audit_log": str(rt.audit.path) if rt.audit.path else None,
    }


_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2733;margin:0;background:#f5f7fa}
main{max-width:980px;margin:0 auto;padding:32px 24px 64px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:2px solid #dde3ea;padding-bottom:4px}
.sub{color:#5b6775;margin:0 0 16px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde3ea;border-radius:6px;overflow:hidden}
th,td{text-align:left;overflow-wrap:anywhere;padding:7px 10px;border-bottom:1px solid #eef1f5;vertical-align:top;font-size:14px}
th{background:#eef2f7;font-weight:600}\ntbody th{width:22%;background:#f7f9fb}\ntd table{margin:0;font-size:13px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px}
.card{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:12px 14px}
.card b{display:block;font-size:24px}.card span{color:#5b6775;font-size:13px}
code,pre{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}
pre{background:#fff;border:1px solid #dde3ea;padding:10px;overflow:auto;border-radius:6px}
.bad{color:#a4262c;font-weight:600}
"""


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        if not value:
            return "&ndash;"
        return _table([(k, v) for k, v in value.items()], None)
    if isinstance(value, list):
        if not value:
            return "&ndash;"
        if all(isinstance(v, dict) for v in value):
            keys = list(dict.fromkeys(k for v in value for k in v))
            return _table([tuple(v.get(k, "") for k in keys) for v in value], tuple(keys))
        return "<br>".join(_cell(v) for v in value)
    text = str(value)
    if "\n" in text:
        return f"<pre>{html.escape(text)}</pre>"
    return html.escape(text)


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...] | None) -> str:
    head = ""
    if header is not None:
        head = "<thead><tr>" + "".join(f"<th>{html.escape(str(h).replace('_', ' '))}</th>" for h in header) + "</tr></thead>"
    body = "".join(
        "<tr>" + "".join(
            (f"<th>{_cell(c)}</th>" if header is None and i == 0 else f"<td>{_cell(c)}</td>") for i, c in enumerate(row)
        ) + "</tr>"
        for row in rows
    )
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _section(title: str, value: Any) -> str:
    out = f"<h2>{html.escape(title.replace('_', ' ').capitalize())}</h2>"
    return out + _cell(value)


def render_html(data: dict[str, Any]) -> str:
    policy = data["policy"]
    totals = data["totals"]
    cards = "".join(
        f'<div class="card"><b>{html.escape(str(v))}</b><span>{html.escape(k.replace("_", " "))}</span></div>'
        for k, v in totals.items()
    )
    refusal_rows = [(code, r["count"], r["samples"]) for code, r in data["refusals"].items()]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Compliance report: {html.escape(data['spider'])}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>Compliance report: {html.escape(data['spider'])}</h1>",
        f"<p class='sub'>{html.escape(data['started'])} to {html.escape(data['finished'])}, "
        f"finished: {html.escape(data['finish_reason'])}. Policy <code>{html.escape(policy['id'])}</code> "
        f"({html.escape(policy['path'])}), fingerprint <code>{html.escape(policy['fingerprint'])}</code>.</p>",
        f"<div class='cards'>{cards}</div>",
        "<h2>Refusals by reason</h2>",
        _table(refusal_rows, ("reason", "count", "sample URLs")) if refusal_rows else "<p>No refusals.</p>",
    ]
    for title, value in data["sections"].items():
        parts.append(_section(title, value))
    parts.append(_section("gdpr stats", data["stats"]))
    if data.get("audit_log"):
        parts.append(f"<p class='sub'>Audit log: <code>{html.escape(data['audit_log'])}</code></p>")
    parts.append("</main></body></html>")
    return "\n".join(parts)

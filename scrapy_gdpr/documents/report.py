"""The per-crawl compliance report (JSON for machines, HTML for a privacy officer).

It is built from three sources, so that no component has to know about it: the
``gdpr/*`` and Scrapy stats, the refusals counted by :mod:`scrapy_gdpr.audit` (with
sample URLs), and the sections components put in ``runtime.report_sections``.

It is written when the engine stops, that is after every ``spider_closed`` handler
has finished: Scrapy's feed exports store their files in ``spider_closed`` (and send
``feed_slot_closed`` for each, which the retention extension records), so a report
written any earlier would miss the feed files and the ledger's last writes.

The JSON keys are listed in ``docs/report.md``; they are stable: new keys may be
added, existing ones keep their meaning (``report_format`` changes otherwise).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy import signals

from scrapy_gdpr import __version__
from scrapy_gdpr._component import component_runtime
from scrapy_gdpr._html import breakable, c, e, figures, kv, page, plural, short_fingerprint, short_url, table, tag, ul
from scrapy_gdpr.documents.vocabulary import FACE_ACTIONS, SENSITIVITY, margin_words

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler

    from scrapy_gdpr.runtime import GdprRuntime

logger = logging.getLogger(__name__)

#: Version of the JSON report's layout; raised only when a key changes meaning or goes.
REPORT_FORMAT = 2

#: Reason code -> (plain words, what to do when the refusal is not wanted).
REASONS: dict[str, tuple[str, str]] = {
    "domain": ("the site or path is not allowed by the policy",
               "add the domain to the policy's domains, or change its allow_paths / deny_paths"),
    "terms": ("the site's terms forbid crawling, or were never reviewed",
              "review the site's terms and record the review under the domain's terms"),
    "terms_drift": ("the site's terms changed since they were reviewed",
                    "review the new terms, then record their fingerprint (scrapy gdpr-terms URL)"),
    "robots": ("the site's robots.txt disallows it", "nothing to do: the site asked not to be crawled there"),
    "robots_unreachable": ("robots.txt could not be read, so the whole site is treated as disallowed",
                           "check that the site's robots.txt answers; the next crawl tries again"),
    "optout": ("the site reserved this use (opt-out signal)", "nothing to do: the site opted out"),
    "objection": ("a person objected, or asked for erasure", "nothing to do: the objection list says so"),
    "jurisdiction": ("the site is in an excluded jurisdiction", "change jurisdictions.exclude_tlds or jurisdictions.exclude_domains if this is wrong"),
    "private_network": ("the host is on a private or local network",
                        "set allow_private_network on the domain only for a local test site"),
    "retry_after": ("the site asked the crawler to wait longer than the policy allows",
                    "crawl the site later, or raise politeness.retry_after_max"),
    "faces": ("the face stage refused an image or record", "as the policy's faces.action says"),
    "unchecked": ("content that could not be checked for faces", "nothing is stored unchecked; see the log"),
    "retention": ("a record without its source or retention stamp", "check the spider's item pipelines"),
    "payment_required": ("the site answered 402 Payment Required (pay-per-crawl); nothing is paid",
                         "nothing to do without a licence: the site asks to be paid"),
    "license": (("the site's RSL licence prohibits this use, or licenses it only for a fee or to registered "
                "clients, and the policy records no licence held"),
                "nothing to do, or obtain the licence and record it in opt_out.rsl_licences"),
    "deny_list": ("the site is on a deny list named in the policy",
                  "change the list file named in opt_out.deny_lists if this is wrong"),
    "undecided": ("a check could not decide, so nothing was fetched or stored",
                  "see the audit log's detail for the failing check (DNS, robots.txt, objection list)"),
}

#: Scrapy's finish reasons in plain words.
FINISH_REASONS: dict[str, str] = {
    "finished": "finished normally",
    "shutdown": "stopped by the operator or a signal before the end",
    "cancelled": "cancelled",
    "closespider_timeout": "stopped by the time limit (CLOSESPIDER_TIMEOUT)",
    "closespider_itemcount": "stopped after the item limit (CLOSESPIDER_ITEMCOUNT)",
    "closespider_pagecount": "stopped after the page limit (CLOSESPIDER_PAGECOUNT)",
    "closespider_errorcount": "stopped after too many errors (CLOSESPIDER_ERRORCOUNT)",
}

#: Scrapy's consoles, as the crawl really ran them: (extension path, name).
CONSOLE_EXTENSIONS = (
    ("scrapy.extensions.telnet.TelnetConsole", "telnet console (TELNETCONSOLE_ENABLED)"),
    ("scrapy.extensions.remote_control.RemoteControl", "remote-control server (REMOTE_CONTROL_ENABLED)"),
)


class ComplianceReport:
    """Extension writing ``<GDPR_REPORT_DIR>/<spider>-<time>.json`` and ``.html``."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)
        self.started = datetime.now(UTC)
        self.reason: str | None = None
        self.closed_at: datetime | None = None
        self.engine_running = False
        crawler.signals.connect(self.engine_started, signal=signals.engine_started)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(self.engine_stopped, signal=signals.engine_stopped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def engine_started(self) -> None:
        self.engine_running = True

    def spider_closed(self, reason: str) -> None:
        self.reason = reason
        self.closed_at = datetime.now(UTC)
        if not self.engine_running:
            # closed while opening (CloseSpider from a spider_opened handler): the engine
            # never started, so no engine_stopped follows, and nothing was scraped
            self.write()

    def engine_stopped(self) -> None:
        # after every spider_closed handler: the feeds are stored and recorded
        if self.reason is None or not self.engine_running:
            return  # the spider never opened, or the report is written already
        self.write()

    def write(self) -> tuple[Path, Path] | None:
        report_dir = self.runtime.config.report_dir
        if not report_dir:
            return None
        assert self.reason is not None
        out = Path(report_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path, html_path = _claim(out, f"{self.runtime.spider_name}-{self.started.strftime('%Y%m%dT%H%M%SZ')}")
        self.crawler.stats.set_value("gdpr/report/json", str(json_path))
        self.crawler.stats.set_value("gdpr/report/html", str(html_path))
        data = build_report(
            self.runtime, reason=self.reason, started=self.started, finished=self.closed_at,
            consoles=_consoles(self.crawler),
        )
        data["report_files"] = {"json": str(json_path), "html": str(html_path)}
        _write_atomic(json_path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
        _write_atomic(html_path, render_html(data))
        logger.info("GDPR compliance report: %(html)s", {"html": html_path}, extra={"spider": self.crawler.spider})
        return json_path, html_path


def _claim(out: Path, stem: str) -> tuple[Path, Path]:
    """The report's two paths, ``<stem>.json`` or ``<stem>-2.json``, ...: two crawls of one
    spider started in the same second (or a re-run) never overwrite each other's report."""
    for n in range(1, 10_000):
        name = stem if n == 1 else f"{stem}-{n}"
        json_path = out / f"{name}.json"
        try:
            json_path.open("x").close()  # claimed atomically; filled in below
        except FileExistsError:
            continue
        return json_path, out / f"{name}.html"
    raise FileExistsError(f"no free report name for {stem} in {out}")


def _write_atomic(path: Path, text: str) -> None:
    """Write a whole file or nothing (a crash leaves the previous content, never half a report)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _consoles(crawler: Crawler) -> list[dict[str, Any]]:
    """Which of Scrapy's consoles this crawl ran (its loaded extensions, not a setting's default)."""
    manager = getattr(crawler, "extensions", None)
    loaded = {f"{type(m).__module__}.{type(m).__qualname__}" for m in getattr(manager, "middlewares", ())}
    return [{"extension": path, "name": name, "enabled": path in loaded} for path, name in CONSOLE_EXTENSIONS]


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def build_report(
    rt: GdprRuntime, *, reason: str, started: datetime, finished: datetime | None = None,
    consoles: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The report's content, JSON-serialisable (keys documented in docs/report.md)."""
    stats = rt.crawler.stats.get_stats() if rt.crawler.stats is not None else {}
    finished = finished or datetime.now(UTC)
    gdpr_stats = {k: v for k, v in sorted(stats.items()) if k.startswith("gdpr/")}
    refusals = {
        code: {
            "count": count,
            "samples": list(rt.refusals.samples.get(code, [])),
            "meaning": REASONS.get(code, ("", ""))[0],
            "fix": REASONS.get(code, ("", ""))[1],
        }
        for code, count in sorted(rt.refusals.counts.items(), key=lambda kv: (-kv[1], kv[0]))
    }
    sections = rt.report_sections
    faces = sections.get("faces") or {}
    retention = sections.get("retention") or {}
    purged = {
        "feed_lines": _count(stats.get("gdpr/retention/purged/feed_lines")),
        "files": _count(stats.get("gdpr/retention/purged/objects")),
        "ledger_rows": _count(stats.get("gdpr/retention/purged/ledger_rows")),
    }
    summary = {
        "requests_sent": _count(stats.get("downloader/request_count")),
        "responses_received": _count(stats.get("downloader/response_count")),
        "refused": sum(rt.refusals.counts.values()),
        "refused_by_reason": {code: r["count"] for code, r in refusals.items()},
        "items_stored": _count(stats.get("item_scraped_count")),
        "items_dropped": _count(stats.get("item_dropped_count")),
        "images_checked": _count(faces.get("images_checked")),
        "faces_found": _count(faces.get("faces_detected", stats.get("gdpr/faces/detected"))),
        "images_redacted": _count(faces.get("images_redacted", stats.get("gdpr/images/redacted"))),
        "images_dropped": _count(faces.get("images_dropped", stats.get("gdpr/images/dropped"))),
        "feed_files": len(retention.get("feed_files") or []),
        "expired_deleted": purged,
        "errors_logged": _count(stats.get("log_count/ERROR")),
    }
    return {
        "report_format": REPORT_FORMAT,
        "generator": f"scrapy-gdpr {__version__}",
        "spider": rt.spider_name,
        "finish_reason": str(stats.get("finish_reason") or reason),
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "duration_seconds": round((finished - started).total_seconds(), 1),
        "policy": {
            "id": rt.policy.policy_id,
            "title": rt.policy.title or rt.policy.policy_id,
            "path": str(rt.policy.path),
            "fingerprint": rt.policy.fingerprint,
            "controller": rt.policy.controller.name,
        },
        "summary": summary,
        "totals": {
            "requests": summary["requests_sent"],
            "responses": summary["responses_received"],
            "items_scraped": summary["items_stored"],
            "items_dropped": summary["items_dropped"],
            "refusals": summary["refused"],
        },
        "refusals": refusals,
        "consoles": consoles if consoles is not None else [],
        "sections": sections,
        "stats": gdpr_stats,
        "audit_log": str(rt.audit.path) if rt.audit.path else None,
    }


# --------------------------------------------------------------------------- HTML

#: Known section keys: label, and the unit of a count (None: shown as it is).
LABELS: dict[str, tuple[str, str | None]] = {
    # gate
    "domains": ("Listed domains", None),
    "domain": ("Domain", None),
    "include_subdomains": ("Subdomains included", None),
    "allow_paths": ("Allowed paths", None),
    "deny_paths": ("Denied paths", None),
    "allow_private_network": ("Private network allowed", None),
    "jurisdictions": ("Excluded jurisdictions", None),
    "exclude_tlds": ("Top-level domains", None),
    "exclude_domains": ("Domains", None),
    "objections": ("Objection list", None),
    "path": ("File", None),
    "entries_at_start": ("Entries when the crawl started", "entry"),
    # robots
    "product_token": ("Product token obeyed", None),
    "unreachable_count": ("Sites whose robots.txt could not be read", "site"),
    "unreachable": ("robots.txt could not be read, per site", None),
    "redirect_failures": ("robots.txt redirects that failed", "redirect"),
    "truncated": ("robots.txt files cut at the size limit", None),
    "capped_delays": ("Crawl-delays capped at the policy's maximum", None),
    "sitemaps": ("Sitemaps listed in robots.txt", None),
    "asked": ("Asked for", "second"),
    "applied": ("Applied", "second"),
    # opt-out
    "pages_with_reservations": ("Pages with an opt-out reservation", "page"),
    "refused_responses": ("Responses refused for an opt-out", "response"),
    "reserved": ("Reservations, by purpose", None),
    "tdmrep_files": ("TDMRep files found", None),
    # politeness
    "retry_after_max_seconds": ("Longest Retry-After honoured", "second"),
    "paused": ("Pauses for a site's Retry-After", "pause"),
    "given_up": ("Sites given up (asked to wait too long)", None),
    "given_up_count": ("Sites given up", "site"),
    "retry_after": ("Retry-After asked", None),
    # faces
    "action": ("What happens to a face", None),
    "margin": ("Margin around a face", None),
    "sensitivity": ("Detection sensitivity", None),
    "max_pixels": ("Largest image checked", "pixel"),
    "allow_unchecked_types": ("Types stored without a face check", None),
    "workers": ("Face detection workers", "thread"),
    "library_threads": ("Threads per worker", "thread"),
    "queue": ("Images in flight at most", "image"),
    "images_checked": ("Images checked for faces", "image"),
    "faces_detected": ("Faces found", "face"),
    "images_clean": ("Images without a face", "image"),
    "images_redacted": ("Images with faces redacted", "image"),
    "images_dropped": ("Images not stored", "image"),
    "images_dropped_by_reason": ("Images not stored, by reason", None),
    "files_unchecked_stored": ("Files stored without a face check", "file"),
    "items_dropped": ("Records dropped by the face stage", "record"),
    "items_dropped_by_reason": ("Records dropped, by reason", None),
    "max_in_flight": ("Most images in flight at once", "image"),
    "runtime": ("Face detection runtime", None),
    # retention
    "ledger": ("Ledger", None),
    "items_stored": ("Records stored", "record"),
    "files_stored": ("Files stored, by kind", None),
    "feed_files": ("Feed files written", None),
    "expiry_by_month": ("Stored records by month of expiry", None),
    "purges": ("Expired data deleted", None),
    "feed_lines": ("Feed lines deleted", "line"),
    "objects": ("Files deleted", "file"),
    "ledger_rows": ("Ledger rows deleted", "row"),
    "deleted_count": ("Deletions recorded", "deletion"),
    "checks": ("Checks", "check"),
    "last_checked": ("Last checked", None),
    "busy": ("Files skipped (in use)", None),
    "dry_run": ("Dry run", None),
    "file": ("File", None),
    "items": ("Records", "record"),
    "earliest_expiry": ("Earliest expiry", None),
    "latest_expiry": ("Latest expiry", None),
    "now": ("When", None),
    # common
    "error": ("Error", None),
    "status": ("Status", None),
    "note": ("Note", None),
    "count": ("Count", None),
}

#: Section name -> (title, one sentence saying what it is).
SECTIONS: dict[str, tuple[str, str]] = {
    "gate": ("What the crawl was allowed to fetch", ("The policy's domains, paths, excluded jurisdictions and "
             "objection list, as the request gate applied them.")),
    "terms": ("Sites and their terms", ("Each listed domain's reviewed terms, and whether the terms page still "
              "says what the reviewer saw.")),
    "robots": ("robots.txt", "robots.txt is read before any page of a site is fetched."),
    "optout": ("Opt-out signals", "Pages and sites that reserved a use of their content."),
    "rsl": ("Licences (RSL)", "The RSL licence documents sites named, and what the crawl refused for them."),
    "politeness": ("Politeness", "How the crawl spaced its requests when sites asked it to slow down."),
    "faces": ("Images and faces", "Every image is checked for faces on this machine before it is stored."),
    "retention": ("What was stored, and when it expires", ("Every stored record and file carries an expiry date "
                  "and is recorded in the ledger; expired data is deleted.")),
}
ORDER = ("gate", "terms", "robots", "optout", "rsl", "politeness", "faces", "retention")


def _label(key: str) -> str:
    if key in LABELS:
        return LABELS[key][0]
    words = str(key).replace("_", " ").replace("/", " / ").strip()
    return words[:1].upper() + words[1:]


#: Units with an irregular plural.
PLURALS = {"entry": "entries"}

#: Keys whose dict keys are data (months, purposes, kinds), not field names.
DATA_KEYS = frozenset({"expiry_by_month", "reserved", "files_stored", "images_dropped_by_reason",
                       "items_dropped_by_reason", "tdmrep_files", "given_up", "unreachable", "capped_delays",
                       "sitemaps"})

#: Columns shown for a purge (the JSON has every field).
PURGE_COLUMNS = ("now", "feed_lines", "objects", "ledger_rows", "busy")

_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


def _number(value: float, key: str = "") -> str:
    unit = LABELS.get(key, ("", None))[1]
    if key == "margin" and isinstance(value, float):
        return e(margin_words(value))
    if unit == "second" and value >= 120:
        return e(_duration(value))
    if unit:
        return f"<span class='nowrap'>{e(plural(value, unit, PLURALS.get(unit)))}</span>"
    return e(f"{value:,}" if isinstance(value, int) else f"{value:g}")


def _value(value: Any, key: str = "") -> str:
    """A value in plain words: yes/no, none, numbers with their unit, lists, nested tables."""
    if key == "action" and value in FACE_ACTIONS:
        return e(f"{value}: {FACE_ACTIONS[value]}")
    if key == "sensitivity" and value in SENSITIVITY:
        return e(SENSITIVITY[value])
    if key == "library_threads" and value is None:
        return "the library's default"
    if value is None or (isinstance(value, (dict, list, tuple)) and not value):
        return "<span class='small'>none</span>"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return _number(value, key)
    if isinstance(value, dict):
        if all(isinstance(v, dict) for v in value.values()):
            inner = list(dict.fromkeys(k for v in value.values() for k in v))
            return table(["Site" if key in DATA_KEYS else "", *[_label(k) for k in inner]],
                         [[_text(k), *[_value(v.get(i), i) for i in inner]] for k, v in value.items()])
        return "<br>".join(
            f"{_text(k) if key in DATA_KEYS else e(_label(k))}: {_value(v, k)}" for k, v in value.items()
        )
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, dict) for v in value):
            keys = list(dict.fromkeys(k for v in value for k in v))
            if key == "purges":
                keys = [k for k in PURGE_COLUMNS if k in keys]
            return table([_label(k) for k in keys], [[_value(v.get(k), k) for k in keys] for v in value])
        if key == "busy":
            return e(plural(len(value), "file"))
        if all(isinstance(v, str) and len(v) < 40 for v in value):
            return ", ".join(_text(v) for v in value)
        return ul([_value(v) for v in value], "")
    return _text(value)


def _path(text: str) -> str:
    """A file path that may wrap after each ``/`` (never inside a name)."""
    return breakable(text)


def _text(value: Any) -> str:
    text = str(value)
    if text.startswith(("http://", "https://")):
        return short_url(text)
    if text.startswith("sha256:"):
        return short_fingerprint(text)
    if _ISO_TIME.match(text):
        return e(_when(text, short=True))
    if "\n" in text:
        return f"<pre>{e(text)}</pre>"
    if text.startswith("/") or "://" in text:
        return _path(text)
    return e(text)


def _terms_section(rows: list[dict[str, Any]]) -> str:
    out = [table(
        ["Domain", "Verdict", "Status", "Reviewed"],
        [[
            f"<strong>{e(r.get('domain'))}</strong>"
            + (f"<br><span class='small'>{short_url(r['terms_url'], 48)}</span>" if r.get("terms_url") else ""),
            e(r.get("verdict", ""))
            + (f"<br><span class='small'>conditions: {e('; '.join(r['conditions']))}</span>"
               if r.get("conditions") else ""),
            _status(str(r.get("status", "")))
            + (f"<br><span class='small'>{e(r['note'])}</span>" if r.get("note") else "")
            + (f"<br><span class='small'>checked {plural(_count(r['checks']), 'time')}</span>"
               if r.get("checks") else ""),
            e(r.get("reviewed", "")) + (
                f"<br><span class='small'>terms fingerprint {short_fingerprint(r.get('reviewed_fingerprint'))}</span>"
                if r.get("reviewed_fingerprint") and not str(r["reviewed_fingerprint"]).startswith("(") else ""),
        ] for r in rows],
    )]
    for r in rows:
        changed = r.get("current_fingerprint") and r.get("current_fingerprint") != r.get("reviewed_fingerprint")
        if changed or r.get("diff"):
            out.append(f"<h4>{e(r.get('domain'))}: the terms changed since the review</h4>")
            out.append(kv([
                ("Reviewed fingerprint", short_fingerprint(r.get("reviewed_fingerprint"))),
                ("Fingerprint now", short_fingerprint(r.get("current_fingerprint"))),
            ]))
            if r.get("diff"):
                out.append(f"<pre>{e(r['diff'])}</pre>")
    return "\n".join(out)


def _status(status: str) -> str:
    head, sep, rest = status.partition(": ")
    kind = "ok" if head in ("ok", "crawled") else ("bad" if head in ("refused", "drift") else "check")
    return tag(head, kind) + (f" {e(rest)}" if sep else "")


def _section_html(name: str, value: Any) -> str:
    title, blurb = SECTIONS.get(name, (_label(name), ""))
    parts = [f"<h3 id='section-{e(name)}'>{e(title)}</h3>"]
    if blurb:
        parts.append(f"<p class='small'>{e(blurb)}</p>")
    if name == "terms" and isinstance(value, list):
        parts.append(_terms_section(value) if value else "<p>No domains are listed.</p>")
        return "\n".join(parts)
    if not isinstance(value, dict):
        parts.append(_value(value, name))
        return "\n".join(parts)
    rows: list[tuple[str, str]] = []
    blocks: list[str] = []
    empty: list[str] = []
    for k, v in value.items():
        if not v and isinstance(v, (dict, list, tuple)):
            if f"{k}_count" not in value:  # else "0 sites" is already said by the count
                empty.append(_label(k))
            continue
        tabular = isinstance(v, (dict, list, tuple)) and bool(v) and all(
            isinstance(x, dict) for x in (v.values() if isinstance(v, dict) else v))
        if tabular:
            blocks.append(f"<h4>{e(_label(k))}</h4>" + _value(v, k))
        elif isinstance(v, dict) and v and k not in DATA_KEYS:
            blocks.append(f"<h4>{e(_label(k))}</h4>" + kv([(_label(i), _value(x, i)) for i, x in v.items()]))
        else:
            rows.append((_label(k), _value(v, k)))
    if rows:
        parts.append(kv(rows))
    parts += blocks
    if empty:
        parts.append(f"<p class='small'>Nothing to report for: {e('; '.join(x[:1].lower() + x[1:] for x in empty))}.</p>")
    return "\n".join(parts)


def _when(iso: str, *, short: bool = False) -> str:
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    # the day without a leading zero, portably (no "%-d" on Windows)
    if short:
        return f"{moment.day} {moment.strftime('%b %Y, %H:%M UTC')}"
    return f"{moment.day} {moment.strftime('%B %Y, %H:%M:%S UTC')}"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [plural(hours, "hour")] if hours else []
    if minutes:
        parts.append(plural(minutes, "minute"))
    if secs or not parts:
        parts.append(plural(secs, "second") if secs else "under a second")
    return " ".join(parts)


def render_html(data: dict[str, Any]) -> str:
    """The report as one self-contained HTML document for a privacy officer."""
    pol = data["policy"]
    s = data["summary"]
    reason = data["finish_reason"]
    finished_well = reason == "finished"
    expired = s["expired_deleted"]
    expired_total = expired["feed_lines"] + expired["files"] + expired["ledger_rows"]
    on = [cns for cns in data.get("consoles", []) if cns["enabled"]]
    blocked = s["refused"] > 0 and s["items_stored"] == 0
    started, finished = _when(data["started"]), _when(data["finished"])
    if started[:-13] == finished[:-13]:  # the same day: the end time only
        finished = finished[-12:]

    def fig(n: int, one: str, many: str, rest: str, bad: bool = False) -> tuple[str, str, bool]:
        return f"{n:,}", f"{one if n == 1 else many} {rest}".strip(), bad

    refused_words = (
        f"{plural(s['refused'], 'request, record or image', 'requests, records or images')} "
        f"{'was' if s['refused'] == 1 else 'were'} refused by the policy"
    )
    parts = [
        "<header class='doc'><p class='kicker'>Compliance report &middot; one crawl</p>",
        f"<h1>Crawl of spider “{e(data['spider'])}”</h1>",
        f"<p class='meta'>{e(started)} to {e(finished)} ({e(_duration(data['duration_seconds']))})</p>",
        (f"<p class='meta'>Policy “{e(pol['title'])}” ({c(pol['id'])}), controller {e(pol['controller'])}, "
        f"fingerprint {short_fingerprint(pol['fingerprint'])}</p>"),
        f"<p class='meta'>Policy file {c(pol['path'])}</p></header>",
        f"<div class='box {'ok' if finished_well and not on and not blocked else 'warn'}'><p>The crawl "
        f"<strong>{e(FINISH_REASONS.get(reason, reason))}</strong> <span class='small'>(finish reason "
        f"{c(reason)})</span>. "
        + (f"{e(refused_words)}; " if s["refused"] else "Nothing was refused by the policy; ")
        + (f"{e(plural(s['items_stored'], 'record'))} passed every check and "
           f"{'was' if s['items_stored'] == 1 else 'were'} kept.</p>" if s["items_stored"]
           else "<strong>nothing was kept</strong>.</p>")
        + "".join(f"<p><strong>Scrapy's {e(cns['name'])} ran during this crawl.</strong></p>" for cns in on)
        + (f"<p>{e(plural(s['errors_logged'], 'error'))} logged: see the crawl log.</p>" if s["errors_logged"] else "")
        + "</div>",
        "<h2 id='summary'>Summary</h2>",
        figures([
            fig(s["requests_sent"], "request", "requests", "sent (pages, images, robots.txt, terms)"),
            fig(s["responses_received"], "response", "responses", "received"),
            fig(s["refused"], "refusal", "refusals", "by the policy (below)"),
            fig(s["items_stored"], "record", "records", "kept, having passed every check"),
            fig(s["items_dropped"], "record", "records", "dropped"),
            fig(s["images_checked"], "image", "images", f"checked for faces ({plural(s['faces_found'], 'face')} found)"),
            fig(s["images_redacted"], "image", "images", "stored with faces redacted"),
            fig(s["images_dropped"], "image", "images", "not stored"),
            fig(s["feed_files"], "feed file", "feed files", "written and recorded in the ledger"),
            fig(expired_total, "expired entry", "expired entries",
                f"deleted: {plural(expired['feed_lines'], 'feed line')}, {plural(expired['files'], 'file')}, "
                f"{plural(expired['ledger_rows'], 'ledger row')}"),
        ]),
        "<h3 id='refusals'>Refused, by reason</h3>",
    ]
    if data["refusals"]:
        parts.append(table(
            ["Reason", "Count", "What it means, and what to do", "Examples"],
            [[c(code), e(f"{r['count']:,}"),
              _prose(_cap(r.get("meaning") or "")) + (f"<br><span class='small'>{_prose(_cap(r['fix']))}</span>"
                                                      if r.get("fix") else ""),
              "<br>".join(short_url(u, 44) for u in r["samples"][:3])
              + (f"<br><span class='small'>and {len(r['samples']) - 3} more in the JSON report</span>"
                 if len(r["samples"]) > 3 else "")]
             for code, r in data["refusals"].items()],
            num=(1,),
        ))
    else:
        parts.append("<p>No refusals.</p>")
    parts.append("<h2 id='details'>Details</h2>")
    sections = data["sections"]
    parts.extend(_section_html(name, sections[name])
                 for name in [*[n for n in ORDER if n in sections], *[n for n in sections if n not in ORDER]])
    parts += [
        "<h3 id='consoles'>Scrapy's consoles</h3>",
        kv([(_cap(cns["name"]), tag("ran", "bad") if cns["enabled"] else tag("off", "ok"))
            for cns in data.get("consoles", [])]) if data.get("consoles") else "<p class='small'>not recorded</p>",
        "<h3 id='stats'>All gdpr/* statistics</h3>",
        "<p class='small'>The figures above come from these statistics; they are also in the crawl log.</p>",
        table(["Statistic", "Value"], [[c(k), e(f"{v:,}") if isinstance(v, (int, float)) and not isinstance(v, bool)
                                        else _text(v)] for k, v in data["stats"].items()])
        if data["stats"] else "<p>None.</p>",
    ]
    files = data.get("report_files") or {}
    footer = [f"Report of spider {c(data['spider'])}"]
    if data.get("audit_log"):
        footer.append(f"audit log {c(data['audit_log'])}")
    if files.get("json"):
        footer.append(f"machine-readable report {c(files['json'])}")
    footer.append(e(data.get("generator", "")))
    parts.append("<footer>" + " &middot; ".join(footer) + "</footer>")
    return page(f"Compliance report: {data['spider']}", "\n".join(parts))


def _prose(text: str) -> str:
    """Escaped text with policy keys and commands (``allow_paths``, ``faces.action``) set as code."""
    return re.sub(r"\b(scrapy gdpr-\w+(?: URL)?|[a-z]+(?:[._][a-z]+)*_[a-z_]+|[a-z]+\.[a-z_]+)\b",
                  lambda m: f"<code>{m.group(1)}</code>" if m.group(1) != "robots.txt" else m.group(1), e(text))


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]

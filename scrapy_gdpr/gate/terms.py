"""Terms of use: the reviewed verdict, and drift detection.

:class:`TermsMiddleware` (downloader middleware at 60, before robots.txt is
fetched) refuses requests to a listed domain whose terms were never reviewed or
forbid crawling. For the others it fetches the terms page at crawl start and every
``terms_check.interval``, normalises its text (:func:`normalise_terms`) and compares
the fingerprint with the one the reviewer recorded; on any difference, or when the
page cannot be fetched, the domain is refused until the terms are reviewed again.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import lxml.etree
import lxml.html
from scrapy.exceptions import IgnoreRequest
from scrapy.http import HtmlResponse, Request, TextResponse
from scrapy.http.request import NO_CALLBACK

from scrapy_gdpr._component import chainable, component_runtime
from scrapy_gdpr.audit import Reason, record, refuse
from scrapy_gdpr.gate._download import body_problem, capped, size_detail, too_large
from scrapy_gdpr.gate._flight import Flight
from scrapy_gdpr.internal import internal_kind, internal_meta
from scrapy_gdpr.shared.state import download_once, gate_state

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from scrapy_gdpr.policy import DomainRule

logger = logging.getLogger(__name__)

#: Internal requests that pass this middleware: the terms page itself (which must be
#: fetched to be checked), robots.txt and tdmrep.json (protocol files, fetched for
#: a request that has already passed, or is being checked by, this middleware).
INTERNAL = ("robots", "tdmrep", "terms", "rsl")
INTERNAL_PRIORITY = 1000
#: The largest terms page read, in bytes after decompression (the crawl's check and
#: ``scrapy gdpr-terms``); a larger one cannot be checked, so its domain is refused.
MAX_SIZE = 5_000_000
#: The longest diff kept in the compliance report, in lines.
MAX_DIFF_LINES = 400
#: How many host names' domain rules the middleware keeps.
HOST_CACHE_SIZE = 10_000

# --------------------------------------------------------------------------- normalisation

#: Elements whose text is never shown.
_INVISIBLE = ("script", "style", "noscript", "template", "head")
#: Elements that start a new line of text.
_BLOCKS = frozenset(
    ["address", "article", "aside", "blockquote", "br", "caption", "dd", "details", "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul"]
)
_WS = re.compile(r"\s+")
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>")


def normalise_text(text: str) -> str:
    """Unicode NFC, each line's whitespace collapsed and trimmed, empty lines dropped."""
    text = unicodedata.normalize("NFC", text)
    lines = (_WS.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def html_visible_text(html: str) -> str:
    """The text of an HTML document as a browser would show it, one block per line."""
    html = _XML_DECL.sub("", html, count=1)
    if not html.strip():
        return ""
    try:
        root = lxml.html.document_fromstring(html)
    except (lxml.etree.ParserError, ValueError):
        return ""
    for el in list(root.iter(*_INVISIBLE)):
        el.drop_tree()
    # Source line breaks are spaces to a browser (outside <pre>); blocks break lines.
    for el in root.iter():
        in_pre = any(a.tag == "pre" for a in el.iterancestors()) or el.tag == "pre"
        if not in_pre and el.text:
            el.text = _WS.sub(" ", el.text)
        if el.tail and not any(a.tag == "pre" for a in el.iterancestors()):
            el.tail = _WS.sub(" ", el.tail)
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.lower() in _BLOCKS:
            el.text = "\n" + (el.text or "")
            el.tail = "\n" + (el.tail or "")
    return str(root.text_content())


def normalise_terms(response: Response) -> str:
    """The normalised text of a terms page, as fingerprinted.

    1. Decode as Scrapy does (Content-Type charset, BOM, ``<meta charset>``).
    2. HTML (an ``HtmlResponse``): drop ``<head>``, ``<script>``, ``<style>``,
       ``<noscript>`` and ``<template>`` (comments carry no text); line breaks in
       the source become spaces (except inside ``<pre>``) and each block element
       (``p``, ``div``, ``li``, ``h1``-``h6``, ``br``, ``tr``...) starts a new line. Other text is taken as it is. Binary bodies give ``""``.
    3. Unicode NFC; every run of whitespace (Python's ``\\s``, which includes
       no-break spaces) becomes one space; lines are trimmed; empty lines dropped;
       lines are joined with ``\\n`` (no trailing newline).
    """
    if isinstance(response, HtmlResponse):
        text = html_visible_text(response.text)
    elif isinstance(response, TextResponse):
        text = response.text
    else:
        return ""
    return normalise_text(text)


def fingerprint(text: str) -> str:
    """``sha256:<hex>`` of the UTF-8 bytes of normalised text."""
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def unified_diff(old: str, new: str, *, limit: int = MAX_DIFF_LINES) -> str:
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(), "reviewed", "current", lineterm=""))
    if len(lines) > limit:
        lines = [*lines[:limit], f"... ({len(lines) - limit} more lines)"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- middleware


@dataclass
class _TermsState:
    """What is known about one domain's terms."""

    status: str = "not checked"  # ok, drift, unreachable, not checked
    detail: str = ""
    current: str | None = None  # fingerprint seen at the last check
    checked_at: float | None = None  # the clock's monotonic()
    checked_on: str = ""  # ISO time of the last check, for the report
    checks: int = 0
    flight: Flight = field(default_factory=Flight)  # the check, shared by concurrent requests
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Page:
    """One terms URL as last fetched; shared by every domain whose review names it."""

    error: str = ""  # why there is no answer ("" when there is one)
    status: int | None = None
    text: str = ""  # the normalised text of a 200 answer
    ctype: str = ""
    fetched_at: float | None = None  # the clock's monotonic()
    flight: Flight = field(default_factory=Flight)  # the fetch, shared by concurrent checks


@chainable
class TermsMiddleware:
    """Downloader middleware: terms reviewed, not forbidding, and unchanged."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)
        self.clock = self.runtime.clock
        self.policy = self.runtime.policy
        self.interval = self.policy.duration(self.policy.terms_check.interval).total_seconds()
        self._states: dict[int, _TermsState] = {}
        #: Terms pages by URL: a page many domains share is fetched once per check interval.
        self._pages: dict[str, _Page] = {}
        #: The domain rule per authority (``urlsplit().netloc``) seen (the policy does not
        #: change during a crawl).
        self._host_rules: dict[str, int | None] = {}
        rows: list[dict[str, Any]] = []
        for i, rule in enumerate(self.policy.domains):
            state = self._states[i] = _TermsState()
            state.report = self._row(rule)
            rows.append(state.report)
            snapshot = rule.terms.snapshot if rule.terms is not None else None
            if snapshot and not self.policy.resolve_path(snapshot).is_file():
                logger.warning("The terms snapshot %(path)s of %(domain)s does not exist; a drift report "
                               "cannot show what changed", {"path": self.policy.resolve_path(snapshot),
                                                            "domain": rule.domain})
        self.runtime.report_sections["terms"] = rows

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    @staticmethod
    def _row(rule: DomainRule) -> dict[str, Any]:
        terms = rule.terms
        if terms is None:
            return {"domain": rule.domain, "verdict": "not reviewed", "status": "refused: no terms review"}
        status = "refused: terms forbid crawling" if terms.verdict == "forbids" else "not checked"
        row = {
            "domain": rule.domain,
            "terms_url": terms.url,
            "verdict": terms.verdict,
            "conditions": list(terms.conditions),
            "reviewed": f"{terms.reviewed_on.isoformat()} by {terms.reviewed_by}",
            "status": status,
            "reviewed_fingerprint": terms.fingerprint or "(none recorded)",
        }
        if terms.verdict == "none_published":
            row["reviewed_fingerprint"] = "(no terms published)"
            row["watched"] = [terms.url, *terms.candidates]
        return row

    def _rule_for(self, host: str) -> int | None:
        """The index of the most specific domain rule covering ``host``."""
        best: tuple[int, int] | None = None
        for i, rule in enumerate(self.policy.domains):
            covers = host == rule.domain or (rule.include_subdomains and host.endswith("." + rule.domain))
            if covers and (best is None or len(rule.domain) > best[1]):
                best = (i, len(rule.domain))
        return None if best is None else best[0]

    async def process_request(self, request: Request) -> None:
        if internal_kind(request) in INTERNAL:
            return
        url = request.url
        parts = urlsplit(url, "", True)  # the gate (40) split it already: cached
        i = self._host_rules.get(parts.netloc, -1)
        if i == -1:  # not seen yet
            i = self._rule_for((parts.hostname or "").lower().rstrip("."))
            if len(self._host_rules) >= HOST_CACHE_SIZE:
                del self._host_rules[next(iter(self._host_rules))]  # the oldest entry
            self._host_rules[parts.netloc] = i
        if i is None:
            return  # not a listed domain: the policy gate (40) refuses it
        rule = self.policy.domains[i]
        if rule.terms is None:
            raise refuse(self.runtime, url, Reason.TERMS, clause=self.policy.clause("domains", i),
                         detail=f"no terms review recorded for {rule.domain}")
        if rule.terms.verdict == "forbids":
            raise refuse(self.runtime, url, Reason.TERMS,
                         clause=self.policy.clause("domains", i, "terms", "verdict"),
                         detail=f"the terms of {rule.domain} forbid crawling (reviewed {rule.terms.reviewed_on})")
        state = self._states[i]
        if state.flight.busy or state.checked_at is None or self.clock.monotonic() - state.checked_at >= self.interval:
            state = await self._checked(i, url)  # due for a check, or one is in flight
        if state.status != "ok":
            field_name = "verdict" if rule.terms.verdict == "none_published" else "fingerprint"
            raise refuse(self.runtime, url, Reason.TERMS_DRIFT,
                         clause=self.policy.clause("domains", i, "terms", field_name), detail=state.detail)

    async def _checked(self, i: int, along: str = "") -> _TermsState:
        """The domain's terms state, re-checked when due; concurrent callers share a check.
        ``along``: the page asking (several workers: its site's robots.txt and TDMRep
        answers are read in the same round trip as the terms page's)."""
        state = self._states[i]
        if not state.flight.busy and state.checked_at is not None and self.clock.monotonic() - state.checked_at < self.interval:
            return state
        await state.flight.run(lambda: self._check_closed(i, state, along))
        return state

    async def _check_closed(self, i: int, state: _TermsState, along: str = "") -> None:
        try:
            await self._check(i, state, along)
        except Exception as exc:  # never let a check error open the gate
            state.status, state.detail = "unreachable", f"terms check failed: {exc!r}"
            logger.exception("Terms check for %(domain)s failed", {"domain": self.policy.domains[i].domain},
                             extra={"spider": self.crawler.spider})
        finally:
            state.checked_at = self.clock.monotonic()

    # -- pages -----------------------------------------------------------------------
    async def _page(self, url: str, along: str = "") -> _Page:
        """``url`` as fetched within the check interval; concurrent callers share one fetch."""
        page = self._pages.get(url)
        if page is None:
            page = self._pages[url] = _Page()
        fresh = page.fetched_at is not None and self.clock.monotonic() - page.fetched_at < self.interval
        if page.flight.busy or not fresh:
            await page.flight.run(lambda: self._fetch_page(url, page, along))
        return page

    async def _fetch_page(self, url: str, page: _Page, along: str = "") -> None:
        stats = self.crawler.stats
        stats.inc_value("gdpr/terms/page_fetches")
        page.error, page.status, page.text, page.ctype = "", None, "", ""
        request = Request(url, priority=INTERNAL_PRIORITY, callback=NO_CALLBACK, dont_filter=True,
                          meta={**internal_meta("terms"), "dont_cache": True, **capped(MAX_SIZE)})
        try:
            state = gate_state(self.crawler)
            also = state.along_with(along, but=("terms", request.url)) if along and state.shared else ()
            response = await download_once(self.crawler, request, "terms", self.interval, None, also)
        except Exception as exc:  # noqa: BLE001 - any download failure: the terms are unchecked, refused
            if too_large(exc):
                page.error = f"is {size_detail(MAX_SIZE)}"
            else:
                reason = str(exc) if isinstance(exc, IgnoreRequest) else f"{exc.__class__.__name__}: {exc}"
                page.error = f"could not be fetched ({reason})"
            return
        finally:
            page.fetched_at = self.clock.monotonic()
        page.status = response.status
        page.ctype = (response.headers.get("Content-Type") or b"").decode("latin-1") or "unknown type"
        if response.status == 200:
            if problem := body_problem(response, MAX_SIZE):
                page.error = f"cannot be read: {problem}"
            else:
                page.text = normalise_terms(response)

    # -- checks ----------------------------------------------------------------------
    async def _check(self, i: int, state: _TermsState, along: str = "") -> None:
        rule = self.policy.domains[i]
        terms = rule.terms
        assert terms is not None
        stats = self.crawler.stats
        state.checks += 1
        state.checked_on = self.clock.now().isoformat(timespec="seconds")
        stats.inc_value("gdpr/terms/check_count")
        row = state.report
        row.update({"checks": state.checks, "last_checked": state.checked_on})
        for key in ("diff", "note", "current_fingerprint"):
            row.pop(key, None)
        if terms.verdict == "none_published":
            await self._check_none_published(i, state)
            return
        page = await self._page(terms.url, along)
        if page.error:
            self._unreachable(i, state, f"the terms page {terms.url} {page.error}")
            return
        if page.status != 200:
            self._unreachable(i, state, f"the terms page {terms.url} answered HTTP {page.status}")
            return
        text = page.text
        if not text:
            self._unreachable(i, state, f"the terms page {terms.url} has no readable text ({page.ctype}); "
                                        "its changes cannot be detected")
            return
        current = fingerprint(text)
        state.current = current
        row["current_fingerprint"] = current
        if terms.fingerprint is not None and current == terms.fingerprint:
            state.status, state.detail = "ok", ""
            row["status"] = "ok: unchanged since review"
            stats.inc_value("gdpr/terms/unchanged")
            record(self.runtime, "terms_unchanged", terms.url, domain=rule.domain, current=current)
            return
        state.status = "drift"
        stats.inc_value("gdpr/terms/drift")
        if terms.fingerprint is None:
            state.detail = f"no fingerprint of the reviewed terms of {rule.domain} is recorded; current {current}"
            row["status"] = "refused: no fingerprint recorded"
        else:
            state.detail = f"the terms of {rule.domain} changed since the review ({terms.fingerprint} -> {current})"
            row["status"] = "refused: terms changed since review"
        row.update(self._diff(terms.snapshot, terms.fingerprint, text, current))
        logger.warning("Terms drift on %(domain)s: %(detail)s; the domain is refused until the terms are "
                       "reviewed again (scrapy gdpr-terms %(url)s)",
                       {"domain": rule.domain, "detail": state.detail, "url": terms.url},
                       extra={"spider": self.crawler.spider})
        record(self.runtime, "terms_drift", terms.url, domain=rule.domain, reviewed=terms.fingerprint,
               current=current)

    async def _check_none_published(self, i: int, state: _TermsState) -> None:
        """The reviewer found no terms: each watched URL must still answer 404 or 410."""
        rule = self.policy.domains[i]
        terms = rule.terms
        assert terms is not None
        row = state.report
        stats = self.crawler.stats
        reviewed = f"reviewed {terms.reviewed_on.isoformat()} by {terms.reviewed_by}"
        for url in dict.fromkeys([terms.url, *terms.candidates]):
            page = await self._page(url)
            if page.error:
                self._unreachable(i, state, f"the terms address {url} {page.error}, so it cannot be told whether "
                                            "terms were published since the review")
                return
            if page.status in (404, 410):
                continue
            if page.status == 200 and page.text:
                current = fingerprint(page.text)
                state.status, state.current = "drift", current
                state.detail = (f"a page appeared at {url}, where {rule.domain} published no terms when "
                                f"{reviewed}; current {current}")
                row["status"] = "refused: terms appeared since review"
                row["current_fingerprint"] = current
                row["note"] = f"{url} now answers with text; review it (scrapy gdpr-terms {url})"
                row["diff"] = unified_diff("", page.text)
                stats.inc_value("gdpr/terms/drift")
                logger.warning("Terms drift on %(domain)s: %(detail)s; the domain is refused until the terms are "
                               "reviewed again", {"domain": rule.domain, "detail": state.detail},
                               extra={"spider": self.crawler.spider})
                record(self.runtime, "terms_drift", url, domain=rule.domain, reviewed="none published",
                       current=current)
                return
            answer = "with no readable text" if page.status == 200 else f"HTTP {page.status}"
            self._unreachable(i, state, f"the terms address {url} answered {answer}, not 404 or 410, so it cannot "
                                        "be told whether terms were published since the review")
            return
        state.status, state.detail = "ok", ""
        row["status"] = "ok: still no terms published"
        stats.inc_value("gdpr/terms/unchanged")
        record(self.runtime, "terms_unchanged", terms.url, domain=rule.domain, current="none published")

    def _diff(self, snapshot: str | None, reviewed: str | None, text: str, current: str) -> dict[str, str]:
        if not snapshot:
            return {"note": f"the terms text changed; no snapshot of the reviewed text is recorded, so no diff "
                            f"can be shown. Current fingerprint: {current}"}
        path = self.policy.resolve_path(snapshot)
        try:
            old = normalise_text(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            return {"note": f"the snapshot {path} cannot be read ({exc}); current fingerprint: {current}"}
        out = {"diff": unified_diff(old, text)}
        if reviewed is not None and fingerprint(old) != reviewed:
            out["note"] = f"the snapshot {path} does not match the reviewed fingerprint; the diff may be misleading"
        return out

    def _unreachable(self, i: int, state: _TermsState, detail: str) -> None:
        state.status, state.detail = "unreachable", detail
        state.report["status"] = "refused: terms page unreachable"
        state.report["note"] = f"{detail}; retried after {self.policy.terms_check.interval}"
        self.crawler.stats.inc_value("gdpr/terms/unreachable")
        rule = self.policy.domains[i]
        record(self.runtime, "terms_unreachable", rule.terms.url if rule.terms else "", domain=rule.domain,
               detail=detail)
        logger.warning("Terms of %(domain)s unverifiable, domain refused: %(detail)s",
                       {"domain": rule.domain, "detail": detail},
                       extra={"spider": self.crawler.spider})

"""How a crawl ended, for the people and schedulers that run it.

* :class:`CrawlStatus` (an extension the add-on enables) decides at the natural end
  of a crawl whether it was *compliance-blocked* (nothing could be fetched, or every
  item was dropped) or ran without its *face stage*, and closes the spider with a
  ``finish_reason`` saying so. At close it logs, at INFO, the refusals by reason with
  an example URL and how to fix them, and puts the crawl's exit status in the stats
  (``gdpr/exit_status``).
* :func:`exit_status` gives that status for a crawler; ``scrapy crawl`` and
  ``scrapy runspider`` (see :mod:`scrapy_gdpr.commands.crawl`) exit with it.
* :func:`refuse_startup` turns a missing or invalid policy (or an invalid ``GDPR_*``
  setting) into :class:`StartupRefused`, printing the findings once, cleanly, in
  every log mode.

The statuses are documented in ``docs/operations.md``.
"""

from __future__ import annotations

import logging
import sys
import weakref
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import CloseSpider

from scrapy_gdpr.policy import Finding, PolicyError

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Request, Response
    from scrapy.settings import BaseSettings
    from typing_extensions import Self

    from scrapy_gdpr.runtime import GdprRuntime

logger = logging.getLogger(__name__)


class ExitStatus(IntEnum):
    """Exit statuses of ``scrapy crawl`` under scrapy-gdpr (1 and 2 are Scrapy's own)."""

    OK = 0
    #: Scrapy's own: the crawl could not start for a reason that is not scrapy-gdpr's.
    FAILED = 1
    #: Scrapy's own: a usage error on the command line.
    USAGE = 2
    #: The policy is missing or invalid, or a GDPR_* setting is: nothing was crawled.
    STARTUP_REFUSED = 3
    #: The crawl ran but nothing could be fetched, or every item was dropped.
    BLOCKED = 4
    #: Images could not be checked for faces (the face stage could not run), so
    #: they were not stored.
    FACES_UNAVAILABLE = 5


#: ``finish_reason`` (in the stats and Scrapy's log) of each scrapy-gdpr status.
FINISH_REASONS: dict[str, ExitStatus] = {
    "gdpr_blocked": ExitStatus.BLOCKED,
    "gdpr_faces_unavailable": ExitStatus.FACES_UNAVAILABLE,
}

#: How to fix each kind of refusal, shown beside it in the close summary.
FIX_HINTS: dict[str, str] = {
    "domain": "list the domain (and allowed paths) under 'domains' in the policy, if the privacy officer agrees",
    "terms": "review the site's terms and record the review under the domain's 'terms' "
    "(scrapy gdpr-terms URL prints the fingerprint)",
    "terms_drift": "the terms changed since the review: review them again and record the new fingerprint",
    "robots": "robots.txt disallows these URLs for the crawler's product token: do not crawl them",
    "robots_unreachable": "robots.txt could not be fetched (5xx, 429 or unreachable): retry later",
    "optout": "the site reserves this use (opt-out signal): do not crawl it for this purpose",
    "objection": "a person objected or their data was erased: the URL stays excluded",
    "jurisdiction": "the policy excludes this jurisdiction (jurisdictions in the policy)",
    "private_network": "the host resolves to a private address; set allow_private_network on the domain "
    "only for a local test site",
    "retry_after": "the host asked for a longer wait than politeness.retry_after_max: crawl later",
    "faces": "faces were found and the policy drops such images or items (faces.action)",
    "unchecked": "content that cannot be checked for faces is not stored (faces.allow_unchecked_types)",
    "retention": "the item has no provenance or retention stamp: enable the add-on's spider middleware",
    "undecided": "a component could not decide, so the request was refused: see the audit log",
}

_CRAWLER_STATUS: weakref.WeakKeyDictionary[Any, ExitStatus] = weakref.WeakKeyDictionary()


class StartupRefused(PolicyError):
    """scrapy-gdpr refused to start a crawl; its findings were already printed."""


def exit_status(crawler: Crawler) -> ExitStatus | None:
    """The scrapy-gdpr exit status of a finished (or refused) crawl, or None when
    scrapy-gdpr did not run in it."""
    return _CRAWLER_STATUS.get(crawler)


def exit_status_of(crawlers: list[Crawler], scrapy_exitcode: int) -> int:
    """The exit status of a command that ran ``crawlers``: the worst scrapy-gdpr
    status, else Scrapy's own exit code."""
    statuses = [s for s in (exit_status(c) for c in crawlers) if s is not None]
    if any(s == ExitStatus.STARTUP_REFUSED for s in statuses):
        return int(ExitStatus.STARTUP_REFUSED)
    if scrapy_exitcode:
        return scrapy_exitcode
    return int(max(statuses, default=ExitStatus.OK))


# --------------------------------------------------------------------------- start-up


def refuse_startup(crawler: Crawler, exc: Exception) -> StartupRefused:
    """Print why the crawl cannot start (once, without a traceback, in every log
    mode) and return the exception to raise."""
    if isinstance(exc, StartupRefused):
        return exc
    if isinstance(exc, PolicyError):
        findings = list(exc.findings)
    elif isinstance(exc, OSError):
        findings = [Finding("settings", None, "", str(exc), "make the folder writable, or point the setting elsewhere")]
    else:
        findings = [Finding("settings", None, "", str(exc), "correct the setting (see the scrapy-gdpr settings docs)")]
    refused = StartupRefused(findings)
    if _CRAWLER_STATUS.get(crawler) == ExitStatus.STARTUP_REFUSED:
        return refused  # already printed for this crawler
    _CRAWLER_STATUS[crawler] = ExitStatus.STARTUP_REFUSED
    name = getattr(crawler.spidercls, "name", None) or "spider"
    errors = [f for f in findings if f.severity == "error"] or findings
    lines = [f"scrapy-gdpr refused to start the crawl of spider {name!r}: {len(errors)} problem(s)"]
    lines += [f"  {f}" for f in errors]
    lines.append(f"  Every policy field is described by 'scrapy gdpr-lint --explain KEY' and in {docs_reference()}")
    text = "\n".join(lines)
    logger.error("%(text)s", {"text": text})  # into LOG_FILE too, when there is one
    if not _log_reaches_stderr(crawler.settings):
        print(text, file=sys.stderr, flush=True)
    _quiet_asyncio_task_log()
    return refused


def docs_reference() -> str:
    """Where a user of the installed package reads the policy's documentation."""
    from importlib.metadata import PackageNotFoundError, metadata

    from scrapy_gdpr.policy import SCHEMA_PATH

    url = None
    try:
        for entry in metadata("scrapy-gdpr").get_all("Project-URL") or []:
            label, _, value = entry.partition(",")
            if label.strip().lower() == "documentation":
                url = value.strip()
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        pass
    where = f"the policy schema {SCHEMA_PATH}"
    return f"{where} (docs: {url}/policy.html)" if url else where


def _log_reaches_stderr(settings: BaseSettings, at: int = logging.ERROR) -> bool:
    """Whether Scrapy's log handler writes records of level ``at`` to stderr."""
    if not settings.getbool("LOG_ENABLED") or settings.get("LOG_FILE") or settings.getbool("LOG_STDOUT"):
        return False
    level = settings.get("LOG_LEVEL") or "DEBUG"
    numeric = logging.getLevelName(str(level).upper()) if not isinstance(level, int) else level
    if not isinstance(numeric, int) or numeric > at:
        return False
    root = logging.getLogger()
    return any(
        isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stderr for h in root.handlers
    )


class _QuietStartupRefusal(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" record (and its
    traceback) for a crawl scrapy-gdpr refused: the reason was already printed."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, StartupRefused)


_QUIET = _QuietStartupRefusal()


def _quiet_asyncio_task_log() -> None:
    log = logging.getLogger("asyncio")
    if _QUIET not in log.filters:
        log.addFilter(_QUIET)


# --------------------------------------------------------------------------- at the end


class CrawlStatus:
    """Extension: the crawl's finish reason, exit status and INFO close summary."""

    def __init__(self, crawler: Crawler, runtime: GdprRuntime) -> None:
        self.crawler = crawler
        self.runtime = runtime
        #: Responses to the spider's own requests (and media), not the policy's
        #: internal robots.txt, terms and TDMRep fetches.
        self.fetched = 0
        crawler.signals.connect(self.response_received, signal=signals.response_received)
        crawler.signals.connect(self.spider_idle, signal=signals.spider_idle)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        from scrapy_gdpr._component import component_runtime

        return cls(crawler, component_runtime(crawler))

    def response_received(self, response: Response, request: Request) -> None:
        if not request.meta.get("gdpr_internal"):
            self.fetched += 1

    # Items are counted by Scrapy's CoreStats, not by receivers of item_scraped and
    # item_dropped here: each receiver of a per-item signal costs every item an
    # asyncio task in Scrapy's dispatch.
    @property
    def items_scraped(self) -> int:
        stats = self.crawler.stats
        return int(stats.get_value("item_scraped_count", 0) or 0) if stats else 0

    @property
    def items_dropped(self) -> int:
        """Items the policy dropped (``GdprDropItem``, counted by its class name)."""
        stats = self.crawler.stats
        return int(stats.get_value("item_dropped_reasons_count/GdprDropItem", 0) or 0) if stats else 0

    def verdict(self) -> tuple[str, str] | None:
        """``(finish_reason, why)`` when the crawl must not look successful, else None."""
        stats = self.crawler.stats
        stage_errors = int(stats.get_value("gdpr/images/dropped/stage_error", 0) or 0) if stats else 0
        if stage_errors:
            return "gdpr_faces_unavailable", f"the face stage could not check {stage_errors} image(s), not stored"
        refused_requests = self.runtime.refusals.kinds.get("request", 0)
        if refused_requests and not self.fetched:
            return "gdpr_blocked", f"nothing could be fetched: all {refused_requests} request(s) were refused"
        if self.items_dropped and not self.items_scraped:
            return "gdpr_blocked", f"every item was dropped ({self.items_dropped})"
        return None

    def spider_idle(self) -> None:
        verdict = self.verdict()
        if verdict is not None:
            raise CloseSpider(verdict[0])

    def spider_closed(self, reason: str) -> None:
        status = FINISH_REASONS.get(reason, ExitStatus.OK)
        _CRAWLER_STATUS[self.crawler] = status
        if self.crawler.stats is not None:
            self.crawler.stats.set_value("gdpr/exit_status", int(status))
        self.log_summary(reason, status)

    def log_summary(self, reason: str, status: ExitStatus) -> None:
        refusals = self.runtime.refusals
        total = sum(refusals.counts.values())
        verdict = self.verdict() if status != ExitStatus.OK else None
        head = (
            f"GDPR crawl summary: {self.fetched} response(s) fetched, {self.items_scraped} item(s) stored, "
            f"{total} refusal(s); finish reason {reason}, exit status {int(status)} ({status.name.lower()})"
        )
        lines = [head]
        if verdict is not None:
            lines.append(f"  {verdict[1]}")
        for code, count in sorted(refusals.counts.items(), key=lambda kv: (-kv[1], kv[0])):
            sample = (refusals.samples.get(code) or [""])[0]
            detail = refusals.details.get(code, "")
            lines.append(f"  {code}: {count}, e.g. {sample}" + (f" ({detail})" if detail else ""))
            lines.append(f"    fix: {FIX_HINTS.get(code, 'see the audit log for the clause that refused it')}")
        if self.runtime.audit.path is not None:
            lines.append(f"  audit log: {self.runtime.audit.path}")
        level = logging.WARNING if status not in (ExitStatus.OK,) else logging.INFO
        logger.log(level, "%(summary)s", {"summary": "\n".join(lines)}, extra={"spider": self.crawler.spider})

"""Exit statuses of a crawl under scrapy-gdpr, and refusing to start one.

:func:`refuse_startup` turns a missing or invalid policy (or an invalid ``GDPR_*``
setting) into :class:`StartupRefused`, printing the findings once, cleanly, in every
log mode; :func:`exit_status` is the status ``scrapy crawl`` exits with. The
extension that decides the status at the end of a crawl is
:class:`scrapy_gdpr.status.CrawlStatus`.
"""

from __future__ import annotations

import logging
import sys
import weakref
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from scrapy_gdpr.policy import Finding, PolicyError

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

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

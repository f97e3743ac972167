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
  every log mode (both live in :mod:`scrapy_gdpr.exitcodes`, which the runtime
  imports without importing this extension).

The statuses are documented in ``docs/operations.md``.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.exceptions import CloseSpider

from scrapy_gdpr._component import component_runtime
from scrapy_gdpr.exitcodes import (
    _CRAWLER_STATUS,
    FINISH_REASONS,
    FIX_HINTS,
    ExitStatus,
    StartupRefused,
    _log_reaches_stderr,
    docs_reference,
    exit_status,
    exit_status_of,
    refuse_startup,
)
from scrapy_gdpr.internal import RESPONSES_STAT, internal_kind

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Request, Response

    from scrapy_gdpr.runtime import GdprRuntime

logger = logging.getLogger(__name__)


def _received_count_kept(crawler: Crawler) -> bool:
    """Whether the crawl's stats keep ``response_received_count``: Scrapy's CoreStats
    extension is enabled and the stats collector keeps values (not Scrapy's
    ``DummyStatsCollector``)."""
    from scrapy.extensions.corestats import CoreStats
    from scrapy.statscollectors import DummyStatsCollector
    from scrapy.utils.conf import build_component_list
    from scrapy.utils.misc import load_object

    if crawler.stats is None or isinstance(crawler.stats, DummyStatsCollector):
        return False
    for path in build_component_list(crawler.settings.getwithbase("EXTENSIONS")):
        try:
            if load_object(path) is CoreStats:
                return True
        except (ImportError, NameError, ValueError, AttributeError):
            continue
    return False


class CrawlStatus:
    """Extension: the crawl's finish reason, exit status and INFO close summary."""

    def __init__(self, crawler: Crawler, runtime: GdprRuntime) -> None:
        self.crawler = crawler
        self.runtime = runtime
        #: The spider's responses counted by a receiver of our own, only when the stats do
        #: not keep Scrapy's ``response_received_count``: a receiver of a per-response
        #: signal costs every response a dispatch.
        self._received = 0
        self._counting = not _received_count_kept(crawler)
        if self._counting:
            crawler.signals.connect(self.response_received, signal=signals.response_received)
        crawler.signals.connect(self.spider_idle, signal=signals.spider_idle)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler, component_runtime(crawler))

    @property
    def fetched(self) -> int:
        """Responses to the spider's own requests (and media), not the policy's internal
        robots.txt, terms, TDMRep and licence fetches: Scrapy's ``response_received_count``
        less the internal responses (``gdpr/internal/responses``, counted where they are
        downloaded), or this extension's own count when the stats cannot give it."""
        if self._counting:
            return self._received
        stats = self.crawler.stats
        received = int(stats.get_value("response_received_count", 0) or 0)
        return max(received - int(stats.get_value(RESPONSES_STAT, 0) or 0), 0)

    def response_received(self, response: Response, request: Request, **kwargs: Any) -> None:
        # **kwargs: the dispatcher then passes its arguments as they are, rather than
        # filtering them to the names this method declares, on every response
        if internal_kind(request) is None:
            self._received += 1

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
        outage = self.runtime.state_outage
        if status != ExitStatus.OK and outage is not None and outage.reason:
            lines.append(f"  {outage.reason}")
        for code, count in sorted(refusals.counts.items(), key=lambda kv: (-kv[1], kv[0])):
            sample = (refusals.samples.get(code) or [""])[0]
            detail = refusals.details.get(code, "")
            lines.append(f"  {code}: {count}, e.g. {sample}" + (f" ({detail})" if detail else ""))
            lines.append(f"    fix: {FIX_HINTS.get(code, 'see the audit log for the clause that refused it')}")
        if self.runtime.audit.path is not None:
            lines.append(f"  audit log: {self.runtime.audit.path}")
        level = logging.WARNING if status != ExitStatus.OK else logging.INFO
        logger.log(level, "%(summary)s", {"summary": "\n".join(lines)}, extra={"spider": self.crawler.spider})
        if status != ExitStatus.OK and not _log_reaches_stderr(self.crawler.settings, level):
            # --nolog, or a LOG_FILE: a crawl that must not look successful still says why
            print("\n".join(lines), file=sys.stderr, flush=True)


# The exit statuses and the start-up refusal are documented as scrapy_gdpr.status.*.
__all__ = [
    "FINISH_REASONS",
    "FIX_HINTS",
    "CrawlStatus",
    "ExitStatus",
    "StartupRefused",
    "_log_reaches_stderr",
    "docs_reference",
    "exit_status",
    "exit_status_of",
    "refuse_startup",
]

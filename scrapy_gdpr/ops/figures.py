"""The compliance figures of one crawl, for monitors and metrics.

:class:`Figures` is what the Spidermon monitors (:mod:`scrapy_gdpr.ops.monitors`) check
and what the Prometheus metrics (:mod:`scrapy_gdpr.ops.metrics`) export. The figures
come from the crawl's stats (``gdpr/*`` and Scrapy's own), the refusals counted by
:mod:`scrapy_gdpr.audit` and the retention ledger; only two are collected here,
because no stat holds them: the hosts whose robots.txt was asked for, and media
stored by a media pipeline that is not one of scrapy-gdpr's face-stage pipelines.

The thresholds the monitors apply are operational settings (``GDPR_MONITOR_*``,
:func:`thresholds`): they decide when someone is alerted, never what the crawl may
fetch or store, which the policy alone decides.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy import signals

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

    from scrapy_gdpr.runtime import GdprRuntime

logger = logging.getLogger(__name__)


#: ``GDPR_MONITOR_*`` defaults (documented in docs/operations.md).
MONITOR_DEFAULTS: dict[str, Any] = {
    # a record that expired before the crawl started may be held this many seconds more
    "GDPR_MONITOR_RETENTION_GRACE": 0,
    # share of hosts (0..1) whose robots.txt could not be read, above which the monitor fails
    "GDPR_MONITOR_ROBOTS_UNREACHABLE_SHARE": 0.2,
    # {reason code: most refusals allowed}; "*" for any reason not listed; {} = no limit
    "GDPR_MONITOR_MAX_REFUSALS": {},
    # fewer items stored than this fails the crawl's monitor
    "GDPR_MONITOR_MIN_ITEMS": 1,
}


@dataclass(frozen=True)
class Thresholds:
    """The parsed ``GDPR_MONITOR_*`` settings."""

    retention_grace: float
    robots_unreachable_share: float
    max_refusals: dict[str, int]
    min_items: int

    def refusal_limit(self, reason: str) -> int | None:
        if reason in self.max_refusals:
            return self.max_refusals[reason]
        return self.max_refusals.get("*")


def thresholds(settings: BaseSettings) -> Thresholds:
    """The monitors' thresholds; raises ValueError (with the setting's name) when one is invalid."""

    def number(name: str) -> float:
        value = settings.get(name)
        value = MONITOR_DEFAULTS[name] if value is None else value
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, not {value!r}") from None
        if out < 0 or math.isnan(out):
            raise ValueError(f"{name} must not be negative, not {value!r}")
        return out

    share = number("GDPR_MONITOR_ROBOTS_UNREACHABLE_SHARE")
    if share > 1:
        raise ValueError(f"GDPR_MONITOR_ROBOTS_UNREACHABLE_SHARE is a share between 0 and 1, not {share!r}")
    raw = settings.get("GDPR_MONITOR_MAX_REFUSALS")
    try:
        limits = settings.getdict("GDPR_MONITOR_MAX_REFUSALS") if raw is not None else {}
    except ValueError:
        raise ValueError(f"GDPR_MONITOR_MAX_REFUSALS must be a dict of reason code to count, not {raw!r}") from None
    max_refusals: dict[str, int] = {}
    for reason, limit in limits.items():
        try:
            count = int(limit)
        except (TypeError, ValueError):
            raise ValueError(f"GDPR_MONITOR_MAX_REFUSALS[{reason!r}] must be a whole number, not {limit!r}") from None
        if count < 0 or count != float(limit):
            raise ValueError(f"GDPR_MONITOR_MAX_REFUSALS[{reason!r}] must be a whole number >= 0, not {limit!r}")
        max_refusals[str(reason)] = count
    min_items = number("GDPR_MONITOR_MIN_ITEMS")
    if min_items != int(min_items):
        raise ValueError(f"GDPR_MONITOR_MIN_ITEMS must be a whole number, not {min_items!r}")
    return Thresholds(
        retention_grace=number("GDPR_MONITOR_RETENTION_GRACE"),
        robots_unreachable_share=share,
        max_refusals=max_refusals,
        min_items=int(min_items),
    )


@dataclass
class Figures:
    """The compliance figures of one crawl (names as in docs/operations.md)."""

    spider: str
    #: the crawl's exit status (``gdpr/exit_status``; None before the spider closed)
    exit_status: int | None
    #: items stored (Scrapy's ``item_scraped_count``)
    items_stored: int
    #: media files stored by a media pipeline without scrapy-gdpr's face stage
    images_stored_unchecked: int
    #: refusals by reason code (``gdpr/blocked/<reason>``)
    refusals: dict[str, int]
    #: hosts whose robots.txt the crawl asked for
    robots_hosts: int
    #: hosts whose robots.txt could not be read (``robots`` report section / ``gdpr/robots/unreachable``)
    robots_unreachable_hosts: int
    #: terms pages found changed since their review, or not checkable (``gdpr/terms/drift``)
    terms_drift: int
    #: ledger records whose expiry has passed, still held when the figures were taken
    retention_expired_records: int
    #: how long before the crawl started the oldest record still held had expired (0 when none)
    retention_overdue_seconds: float
    #: that record (kind, location or URL, expiry), for the alert's text
    retention_oldest: dict[str, str] | None = None
    #: the ledger could not be read (the retention figures are then unknown)
    retention_error: str = ""
    unchecked_samples: list[str] = field(default_factory=list)

    @property
    def robots_unreachable_share(self) -> float:
        if not self.robots_hosts:
            return 0.0
        return min(1.0, self.robots_unreachable_hosts / self.robots_hosts)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["robots_unreachable_share"] = self.robots_unreachable_share
        return out


class FigureCollector:
    """Extension (enabled by the add-on): what no stat holds, for :func:`figures`.

    Counts the hosts whose robots.txt was asked for, and media files stored by a
    media pipeline that does not run the face stage (a project's own
    ``ImagesPipeline`` subclass, say). Writes the Prometheus metrics at the end of
    the crawl when ``GDPR_METRICS_TEXTFILE`` or ``GDPR_METRICS_PUSHGATEWAY`` is set.
    """

    def __init__(self, crawler: Crawler, runtime: GdprRuntime) -> None:
        from scrapy_gdpr.ops.metrics import MetricsTarget

        self.crawler = crawler
        self.runtime = runtime
        try:
            self.thresholds = thresholds(crawler.settings)
            self.metrics = MetricsTarget.from_settings(crawler.settings)
        except ValueError as exc:
            from scrapy_gdpr.exitcodes import refuse_startup

            raise refuse_startup(crawler, exc) from None
        self.unchecked = 0
        self.unchecked_samples: list[str] = []
        #: (result field, pipeline name) of media pipelines without the face stage
        self.unchecked_fields: list[tuple[str, str]] = []
        runtime.figures = self
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.engine_stopped, signal=signals.engine_stopped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        from scrapy_gdpr._component import component_runtime

        return cls(crawler, component_runtime(crawler))

    def spider_opened(self) -> None:
        from scrapy.pipelines.media import MediaPipeline

        from scrapy_gdpr.media.facestage import _FaceStageMixin

        scraper = getattr(self.crawler.engine, "scraper", None)
        for pipeline in getattr(getattr(scraper, "itemproc", None), "middlewares", ()):
            if isinstance(pipeline, MediaPipeline) and not isinstance(pipeline, _FaceStageMixin):
                name = f"{type(pipeline).__module__}.{type(pipeline).__qualname__}"
                for attr in ("images_result_field", "files_result_field"):
                    result_field = getattr(pipeline, attr, None)
                    if result_field:
                        self.unchecked_fields.append((str(result_field), name))
                        break
                logger.warning(
                    "GDPR: item pipeline %(name)s stores media without the face stage; "
                    "every file it stores is counted as stored unchecked",
                    {"name": name}, extra={"spider": self.crawler.spider},
                )
        if self.unchecked_fields:
            # only then: a receiver of item_scraped costs every item an asyncio task
            self.crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)


    def item_scraped(self, item: Any) -> None:
        if not self.unchecked_fields:
            return
        adapter = ItemAdapter(item)
        for result_field, _ in self.unchecked_fields:
            results = adapter.get(result_field) if result_field in adapter else None
            for entry in results if isinstance(results, list) else ():
                if isinstance(entry, dict) and entry.get("status") == "downloaded":
                    self.unchecked += 1
                    if len(self.unchecked_samples) < 10:
                        self.unchecked_samples.append(str(entry.get("url", "")))

    async def engine_stopped(self) -> None:
        if self.metrics is None:
            return
        from scrapy.utils.defer import maybe_deferred_to_future
        from twisted.internet.threads import deferToThread

        try:
            figs = await maybe_deferred_to_future(deferToThread(figures, self.crawler))
            await maybe_deferred_to_future(deferToThread(self.metrics.write, figs))
        except Exception as exc:  # noqa: BLE001 - metrics never stop the crawl; the failure is logged
            logger.error("GDPR metrics could not be written to %(target)s: %(exc)s",
                         {"target": self.metrics.describe(self.runtime.spider_name), "exc": exc})
            self.crawler.stats.inc_value("gdpr/metrics/errors")
        else:
            logger.info("GDPR metrics written to %(target)s", {"target": self.metrics.describe(self.runtime.spider_name)})


def _count(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def figures(crawler: Crawler, *, now: datetime | None = None) -> Figures:
    """The compliance figures of ``crawler``'s crawl, as they stand (read at spider
    close or later). Reads the ledger (one short query); blocking."""
    from scrapy_gdpr.runtime import find_runtime

    stats = crawler.stats.get_stats() if crawler.stats is not None else {}
    rt = find_runtime(crawler)
    collector = rt.figures if rt is not None else None
    refusals = {
        key[len("gdpr/blocked/"):]: _count(value)
        for key, value in sorted(stats.items())
        if key.startswith("gdpr/blocked/") and _count(value)
    }
    robots_section = (rt.report_sections.get("robots") if rt is not None else None) or {}
    unreachable = robots_section.get("unreachable") or {}
    unreachable_hosts = len(unreachable) or _count(stats.get("gdpr/robots/unreachable"))
    # the robots gate's record: no receiver of a per-request signal is needed for it
    robots = rt.robots if rt is not None else None
    robots_hosts = len(getattr(robots, "asked", ()))
    status = stats.get("gdpr/exit_status")
    spider = rt.spider_name if rt is not None else str(getattr(crawler.spider, "name", "spider"))
    out = Figures(
        spider=spider,
        exit_status=None if status is None else _count(status),
        items_stored=_count(stats.get("item_scraped_count")),
        images_stored_unchecked=collector.unchecked if collector is not None else 0,
        unchecked_samples=list(collector.unchecked_samples) if collector is not None else [],
        refusals=refusals,
        robots_hosts=max(robots_hosts, unreachable_hosts),
        robots_unreachable_hosts=unreachable_hosts,
        terms_drift=_count(stats.get("gdpr/terms/drift")),
        retention_expired_records=0,
        retention_overdue_seconds=0.0,
    )
    if rt is not None and rt.config.ledger:
        _retention(out, rt.config.ledger, started=stats.get("start_time"), now=now or datetime.now(UTC))
    return out


def _retention(out: Figures, url: str, *, started: Any, now: datetime) -> None:
    """The ledger's expired records still held, and how overdue the oldest is."""
    from scrapy_gdpr.retention.ledger import LedgerError, LedgerMissing, open_ledger

    try:
        ledger = open_ledger(url, create=False, readonly=True)
    except LedgerMissing:
        return  # nothing was ever stored
    except (LedgerError, OSError, ValueError, sqlite3.Error) as exc:
        out.retention_error = f"{type(exc).__name__}: {exc}"
        return
    try:
        oldest = ledger.expired(now, limit=1)
        out.retention_expired_records = ledger.count_expired(now) if oldest else 0
    except Exception as exc:  # noqa: BLE001 - an unreadable ledger is a figure of its own
        out.retention_error = f"{type(exc).__name__}: {exc}"
        return
    finally:
        ledger.close()
    if not oldest:
        return
    record = oldest[0]
    start = started if isinstance(started, datetime) else now
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    out.retention_overdue_seconds = max(0.0, (start - record.expires_at).total_seconds())
    out.retention_oldest = {
        "kind": record.kind,
        "where": record.location or record.url,
        "expires_at": record.expires_at.isoformat(timespec="seconds"),
    }

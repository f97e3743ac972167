"""Spidermon monitors that fail on a compliance problem (optional extra ``spidermon``).

Enable them in ``settings.py`` next to the add-on::

    SPIDERMON_ENABLED = True
    EXTENSIONS = {"spidermon.contrib.scrapy.extensions.Spidermon": 500}
    SPIDERMON_SPIDER_CLOSE_MONITORS = ("scrapy_gdpr.ops.monitors.GdprMonitorSuite",)

Each monitor reads the figures of :mod:`scrapy_gdpr.ops.figures` (the crawl's stats, its
refusals and the retention ledger); their thresholds are the ``GDPR_MONITOR_*``
settings (docs/operations.md). Add Spidermon's own actions (e-mail, Slack, ...) to a
suite of your own that lists these monitors, as Spidermon's docs show.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from spidermon import Monitor, MonitorSuite, monitors
from spidermon.contrib.monitors.mixins.spider import SpiderMonitorMixin

from scrapy_gdpr.ops.figures import Figures, Thresholds, figures, thresholds

if TYPE_CHECKING:
    from collections.abc import Callable

#: unittest (which Spidermon runs the monitors with) leaves the frames of a module
#: with this global out of a failure's traceback: the log shows only the message.
__unittest = True

_T = TypeVar("_T")
#: Spidermon's ``monitors.name`` decorator, typed.
name: Callable[[str], Callable[[_T], _T]] = monitors.name


class _GdprMonitor(Monitor, SpiderMonitorMixin):  # type: ignore[misc]
    longMessage = False

    @property
    def figures(self) -> Figures:
        return figures(self.data.crawler)

    @property
    def thresholds(self) -> Thresholds:
        return thresholds(self.data.crawler.settings)


@name("GDPR: images stored unchecked")
class UncheckedImagesMonitor(_GdprMonitor):
    """Fails when any media file was stored without the face stage."""

    @name("no image was stored without a face check")
    def test_no_unchecked_images(self) -> None:
        figs = self.figures
        assert figs.images_stored_unchecked == 0, f"{figs.images_stored_unchecked} media file(s) were stored by a pipeline without the face stage (e.g. {', '.join(figs.unchecked_samples[:3])}): replace it by scrapy_gdpr.media.pipelines.GdprImagesPipeline or GdprFilesPipeline, and delete the files it stored (listed in the items' result field)"


@name("GDPR: retention")
class RetentionMonitor(_GdprMonitor):
    """Fails when the ledger still holds a record that expired before the crawl started."""

    @name("no expired record is held past GDPR_MONITOR_RETENTION_GRACE")
    def test_no_retention_breach(self) -> None:
        figs = self.figures
        if figs.retention_error:
            self.fail(f"the ledger could not be read: {figs.retention_error}")
        grace = self.thresholds.retention_grace
        oldest = figs.retention_oldest or {}
        assert figs.retention_overdue_seconds <= grace, f"{figs.retention_expired_records} expired record(s) still held; the oldest ({oldest.get('kind')} {oldest.get('where')}) expired {oldest.get('expires_at')}, {figs.retention_overdue_seconds:.0f} s before the crawl started (grace {grace:.0f} s): run scrapy gdpr-purge and read its output"


@name("GDPR: robots.txt unreachable")
class RobotsUnreachableMonitor(_GdprMonitor):
    """Fails when robots.txt could not be read for too large a share of hosts."""

    @name("robots.txt readable for enough hosts")
    def test_robots_reachable(self) -> None:
        figs = self.figures
        limit = self.thresholds.robots_unreachable_share
        assert figs.robots_unreachable_share <= limit, f"robots.txt could not be read for {figs.robots_unreachable_hosts} of {figs.robots_hosts} host(s) ({figs.robots_unreachable_share:.0%}, above GDPR_MONITOR_ROBOTS_UNREACHABLE_SHARE {limit:.0%}); their pages were not crawled: see the report's robots.txt section"


@name("GDPR: terms drift")
class TermsDriftMonitor(_GdprMonitor):
    """Fails when a site's terms changed since they were reviewed."""

    @name("every site's terms unchanged since review")
    def test_no_terms_drift(self) -> None:
        figs = self.figures
        assert figs.terms_drift == 0, f"{figs.terms_drift} terms page(s) changed since their review (or could not be checked); the sites were not crawled: review the terms again and record the new fingerprint (scrapy gdpr-terms URL)"


@name("GDPR: refusals")
class RefusalsMonitor(_GdprMonitor):
    """Fails when refusals of a reason exceed GDPR_MONITOR_MAX_REFUSALS."""

    @name("refusals within GDPR_MONITOR_MAX_REFUSALS")
    def test_refusals_within_limits(self) -> None:
        figs = self.figures
        limits = self.thresholds
        over = []
        for reason, count in figs.refusals.items():
            limit = limits.refusal_limit(reason)
            if limit is not None and count > limit:
                over.append(f"{reason}: {count} (at most {limit})")
        assert not over, "refusals above GDPR_MONITOR_MAX_REFUSALS: " + "; ".join(over) + ": the compliance report lists each reason with its fix"


@name("GDPR: items stored")
class ItemsStoredMonitor(_GdprMonitor):
    """Fails when fewer items than GDPR_MONITOR_MIN_ITEMS (default 1) were stored."""

    @name("at least GDPR_MONITOR_MIN_ITEMS items stored")
    def test_items_stored(self) -> None:
        figs = self.figures
        minimum = self.thresholds.min_items
        assert figs.items_stored >= minimum, f"{figs.items_stored} item(s) stored, fewer than GDPR_MONITOR_MIN_ITEMS {minimum} (exit status {figs.exit_status}): read the close summary and the compliance report"


#: Every scrapy-gdpr monitor, for a suite of your own.
MONITORS: list[type[Any]] = [
    UncheckedImagesMonitor,
    RetentionMonitor,
    RobotsUnreachableMonitor,
    TermsDriftMonitor,
    RefusalsMonitor,
    ItemsStoredMonitor,
]


class GdprMonitorSuite(MonitorSuite):  # type: ignore[misc]
    """The scrapy-gdpr monitors, for ``SPIDERMON_SPIDER_CLOSE_MONITORS``."""

    monitors = MONITORS

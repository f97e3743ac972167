"""The crawl's compliance figures as Prometheus metrics (optional extra ``prometheus``).

At the end of every crawl (after the spider closed and its feeds were recorded),
the figures of :mod:`scrapy_gdpr.ops.figures` are written to a node-exporter textfile
(``GDPR_METRICS_TEXTFILE``) and/or pushed to a Pushgateway
(``GDPR_METRICS_PUSHGATEWAY``). Every metric is a gauge labelled with the spider;
the names are listed in docs/operations.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from prometheus_client import CollectorRegistry
    from scrapy.settings import BaseSettings

    from scrapy_gdpr.ops.figures import Figures

PREFIX = "scrapy_gdpr_"

#: metric name (without PREFIX) -> help text; all gauges with the label ``spider``.
METRICS: dict[str, str] = {
    "last_run_timestamp_seconds": "When the crawl's metrics were written (Unix time)",
    "exit_status": "The crawl's exit status: 0 ok, 4 compliance-blocked, 5 face stage unavailable",
    "items_stored": "Items stored by the crawl",
    "images_stored_unchecked": "Media files stored without the face stage (must be 0)",
    "refusals": "Requests, items and images refused by the policy, by reason code",
    "robots_hosts": "Hosts whose robots.txt the crawl asked for",
    "robots_unreachable_hosts": "Hosts whose robots.txt could not be read",
    "robots_unreachable_ratio": "Share of hosts whose robots.txt could not be read (0..1)",
    "terms_drift": "Terms pages changed since their review (or not checkable)",
    "retention_expired_records": "Ledger records past their expiry still held at the end of the crawl",
    "retention_overdue_seconds": "How long before the crawl started the oldest record still held had expired",
    "retention_ledger_readable": "1 when the ledger could be read for the retention figures, else 0",
}


@dataclass(frozen=True)
class MetricsTarget:
    """Where the metrics go: a textfile, a Pushgateway, or both."""

    textfile: str | None
    pushgateway: str | None
    job: str

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> MetricsTarget | None:
        textfile = settings.get("GDPR_METRICS_TEXTFILE") or None
        gateway = settings.get("GDPR_METRICS_PUSHGATEWAY") or None
        if textfile is None and gateway is None:
            return None
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise ValueError(
                "GDPR_METRICS_TEXTFILE / GDPR_METRICS_PUSHGATEWAY need prometheus-client: "
                "pip install 'scrapy-gdpr[prometheus]'"
            ) from None
        if textfile is not None and not str(textfile).endswith(".prom"):
            raise ValueError(
                f"GDPR_METRICS_TEXTFILE must name a file ending in .prom (node-exporter reads only those), "
                f"not {textfile!r}"
            )
        job = str(settings.get("GDPR_METRICS_JOB") or "scrapy_gdpr")
        return cls(str(textfile) if textfile else None, str(gateway) if gateway else None, job)

    def describe(self, spider: str = "%(name)s") -> str:
        textfile = str(self.textfile_path(spider)) if self.textfile else None
        return " and ".join(t for t in (textfile, self.pushgateway) if t)

    def textfile_path(self, spider: str) -> Path:
        from scrapy_gdpr.config import from_project_root

        assert self.textfile is not None
        return from_project_root(self.textfile.replace("%(name)s", spider))

    def write(self, figures: Figures) -> None:
        from prometheus_client import push_to_gateway, write_to_textfile

        registry = registry_for(figures)
        if self.textfile is not None:
            path = self.textfile_path(figures.spider)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(path), registry)  # written to a temporary file, then renamed
        if self.pushgateway is not None:
            push_to_gateway(self.pushgateway, job=self.job, registry=registry,
                            grouping_key={"spider": figures.spider}, timeout=10)


def registry_for(figures: Figures, *, now: float | None = None) -> CollectorRegistry:
    """A registry holding the figures as gauges."""
    import time

    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()

    def gauge(name: str, value: float, **labels: str) -> None:
        metric = gauges.get(name)
        if metric is None:
            metric = gauges[name] = Gauge(PREFIX + name, METRICS[name], ["spider", *labels], registry=registry)
        metric.labels(spider=figures.spider, **labels).set(value)

    gauges: dict[str, Any] = {}
    gauge("last_run_timestamp_seconds", time.time() if now is None else now)
    if figures.exit_status is not None:
        gauge("exit_status", figures.exit_status)
    gauge("items_stored", figures.items_stored)
    gauge("images_stored_unchecked", figures.images_stored_unchecked)
    for reason, count in figures.refusals.items():
        gauge("refusals", count, reason=reason)
    if not figures.refusals:
        # declared with no sample, so that a dashboard's query has its HELP and TYPE
        gauges["refusals"] = Gauge(PREFIX + "refusals", METRICS["refusals"], ["spider", "reason"], registry=registry)
    gauge("robots_hosts", figures.robots_hosts)
    gauge("robots_unreachable_hosts", figures.robots_unreachable_hosts)
    gauge("robots_unreachable_ratio", figures.robots_unreachable_share)
    gauge("terms_drift", figures.terms_drift)
    gauge("retention_ledger_readable", 0 if figures.retention_error else 1)
    if not figures.retention_error:
        gauge("retention_expired_records", figures.retention_expired_records)
        gauge("retention_overdue_seconds", figures.retention_overdue_seconds)
    return registry

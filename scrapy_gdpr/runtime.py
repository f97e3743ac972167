"""Per-crawler state shared by every scrapy-gdpr component.

The first component built for a crawler loads the spider's policy (failing the
crawl at start-up when it is missing or invalid), opens the audit log and puts the
policy fingerprint in the stats. Every other component gets the same object.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scrapy import signals

from scrapy_gdpr.audit import AuditLog, Refusals
from scrapy_gdpr.clock import SYSTEM_CLOCK, Clock
from scrapy_gdpr.config import GdprConfig
from scrapy_gdpr.policy import Policy, PolicyError, load_policy
from scrapy_gdpr.status import refuse_startup

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

_RUNTIMES: weakref.WeakKeyDictionary[Any, GdprRuntime] = weakref.WeakKeyDictionary()


@dataclass
class GdprRuntime:
    """What the components of one crawl share."""

    crawler: Crawler
    config: GdprConfig
    policy: Policy
    audit: AuditLog
    #: The spider's name as known when the runtime was made (see ``spider_name``).
    initial_spider_name: str
    refusals: Refusals = field(default_factory=Refusals)
    #: Sections other components add to the per-crawl compliance report
    #: (``{"terms_drift": {...}, "robots": {...}}``); values must be JSON-serialisable.
    report_sections: dict[str, Any] = field(default_factory=dict)
    #: Shared objects that components register by name (e.g. the objection list).
    services: dict[str, Any] = field(default_factory=dict)
    #: The time the components read (TTLs, back-offs, Retry-After pauses); read when
    #: each component is built.
    clock: Clock = SYSTEM_CLOCK

    @property
    def spider_name(self) -> str:
        """The spider's name (the runtime can be made before the spider exists, e.g. by
        ``scrapy.utils.test.get_crawler``, which applies settings first)."""
        spider = self.crawler.spider
        return getattr(spider, "name", None) or self.initial_spider_name

    def close(self) -> None:
        self.audit.close()


def find_runtime(crawler: Crawler) -> GdprRuntime | None:
    """The crawler's runtime if one was made, without making one."""
    return _RUNTIMES.get(crawler)


def get_runtime(crawler: Crawler) -> GdprRuntime:
    """Return the crawler's runtime, creating it (and loading the policy) on first use.

    Raises :class:`~scrapy_gdpr.policy.PolicyError` when the policy is missing or
    invalid, which stops the crawl at start-up.
    """
    rt = _RUNTIMES.get(crawler)
    if rt is not None:
        return rt
    # the spider class stands in while there is no spider yet (a crawler from
    # get_crawler() applies its settings first): %(name)s is the same either way
    spider = crawler.spider if crawler.spider is not None else crawler.spidercls
    try:
        config = GdprConfig.from_settings(crawler.settings)
        policy = load_policy(config.policy_path(spider))
    except (PolicyError, ValueError) as exc:
        # printed once, without a traceback, whatever the log settings
        raise refuse_startup(crawler, exc) from None
    spider_name = getattr(spider, "name", None) or "spider"
    try:
        audit = AuditLog(_expand_path(config, spider), defaults={"policy_fingerprint": policy.fingerprint})
    except OSError as exc:
        # no record of refusals could be kept: refuse to start rather than crawl unaudited
        raise refuse_startup(crawler, OSError(f"GDPR_AUDIT_LOG cannot be opened: {exc}")) from None
    rt = GdprRuntime(crawler=crawler, config=config, policy=policy, audit=audit, initial_spider_name=spider_name)
    _RUNTIMES[crawler] = rt
    logger.info(
        "GDPR policy %(path)s loaded: %(id)s, fingerprint %(fp)s",
        {"path": policy.path, "id": policy.policy_id, "fp": policy.fingerprint},
    )
    for warning in policy.warnings:
        logger.warning("GDPR policy: %(w)s", {"w": warning})
    crawler.signals.connect(_on_spider_opened(rt), signal=signals.spider_opened, weak=False)
    crawler.signals.connect(_on_engine_stopped(rt), signal=signals.engine_stopped, weak=False)
    return rt


def _expand_path(config: GdprConfig, spider: Any) -> Any:
    return config.audit_log_path(spider)


def _on_spider_opened(rt: GdprRuntime) -> Any:
    def handler() -> None:
        stats = rt.crawler.stats
        stats.set_value("gdpr/policy/id", rt.policy.policy_id)
        stats.set_value("gdpr/policy/fingerprint", rt.policy.fingerprint)
        stats.set_value("gdpr/policy/path", str(rt.policy.path))
        rt.audit.write(
            {
                "spider": rt.spider_name,
                "url": "",
                "decision": "crawl_started",
                "policy_id": rt.policy.policy_id,
                "policy_fingerprint": rt.policy.fingerprint,
            }
        )

    return handler


def _on_engine_stopped(rt: GdprRuntime) -> Any:
    def handler() -> None:
        rt.audit.write(
            {"spider": rt.spider_name, "url": "", "decision": "crawl_finished", "policy_fingerprint": rt.policy.fingerprint}
        )
        rt.close()

    return handler

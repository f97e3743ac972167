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
from scrapy_gdpr.egg import egg_of
from scrapy_gdpr.exitcodes import refuse_startup
from scrapy_gdpr.policy import Policy, PolicyError, load_policy

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from scrapy_gdpr.gate.objections import ObjectionList
    from scrapy_gdpr.gate.politeness import SlotFloors
    from scrapy_gdpr.gate.robots import RobotsGateMiddleware
    from scrapy_gdpr.gate.scope import PolicyGate
    from scrapy_gdpr.items.provenance import ProvenanceRegistry
    from scrapy_gdpr.media.facepool import FacePool
    from scrapy_gdpr.ops.figures import FigureCollector
    from scrapy_gdpr.retention.recorder import RetentionExtension
    from scrapy_gdpr.shared.state import GateState, Outage, PendingHosts

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
    # The shared objects of the crawl, each made by its own module on first use.
    #: The policy gate (:func:`scrapy_gdpr.gate.scope.policy_gate`).
    gate: PolicyGate | None = None
    #: The robots.txt middleware, which other components ask ``allows(url)``.
    robots: RobotsGateMiddleware | None = None
    #: Per-slot delay floors (:func:`scrapy_gdpr.gate.politeness.slot_floors`).
    slot_floors: SlotFloors | None = None
    #: The policy's objection list, and the extra one of ``GDPR_OBJECTIONS_EXTRA``.
    objections: ObjectionList | None = None
    extra_objections: ObjectionList | None = None
    #: Where each item came from (:func:`scrapy_gdpr.items.provenance.registry`).
    provenance: ProvenanceRegistry | None = None
    #: The worker pool of the face stage, while a media pipeline holds it.
    face_pool: FacePool | None = None
    #: The retention extension (records feeds the crawl opens).
    retention: RetentionExtension | None = None
    #: The figures collector of the monitors and metrics.
    figures: FigureCollector | None = None
    #: The gate's state: in-process, or shared with other machines (GDPR_STATE_URL).
    state: GateState | None = None
    #: Requests the scheduler handed out and politeness has not booked yet, per host.
    pending_hosts: PendingHosts | None = None
    #: The shared queue's scheduler (:class:`scrapy_gdpr.shared.queue.Scheduler`), while open.
    shared_queue: Any = None
    #: An outage of the shared state, logged once.
    state_outage: Outage | None = None
    #: The time the components read (TTLs, back-offs, Retry-After pauses); read when
    #: each component is built.
    clock: Clock = SYSTEM_CLOCK
    #: Whether :func:`scrapy_gdpr._component.chain_hooks` is set to run at spider open.
    hooks_chained: bool = False
    #: (policy, its fingerprint) of the last ``policy_fingerprint`` read: every audit line
    #: carries it, and reading it from the policy model costs more than a comparison.
    _fingerprint_of: tuple[Policy, str] | None = field(default=None, repr=False, compare=False)

    @property
    def spider_name(self) -> str:
        """The spider's name (the runtime can be made before the spider exists, e.g. by
        ``scrapy.utils.test.get_crawler``, which applies settings first)."""
        spider = self.crawler.spider
        return getattr(spider, "name", None) or self.initial_spider_name

    @property
    def policy_fingerprint(self) -> str:
        policy = self.policy
        cached = self._fingerprint_of
        if cached is None or cached[0] is not policy:
            cached = self._fingerprint_of = (policy, policy.fingerprint)
        return cached[1]

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
    archive = egg_of(policy.path)
    logger.info(
        "GDPR policy %(path)s loaded: %(id)s, fingerprint %(fp)s",
        {"path": f"{policy.path} (copied from the project's egg {archive})" if archive else policy.path,
         "id": policy.policy_id, "fp": policy.fingerprint},
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

"""The one-line activation: ``ADDONS = {"scrapy_gdpr.Addon": 0}``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.exceptions import NotConfigured
from scrapy.pipelines.files import FilesPipeline
from scrapy.pipelines.images import ImagesPipeline
from scrapy.utils.misc import load_object

from scrapy_gdpr.config import DEFAULTS, GdprConfig
from scrapy_gdpr.consoles import CONSOLE_SETTINGS, remote_consoles, telnet_console_enabled
from scrapy_gdpr.documents.report import ComplianceReport
from scrapy_gdpr.exitcodes import refuse_startup
from scrapy_gdpr.gate.middleware import PolicyGateMiddleware
from scrapy_gdpr.gate.optout import NoFollowMiddleware, OptOutMiddleware
from scrapy_gdpr.gate.paywall import PaymentRequiredMiddleware
from scrapy_gdpr.gate.playwright import update_settings as playwright_settings
from scrapy_gdpr.gate.politeness import PolitenessMiddleware
from scrapy_gdpr.gate.robots import RobotsGateMiddleware
from scrapy_gdpr.gate.rsl import LicenceMiddleware
from scrapy_gdpr.gate.terms import TermsMiddleware
from scrapy_gdpr.items.gate import ItemGatePipeline
from scrapy_gdpr.items.provenance import ProvenanceMiddleware
from scrapy_gdpr.media.itembytes import ImageBytesPipeline
from scrapy_gdpr.media.pipelines import GdprFilesPipeline, GdprImagesPipeline
from scrapy_gdpr.ops.figures import FigureCollector
from scrapy_gdpr.retention.feeds import configure_feeds
from scrapy_gdpr.retention.logpurge import update_settings as logpurge_settings
from scrapy_gdpr.retention.recorder import RetentionExtension
from scrapy_gdpr.retention.stamp import RetentionPipeline
from scrapy_gdpr.retention.stores import check_settings as check_store_settings
from scrapy_gdpr.runtime import get_runtime
from scrapy_gdpr.shared.wiring import update_settings as state_settings
from scrapy_gdpr.status import CrawlStatus

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

#: Downloader middlewares and their priorities, relative to Scrapy's own
#: (Offsite 50, RobotsTxt 100, UserAgent 500, Retry 550, HttpCompression 590,
#: Redirect 600, HttpCache 900).
DOWNLOADER_MIDDLEWARES: dict[type, int] = {
    # Before everything: an unlisted, excluded, objected-to or private-network host
    # is never contacted, not even for its robots.txt.
    PolicyGateMiddleware: 40,
    # Terms reviewed and unchanged, before robots.txt is fetched.
    TermsMiddleware: 60,
    # Takes the place of Scrapy's RobotsTxtMiddleware (100).
    RobotsGateMiddleware: 100,
    # process_response runs after decompression (590) and redirects (600).
    OptOutMiddleware: 120,
    # RSL licences: robots.txt's before the page is fetched; on the way back, before
    # the opt-out middleware (120) folds the purposes they refuse into its decision.
    LicenceMiddleware: 125,
    # Sees 429/503 and Retry-After before RetryMiddleware (550) retries them.
    PolitenessMiddleware: 560,
    # Refuses HTTP 402 (pay-per-crawl) before RetryMiddleware (550) could retry it.
    PaymentRequiredMiddleware: 570,
}

SPIDER_MIDDLEWARES: dict[type, int] = {
    # Closest to the spider: stamps every item with where it came from.
    ProvenanceMiddleware: 950,
    # Drops requests yielded from a page whose robots rules say nofollow.
    NoFollowMiddleware: 940,
}

ITEM_PIPELINES: dict[type, int] = {
    # Objections and opt-out reservations, before any image is downloaded.
    ItemGatePipeline: 10,
    GdprImagesPipeline: 20,
    GdprFilesPipeline: 30,
    ImageBytesPipeline: 40,
    # Last: retention stamp on everything that is exported.
    RetentionPipeline: 900,
}

EXTENSIONS: dict[type, int] = {
    # finish reason, exit status and the INFO close summary
    CrawlStatus: 0,
    ComplianceReport: 0,
    RetentionExtension: 0,
    # figures for the monitors; Prometheus metrics when GDPR_METRICS_* is set
    FigureCollector: 0,
}

#: Media pipelines the add-on enables only when their store is set.
STORE_SETTINGS: dict[type, str] = {
    GdprImagesPipeline: "IMAGES_STORE",
    GdprFilesPipeline: "FILES_STORE",
}

#: Stock components the add-on replaces, and by what.
REPLACED: dict[str, list[tuple[type, type]]] = {
    "DOWNLOADER_MIDDLEWARES": [(RobotsTxtMiddleware, RobotsGateMiddleware)],
    "ITEM_PIPELINES": [
        (ImagesPipeline, GdprImagesPipeline),
        (FilesPipeline, GdprFilesPipeline),
    ],
}


def component_path(cls: type) -> str:
    """The import path of a component class, as Scrapy settings name it."""
    return f"{cls.__module__}.{cls.__qualname__}"


class Addon:
    """Wires every scrapy-gdpr component into the crawl, in the right places.

    Only ``GDPR_ENABLED = False`` disables it. Anything else that goes wrong (a
    missing or invalid policy, say) raises, and the crawl stops at start-up: an
    add-on that raised ``NotConfigured`` would be skipped and the crawl would run
    ungated.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        if not crawler.settings.getbool("GDPR_ENABLED", DEFAULTS["GDPR_ENABLED"]):
            logger.warning("scrapy-gdpr is disabled by GDPR_ENABLED = False: this crawl is NOT gated")
            raise NotConfigured("GDPR_ENABLED is False")
        return cls(crawler)

    def update_settings(self, settings: BaseSettings) -> None:
        try:
            GdprConfig.from_settings(settings)  # invalid GDPR_* settings fail here
        except ValueError as exc:
            raise refuse_startup(self.crawler, exc) from None
        # Load the policy now: an invalid or missing policy stops the crawl before
        # anything is built, and policy-derived defaults can be set below.
        policy = get_runtime(self.crawler).policy

        for name, replacements in REPLACED.items():
            current = settings.getdict(name)
            for old_cls, new_cls in replacements:
                for key in list(current):
                    if current[key] is not None and load_object(key) is old_cls:
                        # a user-listed stock component would store unchecked data
                        current.pop(key)
                        current[new_cls] = {
                            "DOWNLOADER_MIDDLEWARES": DOWNLOADER_MIDDLEWARES,
                            "ITEM_PIPELINES": ITEM_PIPELINES,
                        }[name][new_cls]
            settings.set(name, current, settings.getpriority(name) or 0)
        _disable(settings, "DOWNLOADER_MIDDLEWARES", RobotsTxtMiddleware)

        for name, components in (
            ("DOWNLOADER_MIDDLEWARES", DOWNLOADER_MIDDLEWARES),
            ("SPIDER_MIDDLEWARES", SPIDER_MIDDLEWARES),
            ("ITEM_PIPELINES", ITEM_PIPELINES),
            ("EXTENSIONS", EXTENSIONS),
        ):
            for cls, priority in components.items():
                store = STORE_SETTINGS.get(cls)
                if store is not None and not settings.get(store):
                    # a media pipeline without its store is not needed (Scrapy would
                    # disable it with a warning on every crawl): there is nothing to store
                    continue
                settings.setdefault_in_component_priority_dict(name, cls, priority)

        # The stock robots.txt middleware is replaced; this keeps code that reads
        # ROBOTSTXT_OBEY (and people reading the settings) truthful.
        settings.set("ROBOTSTXT_OBEY", True, "addon")
        settings.set("ROBOTSTXT_USER_AGENT", policy.crawler.product_token, "addon")
        settings.set("USER_AGENT", policy.crawler.user_agent, "addon")
        # Scrapy's telnet console and remote-control server both run Python code sent
        # to them inside the crawler (gate included): off unless the project, a spider
        # or the command line switches them on explicitly. "addon" priority sits above
        # Scrapy's defaults and below those, so an explicit True still wins.
        for name in CONSOLE_SETTINGS:
            settings.set(name, False, "addon")
        # Polite defaults from the policy; per-domain limits go to download slots.
        settings.set("DOWNLOAD_DELAY", policy.politeness.default_delay, "addon")
        settings.set("CONCURRENT_REQUESTS_PER_DOMAIN", policy.politeness.default_concurrency, "addon")
        slots: dict[str, Any] = dict(settings.getdict("DOWNLOAD_SLOTS"))
        for rule in policy.domains:
            if rule.rate_limit is not None:
                slots.setdefault(
                    rule.domain, {"delay": rule.rate_limit.delay, "concurrency": rule.rate_limit.concurrency}
                )
        settings.set("DOWNLOAD_SLOTS", slots, "addon")
        for hook in ADDON_HOOKS:
            try:
                hook(settings, self.crawler)
            except ValueError as exc:  # a setting the promises cannot hold with (a store, a cache)
                raise refuse_startup(self.crawler, exc) from None


#: Functions ``(settings, crawler) -> None`` that add area-specific settings
#: (feed filters, the Playwright abort predicate); the policy is
#: ``get_runtime(crawler).policy``.
ADDON_HOOKS: list[Callable[[BaseSettings, Crawler], None]] = [
    # the browser sub-resource predicate and host rules
    playwright_settings,
    # retention filter, stamp-aware CSV/XML exporters and locking storage on every feed
    configure_feeds,
    # refuse feeds and media stores purge cannot reach; purge item stores at spider open
    check_store_settings,
    # refuse an HTTP cache without retention.caches; expire logs and caches at spider open
    logpurge_settings,
    # GDPR_STATE_URL: the shared state and scrapy-redis's queue with JSON entries
    state_settings,
]


def _disable(settings: BaseSettings, name: str, cls: type) -> None:
    current = settings.getdict(name)
    for key in list(current):
        if load_object(key) is cls:
            current.pop(key)
    current[cls] = None
    settings.set(name, current, settings.getpriority(name) or 0)


# remote_consoles and telnet_console_enabled are documented here (docs/settings.md).
__all__ = ["ADDON_HOOKS", "CONSOLE_SETTINGS", "Addon", "component_path", "remote_consoles", "telnet_console_enabled"]

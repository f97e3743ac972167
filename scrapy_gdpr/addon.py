"""The one-line activation: ``ADDONS = {"scrapy_gdpr.Addon": 0}``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.exceptions import NotConfigured
from scrapy.pipelines.files import FilesPipeline
from scrapy.pipelines.images import ImagesPipeline
from scrapy.settings import SETTINGS_PRIORITIES
from scrapy.utils.misc import load_object

from scrapy_gdpr.config import DEFAULTS, GdprConfig
from scrapy_gdpr.runtime import get_runtime
from scrapy_gdpr.status import refuse_startup

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings
    from typing_extensions import Self

logger = logging.getLogger(__name__)

#: Downloader middlewares and their priorities, relative to Scrapy's own
#: (Offsite 50, RobotsTxt 100, UserAgent 500, Retry 550, HttpCompression 590,
#: Redirect 600, HttpCache 900).
DOWNLOADER_MIDDLEWARES: dict[str, int] = {
    # Before everything: an unlisted, excluded, objected-to or private-network host
    # is never contacted, not even for its robots.txt.
    "scrapy_gdpr.gate.PolicyGateMiddleware": 40,
    # Terms reviewed and unchanged, before robots.txt is fetched.
    "scrapy_gdpr.terms.TermsMiddleware": 60,
    # Takes the place of Scrapy's RobotsTxtMiddleware (100).
    "scrapy_gdpr.robots.RobotsGateMiddleware": 100,
    # process_response runs after decompression (590) and redirects (600).
    "scrapy_gdpr.optout.OptOutMiddleware": 120,
    # Sees 429/503 and Retry-After before RetryMiddleware (550) retries them.
    "scrapy_gdpr.politeness.PolitenessMiddleware": 560,
    # Refuses HTTP 402 (pay-per-crawl) before RetryMiddleware (550) could retry it.
    "scrapy_gdpr.paywall.PaymentRequiredMiddleware": 570,
}

SPIDER_MIDDLEWARES: dict[str, int] = {
    # Closest to the spider: stamps every item with where it came from.
    "scrapy_gdpr.provenance.ProvenanceMiddleware": 950,
    # Drops requests yielded from a page whose robots rules say nofollow.
    "scrapy_gdpr.optout.NoFollowMiddleware": 940,
}

ITEM_PIPELINES: dict[str, int] = {
    # Objections and opt-out reservations, before any image is downloaded.
    "scrapy_gdpr.gate.ItemGatePipeline": 10,
    "scrapy_gdpr.images.GdprImagesPipeline": 20,
    "scrapy_gdpr.images.GdprFilesPipeline": 30,
    "scrapy_gdpr.images.ImageBytesPipeline": 40,
    # Last: retention stamp on everything that is exported.
    "scrapy_gdpr.retention.RetentionPipeline": 900,
}

EXTENSIONS: dict[str, int] = {
    # finish reason, exit status and the INFO close summary
    "scrapy_gdpr.status.CrawlStatus": 0,
    "scrapy_gdpr.report.ComplianceReport": 0,
    "scrapy_gdpr.retention.RetentionExtension": 0,
    # figures for the monitors; Prometheus metrics when GDPR_METRICS_* is set
    "scrapy_gdpr.figures.FigureCollector": 0,
}

#: Media pipelines the add-on enables only when their store is set.
STORE_SETTINGS = {
    "scrapy_gdpr.images.GdprImagesPipeline": "IMAGES_STORE",
    "scrapy_gdpr.images.GdprFilesPipeline": "FILES_STORE",
}

#: Stock components the add-on replaces, and by what.
REPLACED = {
    "DOWNLOADER_MIDDLEWARES": [(RobotsTxtMiddleware, "scrapy_gdpr.robots.RobotsGateMiddleware")],
    "ITEM_PIPELINES": [
        (ImagesPipeline, "scrapy_gdpr.images.GdprImagesPipeline"),
        (FilesPipeline, "scrapy_gdpr.images.GdprFilesPipeline"),
    ],
}


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
            for old_cls, new_path in replacements:
                for key in list(current):
                    if current[key] is not None and load_object(key) is old_cls:
                        # a user-listed stock component would store unchecked data
                        current.pop(key)
                        current[new_path] = {
                            "DOWNLOADER_MIDDLEWARES": DOWNLOADER_MIDDLEWARES,
                            "ITEM_PIPELINES": ITEM_PIPELINES,
                        }[name][new_path]
            settings.set(name, current, settings.getpriority(name) or 0)
        _disable(settings, "DOWNLOADER_MIDDLEWARES", RobotsTxtMiddleware)

        for name, components in (
            ("DOWNLOADER_MIDDLEWARES", DOWNLOADER_MIDDLEWARES),
            ("SPIDER_MIDDLEWARES", SPIDER_MIDDLEWARES),
            ("ITEM_PIPELINES", ITEM_PIPELINES),
            ("EXTENSIONS", EXTENSIONS),
        ):
            for path, priority in components.items():
                store = STORE_SETTINGS.get(path)
                if store is not None and not settings.get(store):
                    # a media pipeline without its store is not needed (Scrapy would
                    # disable it with a warning on every crawl): there is nothing to store
                    continue
                settings.setdefault_in_component_priority_dict(name, load_object(path), priority)

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
                load_object(hook)(settings, self.crawler)
            except ValueError as exc:  # a setting the promises cannot hold with (a store, a cache)
                raise refuse_startup(self.crawler, exc) from None


#: Functions ``(settings, crawler) -> None`` that add area-specific settings
#: (feed filters, the Playwright abort predicate); the policy is
#: ``get_runtime(crawler).policy``.
ADDON_HOOKS: list[str] = [
    # the browser sub-resource predicate and host rules
    "scrapy_gdpr.playwright.update_settings",
    # retention filter, stamp-aware CSV/XML exporters and locking storage on every feed
    "scrapy_gdpr.retention.configure_feeds",
    # refuse feeds and media stores purge cannot reach; purge item stores at spider open
    "scrapy_gdpr.stores.check_settings",
    # refuse an HTTP cache without retention.caches; expire logs and caches at spider open
    "scrapy_gdpr.logpurge.update_settings",
    # GDPR_STATE_URL: the shared state and scrapy-redis's queue with JSON entries
    "scrapy_gdpr.state.update_settings",
]


#: Scrapy's consoles that execute Python code sent to the crawler.
CONSOLE_SETTINGS = ("TELNETCONSOLE_ENABLED", "REMOTE_CONTROL_ENABLED")
#: The extension each console setting switches.
CONSOLE_EXTENSIONS = {
    "TELNETCONSOLE_ENABLED": "scrapy.extensions.telnet.TelnetConsole",
    "REMOTE_CONTROL_ENABLED": "scrapy.extensions.remote_control.RemoteControl",
}


def remote_consoles(settings: BaseSettings) -> dict[str, bool]:
    """Which of Scrapy's code-execution consoles a crawl under the add-on runs.

    ``{"TELNETCONSOLE_ENABLED": False, "REMOTE_CONTROL_ENABLED": False}`` unless a
    project, spider or command-line setting switched one on explicitly (see
    :func:`console_enabled`).
    """
    return {name: console_enabled(settings, name) for name in CONSOLE_SETTINGS}


def console_enabled(settings: BaseSettings, name: str = "TELNETCONSOLE_ENABLED") -> bool:
    """Whether Scrapy's console switched by the setting ``name`` runs in a crawl under the add-on.

    The rule the add-on applies: the console is off unless the project's own settings
    switch it on explicitly, that is, a true value set at a priority above the
    add-on's (``settings.py``, a spider's ``custom_settings``, ``-s``); Scrapy's
    default (on) does not count. A console whose extension is set to ``None`` in
    ``EXTENSIONS`` is off. The answer is the same for a project's settings before the
    add-on ran (``scrapy gdpr-report``) and for a crawler's settings after it.
    """
    priority = settings.getpriority(name)
    if priority is None or priority <= SETTINGS_PRIORITIES["addon"] or not settings.getbool(name):
        return False
    extension = CONSOLE_EXTENSIONS.get(name)
    return extension is None or not _extension_disabled(settings, extension)


def _extension_disabled(settings: BaseSettings, path: str) -> bool:
    """Whether ``EXTENSIONS`` switches the extension at ``path`` off (``None``)."""
    for key, order in settings.getwithbase("EXTENSIONS").items():
        if order is not None:
            continue
        if key == path:
            return True
        try:
            obj = load_object(key) if isinstance(key, str) else key
        except Exception:  # noqa: BLE001 - an unloadable entry is Scrapy's error to report, not ours
            continue
        if _qualname(obj) == path:
            return True
    return False


def _qualname(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def telnet_console_enabled(settings: BaseSettings) -> bool:
    """Whether a crawl under the add-on listens with Scrapy's telnet console."""
    return remote_consoles(settings)["TELNETCONSOLE_ENABLED"]


def _disable(settings: BaseSettings, name: str, cls: type) -> None:
    current = settings.getdict(name)
    for key in list(current):
        if load_object(key) is cls:
            current.pop(key)
    current[cls] = None
    settings.set(name, current, settings.getpriority(name) or 0)

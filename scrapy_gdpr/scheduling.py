"""What a scheduler may pass to a crawl.

A Scrapyd job's ``setting=NAME=VALUE`` parameters (``schedule.json``) reach the
crawl as ``-s NAME=VALUE``, at Scrapy's ``cmdline`` priority, above the project's
own settings. Under Scrapyd, such a setting may tune the crawl (log level, limits,
timeouts, the metrics target) but not change what protects it: a protected setting
(below) given there stops the crawl at start-up (exit status 3) with a message
naming it. The project's ``settings.py`` (deployed in the egg) is where they are set.

Run by hand (``scrapy crawl -s ...``, ``scrapy runspider -s ...``) nothing changes:
the person at the keyboard is the project's own operator.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from scrapy.settings import SETTINGS_PRIORITIES

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy.settings import BaseSettings

#: Settings a Scrapyd job may not set: they switch protection off, choose the policy,
#: objection list, ledger or audit log, choose where items, media and cached pages
#: are kept (out of reach of the purge), or change the components and exporters that
#: gate, check, stamp and count (an export that bypassed stamping).
PROTECTED = frozenset({
    "GDPR_ENABLED", "GDPR_POLICY", "GDPR_OBJECTIONS", "GDPR_PURGE_ON_OPEN", "GDPR_LEDGER", "GDPR_AUDIT_LOG",
    "GDPR_ITEM_STORES", "GDPR_POSTGRES_STORE", "GDPR_POSTGRES_STORE_TABLE", "GDPR_IMAGE_BYTES_FIELDS",
    "ADDONS", "ROBOTSTXT_OBEY", "TELNETCONSOLE_ENABLED", "REMOTE_CONTROL_ENABLED",
    "ITEM_PIPELINES", "ITEM_PIPELINES_BASE", "DOWNLOADER_MIDDLEWARES", "DOWNLOADER_MIDDLEWARES_BASE",
    "SPIDER_MIDDLEWARES", "SPIDER_MIDDLEWARES_BASE", "EXTENSIONS", "EXTENSIONS_BASE",
    "FEED_STORAGES", "FEED_STORAGES_BASE", "FEED_EXPORTERS", "FEED_EXPORTERS_BASE",
    "DOWNLOAD_HANDLERS", "DOWNLOAD_HANDLERS_BASE", "DOWNLOADER", "ITEM_PROCESSOR", "STATS_CLASS",
    "IMAGES_STORE", "FILES_STORE", "HTTPCACHE_DIR", "HTTPCACHE_STORAGE",
})


def under_scrapyd() -> bool:
    """Whether this process is a Scrapyd job (Scrapyd runs ``python -m scrapyd.runner crawl``)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", None) == "scrapyd.runner"


def scheduler_overrides(settings: BaseSettings) -> list[str]:
    """The protected settings set at the command line's priority, sorted."""
    return sorted(name for name in PROTECTED if settings.getpriority(name) == SETTINGS_PRIORITIES["cmdline"])


def refusal(names: list[str]) -> ValueError:
    return ValueError(
        f"a Scrapyd job may not set {', '.join(names)} (schedule.json setting=...): these settings decide what "
        f"protects the crawl; set them in the project's settings.py and deploy it"
    )


def scheduler_refusal(
    settings: BaseSettings, uses_gdpr: Callable[[BaseSettings], bool] | None = None
) -> str | None:
    """Why ``scrapy crawl`` must not start this Scrapyd job, or None.

    Only for a project that uses scrapy-gdpr (``uses_gdpr`` of its own settings, read
    without the command line's: the add-on enabled or scrapy-gdpr configured; the crawl
    command passes that rule): the protected settings the job set, by name."""
    if not under_scrapyd():
        return None
    names = scheduler_overrides(settings)
    if not names:
        return None
    from scrapy.utils.project import get_project_settings

    if uses_gdpr is not None and not uses_gdpr(get_project_settings()):
        return None
    return f"scrapy-gdpr refused to start the crawl: {refusal(names)}"


def report_refusal(settings: BaseSettings, message: str) -> None:
    """Print the refusal on stderr (Scrapyd logs it) and into the job's LOG_FILE."""
    print(message, file=sys.stderr, flush=True)
    log_file = settings.get("LOG_FILE")
    if log_file:
        try:
            with Path(log_file).open("a", encoding=settings.get("LOG_ENCODING") or "utf-8") as out:
                out.write(f"[scrapy_gdpr.scheduling] ERROR: {message}\n")
        except OSError:
            pass  # stderr has it

"""The add-on hook of the shared state (``GDPR_STATE_URL``).

Kept apart from :mod:`.queue`, whose scheduler subclasses scrapy-redis's: scrapy-redis
is an optional extra (``scrapy-gdpr[redis]``), imported only when the setting is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy_gdpr.shared.state import SETTING, open_state, state_url

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings


def update_settings(settings: BaseSettings, crawler: Crawler) -> None:
    """Add-on hook: with ``GDPR_STATE_URL`` set, check the URL and use scrapy-redis's
    queue and duplicate filter with the JSON serialiser (never pickle)."""
    url = state_url(settings)
    if not url:
        if _uses_scrapy_redis(settings):
            raise ValueError(
                f"SCHEDULER = {settings.get('SCHEDULER')!r} shares the queue between workers, but {SETTING} is "
                "unset, so each worker would keep its own politeness, robots.txt and objections (a site would "
                f"get N times the rate it asked for). Fix: set {SETTING} to the Redis the workers share "
                "(e.g. the value of REDIS_URL); the add-on then wires scrapy-redis itself"
            )
        return
    open_state(url)  # a malformed URL fails here, at start-up
    try:  # the queue subclasses scrapy-redis's scheduler: imported only when GDPR_STATE_URL is set
        from scrapy_gdpr.shared.queue import configure
    except ImportError as exc:
        raise ValueError(
            f"{SETTING} needs scrapy-redis ({exc}). Fix: pip install 'scrapy-gdpr[redis]', or unset {SETTING} "
            "for a crawl on one machine"
        ) from None
    configure(settings, crawler, url)


def _uses_scrapy_redis(settings: BaseSettings) -> bool:
    scheduler = settings.get("SCHEDULER")
    name = scheduler if isinstance(scheduler, str) else f"{getattr(scheduler, '__module__', '')}."
    return str(name).startswith("scrapy_redis.")

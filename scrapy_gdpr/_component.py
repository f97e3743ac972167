"""What every scrapy-gdpr component does in ``from_crawler``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.exceptions import NotConfigured

from scrapy_gdpr.config import DEFAULTS
from scrapy_gdpr.runtime import GdprRuntime, get_runtime

if TYPE_CHECKING:
    from scrapy.crawler import Crawler


def component_runtime(crawler: Crawler) -> GdprRuntime:
    """The crawler's runtime; ``NotConfigured`` only when GDPR_ENABLED is False.

    Any other problem (a missing or invalid policy) raises, which stops the crawl.
    """
    if not crawler.settings.getbool("GDPR_ENABLED", DEFAULTS["GDPR_ENABLED"]):
        raise NotConfigured("GDPR_ENABLED is False")
    return get_runtime(crawler)

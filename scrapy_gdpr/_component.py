"""What every scrapy-gdpr component does in ``from_crawler``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy.exceptions import NotConfigured
from scrapy.spidermiddlewares.base import BaseSpiderMiddleware

from scrapy_gdpr.config import DEFAULTS
from scrapy_gdpr.runtime import GdprRuntime, get_runtime

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from scrapy.crawler import Crawler
    from scrapy.http import Response


def component_runtime(crawler: Crawler) -> GdprRuntime:
    """The crawler's runtime; ``NotConfigured`` only when GDPR_ENABLED is False.

    Any other problem (a missing or invalid policy) raises, which stops the crawl.
    """
    if not crawler.settings.getbool("GDPR_ENABLED", DEFAULTS["GDPR_ENABLED"]):
        raise NotConfigured("GDPR_ENABLED is False")
    return get_runtime(crawler)


class SpiderOutputMiddleware(BaseSpiderMiddleware):
    """:class:`~scrapy.spidermiddlewares.base.BaseSpiderMiddleware`, with its
    ``process_spider_output_async`` as one asynchronous generator per response.

    Scrapy's own wraps it in a second generator that warns of a ``spider`` argument,
    which Scrapy passes only to methods that declare one: this one declares none.
    """

    async def process_spider_output_async(  # type: ignore[override]
        self, response: Response | None, result: AsyncIterator[Any]
    ) -> AsyncIterator[Any]:
        async for o in result:
            if (o := self._get_processed(o, response)) is not None:
                yield o

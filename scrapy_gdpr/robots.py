"""RFC 9309 robots.txt gate."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy_gdpr._component import component_runtime

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from typing_extensions import Self


class RobotsGateMiddleware:
    """Placeholder: robots.txt, crawl-delay, request-rate."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

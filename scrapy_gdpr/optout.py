"""Opt-out signals: X-Robots-Tag, meta robots, TDMRep, Content-Usage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy_gdpr._component import component_runtime

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from typing_extensions import Self


class OptOutMiddleware:
    """Placeholder: opt-out signals."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

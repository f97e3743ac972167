"""Request gate: domain allowlist, jurisdictions, objections, private networks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy_gdpr._component import component_runtime

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from typing_extensions import Self


class PolicyGateMiddleware:
    """Placeholder: domain allowlist, jurisdictions, objections, SSRF guard."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)


class ItemGatePipeline:
    """Placeholder: objections and opt-out reservations on items."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

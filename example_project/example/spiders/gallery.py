"""Crawls the example gallery and yields one item per page, with its images."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import scrapy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from scrapy.http import Response


class GallerySpider(scrapy.Spider):
    name = "gallery"

    def __init__(self, base: str = "http://127.0.0.1:8760", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base = base.rstrip("/")

    async def start(self) -> AsyncIterator[scrapy.Request]:
        yield scrapy.Request(self.base + "/")

    def parse(self, response: Response) -> Iterator[Any]:
        if not hasattr(response, "css"):
            return
        yield {
            "url": response.url,
            "title": response.css("title::text").get(default="").strip(),
            "text": " ".join(t.strip() for t in response.css("body p::text").getall() if t.strip()),
            "image_urls": [response.urljoin(src) for src in response.css("img::attr(src)").getall()],
        }
        yield from response.follow_all(css="a::attr(href)", callback=self.parse)

"""Browser screenshots (scrapy-playwright, real headless Chromium) pass the face stage.

The spider yields the screenshot bytes in an item field; ImageBytesPipeline
replaces them with the redacted, metadata-free image before anything stores them.
"""

from __future__ import annotations

import pytest
from scrapy import Request, Spider
from scrapy.utils.test import get_crawler

from tests.gallery import BYTES, HOST, Outcome, assert_no_metadata, detect, settings
from tests.utils import chromium_path, coroutine_test, playwright_settings, require_service

pytestmark = pytest.mark.requires_chromium


class ScreenshotSpider(Spider):
    name = "screenshots"

    def __init__(self, url: str = "", **kw):
        super().__init__(**kw)
        self.url = url
        self.raw: list[bytes] = []  # for the test only: what the browser produced

    async def start(self):
        from scrapy_playwright.page import PageMethod

        yield Request(
            self.url,
            meta={
                "playwright": True,
                "playwright_page_methods": [PageMethod("screenshot", type="png", full_page=True)],
            },
        )

    def parse(self, response):
        screenshot = response.meta["playwright_page_methods"][0].result
        self.raw.append(screenshot)
        yield {"url": response.url, "screenshot": screenshot}


@coroutine_test
async def test_screenshot_is_redacted_before_it_is_kept(tmp_path, mockserver):
    path = chromium_path()
    if path is None:
        require_service("chromium", "no Chromium binary found (set GDPR_TEST_CHROMIUM)")
    crawler = get_crawler(
        ScreenshotSpider,
        settings(
            tmp_path,
            pipelines=(BYTES,),
            **playwright_settings(path),
        ),
    )
    outcome = Outcome(crawler)
    await crawler.crawl_async(url=mockserver.url("/portrait.html", host=HOST))

    (raw,) = crawler.spider.raw
    assert raw.startswith(b"\x89PNG")
    assert detect(raw), "the browser's screenshot shows the face"
    (item,) = outcome.scraped
    kept = item["screenshot"]
    assert kept != raw
    assert detect(kept) == []
    assert_no_metadata(kept)
    (record,) = outcome.records(item)
    assert record["field"] == "screenshot" and record["faces"] >= 1 and record["stored"] is True
    assert crawler.stats.get_value("gdpr/images/redacted") == 1
    assert crawler.stats.get_value("playwright/page_count") == 1

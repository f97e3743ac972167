from __future__ import annotations

from pathlib import Path

import pytest
from scrapy import Spider
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.utils.test import get_crawler

from scrapy_gdpr.addon import Addon
from scrapy_gdpr.gate import PolicyGateMiddleware
from scrapy_gdpr.policy import PolicyError
from scrapy_gdpr.robots import RobotsGateMiddleware
from tests.utils import DATA, coroutine_test

VALID = str(DATA / "policies" / "valid.yaml")


class PageSpider(Spider):
    name = "pages"

    def __init__(self, url: str = "", **kw):
        super().__init__(**kw)
        self.url = url
        self.seen: list[str] = []

    async def start(self):
        from scrapy import Request

        yield Request(self.url)

    def parse(self, response):
        self.seen.append(response.url)


def _settings(tmp_path: Path, **extra) -> dict:
    return {
        "ADDONS": {Addon: 0},
        "GDPR_POLICY": VALID,
        "GDPR_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "GDPR_REPORT_DIR": str(tmp_path / "reports"),
        "GDPR_LEDGER": f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        **extra,
    }


@coroutine_test
async def test_addon_wires_components_in_order(tmp_path, mockserver):
    crawler = get_crawler(PageSpider, _settings(tmp_path))
    await crawler.crawl_async(url=mockserver.url("/index.html"))
    mws = [type(m) for m in crawler.engine.downloader.middleware.middlewares]
    assert RobotsTxtMiddleware not in mws
    assert mws.index(PolicyGateMiddleware) < mws.index(RobotsGateMiddleware)
    assert crawler.settings.get("USER_AGENT").startswith("GdprTestBot/1.0")
    assert crawler.settings.getbool("REMOTE_CONTROL_ENABLED") is False
    assert crawler.stats.get_value("gdpr/policy/fingerprint").startswith("sha256:")


@coroutine_test
async def test_invalid_policy_stops_crawl(tmp_path, mockserver):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(VALID).read_text().replace("action: blur", "action: keep"))
    with pytest.raises(PolicyError, match=r"bad.yaml:\d+: error: faces.action"):
        await get_crawler(PageSpider, _settings(tmp_path, GDPR_POLICY=str(bad))).crawl_async(
            url=mockserver.url("/index.html"))


@coroutine_test
async def test_disabled_means_no_components(tmp_path, mockserver):
    crawler = get_crawler(PageSpider, _settings(tmp_path, GDPR_ENABLED=False, GDPR_POLICY=str(tmp_path / "missing.yaml")))
    await crawler.crawl_async(url=mockserver.url("/index.html"))
    mws = [type(m) for m in crawler.engine.downloader.middleware.middlewares]
    assert PolicyGateMiddleware not in mws
    assert crawler.spider.seen == [mockserver.url("/index.html")]

"""A crawl through the whole add-on: every gate, the item gate and the report together."""

from __future__ import annotations

import json

from scrapy import Request, Spider
from scrapy.utils.test import get_crawler

from tests.utils import addon_settings, coroutine_test, write_policy


class LinkSpider(Spider):
    name = "links"

    def __init__(self, urls=(), **kw):
        super().__init__(**kw)
        self.urls = list(urls)
        self.fetched: list[str] = []

    async def start(self):
        for url in self.urls:
            yield Request(url)

    def parse(self, response):
        self.fetched.append(response.url)
        yield {"url": response.url}


@coroutine_test
async def test_whole_gate_allows_listed_and_refuses_the_rest(tmp_path, logged_mockserver):
    server = logged_mockserver
    policy = write_policy(tmp_path / "policy.yaml", server, ["127.0.0.1"])
    urls = [
        server.url("/page.html"),  # allowed
        server.url("/private/x.html"),  # robots.txt disallows
        server.url("/page.html", host="unlisted.test"),  # not in the policy
        "http://shop.example.cn/",  # excluded jurisdiction
    ]
    crawler = get_crawler(LinkSpider, addon_settings(tmp_path, policy))
    await crawler.crawl_async(urls=urls)
    assert crawler.spider.fetched == [server.url("/page.html")]
    stats = crawler.stats.get_stats()
    assert stats["gdpr/blocked/robots"] == 1
    assert stats["gdpr/blocked/domain"] == 1
    assert stats["gdpr/blocked/jurisdiction"] == 1
    hosts = {host for _, host, _ in server.requests()}
    assert hosts == {"127.0.0.1"}  # nothing sent to the refused hosts
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    refused = {a["reason"] for a in audit if a.get("decision") == "refused"}
    assert {"robots", "domain", "jurisdiction"} <= refused
    report = json.loads(next((tmp_path / "reports").glob("*.json")).read_text())
    assert report["refusals"]["domain"]["samples"] == [server.url("/page.html", host="unlisted.test")]

"""PolitenessMiddleware: Retry-After, per-domain rate limits, the User-Agent check."""

from __future__ import annotations

import itertools
import json
import logging
import time
from datetime import UTC, datetime
from email.utils import formatdate
from urllib.parse import quote

import pytest
from scrapy import Request
from scrapy.utils.asyncio import sleep
from scrapy.utils.test import get_crawler

from scrapy_gdpr.politeness import UserAgentError, parse_retry_after
from tests.test_robots import UrlsSpider, crawl, gate_settings, runtime, write_policy
from tests.utils import coroutine_test


def test_parse_retry_after():
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(b"120", now) == 120
    assert parse_retry_after(" 0 ", now) == 0
    assert parse_retry_after("Mon, 23 Nov 2026 12:00:30 GMT", now) == 30
    assert parse_retry_after("Mon, 23 Nov 2026 11:00:00 GMT", now) == 0  # in the past
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    "value", ["\u00b2", "\u0663", "1\u00b2", "\uff11\uff12", "9" * 5000, "1" * 13, "12.5", "+5", "x" * 100_000]
)
def test_parse_retry_after_ignores_what_is_not_a_wait(value):
    # '²'.isdigit() is True and int('²') raises; 5000 digits exceed int()'s limit
    assert parse_retry_after(value) is None
    assert parse_retry_after(value.encode("utf-8", "surrogatepass")) is None


def test_parse_retry_after_digits():
    assert parse_retry_after("0" * 40 + "120") == 120  # leading zeros are still 120
    assert parse_retry_after("9" * 12) == 999_999_999_999.0  # above any ceiling: gives the host up


def fetch_times(server, host: str, prefix: str) -> list[float]:
    return [t for t, h, p in server.requests() if h == host and p.startswith(prefix)]


@coroutine_test
async def test_retry_after_seconds_pauses_host_not_others(tmp_path, logged_mockserver):
    server = logged_mockserver
    page = server.url("/page.html", host="polite-429.test")
    index = server.url("/index.html", host="polite-429.test")
    others = [server.url(f"/page.html?{i}", host="polite-other.test") for i in range(5)]

    class Spider(UrlsSpider):
        async def start(self):
            yield Request(page, dont_filter=True, errback=self.failed)
            await sleep(0.5)  # the 429 has arrived by now
            yield Request(index, dont_filter=True, errback=self.failed)
            for url in others:
                yield Request(url, dont_filter=True, errback=self.failed)

    crawler = get_crawler(Spider, gate_settings(tmp_path, RETRY_ENABLED=True))
    await crawler.crawl_async()
    assert sorted(crawler.spider.seen) == sorted([page, index, *others])
    first, retried = fetch_times(server, "polite-429.test", "/page.html")
    assert retried - first >= 1.9  # the retried request honoured Retry-After: 2
    (index_time,) = fetch_times(server, "polite-429.test", "/index.html")
    assert index_time - first >= 1.9  # so did a later request to the same host
    other_times = fetch_times(server, "polite-other.test", "/page.html")
    assert len(other_times) == 5
    assert max(other_times) < first + 1.8  # the other host was not held (it would be >= first + 2)
    assert crawler.stats.get_value("gdpr/politeness/retry_after") == 1
    assert crawler.stats.get_value("gdpr/politeness/waited") >= 2


@coroutine_test
async def test_retry_after_http_date(tmp_path, logged_mockserver):
    server = logged_mockserver
    when = formatdate(time.time() + 3, usegmt=True)
    url = server.url(f"/_/respond?status=503&body=busy&h=Retry-After:{quote(when)}", host="polite-date.test")
    crawler = await crawl(tmp_path, [url], RETRY_ENABLED=True, RETRY_TIMES=1)
    times = fetch_times(server, "polite-date.test", "/_/respond")
    assert len(times) == 2
    assert times[1] - times[0] >= 1.5
    assert crawler.stats.get_value("gdpr/politeness/retry_after") >= 1


@coroutine_test
async def test_retry_after_above_ceiling_gives_host_up(tmp_path, logged_mockserver):
    server = logged_mockserver
    page = server.url("/page.html", host="polite-giveup.test")
    index = server.url("/index.html", host="polite-giveup.test")
    other = server.url("/page.html", host="polite-other.test")

    class Spider(UrlsSpider):
        async def start(self):
            yield Request(page, dont_filter=True, errback=self.failed)
            await sleep(0.5)
            yield Request(index, dont_filter=True, errback=self.failed)
            yield Request(other, dont_filter=True, errback=self.failed)

    crawler = get_crawler(Spider, gate_settings(tmp_path, RETRY_ENABLED=True))
    await crawler.crawl_async()
    assert crawler.spider.refused == {page: "retry_after", index: "retry_after"}
    assert crawler.spider.seen == [other]
    # not retried, and nothing else sent to that host after the answer
    assert [p for _, h, p in server.requests() if h == "polite-giveup.test"] == ["/robots.txt", "/page.html"]
    report = runtime(crawler).report_sections["politeness"]
    assert report["given_up_count"] == 1
    assert report["given_up"]["polite-giveup.test"]["retry_after"] == "7200"
    json.dumps(report)
    assert crawler.stats.get_value("gdpr/blocked/retry_after") == 2


@pytest.mark.parametrize("value", ["\u00b2", "9" * 5000])
@coroutine_test
async def test_unparseable_retry_after_is_ignored_in_a_crawl(tmp_path, logged_mockserver, caplog, value):
    server = logged_mockserver
    busy = server.url(f"/_/respond?status=503&body=busy&h=Retry-After:{quote(value)}", host="polite-date.test")
    page = server.url("/page.html", host="polite-date.test")

    class Spider(UrlsSpider):
        async def start(self):
            yield Request(busy, dont_filter=True, errback=self.failed)
            await sleep(0.5)
            yield Request(page, dont_filter=True, errback=self.failed)

    caplog.set_level(logging.INFO, logger="scrapy_gdpr.gate.politeness")
    crawler = get_crawler(Spider, gate_settings(tmp_path, HTTPERROR_ALLOW_ALL=True, URLLENGTH_LIMIT=0))
    await crawler.crawl_async()
    assert crawler.spider.errors == {}
    assert crawler.spider.seen == [busy, page]  # the 503 reaches the spider, nothing paused
    assert "Ignoring a malformed Retry-After" in caplog.text
    assert "Traceback" not in caplog.text and "ValueError" not in caplog.text
    assert crawler.stats.get_value("gdpr/politeness/retry_after") is None
    assert crawler.stats.get_value("log_count/ERROR") is None


@pytest.mark.parametrize("how", ["stop", "closespider"])
@coroutine_test
async def test_graceful_shutdown_does_not_wait_for_retry_after(tmp_path, logged_mockserver, how):
    """A Retry-After just under the ceiling (1 h) must not hold a graceful stop."""
    from scrapy.utils.defer import deferred_from_coro

    from tests.test_robots import audit_lines

    server = logged_mockserver
    busy = server.url("/_/respond?status=429&body=later&h=Retry-After:3590", host="polite-date.test")
    page = server.url("/page.html", host="polite-date.test")

    class Spider(UrlsSpider):
        async def start(self):
            yield Request(busy, dont_filter=True, errback=self.failed)
            await sleep(0.5)  # the 429 has arrived, its retry is held
            yield Request(page, dont_filter=True, errback=self.failed)
            await sleep(0.5)
            if how == "stop":  # what Ctrl-C does
                from twisted.internet import reactor

                reactor.callLater(0, lambda: deferred_from_coro(self.crawler.stop_async()))

    extra = {"CLOSESPIDER_TIMEOUT": 2} if how == "closespider" else {}
    crawler = get_crawler(Spider, gate_settings(tmp_path, RETRY_ENABLED=True, RETRY_TIMES=2, **extra))
    started = time.monotonic()
    await crawler.crawl_async()
    assert time.monotonic() - started < 10
    finish = "shutdown" if how == "stop" else "closespider_timeout"
    assert crawler.stats.get_value("finish_reason") == finish
    assert crawler.spider.refused == {busy: "retry_after", page: "retry_after"}
    lines = [r for r in audit_lines(tmp_path) if r.get("decision") == "refused"]
    assert len(lines) == 2
    assert all("the crawl closed while host polite-date.test" in r["detail"] for r in lines)
    assert all(r["clause"].startswith("politeness.retry_after_max") for r in lines)
    # only the first answer was fetched: the held retry and the later page were not sent
    assert [p for _, h, p in server.requests() if h == "polite-date.test"] == ["/robots.txt", busy[busy.index("/_/"):]]


def rated_policy(tmp_path, include_subdomains: bool):
    import yaml

    from tests.test_robots import DATA

    data = yaml.safe_load((DATA / "policies" / "valid.yaml").read_text())
    data["domains"].append(
        {
            "domain": "polite-rated.test",
            "include_subdomains": include_subdomains,
            "allow_private_network": True,
            "rate_limit": {"delay": 1, "concurrency": 1},
        }
    )
    path = tmp_path / "rated.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("host", ["polite-rated.test", "www.polite-rated.test"])
@coroutine_test
async def test_domain_rate_limit_applies_with_subdomains(tmp_path, logged_mockserver, host):
    server = logged_mockserver
    urls = [server.url(f"/page.html?{i}", host=host) for i in range(3)]
    crawler = await crawl(
        tmp_path, urls, policy=rated_policy(tmp_path, include_subdomains=True),
        AUTOTHROTTLE_ENABLED=True, AUTOTHROTTLE_START_DELAY=0, CONCURRENT_REQUESTS_PER_DOMAIN=8,
    )
    times = fetch_times(server, host, "/page.html")
    assert len(times) == 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.9, gaps
    settings = crawler.engine.downloader.per_slot_settings[host]
    assert settings["delay"] == 1 and settings["concurrency"] == 1  # survives slot GC


@coroutine_test
async def test_domain_rate_limit_not_for_subdomains_unless_included(tmp_path, logged_mockserver):
    server = logged_mockserver
    host = "www.polite-rated.test"
    urls = [server.url(f"/page.html?{i}", host=host) for i in range(3)]
    crawler = await crawl(tmp_path, urls, policy=rated_policy(tmp_path, include_subdomains=False))
    assert host not in crawler.engine.downloader.per_slot_settings
    times = fetch_times(server, host, "/page.html")
    assert max(times) - min(times) < 1.5  # with the limit it would be >= 1.8


@pytest.mark.parametrize(
    ("user_agent", "message"),
    [
        ("Mozilla/5.0 (+https://example.org/bot)", "does not contain the policy's product token 'GdprTestBot'"),
        ("GdprTestBot/1.0", "carries no http(s) contact URL"),
        ("GdprTestBotX/1.0 (+https://example.org/bot)", "product token"),
    ],
)
@coroutine_test
async def test_user_agent_must_identify_the_crawler(tmp_path, mockserver, user_agent, message):
    crawler = get_crawler(UrlsSpider, gate_settings(tmp_path, USER_AGENT=user_agent))
    with pytest.raises(UserAgentError, match="USER_AGENT") as info:
        await crawler.crawl_async(urls=[mockserver.url("/index.html")])
    assert message in str(info.value)
    assert "Fix:" in str(info.value)


@coroutine_test
async def test_user_agent_from_policy_accepted(tmp_path, mockserver):
    policy = write_policy(tmp_path)
    url = mockserver.url("/index.html", host="robots-ok.test")
    crawler = await crawl(tmp_path, [url], policy=policy, USER_AGENT="Mozilla/5.0 (compatible; gdprtestbot/1.0; +https://example.org/bot)")
    assert crawler.spider.seen == [url]


@coroutine_test
async def test_with_addon_rate_limit_and_robots_apply(tmp_path, logged_mockserver):
    # the add-on wires both middlewares, sets USER_AGENT and copies rate limits to
    # DOWNLOAD_SLOTS; the other gate components are switched off so that only these
    # two decide here
    from scrapy_gdpr.addon import Addon
    from scrapy_gdpr.robots import RobotsGateMiddleware

    server = logged_mockserver
    host = "polite-rated.test"
    urls = [server.url(f"/page.html?{i}", host=host) for i in range(3)]
    private = server.url("/private/x.html", host="robots-ok.test")
    settings = {
        "ADDONS": {Addon: 0},
        "GDPR_POLICY": str(rated_policy(tmp_path, include_subdomains=False)),
        "GDPR_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "GDPR_REPORT_DIR": str(tmp_path / "reports"),
        "GDPR_LEDGER": f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        "DOWNLOADER_MIDDLEWARES": {
            "scrapy_gdpr.gate.PolicyGateMiddleware": None,
            "scrapy_gdpr.terms.TermsMiddleware": None,
            "scrapy_gdpr.optout.OptOutMiddleware": None,
        },
    }
    crawler = get_crawler(UrlsSpider, settings)
    await crawler.crawl_async(urls=[*urls, private])
    mws = [type(m) for m in crawler.engine.downloader.middleware.middlewares]
    assert RobotsGateMiddleware in mws
    assert crawler.spider.refused == {private: "robots"}
    assert crawler.engine.downloader.per_slot_settings[host]["delay"] == 1
    times = fetch_times(server, host, "/page.html")
    assert len(times) == 3
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.9


@coroutine_test
async def test_user_agent_in_default_request_headers_is_checked(tmp_path, mockserver):
    crawler = get_crawler(
        UrlsSpider, gate_settings(tmp_path, DEFAULT_REQUEST_HEADERS={"User-Agent": "curl/8.0"})
    )
    with pytest.raises(UserAgentError, match=r"DEFAULT_REQUEST_HEADERS\[.User-Agent.\] setting .curl/8.0"):
        await crawler.crawl_async(urls=[mockserver.url("/index.html")])

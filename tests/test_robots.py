"""RobotsGateMiddleware: RFC 9309 status handling, matching, caching, delays, content signals."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from scrapy import Request, Spider
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.utils.test import get_crawler

from scrapy_gdpr import robots as robots_module
from scrapy_gdpr.exceptions import PolicyViolation
from scrapy_gdpr.internal import internal_meta
from scrapy_gdpr.robots import RobotsGateMiddleware, origin_of, parse_robots
from tests.utils import DATA, ManualClock, coroutine_test, free_port, use_clock, wait_until
from tests.utils import sections_policy as write_policy

if TYPE_CHECKING:
    from pathlib import Path

UA = "GdprTestBot/1.0 (+http://127.0.0.1/crawler-info.html)"


def gate_settings(tmp_path: Path, policy: Path | None = None, **extra: Any) -> dict[str, Any]:
    """Only the robots gate and politeness middlewares, without the add-on (so other
    gate components cannot interfere)."""
    return {
        "GDPR_POLICY": str(policy or write_policy(tmp_path)),
        "GDPR_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "GDPR_REPORT_DIR": str(tmp_path / "reports"),
        "GDPR_LEDGER": f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        "DOWNLOADER_MIDDLEWARES": {
            RobotsTxtMiddleware: None,
            "scrapy_gdpr.robots.RobotsGateMiddleware": 100,
            "scrapy_gdpr.politeness.PolitenessMiddleware": 560,
        },
        "USER_AGENT": UA,
        "DOWNLOAD_DELAY": 0,
        "RETRY_ENABLED": False,
        "DOWNLOAD_TIMEOUT": 10,
        "LOG_LEVEL": "INFO",
        **extra,
    }


class UrlsSpider(Spider):
    """Requests every URL in ``urls`` at once; records what was fetched and refused."""

    name = "urls"

    def __init__(self, urls: list[str] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.urls = urls or []
        self.seen: list[str] = []
        self.refused: dict[str, str] = {}
        self.errors: dict[str, str] = {}

    async def start(self):
        for url in self.urls:
            yield Request(url, dont_filter=True, errback=self.failed, meta={"dont_obey_robotstxt": True})

    def parse(self, response):
        self.seen.append(response.url)

    def failed(self, failure):
        url = failure.request.url
        if isinstance(failure.value, PolicyViolation):
            self.refused[url] = failure.value.reason
        else:
            self.errors[url] = repr(failure.value)


async def crawl(tmp_path: Path, urls: list[str], policy: Path | None = None, **settings: Any):
    crawler = get_crawler(UrlsSpider, gate_settings(tmp_path, policy, **settings))
    await crawler.crawl_async(urls=urls)
    return crawler


def audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def runtime(crawler):
    from scrapy_gdpr.runtime import get_runtime

    return get_runtime(crawler)


# --------------------------------------------------------------------------- status handling


@coroutine_test
async def test_200_disallow_refused_with_rule_in_detail(tmp_path, mockserver):
    page = mockserver.url("/page.html", host="robots-ok.test")
    private = mockserver.url("/private/x.html", host="robots-ok.test")
    crawler = await crawl(tmp_path, [page, private])
    assert crawler.spider.seen == [page]
    assert crawler.spider.refused == {private: "robots"}
    stats = crawler.stats
    assert stats.get_value("gdpr/blocked/robots") == 1
    assert stats.get_value("gdpr/robots/fetches") == 1
    assert stats.get_value("gdpr/robots/status/200") == 1
    refusal = next(r for r in audit_lines(tmp_path) if r.get("decision") == "refused")
    assert refusal["reason"] == "robots"
    assert "line 2 'Disallow: /private/'" in refusal["detail"]
    assert refusal["clause"].startswith("crawler.product_token")


@pytest.mark.parametrize("status", [401, 403, 404])
@coroutine_test
async def test_4xx_means_no_restrictions(tmp_path, mockserver, status):
    # the body says "Disallow: /", but 4xx is "unavailable" (RFC 9309 2.3.1.3)
    host = f"robots-{status}.test"
    urls = [mockserver.url("/page.html", host=host), mockserver.url("/private/x.html", host=host)]
    crawler = await crawl(tmp_path, urls)
    assert sorted(crawler.spider.seen) == sorted(urls)
    assert crawler.stats.get_value(f"gdpr/robots/status/{status}") == 1


@pytest.mark.parametrize("status", [500, 503, 429])
@coroutine_test
async def test_5xx_and_429_mean_complete_disallow(tmp_path, mockserver, status):
    host = f"robots-{status}.test"
    urls = [mockserver.url("/page.html", host=host), mockserver.url("/index.html", host=host)]
    crawler = await crawl(tmp_path, urls, RETRY_ENABLED=True)
    assert crawler.spider.seen == []
    assert crawler.stats.get_value("gdpr/robots/fetches") == 1  # not retried by RetryMiddleware
    assert crawler.spider.refused == dict.fromkeys(urls, "robots_unreachable")
    assert crawler.stats.get_value("gdpr/blocked/robots_unreachable") == 2
    assert crawler.stats.get_value("gdpr/robots/unreachable") == 1
    report = runtime(crawler).report_sections["robots"]
    entry = report["unreachable"][origin_of(urls[0])]
    assert entry["error"] == f"HTTP {status}"
    assert report["unreachable_count"] == 1
    json.dumps(report)  # the compliance report needs JSON


@coroutine_test
async def test_timeout_means_complete_disallow(tmp_path, mockserver):
    url = mockserver.url("/page.html", host="robots-timeout.test")
    crawler = await crawl(tmp_path, [url], DOWNLOAD_TIMEOUT=1)
    assert crawler.spider.refused == {url: "robots_unreachable"}
    assert "Timeout" in runtime(crawler).report_sections["robots"]["unreachable"][origin_of(url)]["error"]


@coroutine_test
async def test_connection_refused_means_complete_disallow(tmp_path, mockserver):
    port = free_port()  # nothing listens there
    url = f"http://robots-refused.test:{port}/page.html"
    crawler = await crawl(tmp_path, [url])
    assert crawler.spider.refused == {url: "robots_unreachable"}
    assert crawler.stats.get_value("gdpr/robots/exception/DownloadConnectionRefusedError") == 1


@coroutine_test
async def test_dns_error_means_complete_disallow(tmp_path, mockserver):
    url = f"http://robots-nowhere.invalid:{mockserver.port}/page.html"
    crawler = await crawl(tmp_path, [url])
    assert crawler.spider.refused == {url: "robots_unreachable"}
    assert crawler.stats.get_value("gdpr/robots/unreachable") == 1


@coroutine_test
async def test_600_kib_file_parsed_up_to_limit(tmp_path, mockserver):
    # "Disallow: /" comes after 600 KiB of comments: beyond the 500 KiB parsing limit
    url = mockserver.url("/page.html", host="robots-big.test")
    crawler = await crawl(tmp_path, [url])
    assert crawler.spider.seen == [url]
    assert crawler.stats.get_value("gdpr/robots/truncated") == 1
    assert runtime(crawler).report_sections["robots"]["truncated"] == [mockserver.url("/robots.txt", host="robots-big.test")]
    # a larger limit in the policy reads it
    policy = write_policy(tmp_path, robots={"max_size": 700000})
    crawler = await crawl(tmp_path, [url], policy=policy)
    assert crawler.spider.refused == {url: "robots"}


@coroutine_test
async def test_truncation_keeps_earlier_rules_and_drops_later_ones(tmp_path, mockserver):
    # Disallow: /private/ is repeated within the limit; the Allow after 500 KiB is not read
    url = mockserver.url("/private/x.html", host="robots-big2.test")
    crawler = await crawl(tmp_path, [url])
    assert crawler.spider.refused == {url: "robots"}


def test_truncation_drops_the_cut_line():
    body = b"User-agent: *\nDisallow: /private/\nAllow: /private/deep/er"
    rules = parse_robots(body, "GdprTestBot", max_size=len(body) - 5)
    assert rules.truncated
    # the cut "Allow: /private/de" must not allow /private/deep/
    assert not rules.can_fetch("http://h/private/deep/x")


@coroutine_test
async def test_redirect_chain_of_five_is_followed(tmp_path, mockserver):
    page = mockserver.url("/page.html", host="robots-redirect5.test")
    private = mockserver.url("/private/x.html", host="robots-redirect5.test")
    crawler = await crawl(tmp_path, [page, private])
    assert crawler.spider.seen == [page]
    assert crawler.spider.refused == {private: "robots"}
    assert crawler.stats.get_value("gdpr/robots/fetches") == 6


@pytest.mark.parametrize(("host", "error"), [("robots-redirect6", "more than 5 redirects"), ("robots-loop", "redirect loop")])
@coroutine_test
async def test_long_redirect_chain_or_loop_is_unreachable(tmp_path, mockserver, host, error):
    url = mockserver.url("/page.html", host=f"{host}.test")
    crawler = await crawl(tmp_path, [url])
    assert crawler.spider.refused == {url: "robots_unreachable"}
    report = runtime(crawler).report_sections["robots"]
    assert error in report["unreachable"][origin_of(url)]["error"]
    assert report["redirect_failures"] == 1


@coroutine_test
async def test_bom_is_ignored(tmp_path, mockserver):
    # without BOM handling the first line is not a User-agent line and "*" (Disallow: /) applies
    page = mockserver.url("/page.html", host="robots-bom.test")
    private = mockserver.url("/private/x.html", host="robots-bom.test")
    crawler = await crawl(tmp_path, [page, private])
    assert crawler.spider.seen == [page]
    assert crawler.spider.refused == {private: "robots"}


@coroutine_test
async def test_garbage_body_is_tolerated(tmp_path, mockserver):
    page = mockserver.url("/page.html", host="robots-garbage.test")
    private = mockserver.url("/private/x.html", host="robots-garbage.test")
    crawler = await crawl(tmp_path, [page, private])
    assert crawler.spider.seen == [page]
    assert crawler.spider.refused == {private: "robots"}
    assert not crawler.spider.errors


@coroutine_test
async def test_other_records_do_not_end_the_user_agent_list_in_a_crawl(tmp_path, mockserver):
    # "User-agent: GdprTestBot / Crawl-delay / Content-Signal / User-agent: * / Disallow: /private/"
    # is one group (RFC 9309 2.2.4): the Disallow applies to GdprTestBot, and so does the delay
    page = mockserver.url("/page.html", host="robots-group.test")
    private = mockserver.url("/private/x.html", host="robots-group.test")
    crawler = await crawl(tmp_path, [page, private])
    assert crawler.spider.seen == [page]
    assert crawler.spider.refused == {private: "robots"}
    refusal = next(r for r in audit_lines(tmp_path) if r.get("decision") == "refused")
    assert "line 5 'Disallow: /private/' (group User-agent: GdprTestBot)" in refusal["detail"]
    assert crawler.stats.get_value("gdpr/robots/crawl_delay_hosts") == 1


# --------------------------------------------------------------------------- product token


def test_product_token_matching_rules():
    body = (DATA.parent / "site" / "hosts" / "robots-token" / "robots.txt").read_bytes()
    rules = parse_robots(body, "GdprTestBot")
    assert rules.group == "GdprTestBot"
    assert rules.can_fetch("http://h/index.html")
    assert not rules.can_fetch("http://h/private/x.html")
    assert not rules.can_fetch("http://h/page.html")  # the second group combines
    # "Gdpr" is not a prefix match; a crawler called Gdpr gets its own group
    assert not parse_robots(body, "Gdpr").can_fetch("http://h/index.html")
    # an unknown crawler gets "*"
    other = parse_robots(body, "SomeBot")
    assert other.group == "*"
    assert not other.can_fetch("http://h/index.html")
    # no "*" group and no own group: no rules
    assert parse_robots(b"User-agent: Other\nDisallow: /\n", "GdprTestBot").can_fetch("http://h/x")


@coroutine_test
async def test_product_token_matching_in_a_crawl(tmp_path, mockserver):
    index = mockserver.url("/index.html", host="robots-token.test")
    page = mockserver.url("/page.html", host="robots-token.test")
    private = mockserver.url("/private/x.html", host="robots-token.test")
    crawler = await crawl(tmp_path, [index, page, private])
    assert crawler.spider.seen == [index]
    assert crawler.spider.refused == {page: "robots", private: "robots"}


@coroutine_test
async def test_spider_dont_obey_robotstxt_does_not_bypass(tmp_path, mockserver):
    # UrlsSpider sets meta dont_obey_robotstxt on every request
    private = mockserver.url("/private/x.html", host="robots-ok.test")
    crawler = await crawl(tmp_path, [private])
    assert crawler.spider.refused == {private: "robots"}


# --------------------------------------------------------------------------- cache and concurrency


@coroutine_test
async def test_concurrent_requests_share_one_slow_fetch_and_all_are_checked(tmp_path, logged_mockserver):
    server = logged_mockserver
    host = "robots-slow.test"
    pages = [server.url(f"/page.html?n={i}", host=host) for i in range(15)]
    privates = [server.url(f"/private/x.html?n={i}", host=host) for i in range(15)]
    crawler = await crawl(tmp_path, pages + privates, CONCURRENT_REQUESTS=64, CONCURRENT_REQUESTS_PER_DOMAIN=64)
    assert sorted(crawler.spider.seen) == sorted(pages)
    assert crawler.spider.refused == dict.fromkeys(privates, "robots")
    fetched = [path for _, h, path in server.requests() if h == host]
    assert fetched.count("/robots.txt") == 1
    assert not any(p.startswith("/private/") for p in fetched)
    assert crawler.stats.get_value("gdpr/robots/waited") >= 20


def test_cache_is_per_scheme_host_port():
    assert origin_of("http://A.test/x") == "http://a.test:80"
    assert origin_of("http://a.test:80/y") == "http://a.test:80"
    assert origin_of("https://a.test/x") == "https://a.test:443"
    assert origin_of("http://a.test:8080/x") == "http://a.test:8080"


@coroutine_test
async def test_cache_ttl_expiry_refetches(tmp_path, logged_mockserver):
    server = logged_mockserver
    policy = write_policy(tmp_path, robots={"cache_ttl": "PT1S"})
    page = server.url("/page.html", host="robots-ttl.test")
    private = server.url("/private/x.html", host="robots-ttl.test")
    clock = ManualClock()

    class TwoRounds(UrlsSpider):
        async def start(self):
            for url in self.urls:
                yield Request(url, dont_filter=True, errback=self.failed)
            await wait_until(lambda: len(self.seen) + len(self.refused) == len(self.urls))
            clock.advance(0.9)
            yield Request(page + "?cached", dont_filter=True, errback=self.failed)
            await wait_until(lambda: len(self.seen) + len(self.refused) == len(self.urls) + 1)
            clock.advance(0.2)  # past the TTL
            for url in self.urls:
                yield Request(url + "?again", dont_filter=True, errback=self.failed)

    crawler = get_crawler(TwoRounds, gate_settings(tmp_path, policy))
    use_clock(crawler, clock)
    await crawler.crawl_async(urls=[page, private])
    # first robots.txt disallows /private/, the one fetched after the TTL /page.html
    assert crawler.spider.seen == [page, page + "?cached", private + "?again"]
    assert crawler.spider.refused == {private: "robots", page + "?again": "robots"}
    assert [p for _, _, p in server.requests()].count("/robots.txt") == 2


@coroutine_test
async def test_cache_control_max_age_shortens_ttl(tmp_path, mockserver):
    url = mockserver.url("/page.html", host="robots-maxage.test")
    crawler = await crawl(tmp_path, [url])
    mw = crawler.get_downloader_middleware(RobotsGateMiddleware)
    entry = mw.cache[origin_of(url)]
    assert entry.state == "parsed"
    assert entry.expires_at - entry.fetched_at == pytest.approx(120)


@coroutine_test
async def test_cache_is_bounded_lru(tmp_path, mockserver):
    hosts = ["robots-ok", "robots-404", "robots-bom", "robots-token"]
    urls = [mockserver.url("/index.html", host=f"{h}.test") for h in hosts]
    crawler = await crawl(tmp_path, urls, GDPR_ROBOTS_CACHE_SIZE=2, CONCURRENT_REQUESTS=1)
    mw = crawler.get_downloader_middleware(RobotsGateMiddleware)
    assert len(mw.cache) == 2


@coroutine_test
async def test_unreachable_is_retried_after_backoff(tmp_path, logged_mockserver):
    server = logged_mockserver
    policy = write_policy(tmp_path, robots={"retry_backoff": "PT1S"})
    page = server.url("/page.html", host="robots-retry.test")
    clock = ManualClock()

    class Later(UrlsSpider):
        async def start(self):
            yield Request(page, dont_filter=True, errback=self.failed)
            await wait_until(lambda: len(self.refused) == 1)
            clock.advance(0.3)
            yield Request(page + "?during-backoff", dont_filter=True, errback=self.failed)
            await wait_until(lambda: len(self.refused) == 2)
            clock.advance(1.2)
            yield Request(page + "?after-backoff", dont_filter=True, errback=self.failed)

    crawler = get_crawler(Later, gate_settings(tmp_path, policy))
    use_clock(crawler, clock)
    await crawler.crawl_async()
    assert crawler.spider.refused == {page: "robots_unreachable", page + "?during-backoff": "robots_unreachable"}
    assert crawler.spider.seen == [page + "?after-backoff"]
    assert [p for _, _, p in server.requests()].count("/robots.txt") == 2


@coroutine_test
async def test_retries_are_bounded(tmp_path, mockserver):
    policy = write_policy(tmp_path, robots={"retry_backoff": "PT0.2S", "retry_times": 1})
    url = mockserver.url("/page.html", host="robots-503.test")
    clock = ManualClock()

    class Many(UrlsSpider):
        async def start(self):
            for i in range(6):
                yield Request(f"{url}?{i}", dont_filter=True, errback=self.failed)
                await wait_until(lambda i=i: len(self.refused) == i + 1)
                clock.advance(0.25)

    crawler = get_crawler(Many, gate_settings(tmp_path, policy))
    use_clock(crawler, clock)
    await crawler.crawl_async()
    assert len(crawler.spider.refused) == 6
    # the first fetch and one retry; then disallowed for the cache lifetime
    assert crawler.stats.get_value("gdpr/robots/fetches") == 2
    entry = runtime(crawler).report_sections["robots"]["unreachable"][origin_of(url)]
    assert entry["gave_up"] is True
    assert entry["attempts"] == 2


# --------------------------------------------------------------------------- delays and sitemaps


@pytest.mark.parametrize("autothrottle", [False, True])
@coroutine_test
async def test_crawl_delay_observed_between_fetches(tmp_path, logged_mockserver, autothrottle):
    # AutoThrottle, aiming at 64 concurrent requests, halves the delay after every
    # response; the floor must come back before the next request is sent
    server = logged_mockserver
    urls = [server.url(f"/page.html?{i}", host="polite-delay.test") for i in range(4)]
    crawler = await crawl(
        tmp_path, urls, CONCURRENT_REQUESTS_PER_DOMAIN=8, DOWNLOAD_DELAY_JITTER=0.5,
        AUTOTHROTTLE_ENABLED=autothrottle, AUTOTHROTTLE_START_DELAY=0, AUTOTHROTTLE_TARGET_CONCURRENCY=64,
    )
    assert len(crawler.spider.seen) == 4
    times = [t for t, h, p in server.requests() if p.startswith("/page.html")]
    assert len(times) == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.9, gaps
    downloader = crawler.engine.downloader
    assert downloader.per_slot_settings["polite-delay.test"]["delay"] == 1.0


@coroutine_test
async def test_request_rate_observed_between_fetches(tmp_path, logged_mockserver):
    server = logged_mockserver
    urls = [server.url(f"/page.html?{i}", host="polite-rate.test") for i in range(3)]
    crawler = await crawl(tmp_path, urls)
    assert len(crawler.spider.seen) == 3
    times = [t for t, h, p in server.requests() if p.startswith("/page.html")]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.9, gaps


@coroutine_test
async def test_crawl_delay_capped_by_policy(tmp_path, mockserver):
    policy = write_policy(tmp_path, robots={"max_crawl_delay": "PT0.5S"})
    url = mockserver.url("/page.html", host="polite-delay.test")
    crawler = await crawl(tmp_path, [url], policy=policy)
    mw = crawler.get_downloader_middleware(RobotsGateMiddleware)
    assert mw.cache[origin_of(url)].delay == 0.5
    assert runtime(crawler).report_sections["robots"]["capped_delays"][origin_of(url)] == {"asked": 1.0, "applied": 0.5}


@coroutine_test
async def test_crawl_delay_survives_slot_gc_and_autothrottle(tmp_path, mockserver):
    url = mockserver.url("/page.html", host="polite-delay.test")
    crawler = await crawl(tmp_path, [url], AUTOTHROTTLE_ENABLED=True, AUTOTHROTTLE_START_DELAY=0,
                          AUTOTHROTTLE_TARGET_CONCURRENCY=64)
    downloader = crawler.engine.downloader
    floors = runtime(crawler).slot_floors
    slot = downloader.slots.get("polite-delay.test")
    assert slot is not None
    assert slot.delay >= 1.0
    # AutoThrottle lowers the delay after a response: the floor comes back
    slot.delay = 0.01
    floors.apply("polite-delay.test")
    assert slot.delay == 1.0
    # the slot is garbage-collected and recreated from per_slot_settings
    downloader.slots.pop("polite-delay.test")
    _, new_slot = downloader._get_slot(Request(url))
    assert new_slot.delay == 1.0
    assert new_slot.delay * (1 - new_slot.jitter) >= 1.0


@coroutine_test
async def test_sitemaps_available_to_spiders(tmp_path, mockserver):
    page = mockserver.url("/page.html", host="robots-ok.test")

    class SitemapSpider(UrlsSpider):
        found: list[str] = []

        async def start(self):
            self.found = await robots_module.sitemaps(self.crawler, page)
            yield Request(page)

    crawler = get_crawler(SitemapSpider, gate_settings(tmp_path))
    await crawler.crawl_async()
    assert crawler.spider.found == ["http://robots-ok.test/sitemap.xml", "http://robots-ok.test/sitemap-2.xml"]
    assert crawler.stats.get_value("gdpr/robots/sitemaps") == 2
    assert crawler.stats.get_value("gdpr/robots/fetches") == 1
    assert runtime(crawler).report_sections["robots"]["sitemaps"][origin_of(page)] == crawler.spider.found


@coroutine_test
async def test_service_allows(tmp_path, mockserver):
    page = mockserver.url("/page.html", host="robots-ok.test")
    private = mockserver.url("/private/x.html", host="robots-ok.test")
    answers = {}

    class Asking(UrlsSpider):
        async def start(self):
            service = runtime(self.crawler).robots
            answers["page"] = await service.allows(page)
            answers["private"] = await service.allows(private)
            answers["down"] = await service.allows(mockserver.url("/x", host="robots-503.test"))
            return
            yield

    crawler = get_crawler(Asking, gate_settings(tmp_path))
    await crawler.crawl_async()
    assert answers["page"] == (True, "", "")
    assert answers["private"][:2] == (False, "robots")
    assert "Disallow: /private/" in answers["private"][2]
    assert answers["down"][:2] == (False, "robots_unreachable")


# --------------------------------------------------------------------------- content signals


def signal_policy(tmp_path: Path, signal_purposes: list[str], **opt_out: bool) -> Path:
    data = yaml.safe_load((DATA / "policies" / "valid.yaml").read_text())
    data["purposes"][0]["signal_purposes"] = signal_purposes
    if opt_out:
        data["opt_out"] = opt_out
    path = tmp_path / "signal-policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@coroutine_test
async def test_content_signal_reserves_ai_train(tmp_path, mockserver):
    url = mockserver.url("/page.html", host="robots-signal.test")
    crawler = await crawl(tmp_path, [url], policy=signal_policy(tmp_path, ["search", "ai-train"]))
    assert crawler.spider.refused == {url: "optout"}
    refusal = next(r for r in audit_lines(tmp_path) if r.get("decision") == "refused")
    assert "line 2 'Content-Signal: search=yes, ai-train=no, ai-input=yes' reserves ai-train" in refusal["detail"]
    assert any(r.get("decision") == "content_signal" for r in audit_lines(tmp_path))


@coroutine_test
async def test_content_signal_allows_other_purposes(tmp_path, mockserver):
    # search=yes and ai-input=yes; the OtherBot group's search=no is not ours
    url = mockserver.url("/page.html", host="robots-signal.test")
    crawler = await crawl(tmp_path, [url], policy=signal_policy(tmp_path, ["search", "ai-input"]))
    assert crawler.spider.seen == [url]


@coroutine_test
async def test_content_signal_switch(tmp_path, mockserver):
    url = mockserver.url("/page.html", host="robots-signal.test")
    policy = signal_policy(tmp_path, ["ai-train"], content_signal=False)
    crawler = await crawl(tmp_path, [url], policy=policy)
    assert crawler.spider.seen == [url]


@coroutine_test
async def test_content_usage_path_scoped(tmp_path, mockserver):
    host = "robots-usage.test"
    urls = {name: mockserver.url(path, host=host) for name, path in [
        ("index", "/index.html"), ("photo", "/photos/a.html"), ("public", "/photos/public.html"),
        ("text", "/text/a.html"), ("page", "/page.html"),
    ]}
    crawler = await crawl(tmp_path, list(urls.values()), policy=signal_policy(tmp_path, ["ai-train"]))
    # /photos/ train-ai=n reserves; the longer /photos/public.html train-ai=y wins there;
    # "Train-AI=n" (uppercase key) and train-ai="n" (a string, not a token) cannot be
    # read: malformed fails closed, ai-train reserved in doubt
    assert crawler.spider.refused == {urls["photo"]: "optout", urls["text"]: "optout", urls["page"]: "optout"}
    assert sorted(crawler.spider.seen) == sorted([urls["index"], urls["public"]])
    details = {r["url"]: r["detail"] for r in audit_lines(tmp_path) if r.get("decision") == "refused"}
    assert "line 4 'Content-Usage: /photos/ train-ai=n' reserves ai-train" in details[urls["photo"]]
    assert details[urls["text"]].endswith("reserves ai-train ('Train-AI=n' is not y/n: reserved, in doubt)")
    assert "line 7 'Content-Usage: /page.html train-ai=\"n\"' reserves ai-train" in details[urls["page"]]


@coroutine_test
async def test_content_usage_switch_and_unrelated_purpose(tmp_path, mockserver):
    url = mockserver.url("/photos/a.html", host="robots-usage.test")
    crawler = await crawl(tmp_path, [url], policy=signal_policy(tmp_path, ["ai-train"], content_usage=False))
    assert crawler.spider.seen == [url]
    crawler = await crawl(tmp_path, [url], policy=signal_policy(tmp_path, ["search"]))
    assert crawler.spider.seen == [url]


def test_content_usage_values():
    def prefs(value: str) -> dict[str, bool]:
        rules = parse_robots(f"User-agent: *\nContent-Usage: {value}\n".encode(), "X")
        return rules.signals[0].prefs

    assert prefs("train-ai=n, search=y") == {"ai-train": False, "search": True}
    assert prefs("train-ai=y, train-ai=n") == {"ai-train": False}  # last duplicate wins
    assert prefs("train-ai=n, train-ai=y") == {"ai-train": True}
    assert prefs('train-ai=y, train-ai, search=n, search="n"') == {}  # no readable preference
    assert prefs("Train-AI=n") == {}  # uppercase key: parse failure
    assert prefs("train-ai=maybe, bots=n") == {}

    def doubt(value: str) -> dict[str, str]:
        return parse_robots(f"User-agent: *\nContent-Usage: {value}\n".encode(), "X").signals[0].doubt

    # what cannot be read reserves its purpose, in doubt (malformed fails closed)
    assert set(doubt('train-ai=y, train-ai, search=n, search="n"')) == {"ai-train", "search"}
    assert doubt("Train-AI=n") == {"ai-train": "Train-AI=n"}
    assert set(doubt("train-ai=maybe, bots=n")) == {"ai-train"}
    assert doubt("= ,,") == {} and doubt("bots=n, foo") == {}  # no known key named: no purpose
    assert prefs("train-ai=n;reason=1") == {"ai-train": False}  # parameters ignored
    assert prefs("= ,,") == {}
    # the keys of earlier drafts, as in the response header (one reader for both carriers)
    assert prefs("train-genai=n, ai-use=n") == {"ai-train": False, "ai-input": False}
    assert prefs("train-ai=y, train-genai=n") == {"ai-train": False}  # two keys, one purpose: any n reserves


def test_content_signal_values():
    def prefs(value: str) -> dict[str, bool]:
        return parse_robots(f"User-agent: *\nContent-Signal: {value}\n".encode(), "X").signals[0].prefs

    assert prefs("search=yes, ai-train=no, ai-input=yes") == {"search": True, "ai-train": False, "ai-input": True}
    assert prefs("ai-train=maybe, search") == {}
    assert prefs("AI-Train=No") == {"ai-train": False}
    assert prefs("search-ai=no") == {}


def test_malformed_content_signal_fails_closed_for_its_purpose():
    rules = parse_robots(b"User-agent: *\nContent-Signal: search=yes, ai-train=maybe\n"
                         b"Content-Signal: /img/ ai-input\nContent-Signal: /ok/ foo=bar, %%%\n", "X")
    assert rules.signals[0].doubt == {"ai-train": "ai-train=maybe"}
    assert rules.reserved("http://a.test/page", ["search"]) is None
    purpose, signal = rules.reserved("http://a.test/page", ["search", "ai-train"])
    assert (purpose, signal.line) == ("ai-train", 2)
    assert rules.reserved("http://a.test/img/x.png", ["ai-input"])[0] == "ai-input"  # bare key: in doubt
    assert rules.reserved("http://a.test/ok/x", ["search", "ai-input"]) is None  # names no purpose
    assert parse_robots(b"User-agent: *\nContent-Signal: ai-train=no, ai-train=yes\n", "X").signals[0].prefs == {
        "ai-train": False}  # a repeated key: any "no" reserves


@coroutine_test
async def test_unreachable_waits_at_least_retry_after(tmp_path, mockserver):
    policy = write_policy(tmp_path, robots={"retry_backoff": "PT1S"})
    url = mockserver.url("/index.html", host="robots-429ra.test")
    crawler = await crawl(tmp_path, [url], policy=policy)
    assert crawler.spider.refused == {url: "robots_unreachable"}
    entry = runtime(crawler).report_sections["robots"]["unreachable"][origin_of(url)]
    assert entry["retry_in_seconds"] == 120


# --------------------------------------------------------------------------- RFC 9309 matching


@pytest.mark.parametrize(
    ("robots", "path", "allowed"),
    [
        # longest match wins (RFC 9309 2.2.2)
        ("Allow: /p\nDisallow: /", "/page", True),
        ("Allow: /folder\nDisallow: /folder/", "/folder/page", False),
        ("Allow: /folder/\nDisallow: /folder", "/folder/page", True),
        # equivalent Allow and Disallow: Allow wins
        ("Allow: /page\nDisallow: /page", "/page", True),
        # "*" and "$"
        ("Disallow: /*.gif$", "/img/a.gif", False),
        ("Disallow: /*.gif$", "/img/a.gif?x=1", True),
        ("Disallow: /fish*", "/fish.html", False),
        ("Disallow: /fish*", "/Fish.html", True),  # paths are case-sensitive
        ("Allow: /$\nDisallow: /", "/", True),
        ("Allow: /$\nDisallow: /", "/page.html", False),
        # percent-encoding is normalised
        ("Disallow: /foo/bar%2Fbaz", "/foo/bar%2fbaz", False),
        ("Disallow: /a%3cd.html", "/a%3Cd.html", False),
        # an empty Disallow allows everything
        ("Disallow:", "/anything", True),
        # robots.txt itself is always allowed
        ("Disallow: /", "/robots.txt", True),
    ],
)
def test_rfc9309_path_matching(robots, path, allowed):
    rules = parse_robots(f"User-agent: *\n{robots}\n".encode(), "GdprTestBot")
    assert rules.can_fetch(f"http://example.test{path}") is allowed


@pytest.mark.parametrize(
    ("robots", "allowed"),
    [
        # a group names several agents
        ("User-agent: a\nUser-agent: GdprTestBot\nDisallow: /x\n", False),
        # a rule line ends the user-agent list: the second group is its own
        ("User-agent: GdprTestBot\nAllow: /\nUser-agent: other\nDisallow: /x\n", True),
        # token equality ignores case and a version suffix
        ("User-agent: gDpRtEsTbOt/9\nDisallow: /x\n", False),
        # a longer or shorter token is another crawler
        ("User-agent: GdprTestBots\nDisallow: /x\n", True),
        ("User-agent: GdprTest\nDisallow: /x\n", True),
        ("User-agent: *GdprTestBot\nDisallow: /x\n", True),
        # "*" only when we have no group of our own
        ("User-agent: *\nDisallow: /x\nUser-agent: GdprTestBot\nAllow: /y\n", True),
        ("User-agent: *\nDisallow: /x\n", False),
        # rules before any group are ignored
        ("Disallow: /x\nUser-agent: *\nAllow: /\n", True),
        # directive names in any case, with spaces, common misspellings
        ("USER-AGENT : GdprTestBot\nDISALLOW : /x\n", False),
        ("user agent: GdprTestBot\ndissallow: /x\n", False),
        # comments
        ("User-agent: GdprTestBot # us\nDisallow: /x # private\n", False),
        # CR-only line ends
        ("User-agent: GdprTestBot\rDisallow: /x\r", False),
    ],
)
def test_rfc9309_group_selection(robots, allowed):
    assert parse_robots(robots.encode(), "GdprTestBot").can_fetch("http://example.test/x") is allowed


def test_crawl_delay_and_request_rate_from_own_group_only():
    body = (b"User-agent: *\nCrawl-delay: 9\nDisallow: /x\n\n"
            b"User-agent: GdprTestBot\nCrawl-delay: 2\nRequest-rate: 3/10s\nDisallow: /y\n")
    rules = parse_robots(body, "GdprTestBot")
    assert rules.crawl_delay == 2
    assert rules.request_rate == (3, 10)
    assert parse_robots(body, "Other").crawl_delay == 9
    assert parse_robots(body, "Other").request_rate is None
    # without a rule between them, the two User-agent lines are one group (RFC 9309 2.2)
    merged = b"User-agent: *\nCrawl-delay: 9\n\nUser-agent: GdprTestBot\nCrawl-delay: 2\nRequest-rate: 3/10s\n"
    assert parse_robots(merged, "GdprTestBot").crawl_delay == 9  # the most cautious of the group's values
    assert parse_robots(merged, "Other").request_rate == (3, 10)
    assert parse_robots(b"User-agent: *\nCrawl-delay: soon\nRequest-rate: fast\n", "X").crawl_delay is None


@coroutine_test
async def test_internal_requests_pass_unchecked(tmp_path, mockserver):
    terms = mockserver.url("/page.html", host="robots-503.test")
    other = mockserver.url("/index.html", host="robots-503.test")

    class Internal(UrlsSpider):
        async def start(self):
            yield Request(terms, meta=internal_meta("terms"), errback=self.failed)
            yield Request(other, meta=internal_meta("something-else"), errback=self.failed)

    crawler = get_crawler(Internal, gate_settings(tmp_path))
    await crawler.crawl_async()
    assert crawler.spider.seen == [terms]
    assert crawler.spider.refused == {other: "robots_unreachable"}


def test_parsers_shared_between_sites_with_the_same_rules():
    import weakref

    shared: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
    a = parse_robots(b"# site a\nUser-agent: *\nDisallow: /wp-admin/\nSitemap: http://a/s.xml\n", "X", shared=shared)
    b = parse_robots(b"User-agent: *\nDisallow: /wp-admin/\nSitemap: http://b/s.xml\n", "X", shared=shared)
    c = parse_robots(b"User-agent: *\nDisallow: /other/\n", "X", shared=shared)
    assert a.parser is b.parser
    assert c.parser is not a.parser
    assert a.sitemaps == ["http://a/s.xml"] and b.sitemaps == ["http://b/s.xml"]
    assert a.explain("http://a/wp-admin/x") == "robots.txt line 3 'Disallow: /wp-admin/' (group User-agent: *)"
    assert b.explain("http://b/wp-admin/x") == "robots.txt line 2 'Disallow: /wp-admin/' (group User-agent: *)"


@coroutine_test
async def test_large_robots_txt_is_parsed_off_the_reactor_thread(tmp_path, monkeypatch):
    import threading

    crawler = get_crawler(Spider, {
        "GDPR_POLICY": str(DATA / "policies" / "valid.yaml"),
        "GDPR_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
    })
    mw = RobotsGateMiddleware.from_crawler(crawler)
    threads: list[str] = []
    real = robots_module.parse_robots

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(robots_module, "parse_robots", recording)
    small = b"User-agent: *\nDisallow: /private/\n"
    large = b"User-agent: *\n" + b"".join(b"Disallow: /p%d/\n" % i for i in range(5000))
    assert len(large) > robots_module.PARSE_INLINE_BYTES
    assert not (await mw._parse(small)).can_fetch("http://a.test/private/x")
    assert not (await mw._parse(large)).can_fetch("http://a.test/p4999/x")
    main = threading.current_thread().name
    assert threads[0] == main and threads[1] != main


# --------------------------------------------------------------------------- download cap (decompressed)


def gzip_bomb(size: int, tail: bytes = b"") -> bytes:
    """A gzip stream that inflates to ``size`` bytes of comment lines, then ``tail``."""
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"#" * 1023 + b"\n"
    parts = [packer.compress(chunk) for _ in range(size // len(chunk))]
    parts.append(packer.compress(tail))
    parts.append(packer.flush())
    return b"".join(parts)


def bomb_site(tmp_path: Path, files: dict[str, tuple[bytes, dict[str, str]]]) -> Path:
    """A site whose host ``<name>.test`` answers /robots.txt with the given body and headers."""
    site = tmp_path / "site"
    for host, (body, headers) in files.items():
        folder = site / "hosts" / host
        folder.mkdir(parents=True)
        (folder / "robots.body").write_bytes(body)
        (folder / "page.html").write_text("<html><body>page</body></html>")
        (folder / "_routes.json").write_text(json.dumps({"/robots.txt": {"file": "robots.body", "headers": headers}}))
    return site


@coroutine_test
async def test_robots_download_is_capped_after_decompression(tmp_path):
    from tests.conftest import MockServer

    gz = {"Content-Type": "text/plain", "Content-Encoding": "gzip"}
    bomb = gzip_bomb(64 * 1024 * 1024)  # 64 MiB inflated from about 64 KiB
    assert len(bomb) < 200_000
    within = gzip_bomb(700 * 1024, b"User-agent: *\nDisallow: /\n")  # over max_size, under the cap
    site = bomb_site(tmp_path, {
        "bomb": (bomb, gz),
        "plain": (b"#" * 3_000_000, {"Content-Type": "text/plain"}),
        "within": (within, gz),
        "small": (gzip_bomb(0, b"User-agent: *\nDisallow: /private/\n"), gz),
    })
    with MockServer(site=site) as server:
        urls = {h: server.url("/page.html", host=f"{h}.test") for h in ("bomb", "plain", "within", "small")}
        crawler = await crawl(tmp_path, list(urls.values()))
    spider = crawler.spider
    assert spider.refused == {urls["bomb"]: "robots_unreachable", urls["plain"]: "robots_unreachable"}
    assert sorted(spider.seen) == sorted([urls["within"], urls["small"]])  # within: truncated at max_size, parsed
    assert crawler.stats.get_value("gdpr/robots/too_large") == 2
    assert crawler.stats.get_value("gdpr/robots/truncated") == 1
    hosts = runtime(crawler).report_sections["robots"]["unreachable"]
    for h in ("bomb", "plain"):
        assert hosts[origin_of(urls[h])]["error"] == "robots.txt larger than 2048000 bytes (after decompression)"
    # nothing near the inflated size was ever held: the decompressed bytes counted stay under the cap
    assert (crawler.stats.get_value("httpcompression/response_bytes") or 0) < 2 * 2_048_000


@coroutine_test
async def test_robots_body_left_compressed_fails_closed(tmp_path):
    # with decompression switched off, a gzip body would parse as no rules: refuse instead
    from tests.conftest import MockServer

    site = bomb_site(tmp_path, {"gz": (gzip_bomb(0, b"User-agent: *\nDisallow: /\n"),
                                      {"Content-Type": "text/plain", "Content-Encoding": "gzip"})})
    with MockServer(site=site) as server:
        url = server.url("/page.html", host="gz.test")
        crawler = await crawl(tmp_path, [url], COMPRESSION_ENABLED=False)
    assert crawler.spider.refused == {url: "robots_unreachable"}
    error = runtime(crawler).report_sections["robots"]["unreachable"][origin_of(url)]["error"]
    assert "still encoded (gzip)" in error and "HttpCompressionMiddleware" in error

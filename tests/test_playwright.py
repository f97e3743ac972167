"""Browser sub-resources: the PLAYWRIGHT_ABORT_REQUEST predicate, with real Chromium."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from scrapy import Request, Spider
from scrapy.utils.test import get_crawler
from scrapy_playwright.page import PageMethod

from scrapy_gdpr.objections import append_objection
from scrapy_gdpr.playwright import SubresourceGate, update_settings
from scrapy_gdpr.runtime import get_runtime
from tests.test_gate import gate_settings, local, refusals, write_policy
from tests.utils import chromium_path, coroutine_test, playwright_settings, require_service


class StubRobots:
    """Stands in for ``runtime.robots``: disallows ``/robots-blocked/``
    (what tests/site/hosts/pw-cdn/robots.txt says)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def allows(self, url: str) -> tuple[bool, str, str]:
        self.asked.append(url)
        if urlsplit(url).path.startswith("/robots-blocked/"):
            return False, "robots", "Disallow: /robots-blocked/ (robots.txt line 2)"
        return True, "", ""


def user_abort(request: Any) -> bool:
    """A user's own predicate, kept by the add-on."""
    return str(request.url).endswith("/user-blocked.png")


async def user_abort_async(request: Any) -> bool:
    return str(request.url).endswith(".css")


INITIALISED: list[str] = []


async def record_init(page: Any, request: Any) -> None:
    """A user's own page init callback, still called after the page guard."""
    INITIALISED.append(request.url)


@dataclass
class FakeRequest:
    url: str
    resource_type: str = "image"


class PlaywrightHookAddon:
    """Installs only the Playwright hook (the full add-on adds terms and robots gates)."""

    def __init__(self, crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler)

    def update_settings(self, settings) -> None:
        update_settings(settings, self.crawler)


class BrowserSpider(Spider):
    name = "browser"

    def __init__(self, url: str = "", **kw: Any) -> None:
        super().__init__(**kw)
        self.url = url
        self.seen: list[tuple[str, int]] = []

    async def start(self):
        yield Request(self.url, meta={"playwright": True})

    def parse(self, response):
        self.seen.append((response.url, response.status))


# --------------------------------------------------------------------------- wiring


def test_addon_installs_the_predicate(tmp_path):
    policy = write_policy(tmp_path, [local("pw-page.test")])
    crawler = get_crawler(Spider, gate_settings(tmp_path, policy, addon=True))
    predicate = crawler.settings["PLAYWRIGHT_ABORT_REQUEST"]
    assert isinstance(predicate, SubresourceGate)
    assert predicate.crawler is crawler and predicate.user_predicate is None
    assert crawler.settings.getpriority("PLAYWRIGHT_ABORT_REQUEST") == 15  # addon


@pytest.mark.parametrize("value", ["tests.test_playwright.user_abort", user_abort_async])
def test_addon_wraps_the_users_predicate(tmp_path, value):
    policy = write_policy(tmp_path, [local("pw-page.test")])
    crawler = get_crawler(Spider, gate_settings(tmp_path, policy, addon=True, PLAYWRIGHT_ABORT_REQUEST=value))
    predicate = crawler.settings["PLAYWRIGHT_ABORT_REQUEST"]
    assert isinstance(predicate, SubresourceGate)
    assert predicate.user_predicate in (user_abort, user_abort_async)
    assert crawler.settings.getpriority("PLAYWRIGHT_ABORT_REQUEST") == 20  # the user's (project)


def test_explicit_none_cannot_switch_the_checks_off(tmp_path):
    policy = write_policy(tmp_path, [local("pw-page.test")])
    crawler = get_crawler(Spider, gate_settings(tmp_path, policy, addon=True, PLAYWRIGHT_ABORT_REQUEST=None))
    assert isinstance(crawler.settings["PLAYWRIGHT_ABORT_REQUEST"], SubresourceGate)


def test_browser_host_rules(tmp_path):
    from scrapy_gdpr.playwright import browser_host_rules
    from scrapy_gdpr.policy import load_policy

    policy = load_policy(write_policy(tmp_path, [
        {"domain": "example.org", "include_subdomains": True},
        {"domain": "shop.example.net"},
        {"domain": "local.test", "allow_private_network": True},
        {"domain": "10.1.2.3"},
        {"domain": "[::1]"},
    ]))
    assert browser_host_rules(policy) == (
        "EXCLUDE example.org, EXCLUDE *.example.org, EXCLUDE shop.example.net, EXCLUDE local.test, "
        "EXCLUDE 10.1.2.3, EXCLUDE [::1], MAP * ~NOTFOUND"
    )
    # the user's mapping is kept for listed hosts only; their other rules are dropped
    rules = browser_host_rules(policy, "MAP *.test 127.0.0.1, EXCLUDE evil.example, MAP *.net 10.0.0.9", ("proxy.corp",))
    assert rules == (
        "EXCLUDE example.org, EXCLUDE *.example.org, MAP shop.example.net 10.0.0.9, MAP local.test 127.0.0.1, "
        "EXCLUDE 10.1.2.3, EXCLUDE [::1], EXCLUDE proxy.corp, MAP * ~NOTFOUND"
    )


def test_addon_puts_host_rules_in_launch_options(tmp_path):
    policy = write_policy(tmp_path, [local("pw-page.test")])
    crawler = get_crawler(Spider, gate_settings(
        tmp_path, policy, addon=True,
        PLAYWRIGHT_LAUNCH_OPTIONS={"args": ["--no-sandbox", "--host-resolver-rules=MAP * 127.0.0.1"],
                                   "proxy": {"server": "http://proxy.corp:3128"}},
        PLAYWRIGHT_CONTEXTS={"persistent": {"user_data_dir": str(tmp_path / "profile")}, "plain": {}},
    ))
    launch = crawler.settings.getdict("PLAYWRIGHT_LAUNCH_OPTIONS")
    assert launch["args"] == [
        "--no-sandbox",
        "--host-resolver-rules=MAP pw-page.test 127.0.0.1, MAP proxy.corp 127.0.0.1, MAP * ~NOTFOUND",
    ]
    contexts = crawler.settings.getdict("PLAYWRIGHT_CONTEXTS")
    assert contexts["persistent"]["args"] == ["--host-resolver-rules=EXCLUDE pw-page.test, MAP * ~NOTFOUND"]
    assert contexts["plain"] == {}


def test_no_host_rules_for_other_browsers(tmp_path, caplog):
    policy = write_policy(tmp_path, [local("pw-page.test")])
    crawler = get_crawler(Spider, gate_settings(tmp_path, policy, addon=True, PLAYWRIGHT_BROWSER_TYPE="firefox"))
    assert not crawler.settings.getdict("PLAYWRIGHT_LAUNCH_OPTIONS")
    assert "redirects followed inside the browser are not" in caplog.text


# --------------------------------------------------------------------------- the predicate alone


@coroutine_test
async def test_predicate_decisions(tmp_path, mockserver):
    port = mockserver.port
    append_objection(tmp_path / "objections.txt", "prefix", f"http://pw-page.test:{port}/people/")
    policy = write_policy(tmp_path, [local("pw-page.test"), {"domain": "pw-private.test"}])
    crawler = get_crawler(Spider, gate_settings(tmp_path, policy, addon=True, PLAYWRIGHT_ABORT_REQUEST=user_abort_async))
    predicate = crawler.settings["PLAYWRIGHT_ABORT_REQUEST"]
    page = f"http://pw-page.test:{port}"

    # no robots.txt service: everything that needs it is aborted (fail closed)
    assert await predicate(FakeRequest(f"{page}/ok.png")) is True
    [line] = refusals(tmp_path)
    assert line["kind"] == "subresource" and line["reason"] == "undecided"
    assert "no robots.txt service" in line["detail"] and "browser image request" in line["detail"]

    robots = get_runtime(crawler).robots = StubRobots()
    assert await predicate(FakeRequest(f"{page}/ok.png")) is False
    assert await predicate(FakeRequest("data:image/png;base64,AAAA")) is False
    assert await predicate(FakeRequest(f"{page}/style.css", "stylesheet")) is True  # the user's predicate
    expected = {
        f"{page}/robots-blocked/a.js": "robots",
        f"{page}/people/jane.png": "objection",
        f"http://pw-unlisted.test:{port}/x.png": "domain",
        f"http://pw-private.test:{port}/x.png": "private_network",
        "http://10.0.0.1/x.png": "domain",
        "ws://pw-page.test/socket": "domain",
    }
    for url in expected:
        assert await predicate(FakeRequest(url)) is True, url
    got = {r["url"]: r["reason"] for r in refusals(tmp_path)[1:]}
    assert got == expected
    # every refusal cites a policy clause (robots.txt decisions the crawler's product token)
    clauses = {r["url"]: r["clause"] for r in refusals(tmp_path)}
    assert all(clauses.values()), clauses
    assert clauses[f"{page}/robots-blocked/a.js"].startswith("crawler.product_token (line ")
    assert robots.asked == [f"{page}/ok.png", f"{page}/style.css", f"{page}/robots-blocked/a.js"]
    assert crawler.stats.get_value("gdpr/blocked/robots") == 1


@coroutine_test
async def test_predicate_called_from_another_thread(tmp_path, mockserver):
    """scrapy-playwright's threaded event loop (Windows): the check runs on the reactor."""
    policy = write_policy(tmp_path, [local("pw-page.test")])
    crawler = get_crawler(Spider, gate_settings(tmp_path, policy, addon=True))
    get_runtime(crawler).robots = StubRobots()
    predicate = crawler.settings["PLAYWRIGHT_ABORT_REQUEST"]
    results: dict[str, bool] = {}

    def in_thread() -> None:
        async def check() -> None:
            for url in (mockserver.url("/ok.png", host="pw-page.test"), mockserver.url("/x", host="pw-other.test")):
                results[url] = await predicate(FakeRequest(url))

        asyncio.run(check())

    thread = threading.Thread(target=in_thread)
    thread.start()
    await asyncio.to_thread(thread.join)
    assert list(results.values()) == [False, True]


# --------------------------------------------------------------------------- real Chromium


@pytest.mark.requires_chromium
@pytest.mark.slow
@coroutine_test
async def test_browser_subresources_are_gated(tmp_path, logged_mockserver):
    path = chromium_path()
    if path is None:
        require_service("chromium", "install it with 'apt-get install chromium' or set GDPR_TEST_CHROMIUM")
    port = logged_mockserver.port
    append_objection(tmp_path / "objections.txt", "url", f"http://pw-page.test:{port}/people/jane.png")
    policy = write_policy(tmp_path, [local("pw-page.test"), local("pw-cdn.test"), {"domain": "pw-private.test"}])
    settings = gate_settings(
        tmp_path,
        policy,
        ADDONS={PlaywrightHookAddon: 0},
        **playwright_settings(path),
        PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT=30_000,
        PLAYWRIGHT_ABORT_REQUEST="tests.test_playwright.user_abort",
        TWISTED_REACTOR="twisted.internet.asyncioreactor.AsyncioSelectorReactor",
    )
    crawler = get_crawler(BrowserSpider, settings)
    robots = get_runtime(crawler).robots = StubRobots()
    page = logged_mockserver.url("/index.html", host="pw-page.test")
    await crawler.crawl_async(url=page)

    assert crawler.spider.seen == [(page, 200)]
    fetched = {f"{host}{path}" for _, host, path in logged_mockserver.requests()}
    # allowed sub-resources load, from the page's host and from another listed host
    assert {"pw-page.test/index.html", "pw-page.test/app.js", "pw-page.test/ok.png", "pw-cdn.test/cdn.png"} <= fetched
    # refused ones are never requested
    for never in ("pw-cdn.test/robots-blocked/x.png", "pw-page.test/people/jane.png", "pw-page.test/user-blocked.png"):
        assert never not in fetched
    assert not any(host.startswith("pw-unlisted") for host in fetched)
    lines = {r["url"].replace(f":{port}", ""): r for r in refusals(tmp_path)}
    assert {url: r["reason"] for url, r in lines.items()} == {
        "http://pw-cdn.test/robots-blocked/x.png": "robots",
        "http://pw-unlisted.test/tracker.png": "domain",
        "http://pw-page.test/people/jane.png": "objection",
        "http://pw-private.test/x.png": "private_network",
        "http://169.254.169.254/latest/meta-data/": "domain",
        # the redirect hop to an unlisted host: checked by the page's hop guard
        "http://pw-unlisted.test/redirected.png": "domain",
    }
    assert "redirect hop of a browser image request" in lines["http://pw-unlisted.test/redirected.png"]["detail"]
    assert all(r["kind"] == "subresource" for r in lines.values())
    assert f"from {page}" in lines["http://pw-unlisted.test/tracker.png"]["detail"]
    assert not any(host.startswith("pw-private") for host in fetched)
    # the first URL of the redirect was fetched, its hop to an unlisted host was not
    assert any(p.startswith("pw-page.test/_/respond?status=302") for p in fetched)
    assert not any(p.split("?")[0].endswith("redirected.png") for p in fetched)
    args = crawler.settings.getdict("PLAYWRIGHT_LAUNCH_OPTIONS")["args"]
    assert args[-1] == (
        "--host-resolver-rules=MAP pw-page.test 127.0.0.1, MAP pw-cdn.test 127.0.0.1, "
        "MAP pw-private.test 127.0.0.1, MAP * ~NOTFOUND"
    )
    assert sum(a.startswith("--host-resolver-rules=") for a in args) == 1
    for reason, count in (("robots", 1), ("domain", 3), ("objection", 1), ("private_network", 1)):
        assert crawler.stats.get_value(f"gdpr/blocked/{reason}") == count
    assert crawler.stats.get_value("gdpr/playwright/aborted") == 6  # with the redirect hop
    assert crawler.stats.get_value("playwright/request_count/aborted") == 6  # with the user's
    assert f"http://pw-cdn.test:{port}/cdn.png" in robots.asked


@pytest.mark.requires_chromium
@pytest.mark.slow
@coroutine_test
async def test_browser_redirect_hops_are_gated(tmp_path, logged_mockserver):
    """Every hop Chromium follows passes the gate, robots.txt and the objection list."""
    from scrapy_gdpr.robots import RobotsGateMiddleware
    from tests.test_robots import UA

    path = chromium_path()
    if path is None:
        require_service("chromium", "install it with 'apt-get install chromium' or set GDPR_TEST_CHROMIUM")
    port = logged_mockserver.port
    append_objection(tmp_path / "objections.txt", "prefix", f"http://pw-page.test:{port}/people/")
    policy = write_policy(
        tmp_path,
        [local("pw-page.test", deny_paths=["/admin/"]), local("pw-cdn.test")],
    )
    settings = gate_settings(
        tmp_path,
        policy,
        ADDONS={PlaywrightHookAddon: 0},
        **playwright_settings(path),
        DOWNLOADER_MIDDLEWARES={"scrapy_gdpr.gate.PolicyGateMiddleware": 40, RobotsGateMiddleware: 100},
        ROBOTSTXT_OBEY=False,
        USER_AGENT=UA,
        PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT=30_000,
        TWISTED_REACTOR="twisted.internet.asyncioreactor.AsyncioSelectorReactor",
    )

    class HopSpider(BrowserSpider):
        async def start(self):
            # the page itself, and a page request whose browser-side redirect leads to the objection
            yield Request(self.url, meta={"playwright": True})
            hop = logged_mockserver.url(
                "/_/respond?status=302&h=Location:/people/jane.html", host="pw-page.test"
            )
            meta = {"playwright": True, "playwright_page_init_callback": "tests.test_playwright.record_init"}
            yield Request(hop, meta=meta, errback=self.failed, dont_filter=True)

        def failed(self, failure):
            self.seen.append((failure.request.url, getattr(failure.value, "reason", repr(failure.value))))

    crawler = get_crawler(HopSpider, settings)
    page = logged_mockserver.url("/hops.html", host="pw-page.test")
    hop_page = logged_mockserver.url("/_/respond?status=302&h=Location:/people/jane.html", host="pw-page.test")
    INITIALISED.clear()
    await crawler.crawl_async(url=page)

    fetched = [f"{host}{p}" for _, host, p in logged_mockserver.requests()]
    # the allowed hop was followed; no refused hop reached the server
    assert "pw-page.test/ok.png" in fetched
    never = {"pw-cdn.test/robots-blocked/hop.png", "pw-page.test/people/jane.png", "pw-page.test/ADMIN/hop.png",
             "pw-page.test/people/jane.html"}
    assert never.isdisjoint(f.split("?")[0] for f in fetched), fetched
    lines = [r for r in refusals(tmp_path) if r["kind"] == "subresource"]
    got = {r["url"].replace(f":{port}", ""): r for r in lines}
    assert {url: r["reason"] for url, r in got.items()} == {
        "http://pw-cdn.test/robots-blocked/hop.png": "robots",
        "http://pw-page.test/people/jane.png": "objection",
        "http://pw-page.test/people/jane.png?2": "objection",
        "http://pw-page.test/ADMIN/hop.png": "domain",
        "http://pw-page.test/people/jane.html": "objection",
    }
    for r in got.values():
        assert "redirect hop of a browser" in r["detail"] and r["clause"], r
    assert got["http://pw-cdn.test/robots-blocked/hop.png"]["clause"].startswith("crawler.product_token")
    assert f"covered by the objection prefix http://pw-page.test:{port}/people/" in (
        got["http://pw-page.test/people/jane.png"]["detail"]
    )
    assert crawler.stats.get_value("gdpr/playwright/redirect_hops") >= 2  # /ok.png and the first of two
    assert crawler.stats.get_value("gdpr/blocked/objection") == 3
    assert (page, 200) in crawler.spider.seen
    assert INITIALISED == [hop_page]  # the user's page init callback still ran
    # the page request redirected (in the browser) to the objection is refused like a
    # Scrapy request, not a download error
    assert (hop_page, "objection") in crawler.spider.seen
    assert crawler.stats.get_value("log_count/ERROR") is None


def test_browser_requests_get_the_page_guard(tmp_path):
    """The gate middleware makes scrapy-playwright guard the page before it navigates,
    keeping the user's own page init callback; the meta stays picklable."""
    import pickle

    from scrapy_gdpr.playwright import GUARD_PAGE, prepare_request

    policy = write_policy(tmp_path, [local("pw-page.test")])
    crawler = get_crawler(Spider, gate_settings(tmp_path, policy, addon=True))
    predicate = crawler.settings["PLAYWRIGHT_ABORT_REQUEST"]
    request = Request("http://pw-page.test/", meta={"playwright": True, "playwright_page_init_callback": "my.init"})
    prepare_request(crawler, request)
    prepare_request(crawler, request)  # a retry or redirect copy: not wrapped twice
    assert request.meta["playwright_page_init_callback"] == GUARD_PAGE == "scrapy_gdpr.playwright.guard_page"
    assert request.meta["gdpr_page_init_callback"] == "my.init"
    assert request.meta["gdpr_browser_gate"] == predicate.key
    pickle.dumps(request.meta)
    plain = Request("http://pw-page.test/")
    prepare_request(crawler, plain)
    assert "playwright_page_init_callback" not in plain.meta


@pytest.mark.requires_chromium
@pytest.mark.slow
@coroutine_test
async def test_pages_opened_by_the_page_are_not_fetched_unchecked(tmp_path, logged_mockserver):
    """scrapy-playwright does not route a window the page opens; its first request
    started before any guard could be put on it, so it is aborted and audited."""
    path = chromium_path()
    if path is None:
        require_service("chromium", "install it with 'apt-get install chromium' or set GDPR_TEST_CHROMIUM")
    policy = write_policy(tmp_path, [local("pw-page.test")])
    settings = gate_settings(
        tmp_path,
        policy,
        ADDONS={PlaywrightHookAddon: 0},
        **playwright_settings(path),
        PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT=30_000,
        TWISTED_REACTOR="twisted.internet.asyncioreactor.AsyncioSelectorReactor",
    )
    crawler = get_crawler(BrowserSpider, settings)
    get_runtime(crawler).robots = StubRobots()
    page = logged_mockserver.url("/popup.html", host="pw-page.test")

    class Waiting(BrowserSpider):
        async def start(self):
            yield Request(self.url, meta={"playwright": True, "playwright_page_methods": [
                PageMethod("wait_for_timeout", 1500)]})

    crawler = get_crawler(Waiting, settings)
    get_runtime(crawler).robots = StubRobots()
    await crawler.crawl_async(url=page)
    assert crawler.spider.seen == [(page, 200)]
    fetched = [f"{host}{p}" for _, host, p in logged_mockserver.requests()]
    assert "pw-page.test/ok.png?popup" not in fetched, fetched
    lines = [r for r in refusals(tmp_path) if r["url"].endswith("/ok.png?popup")]
    assert lines  # Chromium may try the window's navigation twice
    for line in lines:
        assert line["reason"] == "undecided" and line["kind"] == "subresource"
        assert "started before the page was prepared" in line["detail"]
        assert line["clause"].startswith("domains (line ")

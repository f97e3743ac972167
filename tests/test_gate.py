"""The request gate: real crawls against the mock server."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from typing import TYPE_CHECKING, Any

import pytest
from scrapy import Request, Spider
from scrapy.utils.test import get_crawler
from twisted.internet import defer

from scrapy_gdpr.addon import Addon
from scrapy_gdpr.gate import PolicyGateMiddleware, address_class
from scrapy_gdpr.internal import internal_meta
from scrapy_gdpr.objections import ObjectionFileError, append_objection
from scrapy_gdpr.runtime import get_runtime
from tests.utils import DATA, coroutine_test

if TYPE_CHECKING:
    from pathlib import Path

VALID = DATA / "policies" / "valid.yaml"
from tests.utils import domains_policy as write_policy

# --------------------------------------------------------------------------- helpers


def gate_settings(tmp_path: Path, policy: Path, *, addon: bool = False, **extra: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "GDPR_POLICY": str(policy),
        "GDPR_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "GDPR_REPORT_DIR": str(tmp_path / "reports"),
        "GDPR_LEDGER": f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        "RETRY_ENABLED": False,
        "DOWNLOAD_TIMEOUT": 10,
        **extra,
    }
    if addon:
        settings["ADDONS"] = {Addon: 0}
    else:
        settings.setdefault("DOWNLOADER_MIDDLEWARES", {PolicyGateMiddleware: 40})
    return settings


def refusals(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [r for r in lines if r.get("decision") == "refused"]


class UrlSpider(Spider):
    """Requests ``urls`` (with ``meta``); records responses and failures."""

    name = "gate"
    custom_settings = {"HTTPERROR_ALLOW_ALL": True}

    def __init__(self, urls: list[str] = (), meta: dict[str, Any] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.urls = list(urls)
        self.meta = meta or {}
        self.seen: list[str] = []
        self.failed: dict[str, str] = {}

    async def start(self):
        for url in self.urls:
            yield Request(url, meta=dict(self.meta), errback=self.failure, dont_filter=True)

    def parse(self, response):
        self.seen.append(response.url)

    def failure(self, failure):
        request = failure.request
        reason = getattr(failure.value, "reason", None) or failure.value.__class__.__name__
        self.failed[request.url] = reason


async def crawl(tmp_path: Path, policy: Path, urls: list[str], *, spider: type[Spider] = UrlSpider, addon: bool = False, settings: dict[str, Any] | None = None, **kw: Any):
    crawler = get_crawler(spider, gate_settings(tmp_path, policy, addon=addon, **(settings or {})))
    await crawler.crawl_async(urls=urls, **kw)
    return crawler


def hosts_requested(server) -> list[str]:
    return [f"{host}{path}" for _, host, path in server.requests()]


class SpyResolver:
    """Stands in for ``reactor.resolver``: records names, resolves ``*.test`` locally."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.names: list[str] = []
        self.answers = answers or {}

    def getHostByName(self, name: str, timeout: Any = ()) -> defer.Deferred:
        self.names.append(name)
        if name in self.answers:
            answer = self.answers[name]
            if answer is None:
                return defer.Deferred()  # never answers
            if isinstance(answer, Exception):
                return defer.fail(answer)
            return defer.succeed(answer)
        if name.endswith(".test"):
            return defer.succeed("127.0.0.1")
        return defer.fail(OSError(f"no such host {name}"))


@pytest.fixture
def spy_resolver(monkeypatch):
    from twisted.internet import reactor

    spy = SpyResolver()
    monkeypatch.setattr(reactor, "resolver", spy)
    return spy


def local(domain: str, **rule: Any) -> dict[str, Any]:
    """A domain rule for a mock-server host (which resolves to 127.0.0.1)."""
    return {"domain": domain, "allow_private_network": True, **rule}


# --------------------------------------------------------------------------- domains


@coroutine_test
async def test_unlisted_domain_never_contacted_with_addon(tmp_path, logged_mockserver):
    policy = write_policy(tmp_path, [local("gate-a.test")])
    url = logged_mockserver.url("/index.html", host="gate-unlisted.test")
    crawler = await crawl(tmp_path, policy, [url], addon=True)
    assert crawler.spider.seen == []
    assert crawler.spider.failed == {url: "domain"}
    # not even its robots.txt
    assert logged_mockserver.requests() == []
    assert crawler.stats.get_value("gdpr/blocked/domain") == 1
    [line] = refusals(tmp_path)
    assert line["url"] == url and line["reason"] == "domain" and line["kind"] == "request"
    assert line["clause"].startswith("domains (line ")
    assert "gate-unlisted.test is not a listed domain" in line["detail"]
    section = get_runtime(crawler).report_sections["gate"]
    assert section["domains"][0]["domain"] == "gate-a.test"
    assert section["objections"] == {"path": str(tmp_path / "objections.txt"), "entries_at_start": 0}


@coroutine_test
async def test_listed_domain_is_fetched(tmp_path, logged_mockserver):
    policy = write_policy(tmp_path, [local("gate-a.test")])
    url = logged_mockserver.url("/index.html", host="gate-a.test")
    crawler = await crawl(tmp_path, policy, [url])
    assert crawler.spider.seen == [url]
    assert hosts_requested(logged_mockserver) == ["gate-a.test/index.html"]
    assert refusals(tmp_path) == []
    assert crawler.stats.get_value("gdpr/blocked/domain") is None


@coroutine_test
async def test_subdomains_only_when_included(tmp_path, logged_mockserver):
    off = write_policy(tmp_path, [local("gate-a.test")])
    sub = logged_mockserver.url("/index.html", host="www.gate-a.test")
    crawler = await crawl(tmp_path, off, [sub])
    assert crawler.spider.failed == {sub: "domain"}
    assert logged_mockserver.requests() == []

    on = write_policy(tmp_path, [local("gate-a.test", include_subdomains=True)])
    deep = logged_mockserver.url("/index.html", host="x.y.gate-a.test")
    lookalike = logged_mockserver.url("/index.html", host="evilgate-a.test")
    crawler = await crawl(tmp_path, on, [sub, deep, lookalike])
    assert sorted(crawler.spider.seen) == sorted([sub, deep])
    assert crawler.spider.failed == {lookalike: "domain"}
    assert sorted(hosts_requested(logged_mockserver)) == ["www.gate-a.test/index.html", "x.y.gate-a.test/index.html"]


@coroutine_test
async def test_allow_and_deny_paths(tmp_path, logged_mockserver):
    policy = write_policy(
        tmp_path, [local("gate-a.test", allow_paths=["/public/"], deny_paths=["/public/secret/"])]
    )
    ok = logged_mockserver.url("/public/page.html", host="gate-a.test")
    outside = logged_mockserver.url("/index.html", host="gate-a.test")
    denied = [
        logged_mockserver.url(p, host="gate-a.test")
        for p in ("/public/secret/a.html", "/public/%73ecret/b.html", "/public/x/../secret/c.html", "/public//secret/d.html")
    ]
    crawler = await crawl(tmp_path, policy, [ok, outside, *denied])
    assert crawler.spider.seen == [ok]
    assert set(crawler.spider.failed) == {outside, *denied}
    assert set(crawler.spider.failed.values()) == {"domain"}
    assert hosts_requested(logged_mockserver) == ["gate-a.test/public/page.html"]
    assert crawler.stats.get_value("gdpr/blocked/domain") == 5
    lines = {r["url"]: r for r in refusals(tmp_path)}
    assert lines[outside]["clause"].startswith("domains[0].allow_paths (line ")
    for url in denied:
        assert lines[url]["clause"].startswith("domains[0].deny_paths[0] (line ")


@coroutine_test
async def test_internal_requests_pass_path_rules_but_not_domain_rules(tmp_path, logged_mockserver):
    policy = write_policy(
        tmp_path,
        [local("gate-a.test", allow_paths=["/public/"], terms={
            "url": logged_mockserver.url("/terms.html", host="gate-terms.test"),
            "verdict": "permits", "reviewed_on": "2026-10-01", "reviewed_by": "Dana Protection",
        })],
    )
    robots = logged_mockserver.url("/robots.txt", host="gate-a.test")
    other_robots = logged_mockserver.url("/robots.txt", host="gate-other.test")
    crawler = await crawl(tmp_path, policy, [robots, other_robots], meta=internal_meta("robots"))
    assert crawler.spider.seen == [robots]
    assert crawler.spider.failed == {other_robots: "domain"}

    # the reviewed terms page passes the domain check although it is on another host
    terms = logged_mockserver.url("/terms.html", host="gate-terms.test")
    not_terms = logged_mockserver.url("/other.html", host="gate-terms.test")
    crawler = await crawl(tmp_path, policy, [terms, not_terms], meta=internal_meta("terms"))
    assert crawler.spider.seen == [terms]
    assert crawler.spider.failed == {not_terms: "domain"}
    # ...but only when it is a terms request
    crawler = await crawl(tmp_path, policy, [terms])
    assert crawler.spider.failed == {terms: "domain"}
    assert hosts_requested(logged_mockserver) == ["gate-a.test/robots.txt", "gate-terms.test/terms.html"]


@coroutine_test
async def test_terms_pages_still_get_jurisdiction_and_objection_checks(tmp_path, spy_resolver):
    from scrapy_gdpr.gate import policy_gate

    terms = {"verdict": "permits", "reviewed_on": "2026-10-01", "reviewed_by": "Dana Protection"}
    policy = write_policy(
        tmp_path,
        [
            {"domain": "gate-a.test", "terms": {**terms, "url": "http://legal.example.cn/terms.html"}},
            {"domain": "gate-b.test", "terms": {**terms, "url": "http://legal.gate-c.test/terms.html"}},
        ],
        jurisdictions={"exclude_tlds": ["cn"]},
    )
    append_objection(tmp_path / "objections.txt", "domain", "gate-c.test")
    crawler = get_crawler(Spider, gate_settings(tmp_path, policy))
    gate = policy_gate(crawler, get_runtime(crawler))
    refusal = await gate.check("http://legal.example.cn/terms.html", "terms")
    assert refusal is not None and refusal.reason == "jurisdiction"
    refusal = await gate.check("http://legal.gate-c.test/terms.html", "terms")
    assert refusal is not None and refusal.reason == "objection"
    assert spy_resolver.names == []


# --------------------------------------------------------------------------- jurisdictions


@coroutine_test
async def test_jurisdictions_refused_before_any_lookup(tmp_path, logged_mockserver, spy_resolver):
    policy = write_policy(
        tmp_path,
        [local("gate-jur.test", include_subdomains=True), local("shop.example.cn")],
        jurisdictions={"exclude_tlds": ["cn", ".ru"], "exclude_domains": ["eu.gate-jur.test"]},
    )
    by_tld = "http://shop.example.cn/index.html"
    unlisted_tld = "http://www.example.ru/"
    by_domain = logged_mockserver.url("/index.html", host="eu.gate-jur.test")
    below_domain = logged_mockserver.url("/index.html", host="a.eu.gate-jur.test")
    allowed = logged_mockserver.url("/index.html", host="us.gate-jur.test")
    crawler = await crawl(tmp_path, policy, [by_tld, unlisted_tld, by_domain, below_domain, allowed])
    assert crawler.spider.seen == [allowed]
    assert crawler.spider.failed == dict.fromkeys((by_tld, unlisted_tld, by_domain, below_domain), "jurisdiction")
    # no DNS for refused hosts, and no contact
    assert spy_resolver.names == ["us.gate-jur.test"]
    assert hosts_requested(logged_mockserver) == ["us.gate-jur.test/index.html"]
    assert crawler.stats.get_value("gdpr/blocked/jurisdiction") == 4
    lines = {r["url"]: r for r in refusals(tmp_path)}
    assert lines[by_tld]["clause"].startswith("jurisdictions.exclude_tlds[0] (line ")
    assert lines[unlisted_tld]["clause"].startswith("jurisdictions.exclude_tlds[1] (line ")
    assert lines[below_domain]["clause"].startswith("jurisdictions.exclude_domains[0] (line ")


# --------------------------------------------------------------------------- objections


@coroutine_test
async def test_objections_url_prefix_domain_and_variants(tmp_path, logged_mockserver):
    port = logged_mockserver.port
    (tmp_path / "objections.txt").write_text(
        "# objections\n"
        f"url http://gate-a.test:{port}/people/jane.html\n"
        f"prefix http://gate-a.test:{port}/people/joe/\n"
        "domain gate-obj.test   # a whole site\n",
        encoding="utf-8",
    )
    policy = write_policy(tmp_path, [local("gate-a.test"), local("gate-obj.test", include_subdomains=True)])
    refused = [
        f"http://gate-a.test:{port}/people/jane.html",
        f"http://GATE-A.test:{port}/people/./jane.html#top",
        f"http://gate-a.test.:{port}/people/%6Aane.html",
        f"https://gate-a.test:{port}/people/jane.html",  # the same page over https
        f"http://gate-a.test:{port}/people/joe/",
        f"http://gate-a.test:{port}/people/joe/photos/1.html?b=2&a=1",
        f"http://gate-obj.test:{port}/index.html",
        f"http://www.gate-obj.test:{port}/index.html",
        f"http://gate-obj.test:{port}/robots.txt",
    ]
    refused = [Request(u).url for u in refused]  # as Scrapy normalises them
    allowed = [f"http://gate-a.test:{port}/people/janet.html", f"http://gate-a.test:{port}/people/joe"]
    crawler = await crawl(tmp_path, policy, refused + allowed)
    assert sorted(crawler.spider.seen) == sorted(allowed)
    assert crawler.spider.failed == dict.fromkeys(refused, "objection")
    assert sorted(hosts_requested(logged_mockserver)) == ["gate-a.test/people/janet.html", "gate-a.test/people/joe"]
    assert crawler.stats.get_value("gdpr/blocked/objection") == len(refused)
    lines = {r["url"]: r for r in refusals(tmp_path)}
    assert len(lines) == len(refused)
    assert "objections.txt:2" in lines[refused[1]]["detail"]
    assert "prefix" in lines[refused[5]]["detail"]
    assert "domain gate-obj.test" in lines[refused[7]]["detail"]
    assert lines[refused[0]]["clause"].startswith("objections.path")


class OneByOneSpider(UrlSpider):
    """Requests its URLs one after the other, appending an objection before the last."""

    objection_file: Path

    async def start(self):
        yield Request(self.urls[0], errback=self.failure)

    def parse(self, response):
        self.seen.append(response.url)
        append_objection(self.objection_file, "prefix", self.urls[1].rsplit("/", 1)[0] + "/")
        yield Request(self.urls[1], errback=self.failure)


@coroutine_test
async def test_objection_appended_during_crawl_blocks_next_request(tmp_path, logged_mockserver):
    policy = write_policy(tmp_path, [local("gate-a.test")])
    first = logged_mockserver.url("/index.html", host="gate-a.test")
    second = logged_mockserver.url("/people/page.html", host="gate-a.test")
    OneByOneSpider.objection_file = tmp_path / "objections.txt"
    crawler = get_crawler(OneByOneSpider, gate_settings(tmp_path, policy))
    await crawler.crawl_async(urls=[first, second])
    assert crawler.spider.seen == [first]
    assert crawler.spider.failed == {second: "objection"}
    assert hosts_requested(logged_mockserver) == ["gate-a.test/index.html"]


@coroutine_test
async def test_malformed_objection_file_stops_crawl(tmp_path, logged_mockserver):
    (tmp_path / "objections.txt").write_text("url https://ok.example/\nurll https://typo.example/\n", encoding="utf-8")
    policy = write_policy(tmp_path, [local("gate-a.test")])
    with pytest.raises(ObjectionFileError, match=r"objections.txt:2: expected"):
        await crawl(tmp_path, policy, [logged_mockserver.url("/", host="gate-a.test")])
    assert logged_mockserver.requests() == []


@coroutine_test
async def test_gdpr_objections_setting_overrides_policy(tmp_path, logged_mockserver):
    other = tmp_path / "elsewhere" / "objections.txt"
    url = logged_mockserver.url("/index.html", host="gate-a.test")
    append_objection(other, "url", url)
    policy = write_policy(tmp_path, [local("gate-a.test")])
    crawler = await crawl(tmp_path, policy, [url], settings={"GDPR_OBJECTIONS": str(other)})
    assert crawler.spider.failed == {url: "objection"}
    [line] = refusals(tmp_path)
    assert line["clause"] == "GDPR_OBJECTIONS setting"


@coroutine_test
async def test_objection_file_broken_during_crawl_fails_closed(tmp_path, logged_mockserver):
    objections = tmp_path / "objections.txt"
    objections.write_text("", encoding="utf-8")
    policy = write_policy(tmp_path, [local("gate-a.test")])
    first = logged_mockserver.url("/index.html", host="gate-a.test")
    second = logged_mockserver.url("/page.html", host="gate-a.test")

    class BreakingSpider(OneByOneSpider):
        def parse(self, response):
            self.seen.append(response.url)
            with objections.open("a", encoding="utf-8") as fh:
                fh.write("nonsense line\n")
            yield Request(self.urls[1], errback=self.failure)

    crawler = get_crawler(BreakingSpider, gate_settings(tmp_path, policy))
    await crawler.crawl_async(urls=[first, second])
    assert crawler.spider.failed == {second: "undecided"}
    [line] = refusals(tmp_path)
    assert "objections.txt:1" in line["detail"]


# --------------------------------------------------------------------------- private networks


@coroutine_test
async def test_private_network_refused_unless_allowed(tmp_path, logged_mockserver, spy_resolver):
    policy = write_policy(tmp_path, [{"domain": "gate-a.test"}, local("gate-b.test")])
    private = logged_mockserver.url("/index.html", host="gate-a.test")
    allowed = logged_mockserver.url("/index.html", host="gate-b.test")
    crawler = await crawl(tmp_path, policy, [private, allowed])
    assert crawler.spider.seen == [allowed]
    assert crawler.spider.failed == {private: "private_network"}
    assert hosts_requested(logged_mockserver) == ["gate-b.test/index.html"]
    assert crawler.stats.get_value("gdpr/blocked/private_network") == 1
    [line] = refusals(tmp_path)
    assert line["clause"].startswith("domains[0].allow_private_network")
    assert "gate-a.test resolves to 127.0.0.1, a loopback address" in line["detail"]


@coroutine_test
async def test_literal_and_metadata_addresses_refused_without_connecting(tmp_path, spy_resolver):
    policy = write_policy(
        tmp_path,
        [
            {"domain": "10.1.2.3"},
            {"domain": "[fd00::1]"},
            # metadata services are refused even where private networks are allowed
            local("169.254.169.254"),
            local("metadata.google.internal"),
            {"domain": "gate-rebind.test"},
        ],
    )
    spy_resolver.answers["gate-rebind.test"] = "::ffff:192.168.0.7"
    urls = [
        "http://10.1.2.3/",
        "http://[fd00::1]:8080/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://gate-rebind.test/",
    ]
    crawler = await crawl(tmp_path, policy, urls)
    assert crawler.spider.failed == dict.fromkeys(urls, "private_network")
    assert spy_resolver.names == ["gate-rebind.test"]  # literal addresses and metadata names: no DNS
    details = {r["url"]: r["detail"] for r in refusals(tmp_path)}
    assert "a private address" in details[urls[0]]
    assert "cloud metadata" in details[urls[2]]
    assert "cloud metadata" in details[urls[3]]
    assert "embedded in ::ffff:c0a8:7" in details[urls[4]]


@coroutine_test
async def test_dns_failure_and_timeout_fail_closed(tmp_path, spy_resolver):
    spy_resolver.answers["gate-slow.test"] = None  # never answers
    spy_resolver.answers["gate-nx.test"] = OSError("NXDOMAIN")
    policy = write_policy(tmp_path, [{"domain": "gate-slow.test"}, {"domain": "gate-nx.test"}])
    urls = ["http://gate-slow.test/", "http://gate-nx.test/"]
    crawler = await crawl(tmp_path, policy, urls, settings={"GDPR_DNS_TIMEOUT": 0.2})
    assert crawler.spider.failed == dict.fromkeys(urls, "undecided")
    details = {r["url"]: r["detail"] for r in refusals(tmp_path)}
    assert "TimeoutError" in details[urls[0]] or "CancelledError" in details[urls[0]]
    assert "NXDOMAIN" in details[urls[1]]


@coroutine_test
async def test_resolution_without_a_reactor_checks_every_address(tmp_path, monkeypatch):
    """Scrapy can run without a Twisted reactor; then asyncio's getaddrinfo is used."""
    import scrapy_gdpr.gate.scope as gate_module

    policy = write_policy(tmp_path, [{"domain": "localhost"}, {"domain": "gate-nowhere.invalid"}])
    crawler = get_crawler(Spider, gate_settings(tmp_path, policy))
    gate = gate_module.policy_gate(crawler, get_runtime(crawler))
    monkeypatch.setattr(gate_module, "is_reactor_installed", lambda: False)
    refusal = await gate.check("http://localhost/")
    assert refusal is not None and refusal.reason == "private_network"
    assert "localhost resolves to" in refusal.detail and "loopback" in refusal.detail
    monkeypatch.setattr(gate, "dns_timeout", 0.001)
    refusal = await gate.check("http://gate-nowhere.invalid/")
    assert refusal is not None and refusal.reason == "undecided"
    assert "could not be resolved" in refusal.detail


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("8.8.8.8", None),
        ("2001:4860:4860::8888", None),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not globally routable"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("::ffff:10.0.0.1", "private (embedded in ::ffff:a00:1)"),
        ("2002:a9fe:a9fe::", "cloud metadata (embedded in 2002:a9fe:a9fe::)"),
        ("64:ff9b::7f00:1", "loopback (embedded in 64:ff9b::7f00:1)"),
    ],
)
def test_address_classes(address, expected):
    assert address_class(ipaddress.ip_address(address)) == expected


@coroutine_test
async def test_non_http_schemes_refused(tmp_path):
    policy = write_policy(tmp_path, [local("gate-a.test")])
    secret = tmp_path / "secret.txt"
    secret.write_text("secret", encoding="utf-8")
    url = secret.as_uri()
    crawler = await crawl(tmp_path, policy, [url])
    assert crawler.spider.failed == {url: "domain"}
    assert crawler.spider.seen == []


@coroutine_test
async def test_host_decisions_cached_per_host_and_bounded(tmp_path, spy_resolver):
    from scrapy_gdpr.gate import policy_gate

    policy = write_policy(
        tmp_path,
        [local("gate-a.test", include_subdomains=True, deny_paths=["/private/"])],
        jurisdictions={"exclude_domains": ["x.gate-a.test"]},
    )
    crawler = get_crawler(Spider, gate_settings(tmp_path, policy, DNSCACHE_SIZE=4))
    gate = policy_gate(crawler, get_runtime(crawler))
    for round_ in range(2):  # the second round answers from the cache
        for i in range(10):
            assert await gate.check(f"http://h{i}.gate-a.test/p{round_}") is None
            refusal = await gate.check(f"http://h{i}.gate-a.test/private/{round_}")
            assert refusal is not None and refusal.reason == "domain"
            refusal = await gate.check(f"http://h{i}.x.gate-a.test/")
            assert refusal is not None and refusal.reason == "jurisdiction"
            refusal = await gate.check(f"http://h{i}.gate-b.test/")
            assert refusal is not None and refusal.reason == "domain"
    assert len(gate._hosts) <= 4
    # an objection appended meanwhile still comes first for a host already seen
    append_objection(tmp_path / "objections.txt", "domain", "h3.gate-a.test")
    refusal = await gate.check("http://h3.gate-a.test/p0")
    assert refusal is not None and refusal.reason == "objection"


# --------------------------------------------------------------------------- path spellings


@coroutine_test
async def test_deny_paths_cannot_be_bypassed_by_spelling(tmp_path, logged_mockserver):
    policy = write_policy(tmp_path, [local("gate-a.test", deny_paths=["/admin/", "/Private/"])])
    spellings = [
        "/admin%2Fx.html",  # an encoded slash: servers that decode it serve /admin/x.html
        "/admin%2fx.html",
        "/ADMIN/x.html",  # letter case (case-insensitive servers)
        "/Admin/x.html",
        "/private/x.html",  # the rule's own case does not matter either
        "/%61dmin/x.html",
        "/%41DMIN/x.html",
        "/admin%252Fx.html",  # double encoding
        "/x/..%2Fadmin/x.html",  # a dot segment hidden behind an encoded slash
        "/x/%2e%2e/admin/x.html",
        "//admin/x.html",
        "/admin;jsessionid=1/x.html",  # ;params (Tomcat)
        "/admin./x.html",  # trailing dot (IIS)
    ]
    denied = [logged_mockserver.url(p, host="gate-a.test") for p in spellings]
    broken = logged_mockserver.url("/a%2525252Fadmin/x.html", host="gate-a.test")  # never stops decoding
    ok = [logged_mockserver.url(p, host="gate-a.test") for p in ("/admin.html", "/index.html", "/x/admin/y.html")]
    crawler = await crawl(tmp_path, policy, [*denied, broken, *ok])
    assert sorted(crawler.spider.seen) == sorted(ok)
    failed = crawler.spider.failed
    assert {url: failed.get(url) for url in denied} == dict.fromkeys(denied, "domain")
    assert failed[broken] == "malformed_url"
    assert sorted(hosts_requested(logged_mockserver)) == sorted(
        ["gate-a.test/admin.html", "gate-a.test/index.html", "gate-a.test/x/admin/y.html"]
    )
    lines = {r["url"]: r for r in refusals(tmp_path)}
    first = lines[denied[0]]
    assert first["clause"].startswith("domains[0].deny_paths[0] (line ")
    assert first["detail"] == "/admin%2Fx.html (read as /admin/x.html) is under the denied path /admin/"
    assert lines[denied[4]]["clause"].startswith("domains[0].deny_paths[1] (line ")
    assert "cannot be normalised" in lines[broken]["detail"]
    assert lines[broken]["clause"].startswith("domains[0].deny_paths (line ")


@coroutine_test
async def test_allow_paths_are_not_widened_by_normalisation(tmp_path, logged_mockserver):
    policy = write_policy(tmp_path, [local("gate-a.test", allow_paths=["/public/"])])
    inside = [
        logged_mockserver.url(p, host="gate-a.test")
        for p in ("/public/a.html", "/public/%61.html", "/public//b.html", "/public/c%2Fd.html", "/public/./e.html")
    ]
    outside = [
        logged_mockserver.url(p, host="gate-a.test")
        for p in (
            "/public/..%2Fsecret.html",  # decoded by the server: /secret.html
            "/public/%2e%2e%2Fsecret.html",
            "/public%2F..%2Fsecret.html",
            "/public;x/../secret.html",
            "/public/..%252Fsecret.html",
            "/PUBLIC/a.html",  # allow rules match the letter case as written
            "/publicity.html",
        )
    ]
    crawler = await crawl(tmp_path, policy, [*inside, *outside])
    assert sorted(crawler.spider.seen) == sorted(inside)
    assert crawler.spider.failed == dict.fromkeys(outside, "domain")
    assert all(h.startswith("gate-a.test/public/") for h in hosts_requested(logged_mockserver))
    detail = {r["url"]: r["detail"] for r in refusals(tmp_path)}[outside[0]]
    assert detail == "/public/..%2Fsecret.html (read as /secret.html) is not under an allowed path of gate-a.test"


def test_path_forms():
    from scrapy_gdpr.gate import PathError, path_forms

    assert path_forms("/index.html") == ["/index.html"]
    assert path_forms("/admin%2Fx") == ["/admin%2Fx", "/admin/x"]
    assert path_forms("/a;b=1/c") == ["/a;b=1/c", "/a/c"]
    assert "/über/" in path_forms("/%C3%BCber/")
    assert path_forms("/a?q=%2F") == ["/a?q=%2F", "/a?q=/"]
    with pytest.raises(PathError):
        path_forms("/x%252525252F")


# --------------------------------------------------------------------------- malformed URLs


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://x@gate-a.test/", "user information"),
        ("http://user:pw@gate-a.test/", "user information"),
        ("http://gate-a.test:0/", "port is 0"),
        ("http://gate-a.test:99999/", "port is invalid"),
        ("http://gate-a.test:8o/", "port is invalid"),
        ("http://gate-a.test:+80/", "port is invalid"),
        ("http://gate-a.test:\u0668\u0660/", "port is invalid"),  # Arabic-Indic digits
        ("http://gate-a.test:80:90/", "port is invalid"),
        ("http://gate..a.test/", "not a valid host name"),
        ("http://-gate-a.test/", "not a valid host name"),
        ("http://gate%2Da.test/", "not a valid host name"),
        ("http://ga\tte-a.test/", "control character"),
        ("http://gate-a.test/a\x00b", "control character"),
        ("http://gate-a.test/a b", "control character or space"),
        ("http://xn--9999999.gate-a.test/", "punycode"),
        ("http://" + "a" * 64 + ".gate-a.test/", "not a valid host name"),
        ("http://\udcff.gate-a.test/", "international name"),
        ("http://[::1]x/", "malformed"),
    ],
)
@coroutine_test
async def test_malformed_urls_refused_with_their_own_reason(tmp_path, spy_resolver, url, problem):
    from scrapy_gdpr.gate import policy_gate

    policy = write_policy(tmp_path, [local("gate-a.test", include_subdomains=True)])
    crawler = get_crawler(Spider, gate_settings(tmp_path, policy))
    refusal = await policy_gate(crawler, get_runtime(crawler)).check(url)
    assert refusal is not None and refusal.reason == "malformed_url"
    assert problem in refusal.detail and refusal.detail.startswith("the URL is malformed")
    assert refusal.clause.startswith("domains (line ")
    assert spy_resolver.names == []  # never looked up


@pytest.mark.parametrize("url", ["http://gate-a.test:8080/", "http://my_host.gate-a.test/", "http://gate-a.test./",
                                 "http://xn--strae-oqa.gate-a.test/", "http://straße.gate-a.test/"])
@coroutine_test
async def test_well_formed_urls_are_not_malformed(tmp_path, spy_resolver, url):
    from scrapy_gdpr.gate import policy_gate

    policy = write_policy(tmp_path, [local("gate-a.test", include_subdomains=True)])
    crawler = get_crawler(Spider, gate_settings(tmp_path, policy))
    assert await policy_gate(crawler, get_runtime(crawler)).check(url) is None


@coroutine_test
async def test_a_malformed_link_does_not_poison_its_host(tmp_path, logged_mockserver):
    """``http://x@host/`` once put the real host into robots_unreachable (60 s, then 24 h)."""
    from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware

    from tests.test_robots import UA

    policy = write_policy(tmp_path, [local("robots-ok.test")])
    port = logged_mockserver.port
    bad = [f"http://x@robots-ok.test:{port}/page.html", "http://robots-ok.test:0/page.html"]
    good = logged_mockserver.url("/page.html", host="robots-ok.test")

    class Ordered(UrlSpider):
        async def start(self):
            for url in bad:
                yield Request(url, errback=self.failure, dont_filter=True)
            await asyncio.sleep(0.5)
            yield Request(good, errback=self.failure, dont_filter=True)

    settings = {
        "DOWNLOADER_MIDDLEWARES": {
            PolicyGateMiddleware: 40,
            RobotsTxtMiddleware: None,
            "scrapy_gdpr.robots.RobotsGateMiddleware": 100,
        },
        "USER_AGENT": UA,
    }
    crawler = await crawl(tmp_path, policy, [], spider=Ordered, settings=settings)
    assert crawler.spider.failed == dict.fromkeys(bad, "malformed_url")
    assert crawler.spider.seen == [good]
    assert crawler.stats.get_value("gdpr/blocked/malformed_url") == 2
    assert crawler.stats.get_value("gdpr/blocked/robots_unreachable") is None
    assert crawler.stats.get_value("gdpr/robots/unreachable") is None
    assert hosts_requested(logged_mockserver) == ["robots-ok.test/robots.txt", "robots-ok.test/page.html"]
    lines = {r["url"]: r for r in refusals(tmp_path)}
    assert "user information" in lines[bad[0]]["detail"] and lines[bad[0]]["kind"] == "request"

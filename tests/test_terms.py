"""Terms of use: verdicts, drift detection, normalisation."""

from __future__ import annotations

import hashlib
import json
import shutil
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from scrapy import Request, Spider
from scrapy.http import HtmlResponse, TextResponse
from scrapy.utils.asyncio import sleep
from scrapy.utils.test import get_crawler

from scrapy_gdpr.exceptions import PolicyViolation
from scrapy_gdpr.internal import internal_meta
from scrapy_gdpr.report import ComplianceReport
from scrapy_gdpr.runtime import get_runtime
from scrapy_gdpr.terms import TermsMiddleware, fingerprint, normalise_terms, normalise_text
from tests.conftest import MockServer
from tests.utils import DATA, ROOT, ManualClock, coroutine_test, use_clock
from tests.utils import terms_policy as write_policy

if TYPE_CHECKING:
    from pathlib import Path

VALID = DATA / "policies" / "valid.yaml"
HOSTS = ROOT / "tests" / "site" / "hosts"
OK_TEXT = "Terms of use\nAutomated access for search indexing is permitted.\nBe polite.\nIdentify yourself."


def file_fingerprint(path: Path) -> str:
    return fingerprint(normalise_terms(HtmlResponse("http://x/terms.html", body=path.read_bytes())))


def terms(url: str, verdict: str = "permits", fp: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"url": url, "verdict": verdict, "reviewed_on": "2026-10-01", "reviewed_by": "Dana Protection"}
    if fp:
        out["fingerprint"] = fp
    out.update(extra)
    return out


class TermsSpider(Spider):
    """Requests ``urls`` at once, then (after the first answers) moves the crawl's
    clock on by ``pause`` s and requests ``later``."""

    name = "terms"

    def __init__(self, urls: list[str] | None = None, later: list[str] | None = None, pause: float = 0,
                 between: Any = None, clock: ManualClock | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.urls, self.later, self.pause, self.between = urls or [], later or [], pause, between
        self.clock = clock
        self.seen: list[str] = []
        self.failures: dict[str, Any] = {}

    async def start(self):
        for url in self.urls:
            yield Request(url, dont_filter=True, errback=self.failed)
        if self.later:
            while len(self.seen) + len(self.failures) < len(self.urls):
                await sleep(0.05)
            if self.between is not None:
                self.between()
            if self.pause:
                assert self.clock is not None
                self.clock.advance(self.pause)
            for url in self.later:
                yield Request(url, dont_filter=True, errback=self.failed)

    def parse(self, response):
        self.seen.append(response.url)

    def failed(self, failure):
        self.failures[failure.request.url] = failure.value


def settings(tmp_path: Path, policy: Path, **extra: Any) -> dict[str, Any]:
    return {
        "GDPR_POLICY": str(policy),
        "GDPR_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "GDPR_REPORT_DIR": str(tmp_path / "reports"),
        "DOWNLOADER_MIDDLEWARES": {TermsMiddleware: 60},
        "EXTENSIONS": {ComplianceReport: 0},
        "DNS_RESOLVER": "tests.utils.LocalResolver",
        "ROBOTSTXT_OBEY": False,
        "RETRY_ENABLED": False,
        **extra,
    }


async def run(tmp_path: Path, policy: Path, **kw: Any) -> Any:
    crawler = get_crawler(TermsSpider, settings(tmp_path, policy))
    clock = use_clock(crawler, ManualClock())
    await crawler.crawl_async(clock=clock, **kw)
    return crawler


def report_rows(crawler: Any) -> dict[str, dict[str, Any]]:
    return {row["domain"]: row for row in get_runtime(crawler).report_sections["terms"]}


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- normalisation


def test_normalisation_is_exactly_specified():
    text = normalise_terms(HtmlResponse("http://x/", body=(HOSTS / "terms-ok" / "terms.html").read_bytes()))
    assert text == OK_TEXT
    assert fingerprint(text) == "sha256:" + hashlib.sha256(OK_TEXT.encode("utf-8")).hexdigest()
    html = ("<html><head><title>ignored</title><style>p{}</style></head><body><!-- note --><p>caf\u0065\u0301"
            "\u00a0 bar</p><noscript>no js</noscript><script>x()</script><pre>a\n  b</pre>tail<br>end</body></html>")
    assert normalise_terms(HtmlResponse("http://x/", body=html.encode(), encoding="utf-8")) == "caf\u00e9 bar\na\nb\ntail\nend"
    assert normalise_terms(TextResponse("http://x/t.txt", body=b"  a \t b\r\n\r\nc  ", encoding="utf-8")) == "a b\nc"
    # idempotent on normalised text, so snapshots re-read to the same fingerprint
    assert normalise_text(OK_TEXT + "\n") == OK_TEXT
    # an encoding given by a meta charset is honoured
    latin = "<html><head><meta charset='iso-8859-1'></head><body><p>\u00e9t\u00e9</p></body></html>".encode("latin-1")
    assert normalise_terms(HtmlResponse("http://x/", body=latin)) == "\u00e9t\u00e9"


# --------------------------------------------------------------------------- verdicts


@coroutine_test
async def test_verdicts(tmp_path, logged_mockserver):
    server = logged_mockserver
    ok_fp = file_fingerprint(HOSTS / "terms-ok" / "terms.html")
    policy = write_policy(tmp_path, [
        {"domain": "terms-ok.test", "terms": terms(server.url("/terms.html", host="terms-ok.test"), fp=ok_fp)},
        {"domain": "terms-forbid.test", "terms": terms(server.url("/terms.html", host="terms-forbid.test"), "forbids", ok_fp)},
        {"domain": "terms-missing.test"},
        {"domain": "terms-conditional.test", "terms": terms(server.url("/terms.html", host="terms-conditional.test"),
                                                            "conditional", ok_fp, conditions=["no more than 1 request/s"])},
    ])
    urls = {h: server.url("/page.html", host=f"{h}.test") for h in ("terms-ok", "terms-forbid", "terms-missing", "terms-conditional")}
    unlisted = server.url("/page.html")
    crawler = await run(tmp_path, policy, urls=[*urls.values(), unlisted])
    assert sorted(crawler.spider.seen) == sorted([urls["terms-ok"], urls["terms-conditional"], unlisted])
    forbid = crawler.spider.failures[urls["terms-forbid"]]
    assert isinstance(forbid, PolicyViolation) and forbid.reason == "terms"
    assert forbid.clause.startswith("domains[1].terms.verdict (line ")
    missing = crawler.spider.failures[urls["terms-missing"]]
    assert missing.reason == "terms" and missing.clause.startswith("domains[2] (line ")
    assert crawler.stats.get_value("gdpr/blocked/terms") == 2
    # nothing at all was fetched from refused domains, not even their terms
    hosts = {h for _, h, _ in server.requests()}
    assert "terms-forbid.test" not in hosts and "terms-missing.test" not in hosts
    rows = report_rows(crawler)
    assert rows["terms-ok.test"]["status"] == "ok: unchanged since review"
    assert rows["terms-conditional.test"]["conditions"] == ["no more than 1 request/s"]
    assert rows["terms-forbid.test"]["status"] == "refused: terms forbid crawling"
    assert rows["terms-missing.test"]["status"] == "refused: no terms review"
    # the report extension wrote the section
    report = json.loads(next((tmp_path / "reports").glob("*.json")).read_text(encoding="utf-8"))
    assert [r["domain"] for r in report["sections"]["terms"]][:2] == ["terms-ok.test", "terms-forbid.test"]


@coroutine_test
async def test_concurrent_requests_share_one_terms_check(tmp_path, logged_mockserver):
    server = logged_mockserver
    fp = file_fingerprint(HOSTS / "terms-ok" / "terms.html")
    policy = write_policy(tmp_path, [{"domain": "terms-ok.test", "terms": terms(server.url("/terms.html", host="terms-ok.test"), fp=fp)}])
    urls = [server.url(f"/page.html?{i}", host="terms-ok.test") for i in range(10)]
    crawler = await run(tmp_path, policy, urls=urls)
    assert len(crawler.spider.seen) == 10
    paths = [p for _, _, p in server.requests()]
    assert paths.count("/terms.html") == 1
    assert paths[0] == "/terms.html"  # before the first page
    assert crawler.stats.get_value("gdpr/terms/check_count") == 1
    checks = [a for a in audit(tmp_path) if a["decision"].startswith("terms_")]
    assert checks == [{**checks[0], "decision": "terms_unchanged", "domain": "terms-ok.test", "current": fp}]


# --------------------------------------------------------------------------- drift


@coroutine_test
async def test_drift_refuses_domain_and_report_shows_diff(tmp_path, mockserver):
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    (snapshots / "terms-drift.terms.txt").write_text(OK_TEXT + "\n", encoding="utf-8")
    reviewed = fingerprint(OK_TEXT)
    url = mockserver.url("/terms.html", host="terms-drift.test")
    policy = write_policy(tmp_path, [{"domain": "terms-drift.test",
                                      "terms": terms(url, fp=reviewed, snapshot="snapshots/terms-drift.terms.txt")}])
    page = mockserver.url("/page.html", host="terms-drift.test")
    crawler = await run(tmp_path, policy, urls=[page])
    assert crawler.spider.seen == []
    exc = crawler.spider.failures[page]
    assert exc.reason == "terms_drift" and exc.clause.startswith("domains[0].terms.fingerprint")
    row = report_rows(crawler)["terms-drift.test"]
    assert row["status"] == "refused: terms changed since review"
    assert row["current_fingerprint"] == file_fingerprint(HOSTS / "terms-drift" / "terms.html")
    assert "-Automated access for search indexing is permitted." in row["diff"]
    assert "+Automated access is forbidden." in row["diff"]
    assert " Be polite." in row["diff"]
    assert crawler.stats.get_value("gdpr/terms/drift") == 1
    drift = [a for a in audit(tmp_path) if a["decision"] == "terms_drift"]
    assert drift and drift[0]["current"] == row["current_fingerprint"]
    html = next((tmp_path / "reports").glob("*.html")).read_text(encoding="utf-8")
    assert "+Automated access is forbidden." in html


@coroutine_test
async def test_drift_without_snapshot_or_fingerprint(tmp_path, mockserver):
    url = mockserver.url("/terms.html", host="terms-drift.test")
    ok_url = mockserver.url("/terms.html", host="terms-ok.test")
    policy = write_policy(tmp_path, [
        {"domain": "terms-drift.test", "terms": terms(url, fp=fingerprint(OK_TEXT))},
        {"domain": "terms-ok.test", "terms": terms(ok_url)},  # never fingerprinted
    ])
    pages = [mockserver.url("/page.html", host=h) for h in ("terms-drift.test", "terms-ok.test")]
    crawler = await run(tmp_path, policy, urls=pages)
    assert crawler.spider.seen == []
    rows = report_rows(crawler)
    current = file_fingerprint(HOSTS / "terms-drift" / "terms.html")
    assert "no snapshot" in rows["terms-drift.test"]["note"] and current in rows["terms-drift.test"]["note"]
    assert "diff" not in rows["terms-drift.test"]
    assert rows["terms-ok.test"]["status"] == "refused: no fingerprint recorded"
    assert rows["terms-ok.test"]["current_fingerprint"] == fingerprint(OK_TEXT)
    assert crawler.stats.get_value("gdpr/blocked/terms_drift") == 2


@coroutine_test
async def test_drift_found_at_recheck_interval(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(HOSTS / "terms-ok", site / "hosts" / "terms-live")
    live = site / "hosts" / "terms-live" / "terms.html"

    def change_terms() -> None:
        shutil.copy(HOSTS / "terms-drift" / "terms.html", live)

    with MockServer(site=site, log=tmp_path / "requests.log") as server:
        url = server.url("/terms.html", host="terms-live.test")
        policy = write_policy(tmp_path, [{"domain": "terms-live.test", "terms": terms(url, fp=fingerprint(OK_TEXT))}],
                              interval="PT1S")
        first, second = server.url("/page.html", host="terms-live.test"), server.url("/other.html", host="terms-live.test")
        crawler = await run(tmp_path, policy, urls=[first], later=[second], pause=1.3, between=change_terms)
        paths = [p for _, _, p in server.requests()]
    assert crawler.spider.seen == [first]
    assert crawler.spider.failures[second].reason == "terms_drift"
    assert paths == ["/terms.html", "/page.html", "/terms.html"]
    assert report_rows(crawler)["terms-live.test"]["checks"] == 2


@coroutine_test
async def test_unreachable_terms_fail_closed_and_are_retried(tmp_path, logged_mockserver):
    server = logged_mockserver
    url = server.url("/terms.html", host="terms-down.test")
    policy = write_policy(tmp_path, [{"domain": "terms-down.test", "terms": terms(url, fp=fingerprint(OK_TEXT))},
                                     {"domain": "terms-gone.test", "terms": terms("http://terms-gone.test:9/terms.html",
                                                                                  fp=fingerprint(OK_TEXT))}],
                          interval="PT1S")
    page = server.url("/page.html", host="terms-down.test")
    gone = "http://terms-gone.test:9/page.html"
    crawler = await run(tmp_path, policy, urls=[page, gone], later=[page + "?again"], pause=1.3)
    assert crawler.spider.seen == []
    assert crawler.spider.failures[page].reason == "terms_drift"
    assert "HTTP 503" in str(crawler.spider.failures[page])
    assert crawler.spider.failures[gone].reason == "terms_drift"
    assert "could not be fetched" in str(crawler.spider.failures[gone])
    assert crawler.spider.failures[page + "?again"].reason == "terms_drift"
    paths = [p for _, h, p in server.requests() if h == "terms-down.test"]
    assert paths == ["/terms.html", "/terms.html"]  # retried after the interval, page never fetched
    rows = report_rows(crawler)
    assert rows["terms-down.test"]["status"] == "refused: terms page unreachable"
    assert crawler.stats.get_value("gdpr/terms/unreachable") == 3


@coroutine_test
async def test_internal_requests_pass(tmp_path, logged_mockserver):
    server = logged_mockserver
    policy = write_policy(tmp_path, [{"domain": "terms-missing.test"}])
    url = server.url("/page.html", host="terms-missing.test")

    class InternalSpider(TermsSpider):
        async def start(self):
            for kind in ("robots", "tdmrep", "terms"):
                yield Request(f"{url}?{kind}", meta=internal_meta(kind), dont_filter=True, errback=self.failed)
            yield Request(url, errback=self.failed)

    crawler = get_crawler(InternalSpider, settings(tmp_path, policy))
    await crawler.crawl_async()
    assert len(crawler.spider.seen) == 3
    assert list(crawler.spider.failures) == [url]


@coroutine_test
async def test_terms_without_readable_text_fail_closed(tmp_path, mockserver):
    url = mockserver.url("/_/respond?body=%25PDF-1.4%00%01&h=Content-Type:application/pdf", host="terms-ok.test")
    policy = write_policy(tmp_path, [{"domain": "terms-ok.test", "terms": terms(url, fp=fingerprint(""))}])
    page = mockserver.url("/page.html", host="terms-ok.test")
    crawler = await run(tmp_path, policy, urls=[page])
    assert crawler.spider.seen == []
    assert "no readable text (application/pdf)" in str(crawler.spider.failures[page])


@coroutine_test
async def test_domain_rule_per_host_is_cached_and_bounded(tmp_path, monkeypatch):
    import pytest
    from scrapy.exceptions import IgnoreRequest

    from scrapy_gdpr import terms as module

    monkeypatch.setattr(module, "HOST_CACHE_SIZE", 3)
    policy = write_policy(tmp_path, [{"domain": "forbid.test", "include_subdomains": True,
                                      "terms": terms("http://forbid.test/terms.html", verdict="forbids")}])
    crawler = get_crawler(TermsSpider, settings(tmp_path, policy))
    mw = TermsMiddleware.from_crawler(crawler)
    for _ in range(2):
        for i in range(6):
            with pytest.raises(IgnoreRequest, match="forbid crawling"):
                await mw.process_request(Request(f"http://h{i}.FORBID.test./page"))
            assert await mw.process_request(Request(f"http://h{i}.other.test/page")) is None
    assert len(mw._host_rules) <= 3


# --------------------------------------------------------------------------- one fetch per terms URL


@coroutine_test
async def test_a_terms_page_shared_by_many_domains_is_fetched_once(tmp_path):
    # 41 domains under one publisher's terms: one fetch of the page, not 41 behind one slot
    site = tmp_path / "site"
    shutil.copytree(HOSTS / "terms-ok", site / "hosts" / "publisher")
    names = [f"shared{n}" for n in range(41)]
    for name in names:
        (site / "hosts" / name).mkdir(parents=True)
        (site / "hosts" / name / "page.html").write_text("<html><body>page</body></html>")
    with MockServer(site=site, log=tmp_path / "requests.log") as server:
        shared = server.url("/terms.html", host="publisher.test")
        policy = write_policy(tmp_path, [{"domain": f"{n}.test", "terms": terms(shared, fp=fingerprint(OK_TEXT))}
                                         for n in names])
        pages = [server.url("/page.html", host=f"{n}.test") for n in names]
        crawler = await run(tmp_path, policy, urls=pages)
        requests = server.requests()
    assert sorted(crawler.spider.seen) == sorted(pages)
    assert [p for _, h, p in requests if h == "publisher.test"] == ["/terms.html"]
    assert crawler.stats.get_value("gdpr/terms/page_fetches") == 1
    assert crawler.stats.get_value("gdpr/terms/check_count") == 41  # each domain still decided and audited
    rows = report_rows(crawler)
    assert all(rows[f"{n}.test"]["status"] == "ok: unchanged since review" for n in names)
    assert len([a for a in audit(tmp_path) if a["decision"] == "terms_unchanged"]) == 41


# --------------------------------------------------------------------------- no terms published


@coroutine_test
async def test_no_terms_published_is_crawled_while_the_watched_addresses_stay_missing(tmp_path):
    site = tmp_path / "site"
    for name in ("bare", "appeared", "flaky"):
        (site / "hosts" / name).mkdir(parents=True)
        (site / "hosts" / name / "page.html").write_text("<html><body>page</body></html>")
    shutil.copy(HOSTS / "terms-ok" / "terms.html", site / "hosts" / "appeared" / "legal.html")
    (site / "hosts" / "flaky" / "_routes.json").write_text(json.dumps({"/legal": {"status": 503}}))
    with MockServer(site=site, log=tmp_path / "requests.log") as server:
        def none(host: str, *candidates: str) -> dict[str, Any]:
            return {"domain": f"{host}.test",
                    "terms": {"url": server.url("/terms", host=f"{host}.test"), "verdict": "none_published",
                              "candidates": [server.url(c, host=f"{host}.test") for c in candidates],
                              "reviewed_on": "2026-10-01", "reviewed_by": "Dana Protection"}}

        policy = write_policy(tmp_path, [none("bare", "/legal.html", "/tos"), none("appeared", "/legal.html"),
                                         none("flaky", "/legal")])
        pages = {h: server.url("/page.html", host=f"{h}.test") for h in ("bare", "appeared", "flaky")}
        crawler = await run(tmp_path, policy, urls=list(pages.values()))
        requests = server.requests()
    assert crawler.spider.seen == [pages["bare"]]
    appeared = crawler.spider.failures[pages["appeared"]]
    assert appeared.reason == "terms_drift" and appeared.clause.startswith("domains[1].terms.verdict")
    assert "a page appeared at http://appeared.test" in str(appeared) and "2026-10-01 by Dana Protection" in str(appeared)
    flaky = crawler.spider.failures[pages["flaky"]]
    assert flaky.reason == "terms_drift" and "answered HTTP 503, not 404 or 410" in str(flaky)
    assert sorted(p for _, h, p in requests if h == "bare.test") == ["/legal.html", "/page.html", "/terms", "/tos"]
    rows = report_rows(crawler)
    assert rows["bare.test"]["status"] == "ok: still no terms published"
    assert rows["bare.test"]["reviewed_fingerprint"] == "(no terms published)"
    assert rows["appeared.test"]["status"] == "refused: terms appeared since review"
    assert "+Automated access for search indexing is permitted." in rows["appeared.test"]["diff"]
    assert rows["flaky.test"]["status"] == "refused: terms page unreachable"


def test_no_terms_published_in_the_policy(tmp_path):
    from scrapy_gdpr.policy import PolicyError, load_policy

    data = yaml.safe_load(VALID.read_text(encoding="utf-8"))
    data["domains"] = [{"domain": "example.org", "terms": {
        "url": "https://example.org/terms", "verdict": "none_published", "candidates": ["https://example.org/legal"],
        "reviewed_on": "2026-10-01", "reviewed_by": "Dana Protection"}}]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    policy = load_policy(path)
    rule = policy.domains[0]
    assert rule.terms.verdict == "none_published" and rule.terms.candidates == ["https://example.org/legal"]
    # no fingerprint warning for a site that publishes no terms
    assert not [w for w in policy.warnings if "fingerprint" in w.message]
    # the review document says so, and counts the domain as crawled
    from scrapy_gdpr.review import build_documents, render_review_html, render_review_markdown

    doc = build_documents(policy, policy.warnings)
    assert "the site publishes no terms of use" in render_review_markdown(doc)
    assert "the site publishes no terms of use" in render_review_html(doc)
    assert "crawled: no terms published" in render_review_markdown(doc)
    # candidates mean nothing with another verdict: said, not silently ignored
    data["domains"][0]["terms"].update(verdict="permits", fingerprint=fingerprint("x"))
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    assert any("candidates are watched only with verdict none_published" in w.message
               for w in load_policy(path).warnings)
    data["domains"][0]["terms"]["verdict"] = "none_published"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    assert any("publishes no terms" in f.message for f in exc.value.findings)


# --------------------------------------------------------------------------- download cap


@coroutine_test
async def test_terms_page_over_the_cap_is_not_inflated_and_fails_closed(tmp_path):
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(packer.compress(b"<p>" + b"a" * 1021) for _ in range(64 * 1024)) + packer.flush()
    assert len(bomb) < 500_000
    site = tmp_path / "site"
    (site / "hosts" / "bomb").mkdir(parents=True)
    (site / "hosts" / "bomb" / "page.html").write_text("<html><body>page</body></html>")
    (site / "hosts" / "bomb" / "terms.gz").write_bytes(bomb)
    routes = {"/terms.html": {"file": "terms.gz", "headers": {"Content-Encoding": "gzip", "Content-Type": "text/html"}}}
    (site / "hosts" / "bomb" / "_routes.json").write_text(json.dumps(routes))
    with MockServer(site=site) as server:
        url = server.url("/terms.html", host="bomb.test")
        policy = write_policy(tmp_path, [{"domain": "bomb.test", "terms": terms(url, fp=fingerprint(OK_TEXT))}])
        page = server.url("/page.html", host="bomb.test")
        crawler = await run(tmp_path, policy, urls=[page])
    assert crawler.spider.seen == []
    failure = crawler.spider.failures[page]
    assert failure.reason == "terms_drift"
    assert f"the terms page {url} is larger than 5000000 bytes (after decompression)" in str(failure)
    assert (crawler.stats.get_value("httpcompression/response_bytes") or 0) < 2 * 5_000_000

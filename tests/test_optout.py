"""Opt-out signals on responses: real crawls against the local server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from scrapy import Request, Spider
from scrapy.utils.test import get_crawler

from scrapy_gdpr.exceptions import PolicyViolation
from scrapy_gdpr.optout import NoFollowMiddleware, OptOutMiddleware
from tests.utils import DATA, coroutine_test
from tests.utils import signals_policy as write_policy

VALID = DATA / "policies" / "valid.yaml"


def crawl_settings(tmp_path: Path, policy: Path, **extra: Any) -> dict[str, Any]:
    return {
        "GDPR_POLICY": str(policy),
        "GDPR_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "GDPR_REPORT_DIR": str(tmp_path / "reports"),
        "DOWNLOADER_MIDDLEWARES": {OptOutMiddleware: 120},
        "DNS_RESOLVER": "tests.utils.LocalResolver",
        "ROBOTSTXT_OBEY": False,
        "RETRY_ENABLED": False,
        "LOG_LEVEL": "INFO",
        **extra,
    }


def audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


class CollectSpider(Spider):
    name = "optout"

    def __init__(self, urls: list[str] | None = None, follow: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.urls = urls or []
        self.follow = follow
        self.results: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, Any] = {}

    async def start(self):
        for url in self.urls:
            yield Request(url, dont_filter=True, errback=self.failed)

    def parse(self, response):
        self.results[response.url] = {
            "optout": response.meta.get("gdpr_optout"),
            "images": response.meta.get("gdpr_images_optout"),
            "nofollow": response.meta.get("gdpr_nofollow"),
            "tdm_policy": response.meta.get("gdpr_tdm_policy"),
        }
        if self.follow:
            for href in response.css("a::attr(href)").getall():
                yield response.follow(href, errback=self.failed)

    def failed(self, failure):
        self.failures[failure.request.url] = failure.value


async def run(tmp_path: Path, urls: list[str], policy: Path | None = None, **kw: Any) -> Any:
    policy = policy or write_policy(tmp_path)
    settings = crawl_settings(tmp_path, policy, **kw.pop("settings", {}))
    crawler = get_crawler(CollectSpider, settings)
    await crawler.crawl_async(urls=urls, **kw)
    return crawler


def reserved(result: dict[str, Any]) -> dict[str, str]:
    """{purpose: signal} of the reserved purposes of one page."""
    return {p: d["signal"] for p, d in result["optout"].items() if not d["allowed"]}


# --------------------------------------------------------------------------- X-Robots-Tag


@coroutine_test
async def test_x_robots_tag_values(tmp_path, mockserver):
    host = "optout-xrobots.test"
    names = ["noindex", "scoped", "scoped-lower", "other", "repeated", "mixed", "none", "all", "expired",
             "future", "draft", "draft-other", "plain"]
    urls = {n: mockserver.url(f"/{n}.html", host=host) for n in names}
    crawler = await run(tmp_path, list(urls.values()))
    r = {n: crawler.spider.results[u] for n, u in urls.items()}
    assert reserved(r["noindex"]) == {"search": "X-Robots-Tag: noindex"}
    # bot-scoped values: our product token (case-insensitive) applies, another bot's does not
    assert reserved(r["scoped"]) == {"search": "X-Robots-Tag: GdprTestBot: noindex"}
    assert reserved(r["scoped-lower"]) == {"ai-train": "X-Robots-Tag: gdprtestbot: noai",
                                           "ai-input": "X-Robots-Tag: gdprtestbot: noai"}
    assert reserved(r["other"]) == {}
    # repeated header lines are all read
    assert set(reserved(r["repeated"])) == {"ai-train", "ai-input"}
    # unscoped before a bot name applies to all; the scope switches at each bot name
    assert set(reserved(r["mixed"])) == {"ai-train", "ai-input"}
    assert r["mixed"]["images"] == {"reserved": True, "signal": "X-Robots-Tag: noimageindex"}
    assert reserved(r["none"]) == {"search": "X-Robots-Tag: none"}
    assert r["none"]["nofollow"] == "X-Robots-Tag: none"
    assert reserved(r["all"]) == {}
    # unavailable_after is a rule with a date, not a bot name; a past date means noindex
    assert reserved(r["expired"]) == {"search": "X-Robots-Tag: unavailable_after: Sat, 25 Aug 2007 15:00:00 GMT"}
    assert reserved(r["future"]) == {}
    # the robots-tag draft syntax: "rules; Token=rules"
    assert reserved(r["draft"]) == {"search": "Robots-Tag: GdprTestBot=noindex",
                                    "ai-train": "Robots-Tag: GdprTestBot=noai",
                                    "ai-input": "Robots-Tag: GdprTestBot=noai"}
    assert r["draft"]["images"]["reserved"] is False
    assert reserved(r["draft-other"]) == {}
    assert r["plain"]["optout"] == {p: {"allowed": True, "signal": "", "signals": []}
                                    for p in ("search", "ai-train", "ai-input")}
    assert r["plain"]["images"] == {"reserved": False, "signal": ""}

    stats = crawler.stats.get_stats()
    assert stats["gdpr/optout/x_robots_tag/noindex"] == 4  # noindex, scoped, none, expired
    assert stats["gdpr/optout/robots_tag/noai"] == 1
    assert stats["gdpr/optout/reserved/search"] == 5
    decisions = [a for a in audit_lines(tmp_path) if a["decision"] == "optout_decision"]
    assert {a["url"] for a in decisions} == {urls[n] for n in
                                             ("noindex", "scoped", "scoped-lower", "repeated", "mixed", "none",
                                              "expired", "draft")}
    line = next(a for a in decisions if a["url"] == urls["noindex"])
    assert line["purposes"] == {"search": False, "ai-train": True, "ai-input": True}
    assert line["signals"] == ["X-Robots-Tag: noindex"]


@coroutine_test
async def test_malformed_robots_headers_never_crash_nor_fail_open(tmp_path, mockserver, caplog):
    host = "optout-xrobots.test"
    urls = [mockserver.url("/malformed.html", host=host), mockserver.url("/junk.html", host=host)]
    crawler = await run(tmp_path, urls)
    malformed = crawler.spider.results[urls[0]]
    # "noai garbage" still reads as noai: a damaged restrictive rule is honoured, not dropped;
    # an unreadable unavailable_after date may have passed: noindex, in doubt
    assert set(reserved(malformed)) == {"search", "ai-train", "ai-input"}
    assert reserved(malformed)["search"] == ("X-Robots-Tag: unavailable_after: not a date (the date cannot be read: "
                                             "noindex, in doubt)")
    assert crawler.spider.results[urls[1]]["optout"]["search"]["allowed"] is True
    assert crawler.stats.get_value("gdpr/optout/malformed/x_robots_tag") >= 4
    assert "cannot read '@@@: ???'" in caplog.text
    assert "cannot read the date" in caplog.text


@coroutine_test
async def test_unreadable_crawler_names_and_dates_fail_closed(tmp_path, mockserver):
    host = "optout-xrobots.test"
    urls = {n: mockserver.url(f"/{n}.html", host=host) for n in ("bad-scope", "bad-draft-scope", "bad-date")}
    crawler = await run(tmp_path, list(urls.values()))
    r = {n: reserved(crawler.spider.results[u]) for n, u in urls.items()}
    # a crawler name that cannot be read may mean this crawler: its rules apply
    assert r["bad-scope"] == {"search": "X-Robots-Tag: Gdpr Test Bot: noindex"}
    assert set(r["bad-draft-scope"]) == {"ai-train", "ai-input"}
    assert r["bad-date"] == {"search": "X-Robots-Tag: unavailable_after: 31/31/2031 (the date cannot be read: "
                                       "noindex, in doubt)"}
    assert crawler.stats.get_value("gdpr/optout/malformed/x_robots_tag") == 2
    assert crawler.stats.get_value("gdpr/optout/malformed/robots_tag") == 1


@coroutine_test
async def test_switch_off_x_robots_tag(tmp_path, mockserver):
    policy = write_policy(tmp_path, opt_out={"x_robots_tag": False})
    url = mockserver.url("/noindex.html", host="optout-xrobots.test")
    crawler = await run(tmp_path, [url], policy)
    assert reserved(crawler.spider.results[url]) == {}


@coroutine_test
async def test_only_spider_purposes_are_attached(tmp_path, mockserver):
    policy = write_policy(tmp_path, signal_purposes=["ai-train"])
    url = mockserver.url("/noindex.html", host="optout-xrobots.test")
    crawler = await run(tmp_path, [url], policy)
    assert crawler.spider.results[url]["optout"] == {"ai-train": {"allowed": True, "signal": "", "signals": []}}


# --------------------------------------------------------------------------- meta robots


@coroutine_test
async def test_meta_robots(tmp_path, mockserver):
    host = "optout-meta.test"
    names = ["meta", "token", "other", "body", "both", "plain"]
    urls = {n: mockserver.url(f"/{n}.html", host=host) for n in names}
    crawler = await run(tmp_path, list(urls.values()))
    r = {n: crawler.spider.results[u] for n, u in urls.items()}
    signal = '<meta name="ROBOTS" content="NoIndex, noimageai">'
    assert reserved(r["meta"]) == {"search": signal}
    assert r["meta"]["images"] == {"reserved": True, "signal": signal}
    assert set(reserved(r["token"])) == {"ai-train", "ai-input"}
    assert reserved(r["other"]) == {}
    assert reserved(r["body"]) == {}  # only <head> counts
    # header and meta combine: most restrictive wins
    assert set(reserved(r["both"])) == {"ai-train", "ai-input"}
    assert r["both"]["images"]["signal"] == '<meta name="robots" content="noimageindex">'
    assert crawler.stats.get_value("gdpr/optout/meta_robots/noimageai") == 1


@coroutine_test
async def test_meta_robots_switch_off(tmp_path, mockserver):
    policy = write_policy(tmp_path, opt_out={"meta_robots": False})
    url = mockserver.url("/meta.html", host="optout-meta.test")
    crawler = await run(tmp_path, [url], policy)
    assert reserved(crawler.spider.results[url]) == {}
    assert crawler.spider.results[url]["images"]["reserved"] is False


@coroutine_test
async def test_nofollow_drops_links(tmp_path, mockserver):
    host = "optout-meta.test"
    urls = [mockserver.url("/nofollow.html", host=host), mockserver.url("/follow.html", host=host)]
    settings = {"SPIDER_MIDDLEWARES": {NoFollowMiddleware: 900}}
    # follow.html links to plain.html too: the link is followed from there only
    crawler = await run(tmp_path, urls[:1], settings=settings, follow=True)
    assert mockserver.url("/plain.html", host=host) not in crawler.spider.results
    refusals = [a for a in audit_lines(tmp_path) if a["decision"] == "refused"]
    assert refusals[0]["kind"] == "link" and refusals[0]["reason"] == "optout"
    assert crawler.stats.get_value("gdpr/blocked/optout") == 1
    crawler = await run(tmp_path, urls[1:], settings=settings, follow=True)
    assert mockserver.url("/plain.html", host=host) in crawler.spider.results


# --------------------------------------------------------------------------- TDMRep


@coroutine_test
async def test_tdmrep_file_header_meta_precedence(tmp_path, logged_mockserver):
    server = logged_mockserver
    host = "optout-tdm.test"
    paths = {
        "file1": "/reserved/a.html",
        "file0": "/open/a.html",
        "file1_meta0": "/reserved/meta0.html",
        "file1_header0": "/reserved/header0.html",
        "file0_header1": "/open/header1.html",
        "header1_meta0": "/open/header1-meta0.html",
        "header0_meta1": "/open/header0-meta1.html",
        "bad_header": "/open/bad-header.html",
        "bad_meta": "/reserved/bad-meta.html",
        "exact": "/exact.html",
        "exact_query": "/exact.html?x=1",
        "catch_all": "/other.html",
    }
    urls = {k: server.url(p, host=host) for k, p in paths.items()}
    crawler = await run(tmp_path, list(urls.values()))
    r = {k: crawler.spider.results[u] for k, u in urls.items()}
    file_signal = f"http://{host}:{server.port}/.well-known/tdmrep.json: location /reserved/* tdm-reservation=1"
    assert reserved(r["file1"]) == {"ai-train": file_signal, "ai-input": file_signal}
    assert r["file1"]["tdm_policy"] == "https://example.org/tdm-policy.json"
    assert reserved(r["file0"]) == {}
    assert reserved(r["file1_meta0"]) == {}  # HTML meta supersedes the file
    assert reserved(r["file1_header0"]) == {}  # the header supersedes the file
    assert reserved(r["file0_header1"])["ai-train"] == "tdm-reservation: 1"
    assert r["file0_header1"]["tdm_policy"] == "https://example.org/p"
    assert reserved(r["header1_meta0"]) == {}
    assert reserved(r["header0_meta1"])["ai-train"] == '<meta name="tdm-reservation" content="1">'
    # malformed values fail closed: reserved, in doubt, whatever an earlier source said
    assert reserved(r["bad_header"]) == dict.fromkeys(("ai-train", "ai-input"), "tdm-reservation: yes (not 0 or 1: reserved, in doubt)")  # the file says 0
    assert reserved(r["bad_meta"])["ai-train"] == ('<meta name="tdm-reservation" content="2"> '
                                                   "(not 0 or 1: reserved, in doubt)")
    # "$" anchors; first match wins
    assert "ai-train" in reserved(r["exact"])
    assert reserved(r["exact_query"]) == {}
    assert reserved(r["catch_all"]) == {}
    # search is never reserved by TDMRep
    assert all(v["optout"]["search"]["allowed"] for v in r.values())
    stats = crawler.stats.get_stats()
    assert stats["gdpr/optout/malformed/tdmrep_header"] == 1
    assert stats["gdpr/optout/malformed/tdmrep_meta"] == 1
    # one fetch of the file for all these pages, before the first page
    requests = [p for _, h, p in server.requests() if h == host]
    assert requests.count("/.well-known/tdmrep.json") == 1
    assert requests[0] == "/.well-known/tdmrep.json"


@coroutine_test
async def test_tdmrep_concurrent_requests_share_one_slow_fetch(tmp_path):
    from tests.conftest import MockServer

    site = tmp_path / "site"
    (site / "hosts" / "tdm-slow").mkdir(parents=True)
    routes = {"/.well-known/tdmrep.json": {"delay": 1, "body": json.dumps([{"location": "/", "tdm-reservation": 1}])}}
    for i in range(12):
        routes[f"/p{i}.html"] = {"body": "<html><body>x</body></html>"}
    (site / "hosts" / "tdm-slow" / "_routes.json").write_text(json.dumps(routes))
    with MockServer(site=site, log=tmp_path / "requests.log") as server:
        urls = [server.url(f"/p{i}.html", host="tdm-slow.test") for i in range(12)]
        crawler = await run(tmp_path, urls, settings={"CONCURRENT_REQUESTS_PER_DOMAIN": 16})
        paths = [p for _, _, p in server.requests()]
    assert paths.count("/.well-known/tdmrep.json") == 1
    assert len(crawler.spider.results) == 12
    assert all(not v["optout"]["ai-train"]["allowed"] for v in crawler.spider.results.values())


@coroutine_test
async def test_tdmrep_invalid_file_reserves_and_unreachable_file_is_unset(tmp_path, mockserver, caplog):
    urls = [mockserver.url("/page.html", host="optout-tdmbad.test"),
            mockserver.url("/header.html", host="optout-tdmbad.test"),
            mockserver.url("/page.html", host="optout-tdmdown.test")]
    crawler = await run(tmp_path, urls)
    r = crawler.spider.results
    # a file that is there but is not valid JSON: malformed fails closed, TDM reserved in doubt
    assert set(reserved(r[urls[0]])) == {"ai-train", "ai-input"}
    assert "tdmrep.json cannot be read (invalid file: " in reserved(r[urls[0]])["ai-train"]
    assert reserved(r[urls[1]])["ai-train"] == "tdm-reservation: 1"  # the header still counts
    assert reserved(r[urls[2]]) == {}  # 503: no file to read, unset as the specification says
    assert crawler.stats.get_value("gdpr/optout/tdmrep_file/error") == 1
    assert crawler.stats.get_value("gdpr/optout/tdmrep_file/unread") == 1
    assert "invalid file" in caplog.text and "HTTP 503" in caplog.text
    files = crawler.stats.get_value("gdpr/optout/tdmrep_file/found")
    assert files is None


@coroutine_test
async def test_tdmrep_switch_off_fetches_nothing(tmp_path, logged_mockserver):
    policy = write_policy(tmp_path, opt_out={"tdmrep": False})
    url = logged_mockserver.url("/reserved/a.html", host="optout-tdm.test")
    crawler = await run(tmp_path, [url], policy)
    assert reserved(crawler.spider.results[url]) == {}
    assert "/.well-known/tdmrep.json" not in [p for _, _, p in logged_mockserver.requests()]


# --------------------------------------------------------------------------- Content-Usage


@coroutine_test
async def test_content_usage(tmp_path, mockserver):
    host = "optout-cu.test"
    names = ["train-n", "search-n", "repeated", "dup-last-y", "dup-last-n", "upper", "string", "bool", "params",
             "unknown-key", "garbage"]
    urls = {n: mockserver.url(f"/{n}.html", host=host) for n in names}
    crawler = await run(tmp_path, list(urls.values()))
    r = {n: reserved(crawler.spider.results[u]) for n, u in urls.items()}
    assert r["train-n"] == {"ai-train": "Content-Usage: train-ai=n"}
    assert r["search-n"] == {"search": "Content-Usage: search=n"}
    assert r["repeated"] == {"ai-train": "Content-Usage: train-ai=n"}  # lines combined into one dictionary
    assert r["dup-last-y"] == {}  # duplicate keys: the last wins
    assert r["dup-last-n"] == {"ai-train": "Content-Usage: train-ai=n"}
    # malformed fails closed for its purpose: an uppercase key (a parse failure of the whole
    # field), "n" as a String (not the Token n), a bare key, stray commas reserve, in doubt
    assert r["upper"] == {"ai-train": "Content-Usage: Train-AI=n ('Train-AI=n' cannot be read: ai-train reserved, "
                                      "in doubt)"}
    assert r["string"] == {"ai-train": "Content-Usage: train-ai=\"n\" ('train-ai=\"n\"' cannot be read: "
                                       "ai-train reserved, in doubt)"}
    assert r["bool"] == {"ai-train": "Content-Usage: train-ai ('train-ai' cannot be read: ai-train reserved, in doubt)"}
    assert set(r["garbage"]) == {"ai-train"}
    assert r["params"] == {"ai-train": "Content-Usage: train-ai=n"}  # parameters ignored
    assert r["unknown-key"] == {}  # unknown keys name no purpose
    assert crawler.stats.get_value("gdpr/optout/malformed/content_usage") == 4  # upper, string, bool, garbage
    assert crawler.stats.get_value("gdpr/optout/content_usage/train-ai") == 8


@coroutine_test
async def test_content_usage_switch_off(tmp_path, mockserver):
    policy = write_policy(tmp_path, opt_out={"content_usage": False})
    url = mockserver.url("/train-n.html", host="optout-cu.test")
    crawler = await run(tmp_path, [url], policy)
    assert reserved(crawler.spider.results[url]) == {}


# --------------------------------------------------------------------------- Content-Signal header


@coroutine_test
async def test_content_signal_header(tmp_path, mockserver, caplog):
    host = "optout-cs.test"
    names = ["no", "yes", "case", "repeated", "dup", "maybe", "bare", "unknown", "garbage"]
    urls = {n: mockserver.url(f"/{n}.html", host=host) for n in names}
    crawler = await run(tmp_path, list(urls.values()))
    r = {n: reserved(crawler.spider.results[u]) for n, u in urls.items()}
    assert r["no"] == {"ai-train": "Content-Signal: search=yes, ai-train=no, ai-input=yes"}
    assert r["yes"] == {}
    assert r["case"] == {"search": "Content-Signal: Search=No"}  # keys and values case-insensitive
    assert r["repeated"] == {"ai-input": "Content-Signal: search=yes, ai-input=no"}  # lines combined
    assert r["dup"] == {"ai-train": "Content-Signal: ai-train=no, ai-train=yes"}  # any "no" reserves
    # malformed values fail closed for the purpose they name, with the reason in the signal
    assert r["maybe"] == {"ai-train": "Content-Signal: search=yes, ai-train=maybe "
                                      "('ai-train=maybe' is not yes/no: ai-train reserved, in doubt)"}
    assert r["bare"] == {"ai-input": "Content-Signal: ai-input, search=yes "
                                     "('ai-input' is not yes/no: ai-input reserved, in doubt)"}
    assert r["unknown"] == {}  # unknown keys are ignored
    assert r["garbage"] == {}  # names no purpose: logged, search=yes still read
    stats = crawler.stats.get_stats()
    assert stats["gdpr/optout/malformed/content_signal"] == 3  # maybe, bare, garbage
    assert stats["gdpr/optout/content_signal/ai-train"] == 3  # no, dup, maybe
    assert stats["gdpr/optout/reserved/ai-input"] == 2
    assert "cannot read '%%%'" in caplog.text
    decision = next(a for a in audit_lines(tmp_path) if a["decision"] == "optout_decision" and a["url"] == urls["maybe"])
    assert decision["purposes"] == {"search": True, "ai-train": False, "ai-input": True}


@coroutine_test
async def test_content_signal_header_switch_and_non_html(tmp_path, mockserver):
    host = "optout-cs.test"
    urls = {n: mockserver.url(f"/{n}", host=host) for n in ("no.html", "image-no.png", "image-yes.png")}
    crawler = await run(tmp_path, list(urls.values()), write_policy(tmp_path, signal_purposes=["ai-train"]))
    assert set(crawler.spider.failures) == {urls["image-no.png"]}  # a reserved image is never stored
    exc = crawler.spider.failures[urls["image-no.png"]]
    assert isinstance(exc, PolicyViolation) and exc.reason == "optout" and "Content-Signal: ai-train=no" in str(exc)
    assert reserved(crawler.spider.results[urls["no.html"]]) == {
        "ai-train": "Content-Signal: search=yes, ai-train=no, ai-input=yes"}
    # opt_out.content_signal switches off both carriers, the header as the robots.txt line
    policy = write_policy(tmp_path, signal_purposes=["ai-train"], opt_out={"content_signal": False})
    crawler = await run(tmp_path, list(urls.values()), policy)
    assert crawler.spider.failures == {}
    assert reserved(crawler.spider.results[urls["no.html"]]) == {}


# --------------------------------------------------------------------------- non-HTML responses


@coroutine_test
async def test_images_and_documents_with_reservations_are_refused(tmp_path, mockserver):
    host = "optout-img.test"
    names = ["noimageindex.png", "noimageai.png", "noindex.png", "tdm.png", "cu-train.png", "other.png", "ok.png",
             "doc.pdf"]
    urls = {n: mockserver.url(f"/{n}", host=host) for n in names}
    # a search-only spider: noimageai, TDMRep and train-ai reservations do not concern it
    policy = write_policy(tmp_path, signal_purposes=["search"])
    crawler = await run(tmp_path, list(urls.values()), policy)
    failures = crawler.spider.failures
    refused = {n for n, u in urls.items() if u in failures}
    assert refused == {"noimageindex.png", "noindex.png", "doc.pdf"}
    exc = failures[urls["noimageindex.png"]]
    assert isinstance(exc, PolicyViolation) and exc.reason == "optout"
    assert "X-Robots-Tag: noimageindex" in str(exc)
    assert exc.clause.startswith("purposes[0].signal_purposes")
    assert crawler.stats.get_value("gdpr/blocked/optout") == 3

    # an AI-training spider refuses the AI reservations instead
    (tmp_path / "audit.jsonl").unlink()
    policy = write_policy(tmp_path, signal_purposes=["ai-train"])
    crawler = await run(tmp_path, list(urls.values()), policy)
    refused = {n for n, u in urls.items() if u in crawler.spider.failures}
    assert refused == {"noimageai.png", "tdm.png", "cu-train.png"}
    lines = [a for a in audit_lines(tmp_path) if a["decision"] == "refused"]
    assert {a["reason"] for a in lines} == {"optout"} and len(lines) == 3


@coroutine_test
async def test_images_pipeline_never_stores_a_reserved_image(tmp_path, mockserver):
    from scrapy.pipelines.images import ImagesPipeline

    host = "optout-img.test"
    urls = [mockserver.url(f"/{n}", host=host) for n in ("noimageindex.png", "ok.png")]

    class ImageSpider(Spider):
        name = "images"

        async def start(self):
            yield Request(mockserver.url("/plain.html", host="optout-xrobots.test"))

        def parse(self, response):
            yield {"image_urls": urls}

    items: list[dict[str, Any]] = []
    policy = write_policy(tmp_path, signal_purposes=["search"])
    settings = crawl_settings(tmp_path, policy, ITEM_PIPELINES={ImagesPipeline: 1}, IMAGES_STORE=str(tmp_path / "images"))
    crawler = get_crawler(ImageSpider, settings)
    from scrapy import signals

    crawler.signals.connect(lambda item, **kw: items.append(item), signal=signals.item_scraped, weak=False)
    await crawler.crawl_async()
    assert [img["url"] for img in items[0]["images"]] == [urls[1]]
    assert len(list((tmp_path / "images").rglob("*.jpg"))) == 1
    assert crawler.stats.get_value("gdpr/blocked/optout") == 1


@coroutine_test
async def test_tdmrep_cache_expires(tmp_path):
    from tests.conftest import MockServer
    from tests.utils import ManualClock, use_clock, wait_until

    site = tmp_path / "site"
    (site / "hosts" / "tdm-ttl" / ".well-known").mkdir(parents=True)
    (site / "hosts" / "tdm-ttl" / ".well-known" / "tdmrep.json").write_text('[{"location": "/", "tdm-reservation": 1}]')
    (site / "hosts" / "tdm-ttl" / "a.html").write_text("<html><body>a</body></html>")
    clock = ManualClock()

    class LaterSpider(CollectSpider):
        async def start(self):
            yield Request(self.urls[0], dont_filter=True)
            await wait_until(lambda: len(self.results) == 1)
            clock.advance(0.9)  # within the TTL: the file is not fetched again
            yield Request(self.urls[0] + "?cached", dont_filter=True)
            await wait_until(lambda: len(self.results) == 2)
            clock.advance(0.2)
            yield Request(self.urls[0] + "?later", dont_filter=True)

    policy = write_policy(tmp_path, opt_out={"tdmrep_cache_ttl": "PT1S"})
    with MockServer(site=site, log=tmp_path / "requests.log") as server:
        crawler = get_crawler(LaterSpider, crawl_settings(tmp_path, policy))
        use_clock(crawler, clock)
        await crawler.crawl_async(urls=[server.url("/a.html", host="tdm-ttl.test")])
        paths = [p for _, _, p in server.requests()]
    assert paths == ["/.well-known/tdmrep.json", "/a.html", "/a.html?cached", "/.well-known/tdmrep.json",
                     "/a.html?later"]
    assert all(not r["optout"]["ai-train"]["allowed"] for r in crawler.spider.results.values())
    assert crawler.stats.get_value("gdpr/optout/tdmrep_file/found") == 2


@coroutine_test
async def test_report_section(tmp_path, mockserver):
    from scrapy_gdpr.runtime import get_runtime

    urls = [mockserver.url("/noindex.html", host="optout-xrobots.test"),
            mockserver.url("/reserved/a.html", host="optout-tdm.test"),
            mockserver.url("/page.html", host="optout-tdmbad.test")]
    crawler = await run(tmp_path, urls)
    section = get_runtime(crawler).report_sections["optout"]
    assert section["pages_with_reservations"] == 3
    assert section["reserved"] == {"search": 1, "ai-train": 2, "ai-input": 2}
    files = section["tdmrep_files"]
    assert files[f"http://optout-xrobots.test:{mockserver.port}"] == "none (404)"
    assert files[f"http://optout-tdm.test:{mockserver.port}"] == "4 rule(s)"
    assert files[f"http://optout-tdmbad.test:{mockserver.port}"].startswith("unread, TDM reserved (invalid file")


@coroutine_test
async def test_tdmrep_file_over_the_cap_is_not_inflated_and_reserves(tmp_path, caplog):
    # a tdmrep.json gzip bomb, or a file over 1 MB, is stopped at the cap (after
    # decompression); its reservations cannot be read, so TDM is reserved, in doubt
    import zlib

    from tests.conftest import MockServer

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(packer.compress(b" " * 1024 * 1024) for _ in range(64)) + packer.compress(b"[]") + packer.flush()
    assert len(bomb) < 200_000
    site = tmp_path / "site"
    hosts = {"tdm-bomb": (bomb, {"Content-Encoding": "gzip", "Content-Type": "application/json"}),
             "tdm-huge": (b"[" + b" " * 1_500_000 + b"]", {"Content-Type": "application/json"}),
             "tdm-small": (b'[{"location": "/nothing/", "tdm-reservation": 1}]', {"Content-Type": "application/json"})}
    for host, (body, headers) in hosts.items():
        folder = site / "hosts" / host
        folder.mkdir(parents=True)
        (folder / "tdmrep.body").write_bytes(body)
        (folder / "page.html").write_text("<html><body>page</body></html>")
        routes = {"/.well-known/tdmrep.json": {"file": "tdmrep.body", "headers": headers}}
        (folder / "_routes.json").write_text(json.dumps(routes))
    with MockServer(site=site) as server:
        urls = {h: server.url("/page.html", host=f"{h}.test") for h in hosts}
        crawler = await run(tmp_path, list(urls.values()))
    r = crawler.spider.results
    for host in ("tdm-bomb", "tdm-huge"):
        signal = reserved(r[urls[host]])["ai-train"]
        assert "tdmrep.json cannot be read (the file is larger than 1000000 bytes (after decompression))" in signal
    assert reserved(r[urls["tdm-small"]]) == {}
    assert crawler.stats.get_value("gdpr/optout/tdmrep_file/unread") == 2
    assert (crawler.stats.get_value("httpcompression/response_bytes") or 0) < 2_000_000
    files = crawler.stats.get_value("gdpr/optout/tdmrep_file/found")
    assert files == 1
    assert "text and data mining is treated as reserved" in caplog.text


# --------------------------------------------------------------------------- per-purpose product tokens


def token_policy(tmp_path: Path, token: str | None = "GdprTestBot-AI") -> Path:
    data = yaml.safe_load(VALID.read_text(encoding="utf-8"))
    search = data["purposes"][0]
    search["signal_purposes"] = ["search"]
    training = {**search, "id": "training", "signal_purposes": ["ai-train", "ai-input"]}
    if token:
        training["product_token"] = token
    data["purposes"] = [search, training]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


async def token_crawl(tmp_path: Path, urls: list[str], policy: Path) -> Any:
    from scrapy_gdpr.robots import RobotsGateMiddleware

    settings = crawl_settings(tmp_path, policy, DOWNLOADER_MIDDLEWARES={RobotsGateMiddleware: 100, OptOutMiddleware: 120})
    crawler = get_crawler(CollectSpider, settings)
    await crawler.crawl_async(urls=urls)
    return crawler


@coroutine_test
async def test_purpose_product_token(tmp_path, mockserver):
    host = "robots-purpose.test"
    paths = {n: f"/{n}" for n in ("index.html", "no-ai/a.html", "signal/a.html", "maybe/a.html", "yes/a.html", "both/a.html",
                                  "private/a.html", "no-ai/img.png", "to-no-ai.html", "no-ai/go.html")}
    urls = {n: mockserver.url(p, host=host) for n, p in paths.items()}
    crawler = await token_crawl(tmp_path, list(urls.values()), token_policy(tmp_path))
    results = {u: reserved(r) for u, r in crawler.spider.results.items()}
    robots_url = f"http://{host}:{mockserver.port}/robots.txt"
    # the main token may fetch; the training purpose's own token may fetch the page too
    assert results[urls["index.html"]] == {}
    assert results[urls["yes/a.html"]] == {}
    # Disallow for GdprTestBot-AI: the page is fetched (main token) but kept for search only
    no_ai = f"{robots_url}: line 5 'Disallow: /no-ai/' (group User-agent: GdprTestBot-AI) disallows GdprTestBot-AI"
    assert results[urls["no-ai/a.html"]] == {"ai-train": no_ai, "ai-input": no_ai}
    # a content signal in the token's group reserves only the purpose it names
    assert results[urls["signal/a.html"]] == {
        "ai-input": f"{robots_url} line 6 'Content-Signal: /signal/ ai-input=no' (group User-agent: GdprTestBot-AI) "
                    "reserves ai-input for GdprTestBot-AI"}
    assert set(results[urls["maybe/a.html"]]) == {"ai-input"}  # malformed: reserved, in doubt
    assert set(results[urls["both/a.html"]]) == {"ai-train", "ai-input"}  # one line, each purpose
    assert urls["to-no-ai.html"] not in results and urls["no-ai/go.html"] not in results  # redirected
    # the main token decides the fetch itself; a reserved image is never stored
    failures = crawler.spider.failures
    assert set(failures) == {urls["private/a.html"], urls["no-ai/img.png"]}
    assert failures[urls["private/a.html"]].reason == "robots"
    assert failures[urls["no-ai/img.png"]].reason == "optout"
    assert "disallows GdprTestBot-AI" in str(failures[urls["no-ai/img.png"]])
    stats = crawler.stats.get_stats()
    # signals: no-ai (fetched, redirected), signal, maybe, both (one per purpose), img
    assert stats["gdpr/optout/robots_token/gdprtestbot-ai"] == 7
    decision = next(a for a in audit_lines(tmp_path)
                    if a["decision"] == "optout_decision" and a["url"] == urls["no-ai/a.html"])
    assert decision["purposes"] == {"search": True, "ai-train": False, "ai-input": False}


@coroutine_test
async def test_purpose_token_decided_afresh_at_each_redirect(tmp_path, mockserver):
    host = "robots-purpose.test"
    # /to-no-ai.html -> /no-ai/a.html (reserved there); /no-ai/go.html -> /index.html (not reserved there,
    # although the redirect copies the meta of the reserved first hop)
    urls = [mockserver.url("/to-no-ai.html", host=host), mockserver.url("/no-ai/go.html", host=host)]
    crawler = await token_crawl(tmp_path, urls, token_policy(tmp_path))
    results = {u: reserved(r) for u, r in crawler.spider.results.items()}
    assert results == {mockserver.url("/no-ai/a.html", host=host): {
                           "ai-train": ANY_TEXT, "ai-input": ANY_TEXT},
                       mockserver.url("/index.html", host=host): {}}


class _AnyText(str):
    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and "disallows GdprTestBot-AI" in other

    __hash__ = str.__hash__


ANY_TEXT = _AnyText()


@coroutine_test
async def test_purpose_token_without_group_falls_back_to_star(tmp_path, mockserver):
    url = mockserver.url("/index.html", host="robots-purpose2.test")
    crawler = await token_crawl(tmp_path, [url], token_policy(tmp_path))
    assert set(reserved(crawler.spider.results[url])) == {"ai-train", "ai-input"}  # "*" disallows everything
    # no per-purpose token: only the main token's rules count
    crawler = await token_crawl(tmp_path, [url], token_policy(tmp_path, token=None))
    assert reserved(crawler.spider.results[url]) == {}


def test_purpose_tokens_in_review_document_and_information_page(tmp_path):
    from scrapy_gdpr.policy import load_policy
    from scrapy_gdpr.review import build_documents, render_notice_html, render_review_html, render_review_markdown

    doc = build_documents(load_policy(token_policy(tmp_path)), [])
    assert [t["token"] for t in doc["purpose_tokens"]] == ["GdprTestBot-AI"]
    assert "GdprTestBot-AI" in render_review_html(doc) and "`GdprTestBot-AI` (training)" in render_review_markdown(doc)
    assert "User-agent: GdprTestBot-AI\nDisallow: /" in render_notice_html(doc)
    doc = build_documents(load_policy(token_policy(tmp_path, token=None)), [])
    assert doc["purpose_tokens"] == [] and "GdprTestBot-AI" not in render_notice_html(doc)


# --------------------------------------------------------------------------- IPTC/PLUS Data Mining in XMP

# tests/site/hosts/optout-xmp holds real images written by Pillow with an XMP packet each:
# plus:DataMining as an attribute (the .jpg files, JPEG APP1) or as an element with
# rdf:resource (prohibited.png in an iTXt chunk, except-search.webp in its XMP chunk).
XMP_HOST = "optout-xmp.test"
XMP_FILES = ["train.jpg", "genai.jpg", "allowed.jpg", "unknown.jpg", "broken.jpg", "plain.jpg", "prohibited.png",
             "except-search.webp"]


def test_xmp_fixtures_are_real_images_with_real_xmp():
    from PIL import Image

    site = Path(__file__).parent / "site" / "hosts" / "optout-xmp"
    for name in XMP_FILES:
        with Image.open(site / name) as image:
            image.load()
            xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp") or b""
        xmp = xmp.encode() if isinstance(xmp, str) else xmp
        assert (b"DataMining" in xmp) == (name != "plain.jpg"), name


async def xmp_crawl(tmp_path: Path, server: Any, signal_purposes: list[str], **opt_out: Any) -> tuple[Any, dict[str, str]]:
    urls = {n: server.url(f"/{n}", host=XMP_HOST) for n in XMP_FILES}
    policy = write_policy(tmp_path, signal_purposes=signal_purposes, opt_out=opt_out or None)
    crawler = await run(tmp_path, list(urls.values()), policy)
    refused = {n: str(crawler.spider.failures[u]) for n, u in urls.items() if u in crawler.spider.failures}
    return crawler, refused


@coroutine_test
async def test_xmp_data_mining_reserves_purposes(tmp_path, mockserver, caplog):
    crawler, refused = await xmp_crawl(tmp_path, mockserver, ["ai-train"])
    assert set(refused) == {"train.jpg", "genai.jpg", "unknown.jpg", "broken.jpg", "prohibited.png",
                            "except-search.webp"}
    assert "ai-train reserved by XMP plus:DataMining DMI-PROHIBITED-AIMLTRAINING" in refused["train.jpg"]
    assert "XMP plus:DataMining DMI-PROHIBITED-GENAIMLTRAINING" in refused["genai.jpg"]
    # malformed: an unknown value, a packet that is not XML: every purpose, in doubt
    assert "unknown plus:DataMining value 'DMI-MAYBE-LATER'" in refused["unknown.jpg"]
    assert "cannot be parsed" in refused["broken.jpg"] and "in doubt" in refused["broken.jpg"]
    stats = crawler.stats.get_stats()
    assert stats["gdpr/optout/xmp/dmi-prohibited-aimltraining"] == 1
    assert stats["gdpr/optout/malformed/xmp"] == 2
    assert stats["gdpr/blocked/optout"] == 6
    assert "Opt-out signal on" in caplog.text

    # a search spider: only what reserves search (or cannot be read) is refused
    (tmp_path / "audit.jsonl").unlink()
    crawler, refused = await xmp_crawl(tmp_path, mockserver, ["search"])
    assert set(refused) == {"unknown.jpg", "broken.jpg", "prohibited.png"}
    assert "search reserved by XMP plus:DataMining DMI-PROHIBITED" in refused["prohibited.png"]


@coroutine_test
async def test_xmp_switch_off(tmp_path, mockserver):
    _crawler, refused = await xmp_crawl(tmp_path, mockserver, ["search", "ai-train", "ai-input"], image_metadata=False)
    assert refused == {}


def test_read_data_mining_edges():
    from scrapy_gdpr.xmp import read_data_mining

    def packet(body: str) -> bytes:
        return ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                + body + "</rdf:RDF></x:xmpmeta>").encode()

    plus = 'xmlns:p="http://ns.useplus.org/ldf/xmp/1.0/"'
    # any prefix; the bare code; lower case; text form; several packets
    assert read_data_mining(packet(f'<rdf:Description {plus} p:DataMining="dmi-prohibited"/>')).values == [
        "DMI-PROHIBITED"]
    both = packet(f"<rdf:Description {plus}><p:DataMining>http://ns.useplus.org/ldf/vocab/DMI-ALLOWED</p:DataMining>"
                  "</rdf:Description>") + b"\x00\xff" + packet(f'<rdf:Description {plus} p:DataMining="DMI-PROHIBITED"/>')
    assert read_data_mining(both).values == ["DMI-ALLOWED", "DMI-PROHIBITED"]
    # nothing at all: no reservation, no problem
    assert read_data_mining(b"\xff\xd8\xff\xe0 JFIF" + bytes(range(256)) * 100).values == []
    assert read_data_mining(b"no xmp here").problems == []
    # DataMining in another namespace, without a value, outside a packet, in UTF-16: in doubt
    assert read_data_mining(packet('<rdf:Description xmlns:o="urn:other" o:DataMining="DMI-ALLOWED"/>')).problems
    assert read_data_mining(packet(f"<rdf:Description {plus}><p:DataMining/></rdf:Description>")).problems
    assert read_data_mining(b"...DataMining=DMI-PROHIBITED...").problems
    assert read_data_mining(packet(f'<rdf:Description {plus} p:DataMining="DMI-PROHIBITED"/>').decode()
                            .encode("utf-16-le")).problems
    # entities are not resolved (no file or network access from a hostile packet)
    hostile = (b'<!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/hostname">]>' + packet(
        f"<rdf:Description {plus}><p:DataMining>&e;</p:DataMining></rdf:Description>"))
    found = read_data_mining(hostile)
    assert found.values == [] and found.problems


def test_purpose_token_equal_to_the_main_token_is_a_lint_warning(tmp_path):
    from scrapy_gdpr.policy import load_policy

    policy = load_policy(token_policy(tmp_path, token="gdprtestbot"))
    (warning,) = [w for w in policy.warnings if w.path == "purposes[1].product_token"]
    assert "adds nothing" in warning.message and warning.line
    assert not [w for w in load_policy(token_policy(tmp_path)).warnings if "product_token" in w.path]

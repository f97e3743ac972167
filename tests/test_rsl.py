"""RSL licences: the document parser, the decision, and real crawls against the local server."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from scrapy.utils.test import get_crawler

from scrapy_gdpr.optout import OptOutMiddleware
from scrapy_gdpr.policy import HeldLicence
from scrapy_gdpr.robots import RobotsGateMiddleware, parse_robots
from scrapy_gdpr.rsl import LicenceMiddleware, decide, link_header_licences, parse_rsl
from tests.test_optout import VALID, CollectSpider, audit_lines, crawl_settings, reserved
from tests.utils import coroutine_test

if TYPE_CHECKING:
    from pathlib import Path

DOC_URL = "http://example.org/license.xml"
TODAY = date(2026, 12, 1)


def rsl(body: str) -> bytes:
    return f'<?xml version="1.0"?>\n<rsl xmlns="https://rslstandard.org/rsl">{body}</rsl>'.encode()


def verdict(doc_body: str, url: str, usage: str, held: list[HeldLicence] | None = None):
    return decide(parse_rsl(rsl(doc_body), DOC_URL), url, usage, held or [], TODAY)


# --------------------------------------------------------------------------- the document


def test_permits_and_prohibits_usage():
    body = ('<content url="/"><license><permits type="usage">search, ai-index</permits>'
            '<prohibits type="usage">ai-train</prohibits></license></content>')
    assert verdict(body, "http://example.org/a", "search").allowed
    assert verdict(body, "http://example.org/a", "ai-index").allowed
    refused = verdict(body, "http://example.org/a", "ai-train")
    assert not refused.allowed and "does not license ai-train" in refused.text
    # not among what <permits> lists: not licensed either
    assert not verdict(body, "http://example.org/a", "ai-input").allowed


def test_all_and_ai_all_cover_their_usage_types():
    body = '<content url="/"><license><prohibits type="usage">ai-all</prohibits></license></content>'
    assert verdict(body, "http://example.org/a", "search").allowed  # no <permits>: everything else
    for usage in ("ai-train", "ai-input", "ai-index"):
        assert not verdict(body, "http://example.org/a", usage).allowed
    body = '<content url="/"><license><permits type="usage">all</permits></license></content>'
    assert all(verdict(body, "http://example.org/a", u).allowed for u in ("search", "ai-train", "ai-input"))


def test_most_specific_content_element_decides():
    body = ('<content url="/"><license/></content>'
            '<content url="/premium/*.html$"><license><prohibits type="usage">all</prohibits></license></content>'
            '<content url="https://other.example/"><license><prohibits type="usage">all</prohibits></license>'
            '</content>')
    assert verdict(body, "http://example.org/premium/a.html", "search").allowed is False
    assert verdict(body, "http://example.org/premium/a.htmlx", "search").allowed is True
    assert verdict(body, "http://example.org/x", "search").allowed is True
    assert verdict(body, "https://other.example/x", "search").allowed is False
    body = '<content url="/only/"><license><prohibits type="usage">all</prohibits></license></content>'
    assert verdict(body, "http://example.org/elsewhere", "search") is None  # not covered: no verdict


def test_paid_conditional_or_server_licences_need_a_held_licence():
    paid = '<content url="/"><license><payment type="subscription"/></license></content>'
    user = '<content url="/"><license><permits type="user">non-commercial</permits></license></content>'
    server = '<content url="/" server="https://licence.example/"><license/></content>'
    attribution = '<content url="/"><license><payment type="attribution"/></license></content>'
    held = [HeldLicence(document=DOC_URL, usage=["ai-train"], reference="PO-17", obtained_on=date(2026, 1, 1))]
    for body in (paid, user, server, attribution):
        refused = verdict(body, "http://example.org/a", "ai-train")
        assert not refused.allowed and "records none held" in refused.text, body
        assert verdict(body, "http://example.org/a", "ai-train", held).allowed, body
        assert not verdict(body, "http://example.org/a", "search", held).allowed  # held for ai-train only
    assert "payment subscription" in verdict(paid, "http://example.org/a", "search").text
    # an expired licence, or one for another document, is not held
    expired = [HeldLicence(document=DOC_URL, usage=["ai-train"], reference="PO-1", obtained_on=date(2025, 1, 1),
                           expires_on=date(2025, 12, 31))]
    other = [HeldLicence(document="http://example.org/other.xml", usage=["ai-train"], reference="PO-2",
                         obtained_on=date(2026, 1, 1))]
    assert not verdict(paid, "http://example.org/a", "ai-train", expired).allowed
    assert not verdict(paid, "http://example.org/a", "ai-train", other).allowed
    # a free offer beside a paid one: free wins
    both = ('<content url="/"><license><payment type="purchase"/></license>'
            '<license><permits type="usage">search</permits><payment type="free"/></license></content>')
    assert verdict(both, "http://example.org/a", "search").allowed
    assert not verdict(both, "http://example.org/a", "ai-train").allowed


@pytest.mark.parametrize("body", [
    '<content url="/"><license><prohibits type="usage">ai-trian</prohibits></license></content>',
    '<content url="/"><license><permits type="usage">everything</permits></license></content>',
    '<content url="/"><license><permits>search</permits></license></content>',
    '<content url="/"><license><permits type="colour">blue</permits></license></content>',
    '<content url="/"><license><permits type="user">robots</permits></license></content>',
    '<content url="/"><license><payment type="barter"/></license></content>',
    '<content url="/"></content>',
    "<content><license/></content>",
])
def test_malformed_offers_fail_closed(body):
    for usage in ("search", "ai-train"):
        result = verdict(body, "http://example.org/a", usage)
        assert result is not None and not result.allowed, (body, usage)


@pytest.mark.parametrize("body", [
    b"<rsl xmlns='https://rslstandard.org/rsl'><content",
    b"<license/>",
    b"<rsl><content url='/'><license/></content></rsl>",  # no namespace
    b"<rsl xmlns='https://rslstandard.org/rsl'/>",
    b"<!DOCTYPE rsl [<!ENTITY a 'x'>]><rsl xmlns='https://rslstandard.org/rsl'><content url='/'>&a;</content></rsl>",
    b"\xff\xfe garbage",
])
def test_documents_that_are_not_rsl_raise(body):
    with pytest.raises(ValueError, match=r"XML|root element|no <content>"):
        parse_rsl(body, DOC_URL)


def test_extension_namespaces_are_ignored():
    body = ('<content url="/" xmlns:x="https://ext.example/"><license><permits type="usage">search</permits>'
            '<x:binding ref="1"/></license><x:note>hi</x:note></content>')
    assert verdict(body, "http://example.org/a", "search").allowed


def test_link_header_and_robots_license_discovery():
    values = ['</l.xml>; rel="license"; type="application/rsl+xml", <https://cc.example/by>; rel="license"',
              '<http://cdn.example/x.rsl>; rel="license alternate"; type="application/rsl+xml"',
              '</n.xml>; rel="nofollow"; type="application/rsl+xml"']
    assert link_header_licences(values, "http://example.org/a/b") == [
        "http://example.org/l.xml", "http://cdn.example/x.rsl"]
    rules = parse_robots(b"License: /first.xml\nUser-agent: other\nDisallow: /\nLicense: https://x.example/l.xml\n",
                         "GdprTestBot")
    assert rules.licenses == [(1, "/first.xml"), (4, "https://x.example/l.xml")]


# --------------------------------------------------------------------------- crawls


def rsl_policy(tmp_path: Path, held: list[dict[str, Any]] | None = None, **opt_out: Any) -> Path:
    data = yaml.safe_load(VALID.read_text(encoding="utf-8"))
    search = data["purposes"][0]
    search["signal_purposes"] = ["search"]
    training = {**search, "id": "training", "signal_purposes": ["ai-train"], "rsl_usage": ["ai-train"]}
    data["purposes"] = [search, training]
    data["opt_out"] = {**opt_out, "rsl_licences": held or []}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


async def rsl_crawl(tmp_path: Path, urls: list[str], policy: Path) -> Any:
    settings = crawl_settings(tmp_path, policy, DOWNLOADER_MIDDLEWARES={
        RobotsGateMiddleware: 100, OptOutMiddleware: 120, LicenceMiddleware: 125})
    crawler = get_crawler(CollectSpider, settings)
    await crawler.crawl_async(urls=urls)
    return crawler


@coroutine_test
async def test_robots_txt_license(tmp_path, mockserver):
    host = "rsl-robots.test"
    names = ("page.html", "paid/a.html", "closed/a.html", "bad/a.html", "open/a.html", "img.png", "to-closed.html")
    urls = {n: mockserver.url(f"/{n}", host=host) for n in names}
    crawler = await rsl_crawl(tmp_path, list(urls.values()), rsl_policy(tmp_path))
    results = crawler.spider.results
    failures = crawler.spider.failures
    doc = f"http://{host}:{mockserver.port}/license.xml"
    # search licensed free, ai-train prohibited: fetched, kept for search only, reason license
    page = results[urls["page.html"]]
    assert set(reserved(page)) == {"ai-train"}
    assert page["optout"]["ai-train"]["reason"] == "license"
    assert page["optout"]["ai-train"]["signal"] == (
        f'RSL {doc} <content url="/"> does not license ai-train '
        f"(named by http://{host}:{mockserver.port}/robots.txt line 4 'License: /license.xml')")
    assert reserved(results[urls["open/a.html"]]) == {}
    # no purpose of the crawl may use these: not fetched at all
    for name in ("paid/a.html", "closed/a.html", "bad/a.html"):
        assert failures[urls[name]].reason == "license", name
    assert "only with a licence (payment training)" in str(failures[urls["paid/a.html"]])
    assert "ai-trian" in str(failures[urls["bad/a.html"]])
    assert failures[urls["img.png"]].reason == "license"  # a non-HTML response is refused
    assert mockserver.url("/closed/a.html", host=host) not in results  # the redirect's target is decided too
    stats = crawler.stats.get_stats()
    assert stats["gdpr/blocked/license"] == 5  # paid, closed, bad, img, redirect target
    assert stats["gdpr/rsl/documents/read"] == 1  # fetched once for every page
    assert stats["gdpr/optout/malformed/rsl"] == 1
    lines = audit_lines(tmp_path)
    assert any(a["decision"] == "refused" and a["reason"] == "license" and a["url"] == urls["closed/a.html"]
               for a in lines)
    assert any(a["decision"] == "rsl_decision" and a["usage"] == "ai-train" for a in lines)


@coroutine_test
async def test_held_licence_allows_the_paid_usage(tmp_path, mockserver):
    host = "rsl-robots.test"
    doc = f"http://{host}:{mockserver.port}/license.xml"
    held = [{"document": doc, "usage": ["ai-train", "search"], "reference": "PO-2026-7",
             "obtained_on": "2026-01-01"}]
    url = mockserver.url("/paid/a.html", host=host)
    crawler = await rsl_crawl(tmp_path, [url], rsl_policy(tmp_path, held))
    assert reserved(crawler.spider.results[url]) == {}


@coroutine_test
async def test_switched_off(tmp_path, mockserver):
    url = mockserver.url("/closed/a.html", host="rsl-robots.test")
    crawler = await rsl_crawl(tmp_path, [url], rsl_policy(tmp_path, rsl=False))
    assert reserved(crawler.spider.results[url]) == {}
    assert crawler.stats.get_value("gdpr/blocked/license") is None


@coroutine_test
async def test_link_header_and_link_element(tmp_path, mockserver):
    host = "rsl-link.test"
    names = ("header.html", "header-other.html", "element.html", "cc.html", "missing.html", "broken.html",
             "wrong-root.html", "entity.html", "img.png")
    urls = {n: mockserver.url(f"/{n}", host=host) for n in names}
    crawler = await rsl_crawl(tmp_path, list(urls.values()), rsl_policy(tmp_path))
    results = {u: reserved(r) for u, r in crawler.spider.results.items()}
    # the licence prohibits ai-all: the training purpose is refused, search is not
    assert set(results[urls["header.html"]]) == {"ai-train"}
    assert set(results[urls["element.html"]]) == {"ai-train"}
    assert '<link rel="license"' in results[urls["element.html"]]["ai-train"]
    # a licence link that is not RSL (no type) is not followed
    assert results[urls["header-other.html"]] == {} and results[urls["cc.html"]] == {}
    # a licence that cannot be read: every purpose refused, in doubt
    for name, why in (("missing.html", "HTTP 404"), ("broken.html", "not well-formed"),
                      ("wrong-root.html", "root element"), ("entity.html", "refused XML")):
        assert set(results[urls[name]]) == {"search", "ai-train"}, name
        assert why in results[urls[name]]["search"] and "in doubt" in results[urls[name]]["search"], name
    assert crawler.spider.failures[urls["img.png"]].reason == "license"
    assert crawler.stats.get_value("gdpr/rsl/documents/unreadable") == 4


@coroutine_test
async def test_inline_rsl_document(tmp_path, mockserver):
    host = "rsl-link.test"
    urls = {n: mockserver.url(f"/{n}.html", host=host) for n in ("inline", "inline-bad", "inline-other")}
    crawler = await rsl_crawl(tmp_path, list(urls.values()), rsl_policy(tmp_path))
    results = {n: reserved(crawler.spider.results[u]) for n, u in urls.items()}
    assert set(results["inline"]) == {"ai-train"}
    assert results["inline"]["ai-train"].endswith('(named by <script type="application/rsl+xml"> number 1 in the page)')
    # an inline document that cannot be read: every purpose refused, in doubt
    assert set(results["inline-bad"]) == {"search", "ai-train"} and "in doubt" in results["inline-bad"]["search"]
    assert results["inline-other"] == {}
    assert crawler.stats.get_value("gdpr/optout/malformed/rsl") == 1


def test_rsl_in_review_document_and_information_page(tmp_path):
    from scrapy_gdpr.policy import load_policy
    from scrapy_gdpr.review import build_documents, render_notice_html, render_review_markdown

    doc = build_documents(load_policy(rsl_policy(tmp_path, [
        {"document": "https://example.org/license.xml", "usage": ["ai-train"], "reference": "PO-9",
         "obtained_on": "2026-01-01"}])), [])
    row = next(s for s in doc["opt_out"] if s["key"] == "rsl")
    assert row["honoured"] is True
    assert doc["rsl_licences"][0]["reference"] == "PO-9"
    assert "License: https://example.org/license.xml" in render_notice_html(doc)
    assert "PO-9" in render_review_markdown(doc)


def test_crawler_description_names_each_purpose_token_and_licence_usage(tmp_path):
    from scrapy_gdpr.policy import load_policy
    from scrapy_gdpr.review import build_documents
    from tests.test_optout import token_policy

    policy = load_policy(token_policy(tmp_path))
    described = build_documents(policy, [])["crawler_description"]
    assert described["robots_txt"]["product_tokens"] == [
        {"token": "GdprTestBot", "fetches": True, "purposes": [p.id for p in policy.purposes]},
        {"token": "GdprTestBot-AI", "fetches": False, "purposes": ["training"]},
    ]
    training = next(p for p in described["purposes"] if p["id"] == "training")
    assert training["product_token"] == "GdprTestBot-AI"
    assert training["rsl_usage"] == ["ai-train", "ai-input"]  # its signal purposes by default
    rsl_row = next(s for s in described["signals"] if s["key"] == "rsl")
    assert rsl_row["specification"].startswith("RSL 1.0") and len(rsl_row["carriers"]) == 4


def test_lint_names_expired_and_inverted_held_licences(tmp_path):
    from scrapy_gdpr.policy import validate_policy_text

    path = rsl_policy(tmp_path, [
        {"document": "https://example.org/a.xml", "usage": ["ai-train"], "reference": "PO-1",
         "obtained_on": "2025-01-01", "expires_on": "2025-12-31"},
        {"document": "https://example.org/b.xml", "usage": ["search"], "reference": "PO-2",
         "obtained_on": "2026-06-01", "expires_on": "2026-01-01"},
    ])
    policy, findings = validate_policy_text(path.read_text(encoding="utf-8"), str(path), today=date(2026, 11, 1))
    by_path = {f.path: f for f in findings}
    assert by_path["opt_out.rsl_licences[0].expires_on"].severity == "warning"
    assert "expired on 2025-12-31" in by_path["opt_out.rsl_licences[0].expires_on"].message
    assert by_path["opt_out.rsl_licences[1].expires_on"].severity == "error"
    assert policy is None  # an error: the policy is refused

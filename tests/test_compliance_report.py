"""The per-crawl compliance report: written after the feeds closed, stable JSON, readable HTML."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path
from typing import Any

from scrapy import Request, Spider
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from scrapy_gdpr.review import console_enabled, console_states
from tests.utils import addon_settings, coroutine_test, write_policy


class LinkSpider(Spider):
    name = "officer"

    def __init__(self, urls: list[str] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.urls = list(urls or [])

    async def start(self):
        for url in self.urls:
            yield Request(url)

    def parse(self, response):
        yield {"url": response.url, "title": response.css("title::text").get() or ""}


async def crawl_with_report(tmp_path: Path, server: Any) -> tuple[Any, dict[str, Any], str]:
    """A crawl through the whole add-on with a feed and refusals of several kinds."""
    policy = write_policy(tmp_path / "policy.yaml", server, ["127.0.0.1"])
    feed = tmp_path / "out" / "items.jsonl"
    urls = [
        server.url("/page.html"),
        server.url("/index.html"),
        server.url("/private/x.html"),  # robots.txt disallows
        server.url("/page.html", host="unlisted.test"),  # not in the policy
        server.url("/page.html?" + "long-query-" * 12, host="another-unlisted.test"),
        "http://shop.example.cn/",  # excluded jurisdiction
    ]
    settings = addon_settings(tmp_path, policy, FEEDS={str(feed): {"format": "jsonlines"}})
    crawler = get_crawler(LinkSpider, settings)
    await crawler.crawl_async(urls=urls)
    report_json = Path(crawler.stats.get_value("gdpr/report/json"))
    report_html = Path(crawler.stats.get_value("gdpr/report/html"))
    return crawler, json.loads(report_json.read_text(encoding="utf-8")), report_html.read_text(encoding="utf-8")


@coroutine_test
async def test_report_is_written_after_the_feeds_closed(tmp_path, mockserver):
    _crawler, data, html = await crawl_with_report(tmp_path, mockserver)
    feed = (tmp_path / "out" / "items.jsonl").resolve()
    assert feed.exists()
    # the feed file was stored, then recorded by the retention extension, then the report written
    files = data["sections"]["retention"]["feed_files"]
    assert [f["file"] for f in files] == [str(feed)]
    assert files[0]["items"] == 2
    assert data["summary"]["feed_files"] == 1
    assert "items.jsonl" in html
    assert "2 records" in html
    # the ledger's own close-time stat is in the report too
    assert data["stats"]["gdpr/retention/feed_files"] == 1


@coroutine_test
async def test_report_json_keys_are_stable_and_documented(tmp_path, mockserver):
    _crawler, data, _ = await crawl_with_report(tmp_path, mockserver)
    assert data["report_format"] == 2
    assert set(data) == {
        "report_format", "generator", "spider", "finish_reason", "started", "finished", "duration_seconds",
        "policy", "summary", "totals", "refusals", "consoles", "sections", "stats", "audit_log", "report_files",
    }
    summary = data["summary"]
    assert set(summary) == {
        "requests_sent", "responses_received", "refused", "refused_by_reason", "items_stored", "items_dropped",
        "images_checked", "faces_found", "images_redacted", "images_dropped", "feed_files", "expired_deleted",
        "errors_logged",
    }
    assert summary["items_stored"] == 2
    assert summary["refused_by_reason"] == {"domain": 2, "jurisdiction": 1, "robots": 1}
    assert summary["refused"] == 4
    assert data["totals"]["refusals"] == 4 and data["totals"]["items_scraped"] == 2
    assert data["finish_reason"] == "finished"
    assert data["refusals"]["robots"]["meaning"] == "the site's robots.txt disallows it"
    assert {c["extension"].rsplit(".", 1)[1]: c["enabled"] for c in data["consoles"]} == {
        "TelnetConsole": False, "RemoteControl": False,  # get_crawler switches both off
    }
    # every key of the JSON report and of its summary is documented
    doc = (Path(__file__).parent.parent / "docs" / "report.md").read_text(encoding="utf-8")
    for key in [*data, *summary]:
        assert f"`{key}`" in doc, key


def visible_text(html: str) -> str:
    """Text a reader sees outside code, preformatted text, tooltips and the stats table."""
    html = html.split("<h3 id='stats'>", 1)[0]
    html = re.sub(r"<style>.*?</style>", " ", html, flags=re.DOTALL)
    html = re.sub(r"<(code|pre)\b[^>]*>.*?</\1>", " ", html, flags=re.DOTALL)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


@coroutine_test
async def test_report_html_speaks_plain_language(tmp_path, mockserver):
    _, data, html = await crawl_with_report(tmp_path, mockserver)
    text = visible_text(html)
    # no Python literals, no snake_case keys outside code
    assert not re.search(r"\b(True|False|None)\b", text), re.findall(r".{40}\b(?:True|False|None)\b.{40}", text)
    assert not re.search(r"\b[a-z]+_[a-z_]+\b", text), re.findall(r"\b[a-z]+_[a-z_]+\b", text)
    # numbers with units, and the summary before the details
    for expected in ("2 records passed every check and were kept", "4 refusals by the policy",
                     "2 records kept, having passed every check", "1 feed file written",
                     "Refused, by reason", "The site's robots.txt disallows it", "finished normally",
                     "Sites and their terms", "What was stored, and when it expires"):
        assert expected in text, expected
    assert text.index("Summary") < text.index("Refused, by reason") < text.index("Details")
    # the terms fingerprint is shortened on the page, whole in the JSON
    fingerprint = data["sections"]["terms"][0]["reviewed_fingerprint"]
    assert fingerprint.startswith("sha256:") and f">{fingerprint}<" not in html
    assert f"title='{fingerprint}'" in html


def test_console_rule():
    assert console_enabled(Settings()) is False  # Scrapy's default (on) does not count
    project = Settings()
    project.set("TELNETCONSOLE_ENABLED", True, "project")
    assert console_enabled(project) is True
    # the add-on's own switch-off does not count as the project switching it on
    addon = Settings()
    addon.set("TELNETCONSOLE_ENABLED", False, "addon")
    assert console_enabled(addon) is False
    addon.set("TELNETCONSOLE_ENABLED", True, "spider")
    assert console_enabled(addon) is True
    # switched on, but its extension switched off
    disabled = Settings()
    disabled.set("TELNETCONSOLE_ENABLED", True, "project")
    disabled.set("EXTENSIONS", {"scrapy.extensions.telnet.TelnetConsole": None}, "project")
    assert console_enabled(disabled) is False
    remote = Settings()
    remote.set("REMOTE_CONTROL_ENABLED", "1", "cmdline")
    assert console_enabled(remote, "REMOTE_CONTROL_ENABLED") is True
    states = {s["setting"]: s for s in console_states(project)}
    assert states["TELNETCONSOLE_ENABLED"]["enabled"] is True
    assert "switched ON by the project's settings" in states["TELNETCONSOLE_ENABLED"]["words"]
    assert "127.0.0.1, port 6023 to 6073" in states["TELNETCONSOLE_ENABLED"]["words"]
    assert states["REMOTE_CONTROL_ENABLED"]["enabled"] is False


@coroutine_test
async def test_a_crawl_that_kept_nothing_is_not_shown_as_fine(tmp_path, mockserver):
    from scrapy_gdpr.report import render_html

    _, data, html = await crawl_with_report(tmp_path, mockserver)
    assert "<div class='box ok'>" in html and "nothing was kept" not in html
    data["summary"]["items_stored"] = 0
    blocked = render_html(data)
    assert "<div class='box warn'>" in blocked
    assert "nothing was kept" in visible_text(blocked)
    data["consoles"][0]["enabled"] = True
    data["summary"]["items_stored"] = 2
    console = visible_text(render_html(data))
    assert "Scrapy's telnet console (TELNETCONSOLE_ENABLED) ran during this crawl." in console


def sample_report() -> dict[str, Any]:
    """A report as JSON with hostile and unknown content."""
    return {
        "spider": "café<script>", "finish_reason": "closespider_timeout",
        "started": "2026-12-05T10:00:00+00:00", "finished": "2026-12-06T11:02:03+00:00",
        "duration_seconds": 90123.0,
        "policy": {"id": "p", "title": "Ünïcode <b>", "path": "/p.yaml", "fingerprint": "sha256:" + "ab" * 32,
                   "controller": "Ctrl & Co"},
        "summary": {"requests_sent": 1234567, "responses_received": 1, "refused": 1,
                    "refused_by_reason": {"weird_new_reason": 1}, "items_stored": 1, "items_dropped": 0,
                    "images_checked": 0, "faces_found": 0, "images_redacted": 0, "images_dropped": 0,
                    "feed_files": 0, "expired_deleted": {"feed_lines": 0, "files": 0, "ledger_rows": 0},
                    "errors_logged": 2},
        "refusals": {"weird_new_reason": {"count": 1, "samples": ["http://x.test/<script>alert(1)</script>"]}},
        "consoles": [],
        "sections": {
            "a_new_component": {"flag": True, "nothing": None, "nested": [[1, 2], {"k": "v"}], "ratio": 0.5,
                                "when": "2026-12-05T10:00:00Z", "sub": {"deep": {"deeper": 1}}},
            "terms": [{"domain": "bücher.example", "status": "refused: terms changed since review",
                       "reviewed_fingerprint": "sha256:" + "00" * 32, "current_fingerprint": "sha256:" + "11" * 32,
                       "diff": "-old <b>\n+new"}],
            "retention": "not a dict",
        },
        "stats": {"gdpr/x": 1},
        "audit_log": None,
    }


def test_report_html_escapes_and_survives_any_section():
    from scrapy_gdpr.report import render_html

    html = render_html(sample_report())
    assert "<script" not in html
    assert not re.search(r"<b>(?![\d,]+</b>)", html)  # <b> only around the summary's figures
    text = visible_text(html)
    assert "café<script>" in text and "Ünïcode <b>" in text and "Ctrl & Co" in text
    assert "1 day 1 hour" in text or "25 hours 2 minutes 3 seconds" in text
    assert "stopped by the time limit" in text and "2 errors logged" in text
    assert "1,234,567" in text
    assert "A new component" in text and "Flag yes" in text
    assert "bücher.example: the terms changed since the review" in text
    assert "-old &lt;b&gt;" in html


def test_the_three_documents_share_one_style_sheet():
    from datetime import date

    from scrapy_gdpr import _html
    from scrapy_gdpr.policy import load_policy
    from scrapy_gdpr.report import render_html
    from scrapy_gdpr.review import build_documents, render_notice_html, render_review_html
    from tests.utils import DATA

    doc = build_documents(load_policy(DATA / "policies" / "valid.yaml"), [], today=date(2026, 11, 1))
    for html in (render_review_html(doc), render_notice_html(doc), render_html(sample_report())):
        assert html.count("<style>") == 1 and f"<style>{_html.CSS}</style>" in html


class RefusedAtOpenSpider(Spider):
    name = "refused"

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):
        from scrapy import signals

        spider = super().from_crawler(crawler, *args, **kwargs)
        crawler.signals.connect(spider.refuse, signal=signals.spider_opened)
        return spider

    def refuse(self) -> None:
        from scrapy.exceptions import CloseSpider

        raise CloseSpider("refused_at_start")

    async def start(self):
        yield Request("http://127.0.0.1:9/never")


@coroutine_test
async def test_report_of_a_crawl_closed_while_opening(tmp_path, mockserver):
    # the engine never starts, so no engine_stopped comes: the report is written at spider_closed
    policy = write_policy(tmp_path / "policy.yaml", mockserver, ["127.0.0.1"])
    crawler = get_crawler(RefusedAtOpenSpider, addon_settings(tmp_path, policy))
    await crawler.crawl_async()
    data = json.loads(Path(crawler.stats.get_value("gdpr/report/json")).read_text(encoding="utf-8"))
    assert data["finish_reason"] == "refused_at_start"
    assert data["summary"]["requests_sent"] == 0


def test_reports_of_crawls_started_in_the_same_second_do_not_overwrite(tmp_path):
    from scrapy_gdpr.report import _claim, _write_atomic

    first = _claim(tmp_path, "news-20261205T100000Z")
    second = _claim(tmp_path, "news-20261205T100000Z")
    assert first[0].name == "news-20261205T100000Z.json" and first[1].name == "news-20261205T100000Z.html"
    assert second[0].name == "news-20261205T100000Z-2.json" and second[1].name == "news-20261205T100000Z-2.html"
    _write_atomic(first[0], "{}\n")
    assert first[0].read_text(encoding="utf-8") == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "news-20261205T100000Z-2.json", "news-20261205T100000Z.json"]  # no temporary file left

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import scrapy
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from scrapy_gdpr import feedfiles
from scrapy_gdpr.addon import ADDON_HOOKS, Addon
from scrapy_gdpr.ledger import open_ledger, parse_ts
from scrapy_gdpr.retention import (
    STAMP_FIELDS,
    GdprCsvItemExporter,
    LockingFileFeedStorage,
    RetentionItemFilter,
    configure_feeds,
    read_manifest,
)
from tests.conftest import MockServer
from tests.retention_support import PagesSpider, crawl_settings, ledger_url, make_site, write_policy  # noqa: F401
from tests.utils import coroutine_test

FORMATS = {"items.jsonl": "jsonlines", "items.json": "json", "items.csv": "csv", "items.xml": "xml"}


@pytest.fixture(scope="module")
def site_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("retention-site")
    with MockServer(site=make_site(root)) as server:
        yield server


def _urls(server: MockServer) -> list[str]:
    return [server.url("/jane.html", "people.test"), server.url("/john.html", "people.test"),
            server.url("/a.html", "news.test")]


@coroutine_test
async def test_stamps_in_every_feed_format(tmp_path, site_server):
    policy = write_policy(tmp_path, items="P30D", images="P14D")
    feeds = {str(tmp_path / "out" / name): {"format": fmt} for name, fmt in FORMATS.items()}
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    before = datetime.now(UTC).replace(microsecond=0)
    crawler = get_crawler(PagesSpider, crawl_settings(tmp_path, policy, ledger, feeds, images=True))
    await crawler.crawl_async(urls=_urls(site_server))
    after = datetime.now(UTC)

    for name, fmt in FORMATS.items():
        path = tmp_path / "out" / name
        records = list(feedfiles.read_records(path, fmt))
        assert len(records) == 3, name
        urls = sorted(r.source_url for r in records)
        assert urls == sorted(_urls(site_server))
        for rec in records:
            assert set(STAMP_FIELDS) <= set(rec.stamp), (name, rec.stamp)
            collected = parse_ts(rec.stamp["collected_at"])
            assert before - timedelta(seconds=1) <= collected <= after
            assert parse_ts(rec.expires_at) == collected + timedelta(days=30)
            assert rec.stamp["retention"] == "P30D"
            assert rec.stamp["purpose"] == "search"
            assert rec.stamp["lawful_basis"] == "legitimate_interests"
            assert rec.stamp["policy_id"] == "test-gallery"
            assert rec.stamp["policy_fingerprint"].startswith("sha256:")
            assert rec.stamp["spider"] == "pages"
            assert rec.stamp["item_type"] == "PageItem"
            assert len(rec.item_id) == 32
        manifest = read_manifest(path)
        assert manifest is not None
        assert manifest["item_count"] == 3
        assert manifest["format"] == fmt
        assert manifest["purpose"] == "search"
        assert manifest["spider"] == "pages"
        assert manifest["policy_fingerprint"] == crawler.stats.get_value("gdpr/policy/fingerprint")
        assert manifest["earliest_expiry"] <= manifest["latest_expiry"]
        assert manifest["created"]

    # the same item has the same id in every file
    ids = {fmt: sorted(r.item_id for r in feedfiles.read_records(tmp_path / "out" / n, fmt)) for n, fmt in FORMATS.items()}
    assert len({tuple(v) for v in ids.values()}) == 1

    # CSV: flat gdpr.<field> columns; the rest of the item is untouched
    header = (tmp_path / "out" / "items.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert [h for h in header if h.startswith("gdpr.")] == [f"gdpr.{f}" for f in STAMP_FIELDS]
    assert "title" in header
    # JSON Lines keeps nested JSON, including item fields
    line = json.loads((tmp_path / "out" / "items.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert line["title"] in ("Jane", "John", "News A")
    assert line["gdpr"]["faces"] is None

    # the ledger: items, feed lines of 4 files, images with their own retention, thumbnails
    with open_ledger(ledger) as led:
        assert led.count("item") == 3
        assert led.count("feed_line") == 12
        assert led.count("feed_file") == 4
        images = led.all(["image"])
        assert len(images) == 2
        for img in images:
            assert Path(img.location).is_file()
            assert img.location.startswith(str(tmp_path / "images" / "full"))
            assert img.expires_at == img.collected_at + timedelta(days=14)
            assert img.content_hash.startswith("sha256:")
            assert img.object_url.endswith(".png")
        thumbs = led.all(["thumbnail"])
        assert len(thumbs) == 2 and all("/thumbs/small/" in t.location for t in thumbs)
        assert all(Path(t.location).is_file() for t in thumbs)

    stats = crawler.stats.get_stats()
    assert stats["gdpr/retention/stamped"] == 3
    assert stats["gdpr/retention/feed_files"] == 4
    assert stats["gdpr/retention/ledger_rows"] == 3 + 4  # items + images + thumbnails
    report = json.loads(next((tmp_path / "reports").glob("*.json")).read_text(encoding="utf-8"))
    section = report["sections"]["retention"]
    assert section["items_stored"] == 3
    assert section["files_stored"] == {"image": 2}
    assert sum(section["expiry_by_month"].values()) == 3


class NoSourceSpider(scrapy.Spider):
    name = "nosource"

    async def start(self):
        yield {"name": "from start(), no response"}


@coroutine_test
async def test_item_without_provenance_is_dropped(tmp_path):
    policy = write_policy(tmp_path)
    feeds = {str(tmp_path / "items.jsonl"): {"format": "jsonlines"}}
    crawler = get_crawler(NoSourceSpider, crawl_settings(tmp_path, policy, f"sqlite:///{tmp_path / 'l.sqlite3'}", feeds))
    await crawler.crawl_async()
    assert crawler.stats.get_value("gdpr/blocked/retention") == 1
    assert crawler.stats.get_value("item_scraped_count") is None
    out = tmp_path / "items.jsonl"
    assert not out.exists() or out.read_bytes() == b""
    audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any(a.get("reason") == "retention" for a in audit)


def test_item_filter_refuses_unstamped_items():
    f = RetentionItemFilter({"format": "jsonlines"})
    assert not f.accepts({"title": "no stamp"})
    assert not f.accepts({"gdpr": {"item_id": "x"}})  # no expiry
    stamped = {"t": 1, "gdpr": {"item_id": "x", "expires_at": "2030-01-01T00:00:00Z", "purpose": "search",
                                "item_type": "PageItem"}}
    assert f.accepts(stamped)
    assert not RetentionItemFilter({"gdpr_purpose": "ads"}).accepts(stamped)
    assert RetentionItemFilter({"gdpr_purpose": "search"}).accepts(stamped)
    assert RetentionItemFilter({"item_classes": [PagesSpider]}).accepts(stamped) is False
    assert RetentionItemFilter({"item_classes": ["tests.retention_support.PageItem"]}).accepts(stamped)


def test_addon_hook_configures_every_feed():
    assert "scrapy_gdpr.retention.configure_feeds" in ADDON_HOOKS
    custom = "scrapy.extensions.feedexport.ItemFilter"
    settings = Settings({"FEEDS": {
        "a.jsonl": {"format": "jsonlines"},
        "b.csv": {"format": "csv", "fields": ["title"]},
        "c.json": {"format": "json", "item_filter": custom},
    }})
    configure_feeds(settings, None)  # type: ignore[arg-type]
    feeds = settings.getdict("FEEDS")
    assert feeds["a.jsonl"]["item_filter"] is RetentionItemFilter
    assert feeds["b.csv"]["fields"] == ["title", "gdpr"]
    assert feeds["c.json"]["item_filter"] == custom  # the user's own filter is left alone
    assert settings.getdict("FEED_EXPORTERS")["csv"] is GdprCsvItemExporter
    assert settings.getdict("FEED_STORAGES")["file"] is LockingFileFeedStorage


@coroutine_test
async def test_addon_applies_hook(tmp_path, site_server):
    # through the add-on, -o style FEEDS get the filter (the gates may refuse these hosts;
    # what matters here is the feed configuration)
    policy = write_policy(tmp_path)
    crawler = get_crawler(PagesSpider, {
        "ADDONS": {Addon: 0}, "GDPR_POLICY": str(policy), "GDPR_AUDIT_LOG": str(tmp_path / "a.jsonl"),
        "GDPR_REPORT_DIR": str(tmp_path / "r"), "GDPR_LEDGER": f"sqlite:///{tmp_path / 'l.sqlite3'}",
        "FEEDS": {str(tmp_path / "x.csv"): {"format": "csv", "fields": ["title"]}},
    })
    feeds = crawler.settings.getdict("FEEDS")
    assert feeds[str(tmp_path / "x.csv")]["item_filter"] is RetentionItemFilter
    assert feeds[str(tmp_path / "x.csv")]["fields"] == ["title", "gdpr"]


@coroutine_test
async def test_csv_with_fields_gets_stamp_columns(tmp_path, site_server):
    policy = write_policy(tmp_path)
    feeds = {str(tmp_path / "few.csv"): {"format": "csv", "fields": ["title"]}}
    crawler = get_crawler(PagesSpider, crawl_settings(tmp_path, policy, f"sqlite:///{tmp_path / 'l.sqlite3'}", feeds))
    await crawler.crawl_async(urls=_urls(site_server)[:1])
    header = (tmp_path / "few.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header == ["title", *(f"gdpr.{f}" for f in STAMP_FIELDS)]
    recs = list(feedfiles.read_records(tmp_path / "few.csv", "csv"))
    assert recs[0].stamp["source_url"] == _urls(site_server)[0]

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
from tests.utils import addon_settings, coroutine_test

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

    # the ledger: each item once per feed file it is in (as that file's line; no
    # separate item row repeats it), 4 files, images with their own retention, thumbnails
    with open_ledger(ledger) as led:
        assert led.count("item") == 0
        assert led.count("feed_line") == 12
        for name in FORMATS:
            lines = led.at_location(str((tmp_path / "out" / name).resolve()))
            assert sorted(r.url for r in lines if r.kind == "feed_line") == sorted(_urls(site_server))
            assert all(r.content_hash.startswith("sha256:") and r.item_id for r in lines if r.kind == "feed_line")
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
    assert stats["gdpr/retention/ledger_rows"] == 4  # images + thumbnails (the items are feed lines)
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
    assert configure_feeds in ADDON_HOOKS
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


class DropAfterStampPipeline:
    """A user pipeline after the retention pipeline that drops one stamped item."""

    def process_item(self, item):  # type: ignore[no-untyped-def]
        if item["gdpr"]["source_url"].endswith("/john.html"):
            raise scrapy.exceptions.DropItem("not wanted after all")
        return item


class KeepProvenanceNotes:
    """Reads each scraped item's provenance at item_scraped, as a user extension may."""

    def __init__(self, crawler):  # type: ignore[no-untyped-def]
        self.crawler = crawler
        self.seen: list[tuple[str, object]] = []
        crawler.signals.connect(self.scraped, signal=scrapy.signals.item_scraped)

    @classmethod
    def from_crawler(cls, crawler):  # type: ignore[no-untyped-def]
        return cls(crawler)

    def scraped(self, item):  # type: ignore[no-untyped-def]
        from scrapy_gdpr.provenance import provenance_of

        prov = provenance_of(self.crawler, item)
        self.seen.append((item["gdpr"]["source_url"], prov.url if prov else None))


@pytest.mark.parametrize("feed", [False, True], ids=["no-feed", "jsonl-feed"])
@pytest.mark.parametrize("batch", [1, 1000], ids=["rows-written-at-once", "rows-batched"])
@coroutine_test
async def test_item_dropped_after_the_retention_pipeline_is_not_recorded(tmp_path, site_server, monkeypatch, batch, feed):
    """With a pipeline after the retention pipeline, an item is recorded only once it
    is scraped: one that the later pipeline drops gets no ledger row. Without a local
    feed the items are item rows; with one, that feed's lines."""
    from scrapy_gdpr import retention
    from scrapy_gdpr.provenance import registry
    from scrapy_gdpr.runtime import get_runtime

    monkeypatch.setattr(retention._LedgerWriter, "batch_size", batch)
    policy = write_policy(tmp_path)
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    feeds = {str(tmp_path / "out" / "items.jsonl"): {"format": "jsonlines"}} if feed else None
    settings = crawl_settings(tmp_path, policy, ledger, feeds)
    settings["ITEM_PIPELINES"][DropAfterStampPipeline] = 950
    settings["EXTENSIONS"][KeepProvenanceNotes] = 0
    crawler = get_crawler(PagesSpider, settings)
    await crawler.crawl_async(urls=_urls(site_server))

    kept = sorted(u for u in _urls(site_server) if not u.endswith("/john.html"))
    with open_ledger(ledger) as led:
        assert sorted(r.url for r in led.all(["item"])) == ([] if feed else kept)
        assert sorted(r.url for r in led.all(["feed_line"])) == (kept if feed else [])
    stats = crawler.stats.get_stats()
    assert stats["gdpr/retention/stamped"] == 3
    assert stats["gdpr/retention/ledger_rows"] == (0 if feed else 2)
    report = json.loads(next((tmp_path / "reports").glob("*.json")).read_text(encoding="utf-8"))
    assert report["sections"]["retention"]["items_stored"] == 2
    assert sum(report["sections"]["retention"]["expiry_by_month"].values()) == 2
    # provenance is still there for whatever reads it after the retention pipeline
    seen = next(ext for ext in crawler.extensions.middlewares if isinstance(ext, KeepProvenanceNotes)).seen
    assert sorted(seen) == [(u, u) for u in kept]
    # and nothing is left behind in the registry of items in flight
    assert len(registry(get_runtime(crawler))) == 0


@coroutine_test
async def test_provenance_is_released_without_the_retention_pipeline(tmp_path, site_server):
    """With no pipeline taking provenance over, entries go when items are scraped."""
    from scrapy_gdpr.provenance import ProvenanceMiddleware, registry
    from scrapy_gdpr.runtime import get_runtime

    settings = {
        "GDPR_POLICY": str(write_policy(tmp_path)), "GDPR_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "SPIDER_MIDDLEWARES": {ProvenanceMiddleware: 950}, "TWISTED_DNS_RESOLVER": "tests.utils.LocalResolver",
    }
    crawler = get_crawler(PagesSpider, settings)
    await crawler.crawl_async(urls=_urls(site_server))
    assert crawler.stats.get_value("item_scraped_count") == 3
    assert len(registry(get_runtime(crawler))) == 0


@coroutine_test
async def test_last_pipeline_records_items_without_a_signal_handler(tmp_path, site_server):
    """When the retention pipeline is the last one, it hands items to the ledger
    itself: neither it nor the provenance middleware listens to item_scraped."""
    from scrapy_gdpr.provenance import ProvenanceMiddleware
    from scrapy_gdpr.retention import RetentionExtension

    policy = write_policy(tmp_path)
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    crawler = get_crawler(PagesSpider, crawl_settings(tmp_path, policy, ledger))
    await crawler.crawl_async(urls=_urls(site_server))
    from pydispatch.dispatcher import getAllReceivers, liveReceivers

    owners = {type(getattr(r, "__self__", None)) for r in liveReceivers(getAllReceivers(crawler, scrapy.signals.item_scraped))}
    assert RetentionExtension not in owners and ProvenanceMiddleware not in owners
    assert crawler.stats.get_value("gdpr/retention/ledger_rows") == 3  # no feed: three item rows
    with open_ledger(ledger) as led:
        assert sorted(r.url for r in led.all(["item"])) == sorted(_urls(site_server))


CRASHING_CRAWL = """
import os, signal, sys
import scrapy
from scrapy.crawler import CrawlerProcess
from tests.retention_support import crawl_settings
from pathlib import Path

class Dies(scrapy.Spider):
    name = "pages"
    urls = sys.argv[4:]

    async def start(self):
        for url in self.urls:
            yield scrapy.Request(url)

    def parse(self, response):
        if response.url.endswith("/a.html"):
            os.kill(os.getpid(), signal.SIGKILL)  # the machine dies mid-crawl
        # big enough that the feed's buffer reaches the disk at once
        yield {"url": response.url, "text": "x" * 20000}

tmp = Path(sys.argv[1])
settings = crawl_settings(tmp, Path(sys.argv[2]), sys.argv[3], {str(tmp / "out" / "items.jsonl"): {"format": "jsonlines"}},
                          CONCURRENT_REQUESTS=1)
process = CrawlerProcess(settings)
process.crawl(Dies)
process.start()
"""


def test_feed_of_a_crawl_that_dies_is_still_purged_and_erased(tmp_path, site_server):
    """The feed file is in the ledger from the moment it is opened: a crawl killed
    before it closes its feed leaves a file that purge and erasure still reach."""
    from scrapy_gdpr.ledger import Selector
    from scrapy_gdpr.retention import purge
    from scrapy_gdpr.rights import find_holdings
    from tests.utils import ROOT

    policy = write_policy(tmp_path, items="P30D")
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    urls = [site_server.url("/jane.html", "people.test"), site_server.url("/john.html", "people.test"),
            site_server.url("/a.html", "news.test")]
    started = datetime.now(UTC)
    proc = subprocess.run([sys.executable, "-c", CRASHING_CRAWL, str(tmp_path), str(policy), ledger, *urls],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    feed = (tmp_path / "out" / "items.jsonl").resolve()
    written = [r for r in feedfiles.read_records(feed, "jsonlines") if r.stamp]
    assert written, "the crawl wrote no line before it died"
    with open_ledger(ledger) as led:
        row = led.feed_file(str(feed))
        assert row is not None
        # no later than the first line can expire
        assert row.expires_at <= min(parse_ts(r.expires_at) for r in written)
        assert row.expires_at >= started + timedelta(days=30) - timedelta(seconds=1)
        assert led.count("feed_line") == 0  # the lines were never recorded
        # an erasure finds the lines of the unclosed feed
        holdings = find_holdings(led, [Selector("url", written[0].source_url)])
        assert list(holdings.items) == [written[0].item_id]
        # and a purge after their expiry deletes them
        result = purge(led, started + timedelta(days=31))
        assert result.feed_lines == len(written)
        left = [r for r in feedfiles.read_records(feed, "jsonlines") if r.stamp] if feed.exists() else []
        assert left == []
        assert led.feed_file(str(feed)) is None


@coroutine_test
async def test_items_no_recorded_feed_takes_get_item_rows(tmp_path, site_server):
    """An item that goes into no local feed (here the only feed takes another item
    class) is recorded as an item row; one that a local feed takes, as its line."""
    policy = write_policy(tmp_path)
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    feeds = {str(tmp_path / "out" / "other.jsonl"): {"format": "jsonlines", "item_classes": ["tests.retention_support.PageItem"]},
             str(tmp_path / "out" / "none.jsonl"): {"format": "jsonlines", "item_classes": [scrapy.Item]}}
    crawler = get_crawler(PagesSpider, crawl_settings(tmp_path, policy, ledger, feeds))
    await crawler.crawl_async(urls=_urls(site_server))
    with open_ledger(ledger) as led:
        assert led.count("feed_line") == 3 and led.count("item") == 0
    # the same crawl with only the feed that takes nothing
    ledger2 = f"sqlite:///{tmp_path / 'ledger2.sqlite3'}"
    feeds2 = {str(tmp_path / "out2" / "none.jsonl"): {"format": "jsonlines", "item_classes": [scrapy.Item]}}
    crawler = get_crawler(PagesSpider, crawl_settings(tmp_path, policy, ledger2, feeds2))
    await crawler.crawl_async(urls=_urls(site_server))
    with open_ledger(ledger2) as led:
        assert led.count("feed_line") == 0
        assert sorted(r.url for r in led.all(["item"])) == sorted(_urls(site_server))


@coroutine_test
async def test_feed_fields_never_leave_the_stamp_out(tmp_path, mockserver):
    """FEED_EXPORT_FIELDS (every feed's default) and a feed's ``fields`` as a dict
    (field -> column name) still export the stamp under its own name."""
    from tests.utils import write_policy as write_gate_policy

    policy = write_gate_policy(tmp_path / "policy.yaml", mockserver, ["127.0.0.1"])
    feeds = {
        str(tmp_path / "default.jsonl"): {"format": "jsonlines"},
        str(tmp_path / "renamed.jsonl"): {"format": "jsonlines", "fields": {"title": "T", "gdpr": "meta"}},
        str(tmp_path / "columns.csv"): {"format": "csv", "fields": {"title": "Title", "url": "gdpr"}},
    }
    settings = addon_settings(tmp_path, policy, FEEDS=feeds, FEED_EXPORT_FIELDS=["title"], RETRY_ENABLED=False)
    url = mockserver.url("/page.html")
    crawler = get_crawler(PagesSpider, settings)
    await crawler.crawl_async(urls=[url])
    for name, fmt in (("default.jsonl", "jsonlines"), ("renamed.jsonl", "jsonlines"), ("columns.csv", "csv")):
        recs = list(feedfiles.read_records(tmp_path / name, fmt))
        assert len(recs) == 1, name
        assert recs[0].stamp["source_url"] == url, name
    line = json.loads((tmp_path / "renamed.jsonl").read_text(encoding="utf-8"))
    assert set(line) == {"T", "gdpr"}
    header = (tmp_path / "columns.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header == ["Title", *(f"gdpr.{f}" for f in STAMP_FIELDS)]
class _CustomThumbsImages:
    """Thumbnails under a name of the project's own (an overridden ``thumb_path``)."""

    def thumb_path(self, request, thumb_id, response=None, info=None, *, item=None):  # type: ignore[no-untyped-def]
        import hashlib

        return f"thumbs/{thumb_id}/own-{hashlib.sha1(request.url.encode()).hexdigest()[:16]}.jpg"


@pytest.mark.parametrize("pipeline", ["stock", "face_stage"])
@coroutine_test
async def test_ledger_records_the_files_each_pipeline_stored_with_their_hashes(tmp_path, site_server, pipeline):
    """Thumbnails at the paths the pipeline's own ``thumb_path`` gives, and each
    stored file's hash equal to the SHA-256 of the bytes in the store."""
    import hashlib

    from scrapy.pipelines.images import ImagesPipeline

    from scrapy_gdpr.images import GdprImagesPipeline

    base = GdprImagesPipeline if pipeline == "face_stage" else ImagesPipeline
    custom = type("CustomThumbs", (_CustomThumbsImages, base), {})
    policy = write_policy(tmp_path, items="P30D", images="P14D")
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    settings = crawl_settings(tmp_path, policy, ledger, images=True)
    settings["ITEM_PIPELINES"] = {custom: 1, **{k: v for k, v in settings["ITEM_PIPELINES"].items()
                                                if k != "scrapy.pipelines.images.ImagesPipeline"}}
    settings["IMAGES_THUMBS"] = {"small": (20, 20), "tiny": (8, 8)}
    crawler = get_crawler(PagesSpider, settings)
    await crawler.crawl_async(urls=_urls(site_server))

    stored = {str(p.resolve()) for p in (tmp_path / "images").rglob("*.jpg")}
    with open_ledger(ledger) as led:
        images, thumbs = led.all(["image"]), led.all(["thumbnail"])
        rows = images + thumbs
    assert len(images) == 2 and len(thumbs) == 4
    assert all("/own-" in t.location for t in thumbs)
    assert {r.location for r in rows} == stored  # every stored file recorded, nothing else
    for row in rows:
        assert row.content_hash == "sha256:" + hashlib.sha256(Path(row.location).read_bytes()).hexdigest()

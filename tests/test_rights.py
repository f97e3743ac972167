from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from scrapy.utils.test import get_crawler

from scrapy_gdpr import feedfiles
from scrapy_gdpr.audit import AuditLog
from scrapy_gdpr.ledger import Selector, open_ledger
from scrapy_gdpr.retention import LockingFileFeedStorage, purge, read_manifest
from scrapy_gdpr.rights import (
    erase,
    export_access,
    find_holdings,
    new_request_id,
    processing_record,
    render_processing_record_html,
    render_processing_record_markdown,
    write_receipts,
)
from tests.conftest import MockServer
from tests.retention_support import (  # noqa: F401
    PagesSpider,
    crawl_settings,
    feed_ids,
    ledger_url,
    make_site,
    page_item,
    write_policy,
    write_stamped_feed,
)
from tests.utils import coroutine_test

FEEDS = {"items.jsonl": "jsonlines", "items.csv": "csv", "items.xml": "xml", "items.json": "json"}


@pytest.fixture(scope="module")
def site_server(tmp_path_factory):
    with MockServer(site=make_site(tmp_path_factory.mktemp("rights-site"))) as server:
        yield server


async def _crawl(tmp_path: Path, server: MockServer, ledger: str) -> list[str]:
    policy = write_policy(tmp_path)
    urls = [server.url("/jane.html", "people.test"), server.url("/john.html", "people.test"),
            server.url("/a.html", "news.test")]
    feeds = {str(tmp_path / "out" / n): {"format": f} for n, f in FEEDS.items()}
    crawler = get_crawler(PagesSpider, crawl_settings(tmp_path, policy, ledger, feeds, images=True))
    await crawler.crawl_async(urls=urls)
    return urls


@coroutine_test
async def test_access_exports_everything_held(tmp_path, site_server, ledger_url):  # noqa: F811
    jane, john, news = await _crawl(tmp_path, site_server, ledger_url)
    with open_ledger(ledger_url) as led:
        holdings = find_holdings(led, [Selector("url", jane)], [tmp_path / "audit.jsonl"])
        assert len(holdings.items) == 1
        (found,) = holdings.items.values()
        assert sorted(Path(x).name for x in found.locations) == sorted(FEEDS)
        assert found.data["title"] == "Jane"
        kinds = sorted(o.kind for o in holdings.objects)
        assert kinds == ["image", "thumbnail"]
        out = tmp_path / "access.zip"
        summary = export_access(holdings, out, request_id=new_request_id("access"), received=datetime.now(UTC),
                                controller="Example Research Ltd", contact="dpo@example.org")
    assert summary["items"] == 1 and summary["files"] == 2
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert {"index.html", "items.json", "ledger.json", "audit.jsonl", "request.json"} <= set(names)
        assert sum(n.startswith("files/image/") for n in names) == 1
        assert sum(n.startswith("files/thumbnail/") for n in names) == 1
        index = zf.read("index.html").decode()
        assert jane in index and "Example Research Ltd" in index and john not in index
        items = json.loads(zf.read("items.json"))
        assert items[0]["item"]["gdpr"]["source_url"] == jane
        image_name = next(n for n in names if n.startswith("files/image/"))
        assert zf.read(image_name)[:3] == b"\xff\xd8\xff"  # the stored JPEG itself

    # by domain: both people pages, not the news page; by text: Jane's title
    with open_ledger(ledger_url) as led:
        assert len(find_holdings(led, [Selector("domain", "people.test")]).items) == 2
        assert len(find_holdings(led, [Selector("prefix", site_server.url("/j", "people.test"))]).items) == 2
        assert [f.source_url for f in find_holdings(led, [Selector("contains", "Jane")]).items.values()] == [jane]
        # the image URL alone finds the image and its thumbnail
        img_url = site_server.url("/img/jane.png", "people.test")
        assert sorted(o.kind for o in find_holdings(led, [Selector("url", img_url)]).objects) == ["image", "thumbnail"]


@coroutine_test
async def test_erase_everywhere_and_object(tmp_path, site_server, ledger_url):  # noqa: F811
    jane, john, news = await _crawl(tmp_path, site_server, ledger_url)
    objections = tmp_path / "objections.txt"
    audit = AuditLog(tmp_path / "audit.jsonl")
    with open_ledger(ledger_url) as led:
        jane_files = [o.location for o in find_holdings(led, [Selector("url", jane)]).objects]
        john_files = [o.location for o in find_holdings(led, [Selector("url", john)]).objects]
        assert len(jane_files) == 2 and all(Path(p).exists() for p in jane_files)
        result = erase(led, [Selector("url", jane)], objections_path=objections, audit=audit)
        audit.close()
        assert result.complete
        assert result.feed_lines == 4  # one line in each of the four feed files
        assert sorted(result.objects) == sorted(jane_files)
        assert not any(Path(p).exists() for p in jane_files)
        assert all(Path(p).exists() for p in john_files)
        # nothing about Jane is left anywhere
        assert led.find(Selector("url", jane)) == []
        assert led.find(Selector("url", site_server.url("/img/jane.png", "people.test"))) == []
        left = find_holdings(led, [Selector("url", jane), Selector("contains", "Jane")])
        assert not left.items and not left.objects
        # the rest is intact, in every format, and still recorded
        for name, fmt in FEEDS.items():
            recs = list(feedfiles.read_records(tmp_path / "out" / name, fmt))
            assert sorted(r.source_url for r in recs) == sorted([john, news]), name
            assert read_manifest(tmp_path / "out" / name)["item_count"] == 2
        assert led.count("feed_line") == 8
        assert len(find_holdings(led, [Selector("url", john)]).objects) == 2
    # the objection file has the entry the request gate reads
    text = objections.read_text(encoding="utf-8")
    assert f"url {jane}\n" in text and result.request_id in text
    entries = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    erased = [e for e in entries if e["decision"] == "erased"]
    assert erased[-1]["request_id"] == result.request_id and erased[-1]["status"] == "complete"

    receipts = write_receipts({"kind": "erasure", **result.as_dict()}, tmp_path / "receipts")
    assert json.loads(receipts["json"].read_text())["request_id"] == result.request_id
    assert result.request_id in receipts["md"].read_text() and "| Status | complete |" in receipts["md"].read_text()
    assert "<table>" in receipts["html"].read_text()


def test_erase_by_domain_and_contains(tmp_path, ledger_url):  # noqa: F811
    feed = tmp_path / "f.jsonl"
    now = datetime.now(UTC) + timedelta(days=9)
    items = [page_item("https://jane.example/a", now), page_item("https://www.jane.example/b", now),
             page_item("https://other.example/about-jane", now, text="Jane Doe's talk"),
             page_item("https://other.example/x", now, text="unrelated")]
    with open_ledger(ledger_url) as led:
        write_stamped_feed(feed, "jsonlines", items, ledger=led)
        result = erase(led, [Selector("domain", "jane.example"), Selector("contains", "Jane Doe")],
                       objections_path=tmp_path / "obj.txt")
        assert result.feed_lines == 3
        assert [json.loads(x)["url"] for x in feed.read_text().splitlines()] == ["https://other.example/x"]
        assert led.count("feed_line") == 1
    lines = (tmp_path / "obj.txt").read_text().splitlines()
    assert "domain jane.example" in lines
    assert not any(x.startswith("contains") for x in lines)  # not a kind the gate can apply


def test_erase_waits_for_a_crawl_then_reports_pending(tmp_path):
    feed = tmp_path / "f.jsonl"
    later = datetime.now(UTC) + timedelta(days=9)
    with open_ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}") as led:
        write_stamped_feed(feed, "jsonlines", [page_item("https://a.test/jane", later)], ledger=led)
        storage = LockingFileFeedStorage(str(feed))
        fh = storage.open(None)
        result = erase(led, [Selector("url", "https://a.test/jane")], objections_path=tmp_path / "o.txt",
                       lock_timeout=0.2)
        assert not result.complete and result.pending == [str(feed.resolve())]
        assert led.find(Selector("url", "https://a.test/jane"))  # kept until the file is done
        storage.store(fh)
        again = erase(led, [Selector("url", "https://a.test/jane")], objections_path=tmp_path / "o.txt")
        assert again.complete and again.feed_lines == 1
        assert led.find(Selector("url", "https://a.test/jane")) == []


def test_processing_record(tmp_path, ledger_url):  # noqa: F811
    feed = tmp_path / "f.jsonl"
    now = datetime.now(UTC)
    audit_path = tmp_path / "audit.jsonl"
    with open_ledger(ledger_url) as led:
        write_stamped_feed(feed, "jsonlines", [page_item("https://a.test/1", now - timedelta(days=1)),
                                               page_item("https://a.test/2", now + timedelta(days=40))], ledger=led)
        audit = AuditLog(audit_path)
        purge(led, now, audit=audit, spider="pages")
        erase(led, [Selector("url", "https://a.test/2")], objections_path=tmp_path / "o.txt", audit=audit)
        audit.write({"decision": "refused", "reason": "robots", "url": "https://a.test/x"})
        audit.close()
    record = processing_record(ledger_url, [audit_path], since=now - timedelta(hours=1), until=now + timedelta(hours=1))
    assert record["purged_totals"]["feed_lines"] == 1
    assert len(record["erasures"]) == 1 and record["erasures"][0]["status"] == "complete"
    assert record["refusals"] == {"robots": 1}
    empty = processing_record(ledger_url, [audit_path], since=now + timedelta(days=1))
    assert empty["purges"] == [] and empty["stored"] == {}
    md = render_processing_record_markdown(record)
    assert "# Record of processing" in md and "1 purge run(s)" in md
    assert "<h1>Record of processing" in render_processing_record_html(record)


def test_processing_record_counts_stored_items(tmp_path, ledger_url):  # noqa: F811
    later = datetime(2031, 3, 5, tzinfo=UTC)
    with open_ledger(ledger_url) as led:
        write_stamped_feed(tmp_path / "f.jsonl", "jsonlines",
                           [page_item(f"https://a.test/{i}", later) for i in range(3)], ledger=led)
    record = processing_record(ledger_url, [])
    assert record["stored"] == {"feed_file": 1, "feed_line": 3}
    assert record["expiry_by_month"] == {"2031-03": 4}
    assert record["stored_by_purpose"]["search (legitimate_interests)"] == 3
    assert feed_ids(tmp_path / "f.jsonl", "jsonlines")

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
    jane, john, _news = await _crawl(tmp_path, site_server, ledger_url)
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


# --------------------------------------------------------------------------- text matching

NAME_FEEDS = {"f.jsonl": "jsonlines", "f.json": "json", "f.csv": "csv", "f.xml": "xml"}


def _name_store(tmp_path: Path, led, title: str = "Zoë Quill") -> dict[str, str]:
    """One feed in each format, written by Scrapy's exporters with their default
    encodings (JSON: \\u00eb escapes; CSV and XML: UTF-8), holding one item with the
    name and one without; returns the ids of the items with the name."""
    later = datetime.now(UTC) + timedelta(days=9)
    ids = {}
    for name, fmt in NAME_FEEDS.items():
        zoe = page_item(f"https://people.test/{fmt}/zoe", later, text=title)
        other = page_item(f"https://people.test/{fmt}/search_x", later, text="Someone else")
        write_stamped_feed(tmp_path / name, fmt, [zoe, other], ledger=led)
        ids[name] = zoe["gdpr"]["item_id"]
    assert b"Zo\\u00eb" in (tmp_path / "f.jsonl").read_bytes()  # Scrapy's default export encoding
    assert "Zoë".encode() in (tmp_path / "f.csv").read_bytes()
    return ids


@pytest.mark.parametrize("query", ["Zoë Quill", "zoë quill", "ZOË QUILL", "Zoe\u0308 Quill", "zoë  quill", "Quill",
                                   "Ｚｏë Quill"])
def test_contains_matches_decoded_values_in_every_format(tmp_path, query):
    with open_ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}") as led:
        ids = _name_store(tmp_path, led)
        found = find_holdings(led, [Selector("contains", query)])
    assert set(found.items) == set(ids.values())
    assert sorted(Path(p).name for p in found.feed_files) == sorted(NAME_FEEDS)


def test_contains_decodes_xml_entities_and_csv_quoting(tmp_path):
    later = datetime.now(UTC) + timedelta(days=9)
    with open_ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}") as led:
        write_stamped_feed(tmp_path / "q.csv", "csv", [page_item("https://a.test/1", later, text='Quill, "Zoë"')],
                           ledger=led)
        xml = tmp_path / "e.xml"
        write_stamped_feed(xml, "xml", [page_item("https://a.test/2", later, text="ZOE")], ledger=led)
        xml.write_bytes(xml.read_bytes().replace(b"<title>ZOE</title>", b"<title>Zo&#235; &amp; Quill</title>"))
        assert len(find_holdings(led, [Selector("contains", 'quill, "zoë"')]).items) == 1
        assert len(find_holdings(led, [Selector("contains", "zoë & quill")]).items) == 1
        assert find_holdings(led, [Selector("contains", "&amp;")]).items == {}  # the entity, not the text
        assert find_holdings(led, [Selector("contains", '""')]).items == {}  # CSV quoting is not text


@pytest.mark.parametrize("query", ["search", "_", "gdpr", "title", "url", "sha256", "legitimate_interests",
                                   "people.test/jsonlines/zoe", "PageItem", "expires_at", "{"])
def test_contains_never_matches_keys_or_stamps(tmp_path, query):
    """Field names, stamp values (purpose, hashes, ids, the source URL in the stamp)
    and JSON syntax are not item text."""
    with open_ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}") as led:
        _name_store(tmp_path, led)
        for path in tmp_path.glob("f.*"):  # the item's own url field is a value: take it out
            text = path.read_text(encoding="utf-8")
            path.write_text(text.replace("https://people.test/", "https://p.test/").replace("/search_x", "/other"),
                            encoding="utf-8")
        found = find_holdings(led, [Selector("contains", query)])
    assert found.items == {}, query


def test_contains_erasure_removes_only_the_person(tmp_path):
    with open_ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}") as led:
        ids = _name_store(tmp_path, led)
        result = erase(led, [Selector("contains", "ZOË QUILL")], objections_path=tmp_path / "o.txt")
        assert result.complete and result.feed_lines == 4
        for name, fmt in NAME_FEEDS.items():
            left = list(feedfiles.read_records(tmp_path / name, fmt))
            assert [r.item_id for r in left] != [] and ids[name] not in [r.item_id for r in left]
            assert "Zo" not in (tmp_path / name).read_text(encoding="utf-8")
        assert led.count("feed_line") == 4
    assert not (tmp_path / "o.txt").exists()  # text is never an objection


def test_needs_confirmation_over_a_tenth_of_the_store(tmp_path):
    from scrapy_gdpr.rights import needs_confirmation

    later = datetime.now(UTC) + timedelta(days=9)
    items = [page_item(f"https://a.test/{i}", later, text=f"Person {i}{' Ann' if i < 4 else ''}") for i in range(30)]
    with open_ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}") as led:
        write_stamped_feed(tmp_path / "f.jsonl", "jsonlines", items, ledger=led)
        everyone = find_holdings(led, [Selector("contains", "person")])
        assert everyone.items_held == 30 and len(everyone.items) == 30
        assert "matches 30 of the 30 items held" in (needs_confirmation(everyone) or "")
        assert needs_confirmation(find_holdings(led, [Selector("contains", "ann")])) is not None  # 4 of 30
        assert needs_confirmation(find_holdings(led, [Selector("contains", "person 1")])) is not None  # 1, 10-19
        assert needs_confirmation(find_holdings(led, [Selector("contains", "person 7")])) is None  # 1 of 30
        assert needs_confirmation(find_holdings(led, [Selector("url", "https://a.test/3")])) is None


def test_torn_fragments_match_on_decoded_values_only():
    from scrapy_gdpr.rights import Matcher

    fragment = '{"url": "https://people.test/zoe", "title": "Zo\\u00eb Quill, \\"Z\\"", "gdpr": {"purpose": "sea'
    by_name = Matcher([Selector("contains", "zoë quill")])
    assert by_name.fragment("jsonlines", fragment)
    assert Matcher([Selector("url", "https://people.test/zoe")]).fragment("json", fragment)
    assert Matcher([Selector("domain", "people.test")]).fragment("json", fragment)
    for key_or_syntax in ("title", "gdpr", "purpose", '": "', "u00eb"):
        assert not Matcher([Selector("contains", key_or_syntax)]).fragment("jsonlines", fragment), key_or_syntax
    assert by_name.fragment("xml", "https://people.test/zoe Zoë Quill")
    assert by_name.fragment("csv", 'https://people.test/zoe,"Zoë Quill, ""Z""",sea')

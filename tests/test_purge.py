from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from scrapy.utils.test import get_crawler

from scrapy_gdpr import feedfiles
from scrapy_gdpr.audit import AuditLog
from scrapy_gdpr.ledger import open_ledger
from scrapy_gdpr.retention import LockingFileFeedStorage, manifest_path, purge, read_manifest
from tests.conftest import MockServer
from tests.retention_support import (  # noqa: F401
    SUFFIX,
    PagesSpider,
    add_object,
    crawl_settings,
    feed_ids,
    ledger_url,
    make_site,
    page_item,
    write_policy,
    write_stamped_feed,
)
from tests.utils import coroutine_test

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("fmt", ["jsonlines", "json", "csv", "xml"])
def test_purge_removes_only_what_expired(tmp_path, ledger_url, fmt):  # noqa: F811
    path = tmp_path / "feeds" / f"items.{SUFFIX[fmt]}"
    old = [page_item(f"https://people.test/old{i}", NOW - timedelta(days=i)) for i in range(3)]  # day 0: exactly now
    new = [page_item(f"https://people.test/new{i}", NOW + timedelta(days=i + 1)) for i in range(3)]
    with open_ledger(ledger_url) as led:
        write_stamped_feed(path, fmt, old[:2] + new + old[2:], ledger=led)
        expired_img = add_object(led, tmp_path / "img", "full/a.jpg", "https://people.test/old0",
                                 "https://cdn.test/a.jpg", NOW - timedelta(seconds=1))
        thumb = add_object(led, tmp_path / "img", "thumbs/small/a.jpg", "https://people.test/old0",
                           "https://cdn.test/a.jpg", NOW - timedelta(seconds=1), kind="thumbnail")
        live_img = add_object(led, tmp_path / "img", "full/b.jpg", "https://people.test/new0",
                              "https://cdn.test/b.jpg", NOW + timedelta(days=1))
        # the same image file stored for an expired and for a live page: kept
        shared = add_object(led, tmp_path / "img", "full/c.jpg", "https://people.test/old1",
                            "https://cdn.test/c.jpg", NOW - timedelta(days=1))
        add_object(led, tmp_path / "img", "full/c.jpg", "https://people.test/new1", "https://cdn.test/c.jpg",
                   NOW + timedelta(days=5))
        audit = AuditLog(tmp_path / "audit.jsonl")

        dry = purge(led, NOW, dry_run=True)
        assert dry.feed_lines == 3 and dry.objects == 2
        assert feed_ids(path, fmt) == sorted(i["gdpr"]["item_id"] for i in old + new)  # nothing deleted

        result = purge(led, NOW, audit=audit, spider="pages")
        audit.close()
        assert result.feed_lines == 3
        assert feed_ids(path, fmt) == sorted(i["gdpr"]["item_id"] for i in new)
        assert not expired_img.exists() and not thumb.exists()
        assert live_img.exists() and shared.exists()
        assert result.objects == 2 and result.objects_kept_shared == 1
        # the ledger keeps only what is still held
        assert led.count_expired(NOW) == 0
        assert sorted(r.item_id for r in led.all(["feed_line"])) == sorted(i["gdpr"]["item_id"] for i in new)
        manifest = read_manifest(path)
        assert manifest["item_count"] == 3
        assert manifest["earliest_expiry"] == new[0]["gdpr"]["expires_at"]
        assert led.feed_files()[0].expires_at == NOW + timedelta(days=1)
        # idempotent
        again = purge(led, NOW)
        assert again.feed_lines == 0 and again.objects == 0
    entries = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    purged = [e for e in entries if e["decision"] == "purged"]
    assert sorted(e["item_id"] for e in purged if e["kind"] == "feed_line") == sorted(i["gdpr"]["item_id"] for i in old)
    assert {e["url"] for e in purged if e["kind"] == "feed_line"} == {i["url"] for i in old}
    assert sum(e["kind"] in ("image", "thumbnail") for e in purged) == 2
    assert entries[-1]["decision"] == "purge_finished"


def test_wholly_expired_file_is_removed(tmp_path, ledger_url):  # noqa: F811
    path = tmp_path / "items.jsonl"
    with open_ledger(ledger_url) as led:
        write_stamped_feed(path, "jsonlines", [page_item("https://a.test/1", NOW - timedelta(hours=1))], ledger=led)
        assert manifest_path(path).exists()
        result = purge(led, NOW)
        assert result.feed_files_removed == 1
        assert not path.exists() and not manifest_path(path).exists()
        assert led.count() == 0


def test_unstamped_lines_are_kept(tmp_path):
    path = tmp_path / "items.jsonl"
    with open_ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}") as led:
        write_stamped_feed(path, "jsonlines", [page_item("https://a.test/1", NOW - timedelta(hours=1)),
                                               page_item("https://a.test/2", NOW + timedelta(hours=1))], ledger=led)
        with path.open("a", encoding="utf-8") as fh:
            fh.write('{"title": "written by something else"}\n')
        purge(led, NOW)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "something else" in lines[1]


def test_purge_skips_a_file_a_crawl_is_writing(tmp_path):
    path = tmp_path / "items.jsonl"
    old = page_item("https://a.test/old", NOW - timedelta(days=1))
    with open_ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}") as led:
        write_stamped_feed(path, "jsonlines", [old], ledger=led)
        storage = LockingFileFeedStorage(str(path))
        fh = storage.open(None)  # what a crawl's exporter holds, appending
        fresh = page_item("https://a.test/new", NOW + timedelta(days=1))
        fh.write((json.dumps(fresh) + "\n").encode())
        fh.flush()
        busy = purge(led, NOW)
        assert busy.busy == [str(path.resolve())] and busy.feed_lines == 0
        fh.write((json.dumps(page_item("https://a.test/new2", NOW + timedelta(days=1))) + "\n").encode())
        storage.store(fh)
        done = purge(led, NOW)
        assert done.feed_lines == 1
    assert [json.loads(x)["url"] for x in path.read_text(encoding="utf-8").splitlines()] == [
        "https://a.test/new", "https://a.test/new2"]


@pytest.fixture(scope="module")
def site_server(tmp_path_factory):
    with MockServer(site=make_site(tmp_path_factory.mktemp("purge-site"))) as server:
        yield server


@coroutine_test
async def test_spider_open_purges_and_crawl_appends(tmp_path, site_server):
    feed = tmp_path / "items.jsonl"
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    old = [page_item(f"https://people.test/gone{i}", datetime.now(UTC) - timedelta(days=1)) for i in range(3)]
    with open_ledger(ledger) as led:
        write_stamped_feed(feed, "jsonlines", old, ledger=led)
    policy = write_policy(tmp_path)
    settings = crawl_settings(tmp_path, policy, ledger, {str(feed): {"format": "jsonlines"}})
    crawler = get_crawler(PagesSpider, settings)
    await crawler.crawl_async(urls=[site_server.url("/jane.html", "people.test")])
    assert crawler.stats.get_value("gdpr/retention/purged/feed_lines") == 3
    lines = [json.loads(x) for x in feed.read_text(encoding="utf-8").splitlines()]
    assert [x["title"] for x in lines] == ["Jane"]
    report = json.loads(next((tmp_path / "reports").glob("*.json")).read_text(encoding="utf-8"))
    assert report["sections"]["retention"]["purges"][0]["feed_lines"] == 3


@coroutine_test
async def test_the_purge_at_spider_open_reports_its_steps(tmp_path, site_server):
    """The crawl's purge takes the same step hook as the command's (tests/utils.PurgeSteps)."""
    from tests.utils import PurgeSteps

    feed = tmp_path / "items.jsonl"
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    old = [page_item(f"https://people.test/gone{i}", datetime.now(UTC) - timedelta(days=1)) for i in range(2)]
    with open_ledger(ledger) as led:
        write_stamped_feed(feed, "jsonlines", old, ledger=led)
    settings = crawl_settings(tmp_path, write_policy(tmp_path), ledger, {str(feed): {"format": "jsonlines"}})
    settings["EXTENSIONS"] = {**settings["EXTENSIONS"], PurgeSteps: 1}
    crawler = get_crawler(PagesSpider, settings)
    await crawler.crawl_async(urls=[site_server.url("/jane.html", "people.test")])
    assert crawler.stats.get_value("gdpr/retention/purged/feed_lines") == 2
    assert PurgeSteps.steps[:2] == ["removed", "before manifest removal"]  # every line expired: the file went
    assert PurgeSteps.steps[-1] == "feed file done"


@coroutine_test
async def test_purge_on_open_can_be_switched_off(tmp_path, site_server):
    feed = tmp_path / "items.jsonl"
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    with open_ledger(ledger) as led:
        write_stamped_feed(feed, "jsonlines", [page_item("https://x.test/1", datetime.now(UTC) - timedelta(days=1))],
                           ledger=led)
    settings = crawl_settings(tmp_path, write_policy(tmp_path), ledger, {str(feed): {"format": "jsonlines"}},
                              GDPR_PURGE_ON_OPEN=False)
    crawler = get_crawler(PagesSpider, settings)
    await crawler.crawl_async(urls=[site_server.url("/jane.html", "people.test")])
    assert len(feed.read_text(encoding="utf-8").splitlines()) == 2


@coroutine_test
async def test_crawl_writing_while_purges_run(tmp_path, site_server):
    """Purges running in a loop while a crawl appends: nothing new is lost, nothing old stays."""
    feed = tmp_path / "items.jsonl"
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    old = [page_item(f"https://people.test/gone{i}", datetime.now(UTC) - timedelta(days=1)) for i in range(20)]
    with open_ledger(ledger) as led:
        write_stamped_feed(feed, "jsonlines", old, ledger=led)
    urls = [site_server.url(f"/_/respond?body=<title>p{i}</title>&delay=0.02", "news.test") for i in range(25)]
    settings = crawl_settings(tmp_path, write_policy(tmp_path), ledger, {str(feed): {"format": "jsonlines"}},
                              GDPR_PURGE_ON_OPEN=False, CONCURRENT_REQUESTS=4)
    stop = threading.Event()
    runs: list[int] = []
    errors: list[BaseException] = []

    def purger() -> None:
        try:
            with open_ledger(ledger) as led:
                while not stop.is_set():
                    runs.append(purge(led, datetime.now(UTC)).feed_lines)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's own thread, which fails on it
            errors.append(exc)

    thread = threading.Thread(target=purger)
    thread.start()
    try:
        crawler = get_crawler(PagesSpider, settings)
        await crawler.crawl_async(urls=urls)
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert len(runs) > 1
    with open_ledger(ledger) as led:
        purge(led, datetime.now(UTC))
    titles = sorted(json.loads(x)["title"] for x in feed.read_text(encoding="utf-8").splitlines())
    assert titles == sorted(f"p{i}" for i in range(25))
    assert not list(tmp_path.glob(".*.gdpr-tmp"))


def test_temp_files_of_a_killed_rewrite_are_cleaned(tmp_path):
    path = tmp_path / "items.jsonl"
    with open_ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}") as led:
        write_stamped_feed(path, "jsonlines", [page_item("https://a.test/1", NOW - timedelta(hours=1)),
                                               page_item("https://a.test/2", NOW + timedelta(hours=1))], ledger=led)
        (tmp_path / ".items.jsonl.abc.gdpr-tmp").write_text("partial")
        purge(led, NOW)
    assert not list(tmp_path.glob(".*.gdpr-tmp"))
    assert feedfiles.guess_format(path) == "jsonlines"

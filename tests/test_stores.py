"""Item stores: the interface purge, access and erasure call, the PostgreSQL item store
on the real server, and the start-up refusal of stores purge cannot reach."""

from __future__ import annotations

import contextlib
import json
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from scrapy_gdpr.gate import PolicyGateMiddleware
from scrapy_gdpr.ledger import Selector, open_ledger
from scrapy_gdpr.retention import RetentionPipeline
from scrapy_gdpr.stores import (
    ItemStore,
    PostgresItemStore,
    StoredItem,
    StoreError,
    check_settings,
    item_matches,
    load_item_stores,
    search_text,
)
from tests.conftest import MockServer
from tests.retention_support import POSTGRES_DSN, PagesSpider, crawl_settings, ledger_url, make_site, write_policy  # noqa: F401
from tests.utils import coroutine_test, run_scrapy

if TYPE_CHECKING:
    from pathlib import Path

STORE = "scrapy_gdpr.stores.PostgresItemStore"


# --------------------------------------------------------------------------- text matching


def test_search_text_is_decoded_values_only_normalised():
    item = {"title": "ZOE\u0308 Quill", "Zoë": "key is not a value", "tags": ["ﬁne", {"n": 42}],
            "gdpr": {"purpose": "search", "source_url": "https://x.test/a"}}
    text = search_text(item)
    assert "zoë quill" in text and "fine" in text and "42" in text
    assert "key is not a value" in text
    assert "search" not in text  # the stamp is not searched
    sels = [Selector("contains", "Zoë Quill")]
    assert item_matches(item, "https://x.test/a", sels)
    assert not item_matches({"Zoë Quill": 1}, "https://x.test/a", sels)  # keys are not values
    assert not item_matches(item, "https://x.test/a", [Selector("contains", "search")])
    # one value at a time: a request never matches across two fields
    assert not item_matches({"a": "Zoë", "b": "Quill"}, "https://x.test/a", sels)


# --------------------------------------------------------------------------- start-up refusals


@pytest.mark.parametrize(("settings", "needle"), [
    ({"FEEDS": {"s3://bucket/items.jsonl": {"format": "jsonlines"}}}, "feed s3://bucket/items.jsonl"),
    ({"FEEDS": {"gs://bucket/items.jsonl": {"format": "jsonlines"}}}, "gs://"),
    ({"FEEDS": {"ftp://u:p@host/items.csv": {"format": "csv"}}}, "ftp://"),
    ({"FEEDS": {"stdout:": {"format": "jsonlines"}}}, "standard output"),
    ({"FEEDS": {"items.pickle": {"format": "pickle"}}}, "the pickle format cannot be read back"),
    ({"FEEDS": {"items.jsonl.gz": {"format": "jsonlines",
                                   "postprocessing": ["scrapy.extensions.postprocessing.GzipPlugin"]}}},
     "postprocessing"),
    ({"IMAGES_STORE": "s3://bucket/images/"}, "IMAGES_STORE = s3://bucket/images/"),
    ({"FILES_STORE": "ftp://u:p@host/files/"}, "FILES_STORE = ftp://"),
    ({"FILES_STORE": "gs://bucket/files/"}, "FILES_STORE = gs://bucket/files/"),
])
def test_remote_feeds_and_media_stores_refused(settings, needle):
    with pytest.raises(StoreError) as info:
        check_settings(Settings(settings), None)  # type: ignore[arg-type]
    message = str(info.value)
    assert needle in message and "GDPR_ITEM_STORES" in message


def test_local_feeds_and_stores_pass(tmp_path):
    settings = Settings({"FEEDS": {str(tmp_path / "a.jsonl"): {"format": "jsonlines"},
                                   (tmp_path / "b.csv").as_uri(): {"format": "csv"}},
                         "IMAGES_STORE": str(tmp_path / "img"), "FILES_STORE": (tmp_path / "f").as_uri()})
    check_settings(settings, None)  # type: ignore[arg-type]
    assert "scrapy_gdpr.stores.ItemStoresExtension" in str(settings.getdict("EXTENSIONS")) or any(
        getattr(k, "__name__", "") == "ItemStoresExtension" for k in settings.getdict("EXTENSIONS"))


def test_remote_feed_refused_at_startup_of_a_crawl(tmp_path, mockserver):
    """`scrapy crawl` with an S3 feed stops before fetching anything, non-zero, saying why."""
    policy = write_policy(tmp_path)
    spider = tmp_path / "spider.py"
    spider.write_text(
        "import scrapy\n"
        "class S(scrapy.Spider):\n"
        "    name = 's'\n"
        "    custom_settings = {'ADDONS': {'scrapy_gdpr.addon.Addon': 0}}\n"
        f"    start_urls = [{mockserver.url('/index.html', '127.0.0.1')!r}]\n"
        "    def parse(self, response):\n"
        "        yield {'url': response.url}\n", encoding="utf-8")
    proc = run_scrapy("runspider", str(spider),
                      "-s", f"GDPR_POLICY={policy}", "-s", f"GDPR_LEDGER=sqlite:///{tmp_path / 'l.sqlite3'}",
                      "-o", "s3://bucket/items.jsonl:jsonlines", cwd=tmp_path)
    assert proc.returncode == 3  # start-up refused (docs/operations.md)
    assert "Traceback" not in proc.stderr
    assert "Spider opened" not in proc.stderr
    assert "s3://bucket/items.jsonl" in proc.stderr and "GDPR_ITEM_STORES" in proc.stderr


def test_unimportable_or_incomplete_store_refused():
    with pytest.raises(StoreError, match="cannot import"):
        load_item_stores(Settings({"GDPR_ITEM_STORES": ["no.such.Store"]}))
    with pytest.raises(StoreError, match="has no find"):
        load_item_stores(Settings({"GDPR_ITEM_STORES": ["builtins.object"]}))
    with pytest.raises(StoreError, match="GDPR_POSTGRES_STORE is not set"):
        load_item_stores(Settings({"GDPR_ITEM_STORES": [STORE]}))


class MemoryStore(ItemStore):
    """A store written for the interface test (a dict, as a user's own store could be)."""

    held: dict[str, StoredItem] = {}

    @classmethod
    def from_settings(cls, settings):  # type: ignore[no-untyped-def]
        return cls()

    def find(self, selectors, item_ids=()):  # type: ignore[no-untyped-def]
        return [i for i in self.held.values() if i.item_id in item_ids or item_matches(i.data, i.source_url, selectors)]

    def delete(self, item_ids):  # type: ignore[no-untyped-def]
        return sum(self.held.pop(i, None) is not None for i in item_ids)

    def purge(self, now, *, dry_run=False):  # type: ignore[no-untyped-def]
        gone = [i for i in self.held.values() if datetime.fromisoformat(i.expires_at) <= now]
        if not dry_run:
            for i in gone:
                del self.held[i.item_id]
        return gone


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def pg_table():
    """A unique table on the test server (dropped afterwards), or skip (fail in CI)."""
    from tests.utils import require_service

    try:
        import psycopg
    except ImportError:  # pragma: no cover
        require_service("PostgreSQL", "psycopg is not installed")
    table = "gdpr_items_" + uuid.uuid4().hex[:12]
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=3, autocommit=True):
            pass
    except psycopg.OperationalError as exc:
        require_service("PostgreSQL", f"cannot connect to {POSTGRES_DSN}: {exc}".strip())
    yield table
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture(scope="module")
def store_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("store-site")
    site = make_site(root)
    # a decomposed Ë (E + combining diaeresis), upper case: found by "Zoë Quill"
    (site / "hosts" / "people" / "zoe.html").write_text(
        "<html><head><title>ZOE\u0308 QUILL</title></head><body>x</body></html>", encoding="utf-8")
    with MockServer(site=site) as server:
        yield server


def _store_settings(table: str) -> list[str]:
    return ["-s", f"GDPR_ITEM_STORES={STORE}", "-s", f"GDPR_POSTGRES_STORE={POSTGRES_DSN}",
            "-s", f"GDPR_POSTGRES_STORE_TABLE={table}"]


def _rows(table: str) -> dict[str, dict]:
    import psycopg

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        return {r[0]: json.loads(r[1]) for r in conn.execute(f"SELECT source_url, item FROM {table}")}


async def _crawl(tmp_path: Path, server: MockServer, ledger: str, table: str, urls: list[str]):
    policy = tmp_path / "policy.yaml"
    if not policy.exists():
        write_policy(tmp_path)
    settings = crawl_settings(
        tmp_path, policy, ledger,
        ITEM_PIPELINES={RetentionPipeline: 900, STORE: 950},
        DOWNLOADER_MIDDLEWARES={PolicyGateMiddleware: 40},
        GDPR_ITEM_STORES=[STORE], GDPR_POSTGRES_STORE=POSTGRES_DSN, GDPR_POSTGRES_STORE_TABLE=table,
    )
    crawler = get_crawler(PagesSpider, settings)
    await crawler.crawl_async(urls=urls)
    return crawler


@pytest.mark.requires_postgres
@coroutine_test
async def test_postgres_store_through_access_erase_purge_and_recrawl(tmp_path, store_site, ledger_url, pg_table):  # noqa: F811
    jane, zoe, news = (store_site.url("/jane.html", "people.test"), store_site.url("/zoe.html", "people.test"),
                       store_site.url("/a.html", "news.test"))
    crawler = await _crawl(tmp_path, store_site, ledger_url, pg_table, [jane, zoe, news])
    rows = _rows(pg_table)
    assert sorted(rows) == sorted([jane, zoe, news])
    assert rows[zoe]["title"] == "ZOE\u0308 QUILL" and rows[zoe]["gdpr"]["source_url"] == zoe
    assert crawler.stats.get_value("gdpr/stores/postgresql/stored") == 3
    with open_ledger(ledger_url) as led:
        assert {r.url for r in led.find(Selector("domain", "people.test")) if r.kind == "item"} == {jane, zoe}

    # access by text (non-ASCII, other case, other normal form): Zoë's item, from the store
    out = tmp_path / "zoe.zip"
    proc = run_scrapy("gdpr-access", "--contains", "Zoë Quill", "--ledger", ledger_url, "--out", str(out),
                      "--receipt-dir", str(tmp_path / "receipts"), *_store_settings(pg_table), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(out) as zf:
        items = json.loads(zf.read("items.json"))
        request = json.loads(zf.read("request.json"))
    assert [i["source_url"] for i in items] == [zoe]
    assert items[0]["item"]["title"] == "ZOE\u0308 QUILL" and items[0]["stored_in"] == [f"postgresql:{pg_table}"]
    assert request["stores_searched"] == [f"postgresql:{pg_table}"]
    # keys and stamp fields are not text: "title" and the purpose find nothing
    for needle in ("title", "search"):
        proc = run_scrapy("gdpr-access", "--contains", needle, "--ledger", ledger_url,
                          "--out", str(tmp_path / f"{needle}.zip"), "--receipt-dir", str(tmp_path / "receipts"),
                          *_store_settings(pg_table), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        with zipfile.ZipFile(tmp_path / f"{needle}.zip") as zf:
            assert json.loads(zf.read("items.json")) == []
    # by domain
    with contextlib.closing(PostgresItemStore(POSTGRES_DSN, pg_table)) as store:
        assert {i.source_url for i in store.find([Selector("domain", "people.test")])} == {jane, zoe}
        assert {i.source_url for i in store.find([Selector("prefix", store_site.url("/j", "people.test"))])} == {jane}

    # erasure by URL: the row, its ledger rows; the receipt names the store
    proc = run_scrapy("gdpr-erase", "--url", jane, "--ledger", ledger_url, "--policy", str(tmp_path / "policy.yaml"),
                      "--receipt-dir", str(tmp_path / "receipts"), *_store_settings(pg_table), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(_rows(pg_table)) == sorted([zoe, news])
    receipt = json.loads(next((tmp_path / "receipts").glob("ERA-*.json")).read_text(encoding="utf-8"))
    assert receipt["store_items"] == {f"postgresql:{pg_table}": 1}
    with open_ledger(ledger_url) as led:
        assert not led.find(Selector("url", jane))
    # erasure by text reaches the store too
    proc = run_scrapy("gdpr-erase", "--contains", "zoë quill", "--ledger", ledger_url,
                      "--policy", str(tmp_path / "policy.yaml"), "--receipt-dir", str(tmp_path / "receipts2"),
                      *_store_settings(pg_table), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(_rows(pg_table)) == [news]
    with open_ledger(ledger_url) as led:
        assert not led.find(Selector("url", zoe))

    # a re-crawl is refused by the objection and stores nothing again
    crawler = await _crawl(tmp_path, store_site, ledger_url, pg_table, [jane])
    assert crawler.stats.get_value("gdpr/blocked/objection") == 1
    assert sorted(_rows(pg_table)) == [news]

    # purge: not yet expired; then, 31 days on, gone with its ledger row
    proc = run_scrapy("gdpr-purge", "--ledger", ledger_url, *_store_settings(pg_table), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(_rows(pg_table)) == [news]
    later = (datetime.now(UTC) + timedelta(days=31)).isoformat()
    proc = run_scrapy("gdpr-purge", "--dry-run", "--now", later, "--ledger", ledger_url, *_store_settings(pg_table),
                      cwd=tmp_path)
    assert proc.returncode == 0 and f"Would delete 1 item(s) from item store postgresql:{pg_table}" in proc.stdout
    assert sorted(_rows(pg_table)) == [news]
    proc = run_scrapy("gdpr-purge", "--now", later, "--ledger", ledger_url, *_store_settings(pg_table),
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"Deleted 1 item(s) from item store postgresql:{pg_table}" in proc.stdout
    assert _rows(pg_table) == {}
    with open_ledger(ledger_url) as led:
        assert not [r for r in led.find(Selector("url", news)) if r.kind == "item"]
    audit = [json.loads(x) for x in (tmp_path / "gdpr-audit" / "purge.jsonl").read_text().splitlines()]
    assert any(a.get("kind") == "store_item" and a.get("url") == news for a in audit)


def test_a_store_of_ones_own_is_reached_by_access_erasure_and_purge(tmp_path):
    from scrapy_gdpr.retention import purge
    from scrapy_gdpr.rights import erase, find_holdings

    now = datetime.now(UTC)
    MemoryStore.held = {
        "a": StoredItem("a", "https://people.test/ana", (now + timedelta(days=1)).isoformat(),
                        {"name": "Ana Ölund", "gdpr": {"item_id": "a"}}),
        "b": StoredItem("b", "https://people.test/bo", (now + timedelta(days=5)).isoformat(), {"name": "Bo"}),
        "c": StoredItem("c", "https://news.test/c", (now + timedelta(days=1)).isoformat(), {"name": "C"}),
    }
    [store] = load_item_stores(Settings({"GDPR_ITEM_STORES": [f"{__name__}.MemoryStore"]}))
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}") as led:
        holdings = find_holdings(led, [Selector("contains", "ana ölund")], stores=[store])
        assert list(holdings.items) == ["a"] and holdings.items["a"].data["name"] == "Ana Ölund"
        assert holdings.stores_searched == [store.name]
        result = erase(led, [Selector("domain", "news.test")], objections_path=tmp_path / "o.txt", stores=[store])
        assert result.store_items == {store.name: 1} and sorted(MemoryStore.held) == ["a", "b"]
        done = purge(led, now + timedelta(days=2), stores=[store])
        assert done.store_items == {store.name: 1} and sorted(MemoryStore.held) == ["b"]


@pytest.mark.requires_postgres
def test_store_pipeline_not_registered_refused(tmp_path, pg_table):
    policy = write_policy(tmp_path)
    settings = crawl_settings(tmp_path, policy, f"sqlite:///{tmp_path / 'l.sqlite3'}",
                              ITEM_PIPELINES={RetentionPipeline: 900, STORE: 950},
                              GDPR_POSTGRES_STORE=POSTGRES_DSN, GDPR_POSTGRES_STORE_TABLE=pg_table)
    crawler = get_crawler(PagesSpider, settings)
    with pytest.raises(StoreError, match="not in GDPR_ITEM_STORES"):
        PostgresItemStore.from_crawler(crawler)


def _stamped(url: str, expires_at: datetime, **fields):  # type: ignore[no-untyped-def]
    from tests.retention_support import stamp_for

    return {**fields, "gdpr": stamp_for(url, expires_at)}


@pytest.mark.requires_postgres
@coroutine_test
async def test_postgres_store_odd_values_and_like_characters(tmp_path, pg_table):
    store = PostgresItemStore(POSTGRES_DSN, pg_table)
    try:
        later = datetime.now(UTC) + timedelta(days=3)
        await store.process_item(_stamped("https://a.test/1", later, name="nul\x00byte 100% sure",
                                          when=datetime(2026, 1, 2, tzinfo=UTC), raw=b"\x00\xff", n=7))
        await store.process_item(_stamped("https://a.test/2", later, name="a_b"))
        assert [i.source_url for i in store.find([Selector("contains", "NULBYTE 100%")])] == ["https://a.test/1"]
        assert [i.source_url for i in store.find([Selector("contains", "100%")])] == ["https://a.test/1"]
        assert store.find([Selector("contains", "1%0")]) == []  # % is not a wildcard
        assert [i.source_url for i in store.find([Selector("contains", "a_b")])] == ["https://a.test/2"]
        assert store.find([Selector("contains", "a%b")]) == []
        [found] = store.find([], ["" + store.find([Selector("url", "https://a.test/1")])[0].item_id])
        assert found.data["name"] == "nul\x00byte 100% sure" and found.data["n"] == 7
        assert store.find([Selector("domain", "A.TEST.")]) and not store.find([Selector("domain", "b.a.test")])
    finally:
        store.close()


@pytest.mark.requires_postgres
@coroutine_test
async def test_store_purged_at_spider_open(tmp_path, pg_table):
    from scrapy_gdpr.report import ComplianceReport
    from scrapy_gdpr.retention import RetentionExtension
    from scrapy_gdpr.stores import ItemStoresExtension

    store = PostgresItemStore(POSTGRES_DSN, pg_table)
    try:
        await store.process_item(_stamped("https://a.test/old", datetime.now(UTC) - timedelta(minutes=1), t="x"))
        await store.process_item(_stamped("https://a.test/new", datetime.now(UTC) + timedelta(days=1), t="y"))
    finally:
        store.close()
    policy = write_policy(tmp_path)
    settings = crawl_settings(tmp_path, policy, f"sqlite:///{tmp_path / 'l.sqlite3'}",
                              EXTENSIONS={ComplianceReport: 0, RetentionExtension: 0, ItemStoresExtension: 0},
                              GDPR_ITEM_STORES=[STORE], GDPR_POSTGRES_STORE=POSTGRES_DSN,
                              GDPR_POSTGRES_STORE_TABLE=pg_table)
    crawler = get_crawler(PagesSpider, settings)
    await crawler.crawl_async(urls=[])
    assert sorted(_rows(pg_table)) == ["https://a.test/new"]
    assert crawler.stats.get_value("gdpr/retention/purged/store_items") == 1
    audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert any(a.get("kind") == "store_item" and a.get("url") == "https://a.test/old" for a in audit)


@pytest.mark.requires_postgres
def test_read_only_role_can_search_an_existing_store(tmp_path, pg_table):
    import psycopg

    PostgresItemStore(POSTGRES_DSN, pg_table).close()  # created by the crawl's role
    role = "gdpr_ro_" + uuid.uuid4().hex[:8]
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT ON {pg_table} TO {role}")
    try:
        url = POSTGRES_DSN.replace("postgres@", f"{role}@", 1)
        store = PostgresItemStore(url, pg_table)
        try:
            assert store.find([Selector("contains", "x")]) == []
        finally:
            store.close()
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f"REVOKE ALL ON {pg_table} FROM {role}")
            conn.execute(f"DROP ROLE {role}")


class BrokenStore(MemoryStore):
    """A store whose database went away."""

    def find(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise ConnectionError("server closed the connection")

    delete = purge = find  # type: ignore[assignment]


def test_a_failing_store_makes_requests_incomplete_and_others_still_done(tmp_path):
    from scrapy_gdpr.retention import purge
    from scrapy_gdpr.rights import erase, find_holdings

    now = datetime.now(UTC)
    MemoryStore.held = {"a": StoredItem("a", "https://people.test/ana", now.isoformat(), {"name": "Ana"})}
    broken, good = BrokenStore(), MemoryStore()
    broken.name, good.name = "broken", "memory"
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}") as led:
        holdings = find_holdings(led, [Selector("contains", "ana")], stores=[broken, good])
        assert list(holdings.items) == ["a"] and holdings.store_errors == ["broken: server closed the connection"]
        result = erase(led, [Selector("contains", "ana")], objections_path=None, stores=[broken, good])
        assert result.store_items == {"memory": 1} and not result.complete
        assert result.as_dict()["status"] == "incomplete"
        MemoryStore.held = {"b": StoredItem("b", "https://x.test/b", now.isoformat(), {})}
        done = purge(led, now + timedelta(seconds=1), stores=[broken, good])
        assert done.store_items == {"memory": 1} and done.store_errors == ["broken: server closed the connection"]

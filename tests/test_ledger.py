"""Ledger behaviour, identical on SQLite and PostgreSQL (``ledger_url`` runs both)."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import pytest

from scrapy_gdpr.ledger import (
    MIGRATIONS,
    LedgerError,
    PostgresLedger,
    Record,
    Selector,
    SQLiteLedger,
    domain_key,
    open_ledger,
)
from tests.retention_support import ledger_url  # noqa: F401

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _rec(url: str, days: int, kind: str = "feed_line", location: str = "/data/a.jsonl", **kw) -> Record:
    return Record(kind=kind, location=location, url=url, expires_at=T0 + timedelta(days=days),
                  collected_at=T0, item_id=kw.pop("item_id", url[-8:]), purpose="search", **kw)


def test_add_find_and_delete(ledger_url):  # noqa: F811
    with open_ledger(ledger_url) as led:
        assert led.schema_version() == len(MIGRATIONS)
        led.add([
            _rec("https://people.example/jane", 10),
            _rec("https://people.example/jane", 10, kind="image", location="/img/full/1.jpg",
                 object_url="https://cdn.example/jane.jpg"),
            _rec("https://people.example/jane-doe/bio", 20),
            _rec("https://sub.people.example/x", 30),
            _rec("https://other.example/jane", 40),
        ])
        assert led.count() == 5
        by_url = led.find(Selector("url", "https://people.example/jane"))
        assert {r.kind for r in by_url} == {"feed_line", "image"}
        # an image is also found by its own URL
        assert [r.kind for r in led.find(Selector("url", "https://cdn.example/jane.jpg"))] == ["image"]
        prefix = led.find(Selector("prefix", "https://people.example/jane"))
        assert len(prefix) == 3
        domain = led.find(Selector("domain", "people.example"))
        assert sorted(r.url for r in domain) == sorted(
            ["https://people.example/jane"] * 2 + ["https://people.example/jane-doe/bio", "https://sub.people.example/x"])
        # no look-alike domains
        assert led.find(Selector("domain", "ople.example")) == []
        contains = led.find(Selector("contains", "jane"))
        assert len(contains) == 4
        # % and _ are literal in "contains"
        assert led.find(Selector("contains", "j_ne")) == []
        rec = by_url[0]
        assert rec.expires_at == T0 + timedelta(days=10)
        assert rec.collected_at == T0
        assert rec.domain == "people.example"
        assert led.delete_ids([r.id for r in by_url]) == 2
        assert led.count() == 3


@pytest.mark.parametrize("rows", [1, 65, 66, 67, 1000])
def test_add_many_rows_in_one_call(ledger_url, rows):  # noqa: F811
    """Every row of a batch arrives with its own values, whatever the batch's size
    (SQLite writes several rows per INSERT statement)."""
    records = [_rec(f"https://site{i % 7}.example/p/{i}", i % 40, item_id=f"id{i:05d}",
                    content_hash=f"sha256:{i:064x}", spider=f"s{i % 3}") for i in range(rows)]
    with open_ledger(ledger_url) as led:
        assert led.add(records) == rows
        stored = sorted(led.all(), key=lambda r: r.item_id)
        assert len(stored) == rows
        for want, got in zip(records, stored, strict=True):
            assert (got.item_id, got.url, got.domain, got.expires_at, got.content_hash, got.spider) == (
                want.item_id, want.url, want.domain, want.expires_at, want.content_hash, want.spider)
        assert len(led.find(Selector("domain", "site3.example"))) == len([i for i in range(rows) if i % 7 == 3])


def test_expiry_queries(ledger_url):  # noqa: F811
    with open_ledger(ledger_url) as led:
        led.add([_rec(f"https://a.example/{i}", i, location=f"/f{i % 2}.jsonl") for i in range(10)])
        now = T0 + timedelta(days=4)
        assert led.count_expired(now) == 5  # days 0..4, expiry at or before now
        assert led.expired_locations(now, ["feed_line"]) == ["/f0.jsonl", "/f1.jsonl"]
        assert [r.url for r in led.expired(now, limit=2)] == ["https://a.example/0", "https://a.example/1"]
        assert led.delete_expired(now, kinds=["feed_line"], location="/f0.jsonl") == 3
        assert led.delete_expired(now) == 2
        assert led.count() == 5


def test_feed_file_row_replaced(ledger_url):  # noqa: F811
    with open_ledger(ledger_url) as led:
        led.set_feed_file(Record(kind="feed_file", location="/f.jsonl", url="", expires_at=T0))
        led.set_feed_file(Record(kind="feed_file", location="/f.jsonl", url="", expires_at=T0 + timedelta(days=1)))
        rows = led.feed_files()
        assert len(rows) == 1 and rows[0].expires_at == T0 + timedelta(days=1)


def test_summary_groups_by_expiry_month(ledger_url):  # noqa: F811
    with open_ledger(ledger_url) as led:
        led.add([_rec("https://a.example/1", 5), _rec("https://a.example/2", 40), _rec("https://a.example/3", 41)])
        summary = led.summary()
        assert {(s["expires_month"], s["count"]) for s in summary} == {("2026-01", 1), ("2026-02", 2)}


def test_migrations_run_in_order_once(ledger_url):  # noqa: F811
    extra = [*MIGRATIONS, ["ALTER TABLE ledger_records ADD COLUMN note TEXT NOT NULL DEFAULT ''"]]
    with open_ledger(ledger_url) as led:
        led.add([_rec("https://a.example/1", 5)])
        url = led.url
    cls = SQLiteLedger if ledger_url.startswith("sqlite") else PostgresLedger
    target = led.path if isinstance(led, SQLiteLedger) else url
    with cls(target, migrations=extra) as upgraded:
        assert upgraded.schema_version() == len(MIGRATIONS) + 1
        assert upgraded.count() == 1  # data kept
    with cls(target, migrations=extra) as again:  # idempotent
        assert again.schema_version() == len(MIGRATIONS) + 1
    # older code refuses a newer ledger instead of writing to it
    with pytest.raises(LedgerError, match="newer"):
        cls(target)


def test_concurrent_writers(ledger_url):  # noqa: F811
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            with open_ledger(ledger_url) as led:
                for i in range(20):
                    led.add([_rec(f"https://a.example/{n}/{i}", i)])
        except BaseException as exc:  # noqa: BLE001 - handed to the test's own thread, which fails on it
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with open_ledger(ledger_url) as led:
        assert led.count() == 80


def test_sqlite_is_wal_and_relative_to_base(tmp_path):
    led = open_ledger("sqlite:///sub/ledger.sqlite3", base=tmp_path)
    led.close()
    path = tmp_path / "sub" / "ledger.sqlite3"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"ledger_records_url", "ledger_records_expires", "ledger_records_domain_key"} <= indexes
    # the WHERE clause an erasure by URL runs (Ledger._selector_where)
    plan = " ".join(str(r) for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM ledger_records WHERE url = 'x' OR (object_url = 'x' AND object_url <> '')"))
    assert "ledger_records_url" in plan
    assert "ledger_records_object_url" in plan
    conn.close()


def _bulk(led, rows: int) -> None:
    """Rows like a real ledger's: nearly all without an object URL, many per feed file."""
    led.add([_rec(f"https://site{i % 97}.example/people/{i}", 10, location=f"/data/{i % 4}.jsonl",
                  item_id=f"id{i}") for i in range(rows)])
    led.add([_rec("https://site1.example/people/1", 10, kind="image", location="/img/full/1.jpg",
                  object_url="https://cdn.example/1.jpg")])


@pytest.mark.parametrize("selector", [Selector("url", "https://site1.example/people/1"),
                                      Selector("url", "https://cdn.example/1.jpg"),
                                      Selector("prefix", "https://site1.example/people/1")])
def test_sqlite_erase_query_uses_indexes_after_analyze(tmp_path, selector):
    """After ANALYZE (PRAGMA optimize runs it), an index on object_url, which is empty in
    nearly every row, looked useless to the planner and the OR of an erasure by URL
    became a scan of the whole table (270-360 ms at 1M rows)."""
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}") as led:
        _bulk(led, 3000)
        led.optimize()
        led._conn().execute("ANALYZE")
        assert led._conn().execute("SELECT COUNT(*) FROM sqlite_stat1").fetchone()[0] > 0
        plan = led.find_plan(selector)
        text = " ".join(plan)
        assert "USING INDEX ledger_records_url" in text, plan
        assert "USING INDEX ledger_records_object_url" in text, plan
        assert not any(step.startswith("SCAN ledger_records") and "INDEX" not in step for step in plan), plan
        found = led.find(selector)
        assert found and all(selector.matches_url(r.url) or selector.matches_url(r.object_url) for r in found)


def test_sqlite_feed_file_row_found_by_index(tmp_path):
    with open_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}") as led:
        _bulk(led, 3000)
        led.add([_rec("", 10, kind="feed_file", location="/data/1.jsonl")])
        led._conn().execute("ANALYZE")
        plan = " ".join(str(r) for r in led._conn().execute(
            "EXPLAIN QUERY PLAN SELECT id FROM ledger_records WHERE kind = 'feed_file' AND location = '/data/1.jsonl'"))
        assert "ledger_records_location (location=? AND kind=?)" in plan
        assert led.feed_file("/data/1.jsonl") is not None


def test_postgres_erase_query_uses_indexes(ledger_url):  # noqa: F811
    if not ledger_url.startswith("postgres"):
        pytest.skip("the SQLite plans are checked above")
    with open_ledger(ledger_url) as led:
        _bulk(led, 3000)
        led.optimize()
        plan = " ".join(led.find_plan(Selector("url", "https://cdn.example/1.jpg")))
        assert "ledger_records_url" in plan and "ledger_records_object_url" in plan, plan
        assert "Seq Scan" not in plan, plan


def test_unknown_url_refused():
    with pytest.raises(LedgerError, match="unsupported"):
        open_ledger("mysql://x")


def test_domain_key():
    assert domain_key("WWW.Example.org.") == "org.example.www."


def test_version_1_ledger_upgrades_to_the_partial_index(ledger_url):  # noqa: F811
    cls = SQLiteLedger if ledger_url.startswith("sqlite") else PostgresLedger
    target = ledger_url[len("sqlite:///"):] if ledger_url.startswith("sqlite") else ledger_url
    with cls(target, migrations=MIGRATIONS[:1]) as old:
        assert old.schema_version() == 1
        old.add([_rec("https://a.example/1", 5),
                 _rec("https://a.example/1", 5, kind="image", location="/img/1.jpg", object_url="https://cdn.example/1.jpg")])
    with open_ledger(ledger_url) as led:
        assert led.schema_version() == len(MIGRATIONS) >= 2
        assert led.count() == 2
        assert [r.kind for r in led.find(Selector("url", "https://cdn.example/1.jpg"))] == ["image"]
        assert len(led.find(Selector("url", "https://a.example/1"))) == 2
        if isinstance(led, PostgresLedger):
            defs = dict(led._conn().execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'ledger_records' "
                "AND schemaname = current_schema()").fetchall())
            led._conn().commit()
            assert "WHERE (object_url <> ''::text)" in defs["ledger_records_object_url"]
            assert "(location, kind)" in defs["ledger_records_location"]
        else:
            assert "ledger_records_object_url" in " ".join(led.find_plan(Selector("url", "https://cdn.example/1.jpg")))
            sql = led._conn().execute(
                "SELECT sql FROM sqlite_master WHERE name = 'ledger_records_object_url'").fetchone()[0]
            assert "WHERE object_url <> ''" in sql
            sql = led._conn().execute(
                "SELECT sql FROM sqlite_master WHERE name = 'ledger_records_location'").fetchone()[0]
            assert "(location, kind)" in sql

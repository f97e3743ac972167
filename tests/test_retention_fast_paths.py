"""The fast paths of stamping, purge and ledger writes give the same results as the
general code they short-cut."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
import scrapy
from scrapy.utils.test import get_crawler

from scrapy_gdpr.audit import AuditLog
from scrapy_gdpr.durations import Duration
from scrapy_gdpr.ledger import Record, format_ts, host_of, open_ledger
from scrapy_gdpr.provenance import Provenance, registry
from scrapy_gdpr.retention import RetentionPipeline, content_hash, expiry_check, is_expired, stamp_time
from scrapy_gdpr.runtime import get_runtime
from tests.retention_support import ledger_url, write_policy  # noqa: F401

NOW = datetime(2026, 6, 1, 12, 0, 0, 500_000, tzinfo=UTC)


@pytest.mark.parametrize("value", [
    "2026-06-01T11:59:59Z", "2026-06-01T12:00:00Z", "2026-06-01T12:00:01Z", "2025-12-31T23:59:59Z",
    "2027-01-01T00:00:00Z", "2026-06-01T12:00:00.400Z", "2026-06-01T12:00:00.600Z", "2026-06-01T14:00:00+02:00",
    "2026-06-01T14:00:01+02:00", "2026-06-01T12:00:00", "2026-06-01T12:00:01", "not a time", "",
    "2026-06-01 12:00:00Z", "2026-6-1T12:00:00Z",
])
def test_expiry_check_agrees_with_is_expired(value):
    assert expiry_check(NOW)(value) is is_expired(value, NOW)


def test_expiry_check_at_a_whole_second():
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    check = expiry_check(now)
    assert check("2026-06-01T12:00:00Z") and not check("2026-06-01T12:00:01Z")


@pytest.mark.parametrize("url", [
    "https://Site1.Example/people/1", "http://a.b:8080", "http://a.b:8080/x", "http://a.b?x=1", "http://a.b#f",
    "file:///tmp/x", "http://user:pw@a.b/", "http://[::1]:80/", "HTTP://A.B/", " http://a.b/", "http://a.b:x/",
    "http://a_b.c/", "data:text/html,x", "", "http://a.b./", "https://x.test/%41", "mailto:a@b", "http://a.b:/p",
    "http://ex.com\t/", "https://bücher.example/", "http://[::1/",
])
def test_host_of_matches_urlsplit(url):
    try:
        expected = (urlsplit(url).hostname or "").lower()
    except ValueError:
        expected = ""
    assert host_of(url) == expected


def test_format_ts_cache_keeps_time_zones_apart():
    moment = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert format_ts(moment) == "2026-06-01T12:00:00.000000Z"
    # equal instants in other zones format the same; a naive time is taken as UTC
    assert format_ts(moment.astimezone(timezone(timedelta(hours=2)))) == "2026-06-01T12:00:00.000000Z"
    assert format_ts(datetime(2026, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))) == format_ts(moment)
    assert format_ts(datetime(2026, 6, 1, 12, 0)) == format_ts(moment)


def test_audit_write_many_writes_one_line_each(tmp_path):
    log = AuditLog(tmp_path / "audit.jsonl", defaults={"policy_fingerprint": "fp", "spider": "people"})
    log.write_many([{"decision": "purged", "item_id": f"i{n}", "url": "https://a.test/ü"} for n in range(3)])
    log.write_many([{"decision": "purged", "item_id": "i3", "spider": "other"}])
    log.write_many([])
    log.write({"decision": "purge_finished", "item_id": "i4", "url": "https://a.test/ü"})
    log.close()
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["decision"] for x in lines] == ["purged"] * 4 + ["purge_finished"]
    assert [x.get("item_id") for x in lines] == ["i0", "i1", "i2", "i3", "i4"]
    assert all(x["time"] and next(iter(x)) == "time" for x in lines)
    # the defaults apply as in write(), a line's own value wins, and the keys come in the same order
    assert [x["policy_fingerprint"] for x in lines] == ["fp"] * 5
    assert [x["spider"] for x in lines] == ["people", "people", "people", "other", "people"]
    assert [list(x) for x in lines[:3]] == [list(lines[4])] * 3
    assert "https://a.test/ü" in (tmp_path / "audit.jsonl").read_text(encoding="utf-8")


class Person(scrapy.Item):
    url = scrapy.Field()
    name = scrapy.Field()


def _pipeline(tmp_path, items: str) -> tuple[RetentionPipeline, object]:
    policy = write_policy(tmp_path, items=items)
    crawler = get_crawler(settings_dict={"GDPR_POLICY": str(policy), "GDPR_AUDIT_LOG": str(tmp_path / "a.jsonl"),
                                         "GDPR_LEDGER": f"sqlite:///{tmp_path / 'l.sqlite3'}"})

    class _Spider:
        name = "people"

    crawler.spider = _Spider()  # type: ignore[assignment]
    return RetentionPipeline(crawler), registry(get_runtime(crawler))


@pytest.mark.parametrize("period", ["P30D", "P1M", "PT1.5S", "P1Y2M3DT4H"])
def test_stamp_times_per_item(tmp_path, period):
    """Items collected in the same second share formatted times; every item still gets
    its own collected_at and expires_at, whatever the period."""
    pipeline, reg = _pipeline(tmp_path, period)
    duration = Duration.parse(period)
    moments = [datetime(2026, 1, 31, 10, 0, 0, 100, tzinfo=UTC), datetime(2026, 1, 31, 10, 0, 0, 999_999, tzinfo=UTC),
               datetime(2026, 1, 31, 10, 0, 1, tzinfo=UTC), datetime(2026, 1, 31, 10, 0, 0, 600_000, tzinfo=UTC),
               datetime(2026, 3, 31, 23, 59, 59, 999_999, tzinfo=UTC)]
    for moment in moments:
        for item in ({"url": "https://a.test/1", "name": "Jane"}, Person(url="https://a.test/1", name="Jane")):
            reg.put(item, Provenance(url="https://a.test/1", collected_at=moment))
            out = pipeline.process_item(item)
            stamp = out["gdpr"]
            assert stamp["collected_at"] == stamp_time(moment)
            assert stamp["expires_at"] == stamp_time(duration.add_to(moment))
            assert stamp["item_type"] == type(item).__name__
            assert stamp["content_sha256"] == content_hash({"url": "https://a.test/1", "name": "Jane"})
            assert out is not item and "gdpr" not in item


def test_plain_dict_is_copied_not_changed(tmp_path):
    pipeline, reg = _pipeline(tmp_path, "P30D")
    item = {"url": "https://a.test/1", "tags": ["a"]}
    reg.put(item, Provenance(url="https://a.test/1", collected_at=NOW))
    out = pipeline.process_item(item)
    assert item == {"url": "https://a.test/1", "tags": ["a"]}
    assert {k: v for k, v in out.items() if k != "gdpr"} == item
    assert reg.get(out) is not None and reg.get(item) is None


def test_delete_at(ledger_url):  # noqa: F811
    def rec(location: str, days: int, kind: str = "feed_line") -> Record:
        return Record(kind=kind, location=location, url=f"https://a.test/{location}/{days}",
                      expires_at=NOW + timedelta(days=days))

    with open_ledger(ledger_url) as led:
        led.add([rec(loc, d) for loc in ("/a", "/b", "/c") for d in (-2, -1, 1)])
        led.add([rec("/a", -1, kind="feed_file"), rec("/c", -1, kind="feed_file")])
        # only expired feed lines of /a and /b
        assert led.delete_at(["/a", "/b", "/a"], expired=NOW, kinds=["feed_line"]) == 4
        assert sorted((r.location, r.kind) for r in led.all()) == [
            ("/a", "feed_file"), ("/a", "feed_line"), ("/b", "feed_line"),
            ("/c", "feed_file"), ("/c", "feed_line"), ("/c", "feed_line"), ("/c", "feed_line"),
        ]
        # every row of /c
        assert led.delete_at(["/c"]) == 4
        assert {r.location for r in led.all()} == {"/a", "/b"}
        assert led.delete_at([]) == 0


def test_stamped_item_is_a_plain_dict_that_carries_its_provenance(tmp_path):
    import pickle

    from itemadapter import ItemAdapter

    from scrapy_gdpr.provenance import ProvenancedDict

    pipeline, reg = _pipeline(tmp_path, "P30D")
    item = {"url": "https://a.test/1", "name": "Jane"}
    prov = Provenance(url="https://a.test/1", collected_at=NOW)
    reg.put(item, prov)
    out = pipeline.process_item(item)
    assert isinstance(out, dict) and type(out) is ProvenancedDict
    assert reg.get(out) is prov and len(reg) == 0  # carried by the item, not held by the registry
    assert ItemAdapter(out).asdict() == dict(out)
    assert json.loads(json.dumps(out)) == dict(out)
    copy = pickle.loads(pickle.dumps(out))
    assert copy == out and copy.provenance == prov
    # a second pass finds the stamp already there and refuses it
    with pytest.raises(Exception, match="reserved for the retention stamp"):
        pipeline.process_item(out)

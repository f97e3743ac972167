from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from scrapy_gdpr.ledger import LedgerMissing, open_ledger
from tests.retention_support import (  # noqa: F401
    add_object,
    feed_ids,
    ledger_url,
    page_item,
    run_scrapy_without_file_override,
    write_stamped_feed,
)
from tests.utils import run_scrapy

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def test_gdpr_purge_dry_run_then_purge(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    feed = tmp_path / "items.jsonl"
    old = page_item("https://people.test/old", NOW - timedelta(days=1))
    new = page_item("https://people.test/new", NOW + timedelta(days=1))
    with open_ledger(ledger) as led:
        write_stamped_feed(feed, "jsonlines", [old, new], ledger=led)
        img = add_object(led, tmp_path / "img", "full/a.jpg", "https://people.test/old", "https://cdn.test/a.jpg",
                         NOW - timedelta(days=1))
    audit = tmp_path / "audit.jsonl"

    dry = run_scrapy("gdpr-purge", "--dry-run", "--now", NOW.isoformat(), "--ledger", ledger,
                     "--audit-log", str(audit), cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "would delete feed_line" in dry.stdout and "https://people.test/old" in dry.stdout
    assert "would delete image" in dry.stdout
    assert "Would delete 1 feed line(s), 1 file(s)" in dry.stdout
    assert len(feed_ids(feed, "jsonlines")) == 2 and img.exists()

    done = run_scrapy("gdpr-purge", "--now", NOW.isoformat(), "--ledger", ledger, "--audit-log", str(audit),
                      "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["feed_lines"] == 1 and result["objects"] == 1
    assert feed_ids(feed, "jsonlines") == [new["gdpr"]["item_id"]]
    assert not img.exists()
    decisions = [json.loads(x)["decision"] for x in audit.read_text(encoding="utf-8").splitlines()]
    assert decisions.count("purged") == 2 and decisions[-1] == "purge_finished"


def test_gdpr_purge_rejects_bad_time(tmp_path):
    proc = run_scrapy("gdpr-purge", "--now", "yesterday", "--ledger", f"sqlite:///{tmp_path / 'l.sqlite3'}",
                      cwd=tmp_path)
    assert proc.returncode == 2
    assert "not an ISO 8601 time" in proc.stderr


def test_gdpr_purge_never_creates_a_ledger(tmp_path, ledger_url):  # noqa: F811
    missing = f"sqlite:///{tmp_path / 'moved' / 'ledger.sqlite3'}" if ledger_url.startswith("sqlite") else ledger_url
    for extra in (["--dry-run"], []):
        proc = run_scrapy("gdpr-purge", *extra, "--ledger", missing, cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        assert ("does not exist" in proc.stderr or "no ledger tables" in proc.stderr) and "Fix:" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "moved").exists()
    if not ledger_url.startswith("sqlite"):
        with pytest.raises(LedgerMissing):
            open_ledger(ledger_url, create=False).close()


def test_gdpr_purge_with_a_read_only_ledger(tmp_path):
    db = tmp_path / "db"
    ledger = f"sqlite:///{db / 'ledger.sqlite3'}"
    feed = tmp_path / "items.json"
    with open_ledger(ledger) as led:
        write_stamped_feed(feed, "json", [page_item("https://people.test/old", NOW - timedelta(days=1)),
                                          page_item("https://people.test/new", NOW + timedelta(days=1))], ledger=led)
    feed.write_bytes(feed.read_bytes()[:-3])  # torn: no closing bracket, the last record cut
    (db / "ledger.sqlite3").chmod(0o444)
    db.chmod(0o555)
    try:
        dry = run_scrapy_without_file_override("gdpr-purge", "--dry-run", "--now", NOW.isoformat(), "--ledger", ledger,
                                               "--audit-log", str(tmp_path / "audit.jsonl"), cwd=tmp_path)
        real = run_scrapy_without_file_override("gdpr-purge", "--now", NOW.isoformat(), "--ledger", ledger,
                                                "--audit-log", str(tmp_path / "audit.jsonl"), cwd=tmp_path)
    finally:
        db.chmod(0o755)
    assert dry.returncode == 0, dry.stderr
    assert "Would delete 1 feed line(s)" in dry.stdout
    assert "torn:" in dry.stderr and "left as it is" in dry.stderr
    assert real.returncode == 1 and "cannot be written" in real.stderr and "Traceback" not in real.stderr
    assert sorted(p.name for p in db.iterdir()) == ["ledger.sqlite3"]
    assert not feed.read_bytes().endswith(b"]")  # untouched by the refused purge


def test_relative_ledger_is_the_project_s_from_a_sub_folder(tmp_path):
    (tmp_path / "scrapy.cfg").write_text("[settings]\ndefault = nosuch.settings\n", encoding="utf-8")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    with open_ledger(f"sqlite:///{tmp_path / 'gdpr-ledger.sqlite3'}") as led:
        write_stamped_feed(tmp_path / "items.jsonl", "jsonlines",
                           [page_item("https://people.test/old", NOW - timedelta(days=1))], ledger=led)
    proc = run_scrapy("gdpr-purge", "--now", NOW.isoformat(), "--ledger", "sqlite:///gdpr-ledger.sqlite3",
                      cwd=tmp_path / "sub" / "deeper", env={"SCRAPY_SETTINGS_MODULE": ""})
    assert proc.returncode == 0, proc.stderr
    assert "Deleted 1 feed line(s)" in proc.stdout
    assert not list((tmp_path / "sub").rglob("*.sqlite3"))

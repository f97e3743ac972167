from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scrapy_gdpr.ledger import LedgerMissing, open_ledger
from tests.retention_support import (  # noqa: F401
    add_object,
    drop_postgres_schema,
    feed_ids,
    ledger_url,
    page_item,
    postgres_url,
    readonly_role,
    run_scrapy_without_file_override,
    write_policy,
    write_stamped_feed,
)
from tests.utils import run_scrapy


def test_gdpr_access_writes_archive_and_receipt(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    later = datetime.now(UTC) + timedelta(days=10)
    with open_ledger(ledger) as led:
        write_stamped_feed(tmp_path / "items.csv", "csv",
                           [page_item("https://people.test/jane", later), page_item("https://people.test/john", later)],
                           ledger=led)
        add_object(led, tmp_path / "img", "full/j.jpg", "https://people.test/jane", "https://cdn.test/j.jpg", later)
    audit = tmp_path / "gdpr-audit" / "pages.jsonl"
    audit.parent.mkdir()
    audit.write_text(json.dumps({"time": "2026-01-01T00:00:00+00:00", "decision": "refused",
                                 "url": "https://people.test/jane/private"}) + "\n", encoding="utf-8")
    policy = write_policy(tmp_path)
    proc = run_scrapy("gdpr-access", "--url-prefix", "https://people.test/jane", "--ledger", ledger,
                      "--policy", str(policy), "--out", str(tmp_path / "jane.zip"),
                      "--receipt-dir", str(tmp_path / "receipts"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 item(s), 1 file(s), 1 log entries" in proc.stdout
    with zipfile.ZipFile(tmp_path / "jane.zip") as zf:
        items = json.loads(zf.read("items.json"))
        assert [i["source_url"] for i in items] == ["https://people.test/jane"]
        assert "dpo@example.org" in zf.read("index.html").decode()
        assert "people.test/jane/private" in zf.read("audit.jsonl").decode()
    receipts = list((tmp_path / "receipts").glob("ACC-*.json"))
    assert len(receipts) == 1
    assert json.loads(receipts[0].read_text())["items"] == 1
    # the request itself is in the audit log (the default GDPR_AUDIT_LOG, relative to the project)
    logged = [json.loads(x) for x in (tmp_path / "gdpr-audit" / "rights.jsonl").read_text().splitlines()]
    assert logged[-1]["decision"] == "access_request"


def test_gdpr_access_needs_a_selector(tmp_path):
    proc = run_scrapy("gdpr-access", "--ledger", f"sqlite:///{tmp_path / 'l.sqlite3'}", cwd=tmp_path)
    assert proc.returncode == 2 and "--url" in proc.stderr


# --------------------------------------------------------------------------- honest results, clear errors


def _store(tmp_path, ledger: str | None):  # type: ignore[no-untyped-def]
    later = datetime.now(UTC) + timedelta(days=10)
    items = [page_item("https://people.test/jane", later, text="Jane Roe"),
             page_item("https://people.test/john", later, text="John Doe")]
    if ledger is None:
        write_stamped_feed(tmp_path / "items.jsonl", "jsonlines", items)
    else:
        with open_ledger(ledger) as led:
            write_stamped_feed(tmp_path / "items.jsonl", "jsonlines", items, ledger=led)
    return items


def test_access_never_creates_a_missing_ledger_and_says_so(tmp_path, ledger_url):  # noqa: F811
    missing = f"sqlite:///{tmp_path / 'moved' / 'ledger.sqlite3'}" if ledger_url.startswith("sqlite") else ledger_url
    _store(tmp_path, None)  # the feed exists; the ledger does not (moved away / no tables)
    proc = run_scrapy("gdpr-access", "--contains", "jane roe", "--ledger", missing, "--out", str(tmp_path / "a.zip"),
                      "-s", 'FEEDS={"items.jsonl": {"format": "jsonlines"}}',
                      "--receipt-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "does not exist" in proc.stderr or "no ledger tables" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "moved").exists()  # nothing created
    if not ledger_url.startswith("sqlite"):
        with pytest.raises(LedgerMissing):
            open_ledger(ledger_url, create=False).close()  # still no tables
    receipt = json.loads(next((tmp_path / "r").glob("ACC-*.json")).read_text())
    assert receipt["status"] == "incomplete" and "did not exist" in receipt["problems"][0]
    assert receipt["items"] == 1  # found through the feed named in FEEDS
    assert [Path(p).name for p in receipt["searched"]["feed_files"]] == ["items.jsonl"]


def test_access_with_a_read_only_ledger(tmp_path):
    db = tmp_path / "db"
    ledger = f"sqlite:///{db / 'ledger.sqlite3'}"
    _store(tmp_path, ledger)
    (db / "ledger.sqlite3").chmod(0o444)
    db.chmod(0o555)
    try:
        proc = run_scrapy_without_file_override("gdpr-access", "--url", "https://people.test/jane", "--ledger", ledger,
                                                "--out", str(tmp_path / "a.zip"), "--receipt-dir",
                                                str(tmp_path / "r"), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "1 item(s)" in proc.stdout
        assert sorted(p.name for p in db.iterdir()) == ["ledger.sqlite3"]  # nothing written beside it
    finally:
        db.chmod(0o755)


@pytest.mark.requires_postgres
def test_access_with_a_read_only_postgres_role(tmp_path):
    url = postgres_url()
    try:
        _store(tmp_path, url)
        with readonly_role(url) as reader:
            proc = run_scrapy("gdpr-access", "--url", "https://people.test/jane", "--ledger", reader,
                              "--out", str(tmp_path / "a.zip"), "--receipt-dir", str(tmp_path / "r"), cwd=tmp_path)
            assert proc.returncode == 0, proc.stderr
            assert "1 item(s)" in proc.stdout
            proc = run_scrapy("gdpr-purge", "--dry-run", "--now", "2100-01-01T00:00:00Z", "--ledger", reader,
                              cwd=tmp_path)
            assert proc.returncode == 0, proc.stderr
            assert "Would delete 2 feed line(s)" in proc.stdout
            # and a command that writes says what is wrong, naming the database, with the fix
            proc = run_scrapy("gdpr-erase", "--url", "https://people.test/jane", "--ledger", reader,
                              "--objections", str(tmp_path / "o.txt"), "--receipt-dir", str(tmp_path / "r"),
                              cwd=tmp_path)
            assert proc.returncode == 1
            assert "cannot be written" in proc.stderr and "Fix: grant the role" in proc.stderr
            assert "database postgresql://" in proc.stderr
            assert "Traceback" not in proc.stderr
            assert not (tmp_path / "o.txt").exists()  # nothing written anywhere
            assert len(feed_ids(tmp_path / "items.jsonl", "jsonlines")) == 2
    finally:
        drop_postgres_schema(url)


def test_access_out_never_overwrites(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    _store(tmp_path, ledger)
    for existing in ("file", "link"):
        target = tmp_path / f"{existing}.zip"
        if existing == "file":
            target.write_bytes(b"not mine")
        else:
            (tmp_path / "victim").write_bytes(b"not mine")
            target.symlink_to(tmp_path / "victim")
        proc = run_scrapy("gdpr-access", "--url", "https://people.test/jane", "--ledger", ledger,
                          "--out", str(target), "--receipt-dir", str(tmp_path / "r"), cwd=tmp_path)
        assert proc.returncode == 1 and "already exists" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert (tmp_path / "file.zip").read_bytes() == b"not mine"
    assert (tmp_path / "victim").read_bytes() == b"not mine"


def test_access_archive_defaults_to_the_project_data_folder(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    _store(tmp_path, ledger)
    project = tmp_path / "proj"
    (project / "sub").mkdir(parents=True)
    (project / "scrapy.cfg").write_text("[settings]\ndefault = nosuch.settings\n", encoding="utf-8")
    proc = run_scrapy("gdpr-access", "--url", "https://people.test/jane", "--ledger", ledger,
                      "--receipt-dir", str(tmp_path / "r"), cwd=project / "sub",
                      env={"SCRAPY_SETTINGS_MODULE": ""})
    assert proc.returncode == 0, proc.stderr
    archives = list((project / ".scrapy" / "gdpr-access").glob("ACC-*.zip"))
    assert len(archives) == 1 and str(archives[0]) in proc.stdout
    assert not list((project / "sub").glob("*.zip")) and not list(project.glob("*.zip"))
    assert (project / ".scrapy" / "gdpr-access" / ".gitignore").read_text().strip().endswith("*")


def test_access_over_a_tenth_of_the_store_needs_yes(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    later = datetime.now(UTC) + timedelta(days=10)
    with open_ledger(ledger) as led:
        write_stamped_feed(tmp_path / "items.jsonl", "jsonlines",
                           [page_item(f"https://people.test/{i}", later, text=f"Person {i}") for i in range(20)],
                           ledger=led)
    args = ("gdpr-access", "--contains", "person", "--ledger", ledger, "--out", str(tmp_path / "all.zip"),
            "--receipt-dir", str(tmp_path / "r"))
    proc = run_scrapy(*args, cwd=tmp_path)
    assert proc.returncode == 2 and "matches 20 of the 20 items held" in proc.stderr and "--yes" in proc.stderr
    assert not (tmp_path / "all.zip").exists() and not (tmp_path / "r").exists()
    proc = run_scrapy(*args, "--yes", cwd=tmp_path)
    assert proc.returncode == 0 and "20 item(s)" in proc.stdout


@pytest.mark.parametrize("args", [("--contains", " "), ("--contains", "\u00a0\u2003"), ("--url", ""),
                                  ("--domain", " ")])
def test_selectors_without_a_value_are_usage_errors(tmp_path, args):
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    _store(tmp_path, ledger)
    proc = run_scrapy("gdpr-access", *args, "--ledger", ledger, "--out", str(tmp_path / "a.zip"), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "a.zip").exists()

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from scrapy_gdpr.ledger import open_ledger
from tests.retention_support import add_object, feed_ids, page_item, write_policy, write_stamped_feed
from tests.utils import run_scrapy


def test_gdpr_erase_deletes_objects_and_adds_objection(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    later = datetime.now(UTC) + timedelta(days=10)
    jane = page_item("https://people.test/jane", later)
    john = page_item("https://people.test/john", later)
    with open_ledger(ledger) as led:
        write_stamped_feed(tmp_path / "items.xml", "xml", [jane, john], ledger=led)
        img = add_object(led, tmp_path / "img", "full/j.jpg", "https://people.test/jane", "https://cdn.test/j.jpg", later)
    policy = write_policy(tmp_path, objections="lists/objections.txt")
    proc = run_scrapy("gdpr-erase", "--url", "https://people.test/jane", "--ledger", ledger, "--policy", str(policy),
                      "--receipt-dir", str(tmp_path / "receipts"), "--audit-log", str(tmp_path / "audit.jsonl"),
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 feed line(s), 1 file(s)" in proc.stdout
    assert feed_ids(tmp_path / "items.xml", "xml") == [john["gdpr"]["item_id"]]
    assert not img.exists()
    # objections.path is relative to the policy file
    assert "url https://people.test/jane" in (tmp_path / "lists" / "objections.txt").read_text().splitlines()
    receipt = json.loads(next((tmp_path / "receipts").glob("ERA-*.json")).read_text())
    assert receipt["status"] == "complete" and receipt["objections_added"] == ["url https://people.test/jane"]
    assert (tmp_path / "receipts" / f"{receipt['request_id']}.md").exists()
    assert (tmp_path / "receipts" / f"{receipt['request_id']}.html").exists()
    audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["decision"] == "erased" and audit[-1]["request_id"] == receipt["request_id"]


def test_gdpr_erase_objections_setting_wins(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    open_ledger(ledger).close()  # a crawl created it (erasure never creates a ledger)
    proc = run_scrapy("gdpr-erase", "--domain", "jane.example", "--ledger", ledger,
                      "-s", f"GDPR_OBJECTIONS={tmp_path / 'obj.txt'}", "--receipt-dir", str(tmp_path / "r"),
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "domain jane.example" in (tmp_path / "obj.txt").read_text()


def test_gdpr_erase_without_objection_list_refuses(tmp_path):
    proc = run_scrapy("gdpr-erase", "--url", "https://x.test/", "--ledger", f"sqlite:///{tmp_path / 'l.sqlite3'}",
                      cwd=tmp_path)
    assert proc.returncode == 2 and "--policy" in proc.stderr

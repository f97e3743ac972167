from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime, timedelta

from scrapy_gdpr.ledger import open_ledger
from tests.retention_support import add_object, page_item, write_policy, write_stamped_feed
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

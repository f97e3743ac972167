from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from scrapy_gdpr.ledger import Selector, open_ledger
from tests.retention_support import (  # noqa: F401
    add_object,
    feed_ids,
    ledger_url,
    page_item,
    run_scrapy_without_file_override,
    write_policy,
    write_stamped_feed,
)
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


# --------------------------------------------------------------------------- honest receipts


def _receipt(folder):  # type: ignore[no-untyped-def]
    return json.loads(max(folder.glob("ERA-*.json")).read_text(encoding="utf-8"))


def test_receipt_counts_every_ledger_row_deleted(tmp_path, ledger_url):  # noqa: F811
    later = datetime.now(UTC) + timedelta(days=10)
    jane = page_item("https://people.test/jane", later)
    john = page_item("https://people.test/john", later)
    only_jane = page_item("https://people.test/jane", later)
    with open_ledger(ledger_url) as led:
        write_stamped_feed(tmp_path / "a.jsonl", "jsonlines", [jane, john], ledger=led)
        write_stamped_feed(tmp_path / "b.xml", "xml", [jane, john], ledger=led)
        write_stamped_feed(tmp_path / "c.csv", "csv", [only_jane], ledger=led)  # left empty: removed
        add_object(led, tmp_path / "img", "full/j.jpg", "https://people.test/jane", "https://cdn.test/j.jpg", later)
        add_object(led, tmp_path / "img", "thumbs/small/j.jpg", "https://people.test/jane", "https://cdn.test/j.jpg",
                   later, kind="thumbnail")
        before = led.count()
    proc = run_scrapy("gdpr-erase", "--url", "https://people.test/jane", "--ledger", ledger_url,
                      "--objections", str(tmp_path / "o.txt"), "--receipt-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with open_ledger(ledger_url) as led:
        after = led.count()
        assert led.find(Selector("url", "https://people.test/jane")) == []
    receipt = _receipt(tmp_path / "r")
    assert receipt["ledger_rows"] == before - after == 6  # 3 lines of Jane, the emptied file, 2 objects
    assert receipt["ledger_rows_recorded"] == 0
    assert f"{before - after} ledger row(s) erased" in proc.stdout


def test_erase_with_the_ledger_moved_away_is_incomplete(tmp_path):
    later = datetime.now(UTC) + timedelta(days=10)
    jane = page_item("https://people.test/jane", later)
    write_stamped_feed(tmp_path / "items.jsonl", "jsonlines", [jane, page_item("https://people.test/john", later)])
    gone = tmp_path / "moved" / "ledger.sqlite3"
    proc = run_scrapy("gdpr-erase", "--url", "https://people.test/jane", "--ledger", f"sqlite:///{gone}",
                      "--objections", str(tmp_path / "o.txt"), "--search-feed", str(tmp_path / "items.jsonl"),
                      "--receipt-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert not gone.exists() and not gone.parent.exists()  # no empty ledger created
    receipt = _receipt(tmp_path / "r")
    assert receipt["status"] == "incomplete"
    assert receipt["searched"]["ledger"] == f"sqlite:///{gone} (did not exist)"
    assert "did not exist" in receipt["problems"][0]
    assert receipt["searched"]["feed_files"] == [str((tmp_path / "items.jsonl").resolve())]
    assert receipt["feed_lines"] == 1  # what could be found was erased
    assert receipt["ledger_rows"] == 0 and receipt["ledger_rows_recorded"] == 0
    assert len(feed_ids(tmp_path / "items.jsonl", "jsonlines")) == 1
    assert "| Status | incomplete |" in (tmp_path / "r" / f"{receipt['request_id']}.md").read_text()


def test_erase_with_an_empty_ledger_while_stamped_feeds_exist_is_incomplete(tmp_path, ledger_url):  # noqa: F811
    later = datetime.now(UTC) + timedelta(days=10)
    write_stamped_feed(tmp_path / "items.csv", "csv", [page_item("https://people.test/john", later)])
    open_ledger(ledger_url).close()  # a new, empty ledger: not the one the crawls wrote to
    proc = run_scrapy("gdpr-erase", "--url", "https://people.test/jane", "--ledger", ledger_url,
                      "--objections", str(tmp_path / "o.txt"), "-s", 'FEEDS={"items.csv": {"format": "csv"}}',
                      "--receipt-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    receipt = _receipt(tmp_path / "r")
    assert receipt["status"] == "incomplete" and "the ledger is empty" in receipt["problems"][0]
    assert receipt["searched"]["feed_files"] == [str((tmp_path / "items.csv").resolve())]
    # with no stamped feed anywhere, an empty ledger means nothing is held: complete
    (tmp_path / "items.csv").unlink()
    proc = run_scrapy("gdpr-erase", "--url", "https://people.test/jane", "--ledger", ledger_url,
                      "--objections", str(tmp_path / "o.txt"), "--receipt-dir", str(tmp_path / "r2"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _receipt(tmp_path / "r2")["status"] == "complete"


def test_erase_with_a_read_only_ledger_changes_nothing(tmp_path):
    db = tmp_path / "db"
    ledger = f"sqlite:///{db / 'ledger.sqlite3'}"
    later = datetime.now(UTC) + timedelta(days=10)
    with open_ledger(ledger) as led:
        write_stamped_feed(tmp_path / "items.jsonl", "jsonlines", [page_item("https://people.test/jane", later)],
                           ledger=led)
    (db / "ledger.sqlite3").chmod(0o444)
    db.chmod(0o555)
    try:
        proc = run_scrapy_without_file_override(
            "gdpr-erase", "--url", "https://people.test/jane", "--ledger", ledger, "--objections",
            str(tmp_path / "o.txt"), "--receipt-dir", str(tmp_path / "r"), cwd=tmp_path)
    finally:
        db.chmod(0o755)
    assert proc.returncode == 1
    assert f"the ledger {db / 'ledger.sqlite3'} cannot be written" in proc.stderr and "Fix:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o.txt").exists() and len(feed_ids(tmp_path / "items.jsonl", "jsonlines")) == 1


def test_erase_over_a_tenth_of_the_store_needs_yes(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    later = datetime.now(UTC) + timedelta(days=10)
    with open_ledger(ledger) as led:
        write_stamped_feed(tmp_path / "items.jsonl", "jsonlines",
                           [page_item(f"https://people.test/{i}", later, text=f"Person_{i}") for i in range(20)],
                           ledger=led)
    args = ("gdpr-erase", "--ledger", ledger, "--objections", str(tmp_path / "o.txt"),
            "--receipt-dir", str(tmp_path / "r"))
    # '_' is in every stamp and key: it matches no item value
    proc = run_scrapy(*args, "--contains", "gdpr", cwd=tmp_path)
    assert proc.returncode == 0 and "0 feed line(s)" in proc.stdout, proc.stderr
    proc = run_scrapy(*args, "--contains", "_", cwd=tmp_path)
    assert proc.returncode == 2 and "matches 20 of the 20 items held" in proc.stderr
    assert len(feed_ids(tmp_path / "items.jsonl", "jsonlines")) == 20
    proc = run_scrapy(*args, "--domain", "people.test", cwd=tmp_path)
    assert proc.returncode == 2 and not (tmp_path / "o.txt").exists()  # not even the objection
    proc = run_scrapy(*args, "--domain", "people.test", "--yes", cwd=tmp_path)
    assert proc.returncode == 0 and "20 feed line(s)" in proc.stdout
    assert "domain people.test" in (tmp_path / "o.txt").read_text()


def test_url_prefix_without_a_path_is_the_host_root(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    later = datetime.now(UTC) + timedelta(days=10)
    keep = page_item("https://a.test.example/x", later)
    with open_ledger(ledger) as led:
        write_stamped_feed(tmp_path / "items.jsonl", "jsonlines", [page_item("https://a.test/x", later), keep],
                           ledger=led)
    proc = run_scrapy("gdpr-erase", "--url-prefix", "HTTPS://A.test", "--ledger", ledger, "--objections",
                      str(tmp_path / "o.txt"), "--receipt-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert feed_ids(tmp_path / "items.jsonl", "jsonlines") == [keep["gdpr"]["item_id"]]
    assert "prefix https://a.test/\n" in (tmp_path / "o.txt").read_text(encoding="utf-8")


def test_url_with_non_ascii_host_and_path_matches_the_stored_form(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    later = datetime.now(UTC) + timedelta(days=10)
    stored = page_item("https://xn--bcher-kva.example/zo%C3%AB", later)  # as Scrapy requested it
    keep = page_item("https://xn--bcher-kva.example/other", later)
    with open_ledger(ledger) as led:
        write_stamped_feed(tmp_path / "items.csv", "csv", [stored, keep], ledger=led)
    proc = run_scrapy("gdpr-erase", "--url", "https://Bücher.example/zoë", "--ledger", ledger, "--objections",
                      str(tmp_path / "o.txt"), "--receipt-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert feed_ids(tmp_path / "items.csv", "csv") == [keep["gdpr"]["item_id"]]
    assert "url https://xn--bcher-kva.example/zo%C3%AB\n" in (tmp_path / "o.txt").read_text(encoding="utf-8")

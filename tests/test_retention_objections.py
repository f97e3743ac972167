"""Writing the objection list: every value validated and canonical, the file format
unbreakable by any argument; loading: a bad line reported with its number, skipped
only when the policy says so."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from scrapy import Spider
from scrapy.utils.test import get_crawler

from scrapy_gdpr.ledger import open_ledger
from scrapy_gdpr.objections import ObjectionFileError, ObjectionList, append_objection, objection_list, objection_value
from tests.retention_support import feed_ids, page_item, write_policy, write_stamped_feed
from tests.utils import run_scrapy

#: Every character str.splitlines() breaks at, controls, and other invisible ones.
BREAKERS = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\x00", "\t", "\u200b",
            "\ufeff", "\x7f"]


@pytest.mark.parametrize("char", BREAKERS)
@pytest.mark.parametrize("kind", ["url", "prefix", "domain"])
def test_no_value_can_add_a_line(tmp_path, kind, char):
    path = tmp_path / "objections.txt"
    append_objection(path, "url", "https://ok.test/a")
    before = path.read_bytes()
    value = f"https://jane.test/p{char}domain evil.test" if kind != "domain" else f"jane.test{char}evil.test"
    with pytest.raises(ValueError, match=r"contains U\+[0-9A-F]{4}"):
        append_objection(path, kind, value)
    assert path.read_bytes() == before  # nothing written


@pytest.mark.parametrize(("kind", "value", "message"), [
    ("url", "", "needs a value"),
    ("url", "jane", "not an absolute http"),
    ("url", "ftp://a.test/x", "not an absolute http"),
    ("url", "https://a.test/my page", "white space"),
    ("prefix", "javascript:alert(1)", "not an absolute http"),
    ("domain", "a.test/x", "not a domain"),
    ("domain", "https://a.test", "not a domain"),
    ("domain", "a b.test", "not a domain"),
    ("kind", "a.test", "kind must be one of"),
])
def test_invalid_values_are_refused_with_the_reason(tmp_path, kind, value, message):
    with pytest.raises(ValueError, match=message):
        append_objection(tmp_path / "o.txt", kind, value)
    assert not (tmp_path / "o.txt").exists()


@pytest.mark.parametrize(("kind", "value", "written"), [
    ("url", "HTTPS://A.Test:443/p?b=1&a=2#x", "https://a.test/p?a=2&b=1"),
    ("url", "http://a.test/zoë", "http://a.test/zo%C3%AB"),
    ("prefix", " https://a.test/people/ ", "https://a.test/people/"),
    ("domain", "Bücher.Example.", "xn--bcher-kva.example"),
    ("domain", "[::1]", "::1"),
])
def test_values_are_written_canonical_and_read_back(tmp_path, kind, value, written):
    path = tmp_path / "o.txt"
    assert append_objection(path, kind, value, note="erasure ERA-1\u2028domain evil.test") == written
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[1] == f"{kind} {written}" and lines[0].startswith("# ") and "\u2028" not in lines[0]
    objections = ObjectionList.from_file(path)
    assert len(objections) == 1
    probe = {"url": value.strip(), "prefix": "https://a.test/people/x", "domain": None}[kind]
    if probe:
        assert objections.match(probe) is not None
    else:
        assert objections.match_host(written.strip("[]")) is not None


def test_a_last_line_without_its_end_is_never_joined(tmp_path):
    path = tmp_path / "o.txt"
    path.write_text("url https://a.test/x", encoding="utf-8")  # edited by hand, no final newline
    append_objection(path, "domain", "b.test")
    assert len(ObjectionList.from_file(path)) == 2


def test_objection_value_is_printable_ascii_for_hostile_input():
    for value in ["https://a.test/" + "\u00e9" * 50, "https://a.test/\"'<>`{}|\\^", "https://a.test/?q=a b".replace(" ", "+"),
                  "https://xn--80ak6aa92e.com/", "https://a.test/" + "x" * 5000]:
        text = objection_value("url", value)
        assert text.isascii() and text.isprintable() and " " not in text


def test_erase_refuses_a_bad_value_before_writing_anything(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    later = datetime.now(UTC) + timedelta(days=10)
    jane = page_item("https://people.test/jane", later)
    with open_ledger(ledger) as led:
        write_stamped_feed(tmp_path / "items.jsonl", "jsonlines", [jane], ledger=led)
    policy = write_policy(tmp_path)
    for bad in ["https://people.test/jane\u2028domain people.test", "people.test/jane"]:
        proc = run_scrapy("gdpr-erase", "--url", "https://people.test/jane", "--url", bad, "--ledger", ledger,
                          "--policy", str(policy), "--receipt-dir", str(tmp_path / "r"), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "nothing was erased or written" in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / "objections.txt").exists()
        assert feed_ids(tmp_path / "items.jsonl", "jsonlines") == [jane["gdpr"]["item_id"]]
        assert not (tmp_path / "r").exists()
    # the same request with a good value: one line per entry, and the list still loads
    proc = run_scrapy("gdpr-erase", "--url", "HTTPS://People.Test/jane", "--domain", "Evil.Test", "--ledger", ledger,
                      "--policy", str(policy), "--receipt-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    entries = [x for x in (tmp_path / "objections.txt").read_text(encoding="utf-8").split("\n")
               if x and not x.startswith("#")]
    assert entries == ["url https://people.test/jane", "domain evil.test"]
    assert len(ObjectionList.from_file(tmp_path / "objections.txt")) == 2
    assert feed_ids(tmp_path / "items.jsonl", "jsonlines") == []


BAD_FILE = "url https://a.test/1\nurl https://a.test/x\u2028domain a.test\nurll https://typo.test/\ndomain b.test\n"


def test_bad_lines_refuse_by_default_with_their_real_line_number(tmp_path):
    path = tmp_path / "o.txt"
    path.write_text(BAD_FILE, encoding="utf-8")
    # line 2 holds a U+2028: it is still line 2 (not split in two), and it is refused
    with pytest.raises(ObjectionFileError, match=r"o\.txt:2: "):
        ObjectionList.from_file(path)


def test_bad_lines_are_skipped_and_reported_when_the_policy_says_so(tmp_path, caplog):
    path = tmp_path / "o.txt"
    path.write_text(BAD_FILE, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="scrapy_gdpr.gate.objections"):
        objections = ObjectionList.from_file(path, on_invalid="skip")
    assert [s.split(": ")[0] for s in objections.skipped] == [f"{path}:2", f"{path}:3"]
    assert [r.getMessage().split(": ")[1] for r in caplog.records if "is skipped" in r.getMessage()] == [
        f"{path}:2", f"{path}:3"]
    assert objections.match("https://a.test/1") is not None
    assert objections.match("https://b.test/") is not None  # the line after the bad ones applies
    assert objections.match("https://a.test/2") is None  # the bad line's 'domain a.test' is not applied


@pytest.mark.parametrize("on_invalid", ["refuse", "skip"])
def test_the_crawl_follows_objections_on_invalid(tmp_path, on_invalid):
    policy = write_policy(tmp_path)
    data = yaml.safe_load(policy.read_text(encoding="utf-8"))
    data["objections"]["on_invalid"] = on_invalid
    policy.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    (tmp_path / "objections.txt").write_text(BAD_FILE, encoding="utf-8")
    from scrapy_gdpr._component import component_runtime

    crawler = get_crawler(Spider, {"GDPR_POLICY": str(policy), "GDPR_AUDIT_LOG": str(tmp_path / "a.jsonl")})
    rt = component_runtime(crawler)
    if on_invalid == "refuse":
        with pytest.raises(ObjectionFileError, match=":2: "):
            objection_list(rt)
    else:
        assert len(objection_list(rt).skipped) == 2


def test_erase_reports_bad_lines_already_in_the_list(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    open_ledger(ledger).close()
    (tmp_path / "objections.txt").write_text(BAD_FILE, encoding="utf-8")
    proc = run_scrapy("gdpr-erase", "--domain", "jane.test", "--ledger", ledger, "--objections",
                      str(tmp_path / "objections.txt"), "--receipt-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warnings = [x for x in proc.stderr.splitlines() if x.startswith("warning: objection list:")]
    assert [w.split(": ")[2] for w in warnings] == [f"{tmp_path / 'objections.txt'}:2",
                                                    f"{tmp_path / 'objections.txt'}:3"]
    assert (tmp_path / "objections.txt").read_text(encoding="utf-8").endswith("domain jane.test\n")

"""Feeds torn by a crawl killed with SIGKILL: purge, access and erasure still work on
every format, and a later crawl never appends to a torn file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scrapy_gdpr import feedfiles
from scrapy_gdpr.ledger import Selector, open_ledger
from scrapy_gdpr.retention import purge
from scrapy_gdpr.rights import erase
from tests.retention_support import page_item, write_policy, write_stamped_feed
from tests.utils import ROOT, run_scrapy

FEEDS = {"items.jsonl": "jsonlines", "items.json": "json", "items.csv": "csv", "items.xml": "xml"}
NAME = "Zoë Quill"

SPIDER = '''
import scrapy


class Endless(scrapy.Spider):
    """One item per data: page, each about 2 KB, with a non-ASCII name on every 20th."""

    name = "endless"

    def __init__(self, count="1000000", **kw):
        super().__init__(**kw)
        self.count = int(count)

    async def start(self):
        for n in range(self.count):
            yield scrapy.Request(f"data:text/plain,page{n}", cb_kwargs={"n": n}, dont_filter=True)

    def parse(self, response, n):
        yield {"n": n, "name": "Zo\\u00eb Quill" if n % 20 == 3 else f"Person {n}",
               "note": "caf\\u00e9 " + "x" * 2000}
'''


def _project(root: Path) -> Path:
    """A Scrapy project with the retention components and one feed in each format."""
    policy = write_policy(root)
    pkg = root / "tornproj"
    (pkg / "spiders").mkdir(parents=True)
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "spiders" / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "spiders" / "endless.py").write_text(SPIDER, encoding="utf-8")
    feeds = {str(root / "out" / name): {"format": fmt, "item_filter": "scrapy_gdpr.retention.RetentionItemFilter"}
             for name, fmt in FEEDS.items()}
    settings = f"""
SPIDER_MODULES = ["tornproj.spiders"]
GDPR_POLICY = {str(policy)!r}
GDPR_LEDGER = {f"sqlite:///{root / 'ledger.sqlite3'}"!r}
GDPR_AUDIT_LOG = {str(root / "audit.jsonl")!r}
GDPR_REPORT_DIR = {str(root / "reports")!r}
GDPR_OBJECTIONS = {str(root / "objections.txt")!r}
SPIDER_MIDDLEWARES = {{"scrapy_gdpr.provenance.ProvenanceMiddleware": 950}}
ITEM_PIPELINES = {{"scrapy_gdpr.retention.RetentionPipeline": 900}}
EXTENSIONS = {{"scrapy_gdpr.retention.RetentionExtension": 0}}
FEEDS = {feeds!r}
FEED_EXPORTERS = {{"csv": "scrapy_gdpr.retention.GdprCsvItemExporter",
                  "xml": "scrapy_gdpr.retention.GdprXmlItemExporter"}}
FEED_STORAGES = {{"": "scrapy_gdpr.retention.LockingFileFeedStorage",
                 "file": "scrapy_gdpr.retention.LockingFileFeedStorage"}}
CONCURRENT_REQUESTS = 4
LOG_LEVEL = "INFO"
"""
    (pkg / "settings.py").write_text(settings, encoding="utf-8")
    (root / "scrapy.cfg").write_text("[settings]\ndefault = tornproj.settings\n", encoding="utf-8")
    return root


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _kill_mid_crawl(project: Path, min_size: int = 100_000) -> None:
    """Start `scrapy crawl endless` and SIGKILL it once every feed file has data."""
    proc = subprocess.Popen([sys.executable, "-m", "scrapy.cmdline", "crawl", "endless"], cwd=project,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    files = [project / "out" / name for name in FEEDS]
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the crawl ended by itself: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            if all(f.exists() and f.stat().st_size > min_size for f in files):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the crawl wrote too little in 120 s")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL


def _whole(path: Path, fmt: str) -> list[feedfiles.FeedRecord]:
    """The records of a file that must be whole: no damaged part at all."""
    damage: list[feedfiles.Damage] = []
    records = list(feedfiles.read_records(path, fmt, damage))
    assert damage == [], (path, damage)
    return records


def _names(records: list[feedfiles.FeedRecord], fmt: str) -> list[str]:
    from scrapy_gdpr.rights import item_values

    return [v for r in records for v in item_values(r) if v == NAME or v.startswith("Person ")]


def _raw_mentions(path: Path) -> int:
    """Mentions of the name in the file's bytes, in any encoding a feed uses."""
    data = path.read_bytes()
    return sum(data.count(x) for x in (b"Zo\\u00eb", "Zoë".encode(), b"Zo&#235;", b"Zo&#xeb;"))


@pytest.fixture
def torn_project(tmp_path):
    project = _project(tmp_path)
    _kill_mid_crawl(project)
    out = project / "out"
    # the kill tore the files: no closing bracket or tag, a partly written record
    assert not (out / "items.json").read_bytes().rstrip().endswith(b"]")
    assert not (out / "items.xml").read_bytes().rstrip().endswith(b"</items>")
    return project


def test_killed_crawl_access_erase_and_purge(torn_project):
    project = torn_project
    out = project / "out"
    complete: dict[str, list[feedfiles.FeedRecord]] = {}
    for name, fmt in FEEDS.items():
        damage: list[feedfiles.Damage] = []
        complete[name] = [r for r in feedfiles.read_records(out / name, fmt, damage) if r.stamp]
        assert complete[name], name
        # Scrapy writes a JSON Lines line or a CSV row in one write (so they stay whole
        # after a SIGKILL; a power cut can still tear them: see _tear_mid_record); the
        # JSON and XML exporters leave a file without its closing bracket or tag
        assert damage or fmt in ("jsonlines", "csv"), f"{name} is not torn"
        assert NAME in _names(complete[name], fmt), name
    zoe = {name: sum(v == NAME for v in _names(recs, FEEDS[name])) for name, recs in complete.items()}
    others = {name: sum(v != NAME for v in _names(recs, FEEDS[name])) for name, recs in complete.items()}

    # access by the name finds every complete record of it, in every format
    archive = project / "zoe.zip"
    proc = run_scrapy("gdpr-access", "--contains", "zoë quill", "--out", str(archive), "--receipt-dir",
                      str(project / "receipts"), cwd=project, env=_env())
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(archive) as zf:
        items = json.loads(zf.read("items.json"))
    ids = {r.item_id for recs in complete.values() for r in recs if NAME in _names([r], "")}
    assert {i["item_id"] for i in items} >= ids
    assert all(i["item"]["name"] == NAME for i in items)

    # erasure by the name: every complete record, and a torn one that holds it
    proc = run_scrapy("gdpr-erase", "--contains", NAME, "--receipt-dir", str(project / "receipts"),
                      cwd=project, env=_env())
    assert proc.returncode == 0, proc.stderr
    receipt = json.loads(next((project / "receipts").glob("ERA-*.json")).read_text(encoding="utf-8"))
    assert receipt["status"] == "complete"
    assert receipt["feed_lines"] == sum(zoe.values())
    assert sorted(Path(p).name for p in receipt["searched"]["feed_files"]) == sorted(FEEDS)
    assert {"items.json", "items.xml"} <= {Path(d["path"]).name for d in receipt["damaged"]}
    assert all(d["removed"] for d in receipt["damaged"])
    for name, fmt in FEEDS.items():
        left = _whole(out / name, fmt)  # repaired: whole again
        assert NAME not in _names(left, fmt), name
        assert _raw_mentions(out / name) == 0, name
        assert sum(v != NAME for v in _names(left, fmt)) == others[name], name  # nobody else lost

    # a purge after every expiry empties everything, torn or not
    proc = run_scrapy("gdpr-purge", "--now", (datetime.now(UTC) + timedelta(days=400)).isoformat(),
                      cwd=project, env=_env())
    assert proc.returncode == 0, proc.stderr
    assert not any((out / name).exists() for name in FEEDS)


def test_purge_of_torn_feeds(torn_project):
    """Purge (not erasure) straight after the kill: every file is purged, none stops it."""
    project = torn_project
    out = project / "out"
    with open_ledger(f"sqlite:///{project / 'ledger.sqlite3'}") as led:
        dry = purge(led, datetime.now(UTC) + timedelta(days=400), dry_run=True)
        assert dry.errors == [] and len(dry.damaged) >= 2 and not any(d["removed"] for d in dry.damaged)
        assert all((out / name).exists() for name in FEEDS)
        result = purge(led, datetime.now(UTC) + timedelta(days=400))
        assert result.errors == []
        assert result.feed_files_removed == 4
        assert not any((out / name).exists() for name in FEEDS)


def _tear_mid_record(path: Path) -> None:
    """Cut a file in the middle of its last record (what a power cut can leave of a
    JSON Lines line or a CSV row)."""
    data = path.read_bytes()
    start = data.rstrip(b"\r\n").rfind(b"\n") + 1
    path.write_bytes(data[: start + (len(data) - start) // 2])


def test_crawl_after_a_kill_repairs_the_file_before_appending(torn_project):
    project = torn_project
    out = project / "out"
    _tear_mid_record(out / "items.jsonl")
    _tear_mid_record(out / "items.csv")
    before = {name: len([r for r in feedfiles.read_records(out / name, fmt) if r.stamp])
              for name, fmt in FEEDS.items()}
    proc = run_scrapy("crawl", "endless", "-a", "count=20", cwd=project, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "repaired before appending" in proc.stderr
    with open_ledger(f"sqlite:///{project / 'ledger.sqlite3'}") as led:
        for name, fmt in FEEDS.items():
            records = [r for r in _whole(out / name, fmt) if r.stamp]  # whole: nothing torn inside
            assert len(records) == before[name] + 20, name
            # every line of the file, old and new, is recorded
            recorded = {r.item_id for r in led.at_location(str((out / name).resolve())) if r.kind == "feed_line"}
            assert recorded == {r.item_id for r in records}, name


def _torn_copy(path: Path, fmt: str, cut: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:cut])


@pytest.mark.parametrize("fmt", list(FEEDS.values()))
def test_every_cut_of_a_feed_file_is_read(tmp_path, fmt):
    """A file cut at any byte (inside a multi-byte character, an escape, an entity, a
    CSV quote) gives every record before the cut and reports the rest, never raises."""
    later = datetime.now(UTC) + timedelta(days=5)
    items = [page_item(f"https://a.test/{i}", later, text=f'{NAME} "quoted", <b>&amp; {i}') for i in range(3)]
    path = tmp_path / f"f.{fmt}"
    write_stamped_feed(path, fmt, items)
    full = path.read_bytes()
    complete_at = []  # the byte length at which each record is complete
    for n in range(len(full) + 1):
        cut = tmp_path / f"cut.{fmt}"
        cut.write_bytes(full[:n])
        damage: list[feedfiles.Damage] = []
        got = [r.item_id for r in feedfiles.read_records(cut, fmt, damage)]
        expected = [it["gdpr"]["item_id"] for it in items]
        assert got == expected[: len(got)], n  # only whole records, in order
        if n == len(full):
            assert len(got) == 3 and damage == []
        complete_at.append(len(got))
    assert complete_at[-1] == 3


def test_unreadable_feed_does_not_stop_the_others(tmp_path):
    later = datetime.now(UTC) + timedelta(days=5)
    ledger = f"sqlite:///{tmp_path / 'l.sqlite3'}"
    bad = tmp_path / "a.jsonl"
    with open_ledger(ledger) as led:
        write_stamped_feed(bad, "jsonlines", [page_item("https://a.test/jane", later)], ledger=led)
        write_stamped_feed(tmp_path / "b.jsonl", "jsonlines", [page_item("https://a.test/jane", later)], ledger=led)
        write_stamped_feed(tmp_path / "c.jsonl", "jsonlines", [page_item("https://a.test/jane", later)], ledger=led)
    bad.unlink()
    bad.mkdir()  # cannot be read as a file (whoever runs the tests, root included)
    proc = run_scrapy("gdpr-erase", "--url", "https://a.test/jane", "--ledger", ledger, "--objections",
                      str(tmp_path / "o.txt"), "--receipt-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 1 and f"not erased: {bad.resolve()}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "2 feed line(s)" in proc.stdout  # the other two files were erased
    receipt = json.loads(next((tmp_path / "r").glob("ERA-*.json")).read_text(encoding="utf-8"))
    assert receipt["status"] == "incomplete" and receipt["failed"][0]["location"] == str(bad.resolve())
    with open_ledger(ledger) as led:
        assert {Path(r.location).name for r in led.find(Selector("url", "https://a.test/jane"))} == {"a.jsonl"}
        write_stamped_feed(tmp_path / "d.jsonl", "jsonlines", [page_item("https://a.test/x", later)], ledger=led)
        result = purge(led, later + timedelta(days=1))
    assert [e["location"] for e in result.errors] == [str(bad.resolve())]
    assert result.feed_lines == 1 and not (tmp_path / "d.jsonl").exists()  # purged past the bad file


def test_json_reading_resumes_at_the_next_stamped_record(tmp_path):
    """Damage in the middle of a JSON feed (a torn array another crawl appended to
    before this version repaired files, a hand edit) loses only the damaged record."""
    later = datetime.now(UTC) + timedelta(days=3)
    items = [page_item(f"https://a.test/{i}", later, text=f"t{i}") for i in range(5)]
    ids = [it["gdpr"]["item_id"] for it in items]
    path = tmp_path / "f.json"
    write_stamped_feed(path, "json", items[:3])
    whole = path.read_text(encoding="utf-8")
    first, second, third = whole.split("},{")
    path.write_text(first + "},{" + second[:40] + ' GARBAGE ,{"x": {}} ,{' + third, encoding="utf-8")
    damage: list[feedfiles.Damage] = []
    assert [r.item_id for r in feedfiles.read_records(path, "json", damage)] == [ids[0], ids[2]]
    assert len(damage) == 1 and "GARBAGE" in damage[0].fragment
    write_stamped_feed(tmp_path / "g.json", "json", items[3:])
    path.write_text(whole[:-30] + (tmp_path / "g.json").read_text(encoding="utf-8"), encoding="utf-8")
    damage = []
    assert [r.item_id for r in feedfiles.read_records(path, "json", damage)] == [ids[0], ids[1], ids[3], ids[4]]
    assert len(damage) == 1


@pytest.mark.parametrize("fmt", list(FEEDS.values()))
def test_erasure_removes_a_torn_record_of_the_person(tmp_path, fmt):
    """The last record, cut after its URL and part of the name: an erasure by URL or
    by name removes it with the file's rewrite, and says so."""
    later = datetime.now(UTC) + timedelta(days=5)
    other = page_item("https://a.test/other", later, text="Someone")
    torn = page_item("https://a.test/zoe-quill", later, text=f"{NAME} and more text")
    path = tmp_path / f"f.{fmt}"
    ledger = f"sqlite:///{tmp_path / 'l.sqlite3'}"
    with open_ledger(ledger) as led:
        write_stamped_feed(path, fmt, [other, torn], ledger=led)
        data = path.read_bytes()
        marker = b"more text"
        path.write_bytes(data[: data.rindex(marker)])  # cut inside the title, after the name
        for selector in (Selector("url", "https://a.test/zoe-quill"), Selector("contains", "zoë quill")):
            assert b"zoe-quill" in path.read_bytes() or selector.kind == "contains"
            result = erase(led, [selector], objections_path=None)
            assert result.feed_lines == 0 and result.complete
            assert result.damaged and all(d["removed"] for d in result.damaged)
            left = _whole(path, fmt)
            assert [r.item_id for r in left] == [other["gdpr"]["item_id"]]
            assert b"zoe-quill" not in path.read_bytes() and _raw_mentions(path) == 0
            write_stamped_feed(path, fmt, [other, torn], ledger=led)
            path.write_bytes(path.read_bytes()[: path.read_bytes().rindex(marker)])


def test_erasure_never_rewrites_a_file_that_is_not_a_feed_of_the_crawls(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'l.sqlite3'}"
    other = tmp_path / "settings.json"
    other.write_text('{"not": "a feed", "name": "Zoë Quill"}', encoding="utf-8")
    with open_ledger(ledger) as led:
        write_stamped_feed(tmp_path / "f.jsonl", "jsonlines",
                           [page_item("https://a.test/1", datetime.now(UTC) + timedelta(days=1))], ledger=led)
        result = erase(led, [Selector("contains", NAME)], objections_path=None, feeds=[other])
    assert result.complete and result.feed_files == []
    assert other.read_text(encoding="utf-8") == '{"not": "a feed", "name": "Zoë Quill"}'


def test_xml_reading_resumes_at_the_next_item(tmp_path):
    later = datetime.now(UTC) + timedelta(days=3)
    items = [page_item(f"https://a.test/{i}", later, text=f"t{i}") for i in range(4)]
    ids = [it["gdpr"]["item_id"] for it in items]
    path = tmp_path / "f.xml"
    write_stamped_feed(path, "xml", items)
    whole = path.read_bytes()
    second = whole.index(b"<item>", whole.index(b"<item>") + 1)
    third = whole.index(b"<item>", second + 1)
    path.write_bytes(whole[: second + 30] + b" <<garbage& " + whole[third:])
    damage: list[feedfiles.Damage] = []
    assert [r.item_id for r in feedfiles.read_records(path, "xml", damage)] == [ids[0], ids[2], ids[3]]
    assert [d.detail for d in damage] == ["a torn record after item 1 (not well-formed (invalid token))"]
    # a torn document followed by one a later crawl appended (before files were repaired)
    path.write_bytes(whole[:-20] + whole)
    damage = []
    assert [r.item_id for r in feedfiles.read_records(path, "xml", damage)] == ids[:3] + ids
    assert len(damage) == 1

"""A project deployed to a real Scrapyd (started on a free local port) as an egg,
scheduled through ``schedule.json``: the job runs under the add-on, its Scrapyd
``items_dir`` export is stamped and recorded in the ledger, and a compliance-blocked
job exits with status 4 (Scrapyd logs it) and says so in its log."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.utils import ROOT, free_port, write_policy

pytest.importorskip("scrapyd")

pytestmark = pytest.mark.slow

SETTINGS = """
BOT_NAME = "tinyd"
SPIDER_MODULES = ["tinyd.spiders"]
ADDONS = {{"scrapy_gdpr.Addon": 0}}
RETRY_ENABLED = False
# Scrapyd runs jobs in its own folder, outside any project: absolute paths
GDPR_POLICY = {policy!r}
GDPR_AUDIT_LOG = {data!r} + "/audit/%(name)s.jsonl"
GDPR_REPORT_DIR = {data!r} + "/reports"
GDPR_LEDGER = "sqlite:///" + {data!r} + "/ledger.sqlite3"
"""

SPIDER = """
from scrapy import Request, Spider


class NewsSpider(Spider):
    name = "news"

    def __init__(self, url="", **kw):
        super().__init__(**kw)
        self.url = url

    async def start(self):
        for url in self.url.split(" "):
            yield Request(url)

    def parse(self, response):
        yield {"url": response.url, "title": response.css("title::text").get() or ""}
"""

SETUP = """
from setuptools import find_packages, setup

setup(name="tinyd", version="1.0", packages=find_packages(),
      entry_points={"scrapy": ["settings = tinyd.settings"]})
"""


def build_egg(tmp_path: Path, mockserver: Any, policy_template: str = "") -> tuple[bytes, Path]:
    """The test project's egg; its settings name the policy data/news.yaml by an absolute
    path (``policy_template`` replaces the file name, e.g. ``%(name)s.yaml``)."""
    data = tmp_path / "data"
    data.mkdir()
    policy = write_policy(data / "news.yaml", mockserver, ["127.0.0.1"])
    if policy_template:
        policy = data / policy_template
    src = tmp_path / "src"
    (src / "tinyd" / "spiders").mkdir(parents=True)
    (src / "setup.py").write_text(SETUP, encoding="utf-8")
    (src / "tinyd" / "__init__.py").write_text("", encoding="utf-8")
    (src / "tinyd" / "spiders" / "__init__.py").write_text("", encoding="utf-8")
    (src / "tinyd" / "spiders" / "news.py").write_text(SPIDER, encoding="utf-8")
    (src / "tinyd" / "settings.py").write_text(SETTINGS.format(policy=str(policy), data=str(data)), encoding="utf-8")
    subprocess.run([sys.executable, "setup.py", "-q", "bdist_egg", "-d", str(tmp_path / "dist")], cwd=src,
                   check=True, capture_output=True, timeout=120)
    (egg,) = (tmp_path / "dist").glob("*.egg")
    return egg.read_bytes(), data


def post(base: str, path: str, fields: dict[str, str] | list[tuple[str, str]],
         files: dict[str, bytes] | None = None) -> dict[str, Any]:
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in (fields.items() if isinstance(fields, dict) else fields):
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    for name, content in (files or {}).items():
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.egg"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(base + path, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    assert answer["status"] == "ok", answer
    return answer


def get(base: str, path: str, **query: str) -> dict[str, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as response:
        out: dict[str, Any] = json.loads(response.read())
    return out


@contextlib.contextmanager
def running_scrapyd(home: Path, items_dir: str | None = None):
    """Scrapyd on a free local port, with its own configuration and folders in ``home``."""
    home.mkdir()
    port = free_port()
    (home / "scrapyd.conf").write_text(
        "[scrapyd]\nbind_address = 127.0.0.1\n"
        f"http_port = {port}\neggs_dir = {home}/eggs\nlogs_dir = {home}/logs\n"
        f"items_dir = {home / 'items' if items_dir is None else items_dir}\n"
        f"dbs_dir = {home}/dbs\npoll_interval = 0.2\nmax_proc = 2\njobs_to_keep = 100\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (home / "scrapyd.out").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "scrapyd", "--nodaemon", "--pidfile="], cwd=home, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (home / "scrapyd.out").read_text()
            try:
                if get(base, "/daemonstatus.json")["status"] == "ok":
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Scrapyd did not start"
            time.sleep(0.2)
        yield base, home
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def scrapyd(tmp_path):
    with running_scrapyd(tmp_path / "scrapyd") as found:
        yield found


def expired(ledger_url: str, item_id: str) -> None:
    """An item record that expired a day ago, in the job's ledger."""
    from scrapy_gdpr.ledger import Record, open_ledger

    ledger = open_ledger(ledger_url)
    try:
        ledger.add([Record(kind="item", location="", url=f"http://127.0.0.1/{item_id}.html", spider="news",
                           expires_at=datetime.now(UTC) - timedelta(days=1), item_id=item_id)])
    finally:
        ledger.close()


def held(ledger_url: str) -> set[str]:
    """The expired records the ledger still holds (their item ids)."""
    from scrapy_gdpr.ledger import open_ledger

    ledger = open_ledger(ledger_url, create=False, readonly=True)
    try:
        return {r.item_id for r in ledger.expired(datetime.now(UTC), limit=100)}
    finally:
        ledger.close()


def wait_finished(base: str, job: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = get(base, "/listjobs.json", project="tinyd")
        if any(j["id"] == job for j in jobs["finished"]):
            return
        time.sleep(0.3)
    raise AssertionError(f"job {job} did not finish: {jobs}")


def test_scrapyd_runs_the_deployed_egg_under_the_addon(tmp_path, mockserver, scrapyd):
    base, home = scrapyd
    egg, data = build_egg(tmp_path, mockserver)
    post(base, "/addversion.json", {"project": "tinyd", "version": "1"}, {"egg": egg})
    assert get(base, "/listspiders.json", project="tinyd")["spiders"] == ["news"]
    ledger_url = f"sqlite:///{data / 'ledger.sqlite3'}"
    expired(ledger_url, "old-1")

    job = post(base, "/schedule.json", {"project": "tinyd", "spider": "news",
                                        "url": mockserver.url("/page.html")})["jobid"]
    wait_finished(base, job)
    log = (home / "logs" / "tinyd" / "news" / f"{job}.log").read_text(encoding="utf-8")
    assert "exit status 0 (ok)" in log, log
    assert "GDPR purge:" in log  # the purge at spider open runs in a scheduled run too
    assert held(ledger_url) == set(), "the expired record was purged at spider open"
    # Scrapyd's items_dir export: stamped, and recorded line by line in the ledger
    items = home / "items" / "tinyd" / "news" / f"{job}.jl"
    lines = [json.loads(line) for line in items.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 1
    assert lines[0]["gdpr"]["purpose"] and lines[0]["gdpr"]["expires_at"]
    with sqlite3.connect(data / "ledger.sqlite3") as db:
        rows = db.execute("SELECT kind, location FROM ledger_records WHERE kind IN ('feed_line', 'feed_file')").fetchall()
    assert ("feed_line", str(items.resolve())) in rows
    assert ("feed_file", str(items.resolve())) in rows

    expired(ledger_url, "old-2")  # a blocked run purges as well
    blocked = post(base, "/schedule.json", {"project": "tinyd", "spider": "news",
                                            "url": mockserver.url("/page.html", host="unlisted.test")})["jobid"]
    wait_finished(base, blocked)
    log = (home / "logs" / "tinyd" / "news" / f"{blocked}.log").read_text(encoding="utf-8")
    assert "exit status 4 (blocked)" in log, log
    assert "finish reason gdpr_blocked" in log
    assert held(ledger_url) == set()
    deadline = time.monotonic() + 10
    while "exitstatus=4" not in (home / "scrapyd.out").read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "exitstatus=4" in (home / "scrapyd.out").read_text()


#: A value for each protected setting, as a job would pass it: what it would do if it
#: were let through (switch a protection off, move the policy, the objection list or
#: stored data elsewhere, replace a component that gates, checks, stamps or counts).
PROTECTED_VALUES = {
    "GDPR_ENABLED": "False",
    "ADDONS": "{}",
    "GDPR_POLICY": "/tmp/another-policy.yaml",
    "GDPR_OBJECTIONS": "/tmp/empty-objections.txt",
    "GDPR_PURGE_ON_OPEN": "False",
    "GDPR_LEDGER": "sqlite:////tmp/another-ledger.sqlite3",
    "GDPR_AUDIT_LOG": "",
    "GDPR_ITEM_STORES": "[]",
    "GDPR_POSTGRES_STORE": "postgresql://127.0.0.1:1/elsewhere",
    "GDPR_POSTGRES_STORE_TABLE": "elsewhere",
    "GDPR_IMAGE_BYTES_FIELDS": "[]",
    "ROBOTSTXT_OBEY": "False",
    "TELNETCONSOLE_ENABLED": "True",
    "REMOTE_CONTROL_ENABLED": "True",
    "ITEM_PIPELINES": '{"scrapy_gdpr.retention.RetentionPipeline": null}',
    "ITEM_PIPELINES_BASE": "{}",
    "DOWNLOADER_MIDDLEWARES": '{"scrapy_gdpr.gate.PolicyGateMiddleware": null}',
    "DOWNLOADER_MIDDLEWARES_BASE": "{}",
    "SPIDER_MIDDLEWARES": "{}",
    "SPIDER_MIDDLEWARES_BASE": "{}",
    "EXTENSIONS": '{"scrapy_gdpr.status.CrawlStatus": null}',
    "EXTENSIONS_BASE": "{}",
    "FEED_STORAGES": '{"file": "scrapy.extensions.feedexport.FileFeedStorage"}',
    "FEED_STORAGES_BASE": "{}",
    "FEED_EXPORTERS": '{"jsonlines": "scrapy.exporters.JsonLinesItemExporter"}',
    "FEED_EXPORTERS_BASE": "{}",
    "DOWNLOAD_HANDLERS": '{"http": "scrapy.core.downloader.handlers.http11.HTTP11DownloadHandler"}',
    "DOWNLOAD_HANDLERS_BASE": "{}",
    "DOWNLOADER": "scrapy.core.downloader.Downloader",
    "ITEM_PROCESSOR": "scrapy.pipelines.ItemPipelineManager",
    "STATS_CLASS": "scrapy.statscollectors.DummyStatsCollector",
    "IMAGES_STORE": "/tmp/elsewhere-images",
    "FILES_STORE": "/tmp/elsewhere-files",
    "HTTPCACHE_DIR": "/tmp/elsewhere-cache",
    "HTTPCACHE_STORAGE": "scrapy.extensions.httpcache.DbmCacheStorage",
}


def test_every_protected_setting_has_a_case():
    from scrapy_gdpr.scheduling import PROTECTED

    assert set(PROTECTED_VALUES) == set(PROTECTED)


def test_schedule_json_settings_cannot_change_what_protects_the_crawl(tmp_path, mockserver, scrapyd):
    """A job's setting=... may tune the crawl; a protected setting refuses the job (exit 3),
    whatever else it would have done; nothing is fetched."""
    base, home = scrapyd
    egg, _data = build_egg(tmp_path, mockserver)
    post(base, "/addversion.json", {"project": "tinyd", "version": "1"}, {"egg": egg})
    url = mockserver.url("/page.html")
    jobs = {}
    for name, value in sorted(PROTECTED_VALUES.items()):
        jobs[name] = post(base, "/schedule.json", [("project", "tinyd"), ("spider", "news"), ("url", url),
                                                   ("setting", "LOG_LEVEL=INFO"),
                                                   ("setting", f"{name}={value}")])["jobid"]
    # tuning is let through; an export's fields cannot leave the stamp out
    tuned = post(base, "/schedule.json", [("project", "tinyd"), ("spider", "news"), ("url", url),
                                          ("setting", "CLOSESPIDER_TIMEOUT=120"), ("setting", "LOG_LEVEL=DEBUG"),
                                          ("setting", "GDPR_MONITOR_MIN_ITEMS=1"),
                                          ("setting", 'FEED_EXPORT_FIELDS=["url"]')])["jobid"]
    for job in [*jobs.values(), tuned]:
        wait_finished(base, job)
    for name, job in jobs.items():
        log = (home / "logs" / "tinyd" / "news" / f"{job}.log").read_text(encoding="utf-8")
        assert f"a Scrapyd job may not set {name} (schedule.json setting=...)" in log, log
        assert "Spider opened" not in log
    deadline = time.monotonic() + 10
    while (home / "scrapyd.out").read_text().count("exitstatus=3") < len(jobs) and time.monotonic() < deadline:
        time.sleep(0.2)
    out = (home / "scrapyd.out").read_text()
    assert out.count("exitstatus=3") == len(jobs), out
    log = (home / "logs" / "tinyd" / "news" / f"{tuned}.log").read_text(encoding="utf-8")
    assert "exit status 0 (ok)" in log, log
    # the refused jobs stored nothing: one feed line, the tuned job's
    items = sorted((home / "items" / "tinyd" / "news").glob("*.jl"))
    stored = [p for p in items if p.stat().st_size]
    assert [p.stem for p in stored] == [tuned]
    (line,) = [json.loads(line) for line in stored[0].read_text(encoding="utf-8").splitlines()]
    assert set(line) == {"url", "gdpr"} and line["gdpr"]["expires_at"]


RELATIVE_SETTINGS = """
BOT_NAME = "tinyd"
SPIDER_MODULES = ["tinyd.spiders"]
ADDONS = {"scrapy_gdpr.Addon": 0}
RETRY_ENABLED = False
# relative, as in a project folder: the policy is read from the egg; what the crawl
# writes goes under the job's working folder (Scrapyd's own folder)
GDPR_POLICY = "policies/%(name)s.yaml"
GDPR_AUDIT_LOG = "data/audit/%(name)s.jsonl"
GDPR_REPORT_DIR = "data/reports"
GDPR_LEDGER = "sqlite:///data/ledger.sqlite3"
"""

SETUP_WITH_POLICIES = """
from setuptools import find_packages, setup

setup(name="tinyd", version="1.0", packages=find_packages(),
      data_files=[("policies", ["policies/news.yaml", "policies/objections.txt"])],
      entry_points={"scrapy": ["settings = tinyd.settings"]})
"""


def test_a_relative_policy_travels_in_the_egg_and_objections_live_on_the_host(tmp_path, mockserver, scrapyd):
    """setup.py lists the policy files (data_files): Scrapyd's job finds a relative
    GDPR_POLICY in the egg. The objection list deployed with it applies, and so does
    the list at the same place under the job's working folder, which gdpr-erase
    writes to on that host; nothing is written into the egg's copy."""
    base, home = scrapyd
    src = tmp_path / "src"
    (src / "tinyd" / "spiders").mkdir(parents=True)
    (src / "policies").mkdir()
    write_policy(src / "policies" / "news.yaml", mockserver, ["127.0.0.1"])
    deployed = mockserver.url("/page.html?who=deployed")
    on_host = mockserver.url("/page.html?who=host")
    kept = mockserver.url("/page.html?who=nobody")
    (src / "policies" / "objections.txt").write_text(f"url {deployed}\n", encoding="utf-8")
    (src / "setup.py").write_text(SETUP_WITH_POLICIES, encoding="utf-8")
    (src / "tinyd" / "__init__.py").write_text("", encoding="utf-8")
    (src / "tinyd" / "spiders" / "__init__.py").write_text("", encoding="utf-8")
    (src / "tinyd" / "spiders" / "news.py").write_text(SPIDER, encoding="utf-8")
    (src / "tinyd" / "settings.py").write_text(RELATIVE_SETTINGS, encoding="utf-8")
    subprocess.run([sys.executable, "setup.py", "-q", "bdist_egg", "-d", str(tmp_path / "dist")], cwd=src,
                   check=True, capture_output=True, timeout=120)
    (egg,) = (tmp_path / "dist").glob("*.egg")
    post(base, "/addversion.json", {"project": "tinyd", "version": "1"}, {"egg": egg.read_bytes()})
    # the objection list on the host, where the working folder stands for the project folder
    (home / "policies").mkdir()
    (home / "policies" / "objections.txt").write_text(f"url {on_host}\n", encoding="utf-8")

    job = post(base, "/schedule.json", {"project": "tinyd", "spider": "news",
                                        "url": f"{deployed} {on_host} {kept}"})["jobid"]
    wait_finished(base, job)
    log = (home / "logs" / "tinyd" / "news" / f"{job}.log").read_text(encoding="utf-8")
    assert "exit status 0 (ok)" in log, log
    assert "copied from the project's egg" in log and str(home / "eggs") in log, log
    assert f"GDPR objection list {home / 'policies' / 'objections.txt'}: 1 entries" in log, log
    assert "GDPR objection list deployed in the project's egg: 1 entries" in log, log
    items = home / "items" / "tinyd" / "news" / f"{job}.jl"
    lines = [json.loads(line) for line in items.read_text(encoding="utf-8").splitlines()]
    assert [line["url"] for line in lines] == [kept]
    assert lines[0]["gdpr"]["policy_fingerprint"]
    audit = [json.loads(line) for line in (home / "data" / "audit" / "news.jsonl").read_text("utf-8").splitlines()]
    objected = sorted(a["url"] for a in audit if a.get("reason") == "objection")
    assert objected == sorted([deployed, on_host])
    with sqlite3.connect(home / "data" / "ledger.sqlite3") as db:
        rows = db.execute("SELECT kind, location FROM ledger_records WHERE kind = 'feed_line'").fetchall()
    assert rows == [("feed_line", str(items.resolve()))]
    # the copy taken out of the egg is gone with the job's process
    assert "scrapy-gdpr-policy-" in log
    copied = Path(log.split("GDPR policy ", 1)[1].split(" (copied from", 1)[0])
    assert not copied.exists()


def test_a_policy_missing_from_the_egg_refuses_the_job(tmp_path, mockserver, scrapyd):
    """Without data_files the egg has no policy: the job is refused at start-up (exit 3),
    saying what to do."""
    base, home = scrapyd
    src = tmp_path / "src"
    (src / "tinyd" / "spiders").mkdir(parents=True)
    (src / "setup.py").write_text(SETUP, encoding="utf-8")
    (src / "tinyd" / "__init__.py").write_text("", encoding="utf-8")
    (src / "tinyd" / "spiders" / "__init__.py").write_text("", encoding="utf-8")
    (src / "tinyd" / "spiders" / "news.py").write_text(SPIDER, encoding="utf-8")
    (src / "tinyd" / "settings.py").write_text(RELATIVE_SETTINGS, encoding="utf-8")
    subprocess.run([sys.executable, "setup.py", "-q", "bdist_egg", "-d", str(tmp_path / "dist")], cwd=src,
                   check=True, capture_output=True, timeout=120)
    (egg,) = (tmp_path / "dist").glob("*.egg")
    post(base, "/addversion.json", {"project": "tinyd", "version": "1"}, {"egg": egg.read_bytes()})
    job = post(base, "/schedule.json", {"project": "tinyd", "spider": "news",
                                        "url": mockserver.url("/page.html")})["jobid"]
    wait_finished(base, job)
    log = (home / "logs" / "tinyd" / "news" / f"{job}.log").read_text(encoding="utf-8")
    assert "the policy file policies/news.yaml is not in the project's egg" in log, log
    assert "data_files" in log
    assert "Spider opened" not in log
    deadline = time.monotonic() + 10
    while "exitstatus=3" not in (home / "scrapyd.out").read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "exitstatus=3" in (home / "scrapyd.out").read_text()


def test_an_items_dir_out_of_the_purges_reach_refuses_the_job(tmp_path, mockserver):
    """Scrapyd's items_dir on a remote store (here ftp://) is a feed gdpr-purge and
    gdpr-erase cannot rewrite: the job is refused at start-up (exit 3), nothing is
    fetched, and its log says why and what to do."""
    port = free_port()  # nothing listens there: the crawl must not even try
    with running_scrapyd(tmp_path / "scrapyd", items_dir=f"ftp://user:pw@127.0.0.1:{port}/items") as (base, home):
        egg, _ = build_egg(tmp_path, mockserver)
        post(base, "/addversion.json", {"project": "tinyd", "version": "1"}, {"egg": egg})
        job = post(base, "/schedule.json", {"project": "tinyd", "spider": "news",
                                            "url": mockserver.url("/page.html")})["jobid"]
        wait_finished(base, job)
        log = (home / "logs" / "tinyd" / "news" / f"{job}.log").read_text(encoding="utf-8")
        assert "scrapy-gdpr refused to start the crawl" in log, log
        assert (f"feed ftp://user:pw@127.0.0.1:{port}/items/tinyd/news/{job}.jl: ftp:// feeds are written where "
                "gdpr-purge and gdpr-erase cannot rewrite them") in log, log
        assert "the feed was set by the Scrapyd job: Scrapyd's items_dir" in log
        assert "Spider opened" not in log
        deadline = time.monotonic() + 10
        while "exitstatus=3" not in (home / "scrapyd.out").read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "exitstatus=3" in (home / "scrapyd.out").read_text()


def test_policy_from_egg_reads_only_what_the_egg_holds(tmp_path, monkeypatch):
    """The egg's top level stands for the project folder: a relative path is read from
    it (copied out read-only); a missing file or a path leaving the egg is refused."""
    import importlib
    import zipfile

    from scrapy_gdpr import egg as eggs
    from scrapy_gdpr.config import project_root

    archive = tmp_path / "zoë_project-1.0.egg"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zoeproj/__init__.py", "")
        z.writestr("zoeproj/settings.py", "BOT_NAME = 'zoeproj'\n")
        z.writestr("policies/news.yaml", "version: 1\n")
        z.writestr("policies/terms/a.txt", "terms\n")
        z.writestr("policies/helper.py", "raise SystemExit\n")
        z.writestr("EGG-INFO/PKG-INFO", "Name: zoeproj\n")
    (tmp_path / "scrapy.cfg").write_text("[settings]\ndefault = other.settings\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(archive))
    monkeypatch.setenv("SCRAPY_SETTINGS_MODULE", "zoeproj.settings")
    importlib.invalidate_caches()
    try:
        assert eggs.settings_archive() == (str(archive), "")
        assert project_root() is None  # the scrapy.cfg beside the egg is not the project's
        policy = eggs.policy_from_egg("policies/news.yaml")
        assert policy is not None and policy.read_text(encoding="utf-8") == "version: 1\n"
        assert (policy.parent / "terms" / "a.txt").is_file()
        assert not (policy.parent / "helper.py").exists()  # code stays in the egg
        assert not os.access(policy, os.W_OK) or os.geteuid() == 0
        assert eggs.egg_of(policy) == str(archive)
        assert eggs.project_folder_of(policy) == "policies"
        assert eggs.policy_from_egg("policies/news.yaml") == policy  # copied once per process
        with pytest.raises(ValueError, match="is not in the project's egg"):
            eggs.policy_from_egg("policies/other.yaml")
        with pytest.raises(ValueError, match="points outside the project's egg"):
            eggs.policy_from_egg("../news.yaml")
    finally:
        for name in [m for m in sys.modules if m == "zoeproj" or m.startswith("zoeproj.")]:
            del sys.modules[name]
    monkeypatch.delenv("SCRAPY_SETTINGS_MODULE")
    assert eggs.settings_archive() is None
    assert eggs.policy_from_egg("policies/news.yaml") is None


def test_a_spider_argument_cannot_choose_another_policy(tmp_path, mockserver, scrapyd):
    """schedule.json's other parameters become spider arguments (``-a NAME=VALUE``),
    which Scrapy sets as spider attributes: a ``gdpr_policy`` argument does not switch
    the job to another policy (the spider class's attribute is read, before the spider
    exists). Scrapyd itself rejects a ``name`` parameter."""
    base, home = scrapyd
    egg, data = build_egg(tmp_path, mockserver, policy_template="%(name)s.yaml")
    # a policy that would let the job fetch a host the project's policy does not list
    permissive = write_policy(tmp_path / "permissive.yaml", mockserver, ["127.0.0.1", "unlisted.test"])
    post(base, "/addversion.json", {"project": "tinyd", "version": "1"}, {"egg": egg})
    url = mockserver.url("/page.html", host="unlisted.test")
    job = post(base, "/schedule.json", {"project": "tinyd", "spider": "news", "url": url,
                                        "gdpr_policy": str(permissive)})["jobid"]
    wait_finished(base, job)
    log = (home / "logs" / "tinyd" / "news" / f"{job}.log").read_text(encoding="utf-8")
    assert f"GDPR policy {data / 'news.yaml'} loaded" in log, log
    assert "exit status 4 (blocked)" in log, log
    assert [p for p in (home / "items" / "tinyd" / "news").glob("*.jl") if p.stat().st_size] == []

"""A project deployed to a real Scrapyd (started on a free local port) as an egg,
scheduled through ``schedule.json``: the job runs under the add-on, its Scrapyd
``items_dir`` export is stamped and recorded in the ledger, and a compliance-blocked
job exits with status 4 (Scrapyd logs it) and says so in its log."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.utils import ROOT, free_port, write_policy

pytest.importorskip("scrapyd")

pytestmark = pytest.mark.slow

SETTINGS = '''
BOT_NAME = "tinyd"
SPIDER_MODULES = ["tinyd.spiders"]
ADDONS = {{"scrapy_gdpr.Addon": 0}}
RETRY_ENABLED = False
# Scrapyd runs jobs in its own folder, outside any project: absolute paths
GDPR_POLICY = {policy!r}
GDPR_AUDIT_LOG = {data!r} + "/audit/%(name)s.jsonl"
GDPR_REPORT_DIR = {data!r} + "/reports"
GDPR_LEDGER = "sqlite:///" + {data!r} + "/ledger.sqlite3"
'''

SPIDER = '''
from scrapy import Request, Spider


class NewsSpider(Spider):
    name = "news"

    def __init__(self, url="", **kw):
        super().__init__(**kw)
        self.url = url

    async def start(self):
        yield Request(self.url)

    def parse(self, response):
        yield {"url": response.url, "title": response.css("title::text").get() or ""}
'''

SETUP = '''
from setuptools import find_packages, setup

setup(name="tinyd", version="1.0", packages=find_packages(),
      entry_points={"scrapy": ["settings = tinyd.settings"]})
'''


def build_egg(tmp_path: Path, mockserver: Any) -> tuple[bytes, Path]:
    data = tmp_path / "data"
    data.mkdir()
    policy = write_policy(data / "news.yaml", mockserver, ["127.0.0.1"])
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
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - local Scrapyd
        answer: dict[str, Any] = json.loads(response.read())
    assert answer["status"] == "ok", answer
    return answer


def get(base: str, path: str, **query: str) -> dict[str, Any]:
    url = f"{base}{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - local Scrapyd
        out: dict[str, Any] = json.loads(response.read())
    return out


@pytest.fixture
def scrapyd(tmp_path):
    """Scrapyd on a free local port, with its own configuration and folders in tmp_path."""
    home = tmp_path / "scrapyd"
    home.mkdir()
    port = free_port()
    (home / "scrapyd.conf").write_text(
        "[scrapyd]\nbind_address = 127.0.0.1\n"
        f"http_port = {port}\neggs_dir = {home}/eggs\nlogs_dir = {home}/logs\nitems_dir = {home}/items\n"
        f"dbs_dir = {home}/dbs\npoll_interval = 0.2\nmax_proc = 2\njobs_to_keep = 50\n",
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

    job = post(base, "/schedule.json", {"project": "tinyd", "spider": "news",
                                        "url": mockserver.url("/page.html")})["jobid"]
    wait_finished(base, job)
    log = (home / "logs" / "tinyd" / "news" / f"{job}.log").read_text(encoding="utf-8")
    assert "exit status 0 (ok)" in log, log
    assert "GDPR purge:" in log  # the purge at spider open runs in a scheduled run too
    # Scrapyd's items_dir export: stamped, and recorded line by line in the ledger
    items = home / "items" / "tinyd" / "news" / f"{job}.jl"
    lines = [json.loads(line) for line in items.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 1
    assert lines[0]["gdpr"]["purpose"] and lines[0]["gdpr"]["expires_at"]
    with sqlite3.connect(data / "ledger.sqlite3") as db:
        rows = db.execute("SELECT kind, location FROM ledger_records WHERE kind IN ('feed_line', 'feed_file')").fetchall()
    assert ("feed_line", str(items.resolve())) in rows
    assert ("feed_file", str(items.resolve())) in rows

    blocked = post(base, "/schedule.json", {"project": "tinyd", "spider": "news",
                                            "url": mockserver.url("/page.html", host="unlisted.test")})["jobid"]
    wait_finished(base, blocked)
    log = (home / "logs" / "tinyd" / "news" / f"{blocked}.log").read_text(encoding="utf-8")
    assert "exit status 4 (blocked)" in log, log
    assert "finish reason gdpr_blocked" in log
    deadline = time.monotonic() + 10
    while "exitstatus=4" not in (home / "scrapyd.out").read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "exitstatus=4" in (home / "scrapyd.out").read_text()


PROTECTED = [
    ("GDPR_ENABLED=False", "GDPR_ENABLED"),
    ("ADDONS={}", "ADDONS"),
    ("GDPR_POLICY=/tmp/another-policy.yaml", "GDPR_POLICY"),
    ("GDPR_OBJECTIONS=/tmp/empty-objections.txt", "GDPR_OBJECTIONS"),
    ("GDPR_PURGE_ON_OPEN=False", "GDPR_PURGE_ON_OPEN"),
    ('FEED_EXPORTERS={"jsonlines": "scrapy.exporters.JsonLinesItemExporter"}', "FEED_EXPORTERS"),
    ('ITEM_PIPELINES={"scrapy_gdpr.retention.RetentionPipeline": null}', "ITEM_PIPELINES"),
]


def test_schedule_json_settings_cannot_change_what_protects_the_crawl(tmp_path, mockserver, scrapyd):
    """A job's setting=... may tune the crawl; a protected setting refuses the job (exit 3),
    whatever else it would have done; nothing is fetched."""
    base, home = scrapyd
    egg, data = build_egg(tmp_path, mockserver)
    post(base, "/addversion.json", {"project": "tinyd", "version": "1"}, {"egg": egg})
    url = mockserver.url("/page.html")
    jobs = {}
    for setting, name in PROTECTED:
        jobs[name] = post(base, "/schedule.json", [("project", "tinyd"), ("spider", "news"), ("url", url),
                                                   ("setting", "LOG_LEVEL=INFO"), ("setting", setting)])["jobid"]
    tuned = post(base, "/schedule.json", [("project", "tinyd"), ("spider", "news"), ("url", url),
                                          ("setting", "CLOSESPIDER_TIMEOUT=120"), ("setting", "LOG_LEVEL=DEBUG"),
                                          ("setting", "GDPR_MONITOR_MIN_ITEMS=1")])["jobid"]
    for job in [*jobs.values(), tuned]:
        wait_finished(base, job)
    for name, job in jobs.items():
        log = (home / "logs" / "tinyd" / "news" / f"{job}.log").read_text(encoding="utf-8")
        assert f"a Scrapyd job may not set {name} (schedule.json setting=...)" in log, log
        assert "Spider opened" not in log
    out = (home / "scrapyd.out").read_text()
    assert out.count("exitstatus=3") == len(PROTECTED), out
    log = (home / "logs" / "tinyd" / "news" / f"{tuned}.log").read_text(encoding="utf-8")
    assert "exit status 0 (ok)" in log, log
    # the refused jobs stored nothing: one feed line, the tuned job's
    items = sorted((home / "items" / "tinyd" / "news").glob("*.jl"))
    stored = [p for p in items if p.stat().st_size]
    assert [p.stem for p in stored] == [tuned]

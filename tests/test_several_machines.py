"""Several ``scrapy crawl`` workers sharing one Redis (scrapy-redis queue + the gate's
shared state) against a local site: politeness across workers from the server's
access log, robots.txt once, Retry-After honoured by all, Redis stopped and
restarted mid-crawl, a worker killed with SIGKILL."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest
import scrapy

from tests.conftest import MockServer
from tests.utils import (
    REDIS_URL,
    ROOT,
    coroutine_test,
    redis_client,
    redis_prefix,  # noqa: F401 - the fixture `prefix` of these tests
    run_scrapy,
    write_policy,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.requires_redis, pytest.mark.slow]

PAGES = 6  # pages on the Crawl-delay host

SETTINGS = """
import os
BOT_NAME = "fleet"
SPIDER_MODULES = ["fleet.spiders"]
ADDONS = {{"scrapy_gdpr.Addon": 0}}
GDPR_POLICY = "policy.yaml"
WORKER = os.environ.get("WORKER", "0")
GDPR_AUDIT_LOG = "out/audit-" + WORKER + ".jsonl"
GDPR_REPORT_DIR = "out/reports-" + WORKER
GDPR_LEDGER = {ledger!r} or "sqlite:///out/ledger-" + WORKER + ".sqlite3"
GDPR_STATE_URL = {state_url!r}
GDPR_STATE_PREFIX = {prefix!r}
GDPR_STATE_REQUEUE_AFTER = 6
SCHEDULER_QUEUE_KEY = {prefix!r} + ":%(spider)s:requests"
SCHEDULER_DUPEFILTER_KEY = {prefix!r} + ":%(spider)s:dupefilter"
TWISTED_DNS_RESOLVER = "tests.utils.LocalResolver"
CONCURRENT_REQUESTS = 8
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
TELNETCONSOLE_ENABLED = False
ITEM_PIPELINES = {{"fleet.hold.Hold": 100}}
"""

#: an item pipeline that, when HOLD_ITEMS is set, holds the items of the odd pages
#: (a slow pipeline: killed while it holds them) and lets the others through at once
HOLD = """
import asyncio
import logging
import os

logger = logging.getLogger("hold")


class Hold:
    async def process_item(self, item):
        url = item.get("url", "")
        if os.environ.get("HOLD_ITEMS") and "/p" in url:
            if int(url.rsplit("/p", 1)[1].split(".")[0]) % 2:
                logger.info("HOLDING %s", url)
                await asyncio.sleep(600)
            else:
                logger.info("PASSING %s", url)
        return item
"""

SPIDER = """
import asyncio
import os
import time

import scrapy
from scrapy.exceptions import IgnoreRequest


class Fleet(scrapy.Spider):
    name = "fleet"

    async def start(self):
        # every worker yields the same seeds: the shared duplicate filter keeps one of each
        for url in {starts!r}:
            yield scrapy.Request(url, callback=self.parse)
        probe = os.environ.get("PROBE")
        if probe:
            # one request of this worker's own, straight to its downloader middlewares
            # (not through the shared queue), when the file PROBE names appears; the
            # spider stays open until then
            for _ in range(1200):
                if os.path.exists(probe):
                    break
                await asyncio.sleep(0.1)
            else:
                self.logger.error("PROBE never asked for")
                return
            with open(probe, encoding="utf-8") as fh:
                url = fh.read().strip()
            try:
                response = await self.crawler.engine.download_async(scrapy.Request(url, dont_filter=True))
            except IgnoreRequest as exc:
                self.logger.info("PROBE refused %s: %s", url, exc)
            else:
                self.logger.info("PROBE fetched %s: %s", url, response.status)

    def parse(self, response):
        if "/p" in response.url and os.environ.get("PARSE_SLEEP"):
            self.logger.info("PARSING %s", response.url)
            time.sleep(float(os.environ["PARSE_SLEEP"]))  # a slow callback: killed in the middle of it
        yield {{"url": response.url}}
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href, callback=self.parse)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_site(root: Path, *, crawl_delay: float = 2, pages: int = PAGES, retry_after: int = 4) -> Path:
    slow = root / "hosts" / "slow"
    slow.mkdir(parents=True)
    (slow / "robots.txt").write_text(f"User-agent: *\nCrawl-delay: {crawl_delay:g}\n", encoding="utf-8")
    links = "".join(f'<a href="/p{i}.html">{i}</a>' for i in range(pages))
    (slow / "index.html").write_text(f"<html><body>{links}</body></html>", encoding="utf-8")
    for i in range(pages):
        (slow / f"p{i}.html").write_text(f"<html><body>page {i}</body></html>", encoding="utf-8")
    ra = root / "hosts" / "ra"
    ra.mkdir(parents=True)
    (ra / "robots.txt").write_text("User-agent: *\nAllow: /\n", encoding="utf-8")
    (ra / "home.html").write_text('<html><body><a href="/a.html">a</a><a href="/b.html">b</a></body></html>',
                                  encoding="utf-8")
    (ra / "a.html").write_text("<html><body>a</body></html>", encoding="utf-8")
    (ra / "b.html").write_text("<html><body>b</body></html>", encoding="utf-8")
    (ra / "_routes.json").write_text(json.dumps({"/index.html": {"sequence": [
        {"status": 503, "headers": {"Retry-After": str(retry_after)}, "body": "busy"},
        {"file": "home.html"},
    ]}}), encoding="utf-8")
    (root / "default").mkdir()
    shutil.copy(ROOT / "tests" / "site" / "default" / "terms.html", root / "default" / "terms.html")
    return root


def make_project(tmp_path: Path, server: MockServer, state_url: str, prefix: str, hosts: list[str],
                 ledger: str = "", name: str = "project") -> Path:
    project = tmp_path / name
    (project / "fleet" / "spiders").mkdir(parents=True)
    (project / "out").mkdir()
    (project / "scrapy.cfg").write_text("[settings]\ndefault = fleet.settings\n", encoding="utf-8")
    (project / "fleet" / "__init__.py").write_text("", encoding="utf-8")
    (project / "fleet" / "spiders" / "__init__.py").write_text("", encoding="utf-8")
    (project / "fleet" / "settings.py").write_text(SETTINGS.format(state_url=state_url, prefix=prefix, ledger=ledger),
                                                   encoding="utf-8")
    starts = [server.url("/index.html", host=f"{h}.test") for h in hosts]
    (project / "fleet" / "spiders" / "fleet.py").write_text(SPIDER.format(starts=starts), encoding="utf-8")
    (project / "fleet" / "hold.py").write_text(HOLD, encoding="utf-8")
    write_policy(project / "policy.yaml", server, [f"{h}.test" for h in hosts])
    return project


def start_worker(project: Path, n: int, *args: str, **extra_env: str) -> subprocess.Popen[str]:
    """Worker ``n``: ``scrapy crawl fleet`` (with ``args``), its stderr in out/log-n.txt."""
    env = {**os.environ, "WORKER": str(n), "PYTHONPATH": str(ROOT), **extra_env}
    with (project / "out" / f"log-{n}.txt").open("w", encoding="utf-8") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "scrapy.cmdline", "crawl", "fleet", "-O", f"out/items-{n}.jsonl", *args],
            cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True,
        )


def wait_all(procs: list[subprocess.Popen[str]], timeout: float = 150) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            codes.append(-9)
    return codes


def items(project: Path) -> list[str]:
    return [json.loads(line)["url"] for f in sorted((project / "out").glob("items-*.jsonl"))
            for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


def logs(project: Path) -> str:
    return "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in sorted((project / "out").glob("log-*.txt")))




def test_three_workers_share_politeness_robots_and_retry_after(tmp_path, prefix):
    site = make_site(tmp_path / "site")
    with MockServer(site=site, log=tmp_path / "access.log") as server:
        project = make_project(tmp_path, server, REDIS_URL, prefix, ["slow", "ra"])
        started = time.time()
        procs = [start_worker(project, n) for n in range(3)]
        codes = wait_all(procs)
        requests = [r for r in server.requests() if r[0] >= started]
    assert codes == [0, 0, 0], logs(project)[-4000:]

    # every page once, across the workers
    got = items(project)
    expected = {server.url(f"/p{i}.html", host="slow.test") for i in range(PAGES)}
    expected |= {server.url(p, host="ra.test") for p in ("/index.html", "/a.html", "/b.html")}
    expected.add(server.url("/index.html", host="slow.test"))
    assert sorted(got) == sorted(expected), got
    workers_with_items = [f for f in (project / "out").glob("items-*.jsonl") if f.read_text().strip()]
    assert len(workers_with_items) >= 2, "the shared queue was not shared"

    # robots.txt once per host across the three workers
    for host in ("slow.test", "ra.test"):
        assert sum(1 for _, h, p in requests if h == host and p == "/robots.txt") == 1, requests

    # Crawl-delay: 2 between any two requests to that host once its robots.txt was read,
    # whichever worker sent them (pages and the tdmrep.json check alike)
    slow = sorted((t, p) for t, h, p in requests if h == "slow.test")
    robots_at = next(t for t, p in slow if p == "/robots.txt")
    slow_times = [t for t, p in slow if t > robots_at]
    assert len([p for t, p in slow if t > robots_at and p.startswith("/p")]) == PAGES
    gaps = [b - a for a, b in itertools.pairwise(slow_times)]
    assert min(gaps) >= 2.0, gaps

    # Retry-After: 4 from ra.test: nothing to that host before its time
    ra = sorted((t, p) for t, h, p in requests if h == "ra.test")
    first_503 = next(t for t, p in ra if p == "/index.html")
    later = [t for t, p in ra if t > first_503]
    assert later and min(later) - first_503 >= 4.0, ra
    assert "shared_booked" in logs(project)


def redis_server(port: int, folder: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server binary not found")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
         "--appendfsync", "always", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("redis-server did not start")


def test_redis_stopped_mid_crawl_stops_fetching_and_resumes(tmp_path, prefix):
    port = free_port()
    folder = tmp_path / "redis"
    folder.mkdir()
    redis_proc = redis_server(port, folder)
    site = make_site(tmp_path / "site", crawl_delay=1, pages=10)
    try:
        with MockServer(site=site, log=tmp_path / "access.log") as server:
            project = make_project(tmp_path, server, f"redis://127.0.0.1:{port}/0", prefix, ["slow"])
            started = time.time()
            procs = [start_worker(project, n) for n in range(2)]
            # wait for the crawl to be under way
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if sum(1 for r in server.requests() if r[2].startswith("/p")) >= 2:
                    break
                time.sleep(0.1)
            redis_proc.send_signal(signal.SIGTERM)
            redis_proc.wait(timeout=10)
            stopped = time.time()
            time.sleep(5)
            restarted = time.time()
            redis_proc = redis_server(port, folder)
            codes = wait_all(procs)
            requests = [r for r in server.requests() if r[0] >= started]
    finally:
        redis_proc.kill()
        redis_proc.wait()
    assert codes == [0, 0], logs(project)[-4000:]
    during = [r for r in requests if stopped + 1.5 < r[0] < restarted]
    assert during == [], during  # nothing fetched while the shared state was away
    after = [r for r in requests if r[0] >= restarted]
    assert after, "the crawl did not resume after Redis came back"
    fetched = {p for _, h, p in requests if h == "slow.test"}
    assert {f"/p{i}.html" for i in range(10)} <= fetched
    text = logs(project)
    assert "Not fetching anything" in text and "Fix: start Redis" in text
    assert "answers again" in text


def test_worker_killed_with_sigkill_loses_no_request(tmp_path, prefix):
    site = make_site(tmp_path / "site", crawl_delay=1, pages=10)
    with MockServer(site=site, log=tmp_path / "access.log") as server:
        project = make_project(tmp_path, server, REDIS_URL, prefix, ["slow"])
        started = time.time()
        # worker 0 is killed in the middle of a callback, so it holds a request that is
        # fetched but not done
        procs = [start_worker(project, 0, PARSE_SLEEP="30")]
        log0 = project / "out" / "log-0.txt"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and "PARSING" not in log0.read_text(errors="replace"):
            time.sleep(0.1)
        held = log0.read_text(errors="replace").split("PARSING ", 1)[1].split()[0]
        procs.append(start_worker(project, 1))
        time.sleep(3)  # both workers crawl; worker 0 is still inside the callback
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        codes = wait_all(procs[1:])
        requests = [r for r in server.requests() if r[0] >= started]
    assert codes == [0], logs(project)[-4000:]
    fetched = {p for _, h, p in requests if h == "slow.test"}
    assert {f"/p{i}.html" for i in range(10)} <= fetched, sorted(fetched)
    survivor = {json.loads(line)["url"] for line in (project / "out" / "items-1.jsonl").read_text().splitlines()}
    # the request the killed worker held was put back, fetched again and its item stored
    assert "back in the shared queue" in (project / "out" / "log-1.txt").read_text()
    assert held in survivor


def feed_lines(path: Path) -> list[dict]:
    """The whole lines of a JSON Lines feed (a torn last line is left out)."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def test_worker_killed_with_items_in_its_pipelines_and_feed_loses_no_item(tmp_path, prefix):
    """SIGKILL while some items of popped requests wait in an item pipeline and others
    sit in the feed exporter's buffer: every page's item ends up, stamped, in a feed
    file the ledger knows (the killed worker's, registered when it was opened, or the
    survivor's, recorded line by line when it closed)."""
    from scrapy_gdpr.retention.ledger import open_ledger

    pages = 10
    site = make_site(tmp_path / "site", crawl_delay=0.5, pages=pages)
    with MockServer(site=site, log=tmp_path / "access.log") as server:
        project = make_project(tmp_path, server, REDIS_URL, prefix, ["slow"])
        procs = [start_worker(project, 0, HOLD_ITEMS="1")]
        log0 = project / "out" / "log-0.txt"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = log0.read_text(errors="replace")
            if text.count("PASSING") >= 2 and text.count("HOLDING") >= 2:
                break
            time.sleep(0.1)
        time.sleep(0.5)  # what passed is exported (and, now, stored and acknowledged)
        text = log0.read_text(errors="replace")
        passed = {line.split("PASSING ", 1)[1].split()[0] for line in text.splitlines() if "PASSING " in line}
        held = {line.split("HOLDING ", 1)[1].split()[0] for line in text.splitlines() if "HOLDING " in line}
        assert passed and held, text[-3000:]
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        # a worker started after the kill finds the killed worker's requests in flight,
        # waits for their deadline (GDPR_STATE_REQUEUE_AFTER) and takes them over
        survivor = start_worker(project, 1)
        codes = wait_all([survivor], timeout=180)
    assert codes == [0], logs(project)[-4000:]
    assert "back in the shared queue" in (project / "out" / "log-1.txt").read_text()

    expected = {server.url(f"/p{i}.html", host="slow.test") for i in range(pages)}
    expected.add(server.url("/index.html", host="slow.test"))
    killed_feed = (project / "out" / "items-0.jsonl").resolve()
    survivor_feed = (project / "out" / "items-1.jsonl").resolve()
    killed = feed_lines(killed_feed)
    survived = feed_lines(survivor_feed)
    # the killed worker's lines: every item that passed its pipelines before the kill
    # (they were acknowledged, so nobody fetches them again), each stamped
    assert passed <= {line["url"] for line in killed}, (passed, killed)
    assert all(line.get("gdpr", {}).get("item_id") for line in killed + survived)
    # every page's item in some feed: none lost with the killed worker
    found = {line["url"] for line in killed + survived}
    assert expected <= found, sorted(expected - found)
    # the items the killed worker held were fetched again by the survivor
    assert held <= {line["url"] for line in survived}
    # in the ledgers as promised: the killed worker's feed registered when it was
    # opened (purge and erasure read it), the survivor's lines recorded when it closed
    killed_ledger = open_ledger(f"sqlite:///{project / 'out' / 'ledger-0.sqlite3'}")
    survivor_ledger = open_ledger(f"sqlite:///{project / 'out' / 'ledger-1.sqlite3'}")
    try:
        assert str(killed_feed) in {rec.location for rec in killed_ledger.feed_files()}
        recorded = {rec.url for rec in survivor_ledger.all(["feed_line"])}
        assert {line["url"] for line in survived} <= recorded
    finally:
        killed_ledger.close()
        survivor_ledger.close()


REDIS_START_SPIDER = """
import scrapy

from scrapy_gdpr.shared.start import RedisStartUrls


class Fleet(RedisStartUrls, scrapy.Spider):
    name = "fleet"
    redis_key = {key!r}
    redis_poll_seconds = 0.2
    redis_idle_close = 4

    def parse(self, response):
        yield {{"url": response.url, "tag": response.meta.get("tag")}}
"""


def test_start_urls_from_a_redis_list_with_async_start(tmp_path, prefix):
    """RedisStartUrls (scrapy-redis's RedisSpider feature under Scrapy's async start()):
    two workers take the URLs pushed to one list; a URL pushed twice is fetched once,
    a JSON entry keeps its meta, an entry that is no URL is skipped with an ERROR."""
    key = f"{prefix}:start_urls"
    site = make_site(tmp_path / "site", crawl_delay=0.2, pages=4)
    client = redis_client()
    with MockServer(site=site, log=tmp_path / "access.log") as server:
        project = make_project(tmp_path, server, REDIS_URL, prefix, ["slow"])
        (project / "fleet" / "spiders" / "fleet.py").write_text(REDIS_START_SPIDER.format(key=key), encoding="utf-8")
        urls = [server.url(f"/p{i}.html", host="slow.test") for i in range(4)]
        client.rpush(key, urls[0], urls[1], urls[0], "not a url",
                     json.dumps({"url": urls[2], "meta": {"tag": "from-json"}}))
        started = time.time()
        procs = [start_worker(project, n) for n in range(2)]
        time.sleep(3)
        client.rpush(key, urls[3])  # pushed while the crawl runs
        codes = wait_all(procs, timeout=120)
        requests = [r for r in server.requests() if r[0] >= started]
    assert codes == [0, 0], logs(project)[-4000:]
    fetched = sorted(p for _, h, p in requests if h == "slow.test" and p.startswith("/p"))
    assert fetched == [f"/p{i}.html" for i in range(4)], fetched
    rows = [json.loads(line) for f in sorted((project / "out").glob("items-*.jsonl"))
            for line in f.read_text().splitlines() if line.strip()]
    assert sorted(r["url"] for r in rows) == sorted(urls)
    assert next(r for r in rows if r["url"] == urls[2])["tag"] == "from-json"
    assert "Skipping the start entry 'not a url'" in logs(project)
    assert client.llen(key) == 0


def test_redis_unreachable_from_the_start_fetches_nothing_and_exits_blocked(tmp_path, prefix):
    port = free_port()  # nothing listens there
    site = make_site(tmp_path / "site")
    with MockServer(site=site, log=tmp_path / "access.log") as server:
        project = make_project(tmp_path, server, f"redis://127.0.0.1:{port}/0", prefix, ["slow"])
        with (project / "fleet" / "settings.py").open("a", encoding="utf-8") as fh:
            fh.write("GDPR_STATE_WAIT = 3\n")
        started = time.time()
        codes = wait_all([start_worker(project, 0)], timeout=90)
        requests = [r for r in server.requests() if r[0] >= started]
    assert codes == [4], logs(project)[-4000:]
    assert requests == []
    text = logs(project)
    assert "INFO: Not fetching anything" in text and "Fix: start Redis or correct GDPR_STATE_URL" in text
    assert "finish reason gdpr_blocked, exit status 4" in text
    # with --nolog the crawl still says why, with its fix, on stderr
    assert wait_all([start_worker(project, 1, "--nolog")], timeout=90) == [4]
    quiet = (project / "out" / "log-1.txt").read_text(encoding="utf-8")
    assert "finish reason gdpr_blocked, exit status 4" in quiet, quiet[-3000:]
    assert "not fetching anything: " in quiet and "Fix: start Redis or correct GDPR_STATE_URL" in quiet


#: what a worker may take beyond BOUND_SECONDS to log that it holds the erasure: the
#: scheduling of three crawls and the test on two loaded cores (the privacy assertion,
#: no request after the bound, has no margin)
SCHEDULING_MARGIN = 1.0

#: log lines with their time (seconds since the epoch), to compare with the erasure's
LOG_FORMAT = 'LOG_FORMAT = "%(created).3f [%(name)s] %(levelname)s: %(message)s"\n'


def shared_objection_added_at(ledger: str) -> float | None:
    """When the (first) shared objection row was written (seconds since the epoch)."""
    import psycopg

    from scrapy_gdpr.gate.shared_objections import TABLE

    with psycopg.connect(ledger, autocommit=True) as conn:
        row = conn.execute(f"SELECT extract(epoch FROM min(added_at)) FROM {TABLE}").fetchone()
    return None if row is None or row[0] is None else float(row[0])


@pytest.mark.requires_postgres
def test_erasure_during_the_crawl_is_refused_by_every_worker_within_the_bound(tmp_path, prefix):
    """Three machines, each with its own project folder (objection list, audit log),
    sharing only Redis and the PostgreSQL ledger; ``gdpr-erase`` runs on a fourth.
    The erasure reaches the workers only through the shared table and its version."""
    from scrapy_gdpr.gate.shared_objections import BOUND_SECONDS
    from tests.retention_support import drop_postgres_schema, postgres_url

    ledger = postgres_url()
    site = make_site(tmp_path / "site", crawl_delay=0.3, pages=60)
    try:
        with MockServer(site=site, log=tmp_path / "access.log") as server:
            machines = [make_project(tmp_path, server, REDIS_URL, prefix, ["slow"], ledger=ledger,
                                     name=f"machine-{n}") for n in range(3)]
            eraser = make_project(tmp_path, server, REDIS_URL, prefix, ["slow"], ledger=ledger, name="eraser")
            for project in machines:
                with (project / "fleet" / "settings.py").open("a", encoding="utf-8") as fh:
                    fh.write(LOG_FORMAT)
            started = time.time()
            procs = [start_worker(machines[n], n, PROBE=str(machines[n] / "out" / "probe")) for n in range(3)]
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                # every worker crawls (its spider is open) and the host has been fetched from
                opened = all("Spider opened" in (machines[n] / "out" / f"log-{n}.txt").read_text(errors="replace")
                             for n in range(3))
                if opened and sum(1 for r in server.requests() if r[2].startswith("/p")) >= 6:
                    break
                time.sleep(0.1)
            # the workers still write their feeds: --wait 1 leaves those lines for a re-run
            erase = run_scrapy("gdpr-erase", "--spider", "fleet", "--domain", "slow.test", "--yes", "--wait", "1",
                               cwd=eraser, timeout=60)
            # the bound runs from the moment the objection reached the shared table (the
            # command goes on rewriting feed files a crawl may hold for --wait seconds)
            erased_at = shared_objection_added_at(ledger)
            assert erased_at is not None, erase.stdout + erase.stderr
            # once the bound has passed and each worker said it holds the erasure, every
            # worker sends a request of its own to the erased host: its gate must refuse it
            time.sleep(max(0.0, erased_at + BOUND_SECONDS - time.time()))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not all(
                    "Shared objection list: 1 new" in (machines[n] / "out" / f"log-{n}.txt").read_text(errors="replace")
                    for n in range(3)):
                time.sleep(0.1)
            probes = [server.url(f"/p{n}.html?probe={n}", host="slow.test") for n in range(3)]
            for n, project in enumerate(machines):
                (project / "out" / "probe.tmp").write_text(probes[n], encoding="utf-8")
                (project / "out" / "probe.tmp").rename(project / "out" / "probe")
            codes = wait_all(procs)
            requests = [r for r in server.requests() if r[0] >= started]
    finally:
        drop_postgres_schema(ledger)
    worker_logs = [(machines[n] / "out" / f"log-{n}.txt").read_text(errors="replace") for n in range(3)]
    assert "shared objections: 1 added" in erase.stdout, erase.stdout + erase.stderr
    assert all(c in (0, 4) for c in codes), "\n".join(text[-3000:] for text in worker_logs)
    # the workers' own lists never heard of it: only the shared table carried it
    for project in machines:
        listed = project / "objections.txt"
        assert not listed.exists() or "slow.test" not in listed.read_text(encoding="utf-8")

    # privacy: nothing reached the erased host after the bound, from any worker
    late = [r for r in requests if r[1] == "slow.test" and r[0] > erased_at + BOUND_SECONDS]
    assert late == [], late
    pages = [r for r in requests if r[2].startswith("/p")]
    assert len(pages) < 60  # the erasure stopped the crawl of that host

    # every worker took the shared objection within the bound (its own log line, timed)
    for n, text in enumerate(worker_logs):
        took = [float(line.split(" ", 1)[0]) for line in text.splitlines()
                if "Shared objection list: 1 new entr(ies)" in line]
        assert took, f"worker {n} never took the shared objection:\n{text[-3000:]}"
        assert took[0] <= erased_at + BOUND_SECONDS + SCHEDULING_MARGIN, (n, took[0] - erased_at)

    # every worker refused the erased host: its own request after the bound, at the
    # request gate (before robots.txt and any contact) as an objection; anything else of
    # that host it refused is an objection too
    for n, project in enumerate(machines):
        assert f"PROBE refused {probes[n]}" in worker_logs[n], worker_logs[n][-3000:]
        records = [json.loads(line) for line in (project / "out" / f"audit-{n}.jsonl").read_text().splitlines()
                   if line.strip()]
        of_host = [r for r in records if r.get("decision") == "refused" and "slow.test" in r.get("url", "")]
        assert all(r["reason"] == "objection" and "slow.test" in r["detail"] for r in of_host), of_host
        probe = [r for r in of_host if r["url"] == probes[n]]
        assert len(probe) == 1, of_host
        assert probe[0]["detail"] == "covered by the objection domain slow.test", probe
    assert not [r for r in requests if "probe=" in r[2]]


def test_purge_clears_the_shared_queue_and_caches(tmp_path, prefix):
    from scrapy import Request, Spider

    from scrapy_gdpr.retention.ledger import open_ledger
    from scrapy_gdpr.shared import queue as redisqueue
    from scrapy_gdpr.shared.state import RedisState

    site = make_site(tmp_path / "site")
    with MockServer(site=site) as server:
        project = make_project(tmp_path, server, REDIS_URL, prefix, ["slow"])
    open_ledger(f"sqlite:///{project / 'out' / 'ledger-0.sqlite3'}").close()
    client = redis_client()
    spider = Spider(name="fleet")
    queue = redisqueue.JsonPriorityQueue(client, spider, prefix + ":%(spider)s:requests", ttl=60)
    queue.push(Request("https://slow.test/a"))
    queue.push(Request("https://slow.test/b"))
    queue.push(Request("https://slow.test/c"))
    set_aside = queue.pop()
    queue.delay(set_aside, 60, done=set_aside.meta[redisqueue.INFLIGHT_META])  # it has a turn: the turn counter
    queue.pop()  # one in flight
    # the live workers expire 6 s after the last pop: not before the purge on a loaded machine
    client.persist(queue.workers_key)
    client.zadd(prefix + ":fleet:dupefilter", {"abc": 1})
    state = RedisState(REDIS_URL, prefix)
    state.put("robots", "https://slow.test/robots.txt", b"{}", 60)
    dry = run_scrapy("gdpr-purge", "--spider", "fleet", "--shared-queue", "--dry-run", cwd=project)
    # the queue, the set-aside requests, the in-flight records and their data, the live workers
    # (the pop's), the turn counter, the fingerprints
    assert "Would delete 7 shared queue key(s) of spider 'fleet' and 1 shared fetch cache" in dry.stdout, dry.stderr
    assert client.exists(prefix + ":fleet:requests")
    done = run_scrapy("gdpr-purge", "--spider", "fleet", "--shared-queue", cwd=project)
    assert "Deleted 7 shared queue key(s)" in done.stdout, done.stderr
    assert list(client.scan_iter(match=f"{prefix}*")) == []
    state.close()
    client.close()


def worker_stats(project: Path, n: int) -> dict[str, int]:
    """The ``gdpr/state/round_trips/...`` stats a worker's log dumped at its close."""
    import re

    log = (project / "out" / f"log-{n}.txt").read_text(encoding="utf-8", errors="replace")
    return {k: int(v) for k, v in re.findall(r"'(gdpr/state/round_trips/[^']+)': (\d+)", log)}


def test_a_later_worker_reads_a_sites_answers_in_one_round_trip(tmp_path, prefix):
    """A worker that finds a site's answers cached by another reads the site's robots.txt and
    TDMRep answers along with the first it asks for (the terms page's, when its check is
    due): one round trip for the three, and nothing fetched again."""
    site = make_site(tmp_path / "site", pages=2)
    with MockServer(site=site, log=tmp_path / "access.log") as server:
        project = make_project(tmp_path, server, REDIS_URL, prefix, ["slow", "ra"])
        first = start_worker(project, 0, "-s", "CONCURRENT_REQUESTS=1")
        assert wait_all([first]) == [0], logs(project)[-4000:]
        # another crawl (its own queue), the same shared caches
        later = start_worker(project, 1, "-s", f"SCHEDULER_QUEUE_KEY={prefix}:later:requests",
                             "-s", f"SCHEDULER_DUPEFILTER_KEY={prefix}:later:dupefilter")
        assert wait_all([later]) == [0], logs(project)[-4000:]
        requests = server.requests()
    for path in ("/robots.txt", "/.well-known/tdmrep.json"):
        for host in ("slow.test", "ra.test"):
            assert sum(1 for _, h, p in requests if h == host and p == path) == 1, (host, path, requests)
    first_trips, later_trips = worker_stats(project, 0), worker_stats(project, 1)
    asked = "gdpr/state/round_trips/get_or_lease/"
    # the first worker asked for each answer of each site, and fetched it
    assert [first_trips.get(asked + k) for k in ("terms", "robots", "tdmrep")] == [2, 2, 2], first_trips
    # the later one: one round trip per site (its terms check), robots.txt and TDMRep read along
    assert later_trips.get(asked + "terms") == 2, later_trips
    assert asked + "robots" not in later_trips and asked + "tdmrep" not in later_trips, later_trips


def test_an_unreadable_shared_answer_is_fetched_again(tmp_path, prefix):
    """A value under a shared answer's key that is not an answer (damaged, or written by
    something else) is not taken for the site's answer, nor for a failed download (which
    refuses the site's terms, or leaves TDMRep unset): the worker fetches the page itself,
    says so, and stores a readable answer over it."""
    from scrapy_gdpr.shared.state import RedisState

    site = make_site(tmp_path / "site", crawl_delay=0.1, pages=1)
    with MockServer(site=site, log=tmp_path / "access.log") as server:
        project = make_project(tmp_path, server, REDIS_URL, prefix, ["slow"])
        answers = {"robots": server.url("/robots.txt", host="slow.test"),
                   "tdmrep": server.url("/.well-known/tdmrep.json", host="slow.test")}
        client = redis_client()
        for ns, url in answers.items():
            client.set(f"{prefix}:cache:{ns}:{url}", b"\xff not an answer", px=60_000)
        worker = start_worker(project, 0)
        assert wait_all([worker]) == [0], logs(project)[-4000:]
        requests = server.requests()
    got = items(project)
    assert server.url("/p0.html", host="slow.test") in got, got
    for path in ("/robots.txt", "/.well-known/tdmrep.json"):
        assert sum(1 for _, h, p in requests if h == "slow.test" and p == path) == 1, requests
    log = logs(project)
    assert "The shared answer for " + answers["robots"] + " cannot be read" in log
    assert "'gdpr/state/tdmrep/unreadable': " in log
    # each found unreadable once, though read along with the terms page's answer first
    assert "'gdpr/state/robots/unreadable': 1," in log and "'gdpr/state/tdmrep/unreadable': 1," in log, log[-3000:]
    state = RedisState(REDIS_URL, prefix)
    for ns, url in answers.items():
        stored = state.get(ns, url)
        assert stored is not None and json.loads(stored)["url"] == url  # a readable answer, stored over it
    state.close()
    client.close()


def make_photo_site(root: Path, pages: int) -> Path:
    """Host ``photos.test``: an index linking ``pages`` pages with one photo each."""
    host = root / "hosts" / "photos"
    host.mkdir(parents=True)
    (host / "robots.txt").write_text("User-agent: *\nAllow: /\n", encoding="utf-8")
    photo = ROOT / "tests" / "data" / "faces" / "skimage_astronaut.png"
    links = "".join(f'<a href="/q{i}.html">{i}</a>' for i in range(pages))
    (host / "index.html").write_text(f"<html><body>{links}</body></html>", encoding="utf-8")
    for i in range(pages):
        shutil.copy(photo, host / f"u{i}.png")
        (host / f"q{i}.html").write_text(f'<html><body><img src="/u{i}.png"></body></html>', encoding="utf-8")
    (root / "default").mkdir()
    shutil.copy(ROOT / "tests" / "site" / "default" / "terms.html", root / "default" / "terms.html")
    return root


class PhotoPages(scrapy.Spider):
    name = "photos"

    def __init__(self, url: str = "", **kw):
        super().__init__(**kw)
        self.url = url

    async def start(self):
        yield scrapy.Request(self.url)

    def parse(self, response):
        yield {"url": response.url, "image_urls": [response.urljoin(s) for s in response.css("img::attr(src)").getall()]}
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href)


@coroutine_test
async def test_a_worker_with_a_busy_face_stage_takes_only_what_it_can_start_on(tmp_path, prefix):
    """While its face stage works on an image, a worker takes a page from the shared queue
    only when its work in hand (items in the media pipelines, downloads) is under what its
    face pool holds plus one per thread: the pages stay in Redis for workers with room,
    instead of being taken ``CONCURRENT_REQUESTS`` at a time each time a face slot frees,
    and waiting here while the others run out of work."""
    from scrapy import signals
    from scrapy.utils.test import get_crawler

    from scrapy_gdpr.faces.detector import build_detector
    from tests.utils import addon_settings, install_face_pool

    def slow_detector(*args, **kwargs):
        inner = build_detector(*args, **kwargs)

        class Slow:
            name, version, runtime = inner.name, inner.version, inner.runtime

            def detect(self, image):
                time.sleep(0.15)
                return inner.detect(image)

        return Slow()

    site = make_photo_site(tmp_path / "site", pages=45)
    with MockServer(site=site) as server:
        policy = write_policy(tmp_path / "policy.yaml", server, ["photos.test"])
        crawler = get_crawler(PhotoPages, addon_settings(
            tmp_path, policy, GDPR_STATE_URL=REDIS_URL, GDPR_STATE_PREFIX=prefix,
            SCHEDULER_QUEUE_KEY=prefix + ":%(spider)s:requests", SCHEDULER_DUPEFILTER_KEY=prefix + ":%(spider)s:dupefilter",
            GDPR_FACE_WORKERS=1, GDPR_FACE_QUEUE=2, CONCURRENT_REQUESTS=8, IMAGES_STORE=str(tmp_path / "images"),
            ITEM_PIPELINES={"scrapy_gdpr.images.GdprImagesPipeline": 20}))
        pool = install_face_pool(crawler, detector_factory=slow_detector)
        taken_while_busy: list[int] = []  # work in hand when a page left while an image was worked on

        def reached(request, spider=None):
            if "/q" in request.url and pool.in_flight:
                taken_while_busy.append(pool.items + len(crawler.engine.downloader.active))

        crawler.signals.connect(reached, signal=signals.request_reached_downloader)
        await crawler.crawl_async(url=server.url("/index.html", host="photos.test"))
    stats = crawler.stats.get_stats()
    assert stats.get("item_scraped_count") == 46, stats
    assert stats.get("gdpr/faces/busy_seconds", 0) >= 45 * 0.15
    # pages were taken while the face stage worked, never more than the pool holds + its
    # thread in hand (this page itself included, and its photo's download once it starts)
    assert len(taken_while_busy) >= 5, taken_while_busy
    assert max(taken_while_busy) <= pool.queue + pool.workers + 1, taken_while_busy
    assert stats.get("gdpr/queue/backlogged", 0) > 0


class WaitsForTheQueue(scrapy.Spider):
    """A worker started with nothing of its own: it takes what other workers queue, and
    stays open (as scrapy-redis's spiders do) until it has fetched ``wanted`` pages."""

    name = "waits"
    wanted = 1

    async def start(self):
        return
        yield

    @classmethod
    def from_crawler(cls, crawler, *args, **kwargs):
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.fetched = []
        crawler.signals.connect(spider.idle, signal=scrapy.signals.spider_idle)
        return spider

    def idle(self):
        if len(self.fetched) < self.wanted:
            raise scrapy.exceptions.DontCloseSpider

    def parse(self, response):
        self.fetched.append(response.url)
        yield {"url": response.url}
        if len(self.fetched) >= self.wanted:
            raise scrapy.exceptions.CloseSpider("finished")


@coroutine_test
async def test_an_idle_worker_takes_what_another_queues_at_once(tmp_path, prefix):
    """A worker whose pop found the shared queue empty would look again only a second
    later (QUIET_SECONDS): at the start of a crawl, the workers that did not get a start
    URL sat out that second while the first pages' links were queued. The push into the
    empty queue wakes it: it takes the request before its quiet second is over."""
    import asyncio

    from scrapy import signals
    from scrapy.utils.test import get_crawler

    from scrapy_gdpr._component import component_runtime
    from scrapy_gdpr.shared import queue as redisqueue
    from tests.utils import addon_settings

    site = make_photo_site(tmp_path / "site", pages=1)
    with MockServer(site=site) as server:
        policy = write_policy(tmp_path / "policy.yaml", server, ["photos.test"])
        queue_key = prefix + ":%(spider)s:requests"
        crawler = get_crawler(WaitsForTheQueue, addon_settings(
            tmp_path, policy, GDPR_STATE_URL=REDIS_URL, GDPR_STATE_PREFIX=prefix,
            SCHEDULER_QUEUE_KEY=queue_key, SCHEDULER_DUPEFILTER_KEY=prefix + ":%(spider)s:dupefilter",
            TWISTED_DNS_RESOLVER="tests.utils.LocalResolver"))
        reached: list[float] = []
        crawler.signals.connect(lambda request, spider=None: reached.append(time.monotonic()),
                                signal=signals.request_reached_downloader, weak=False)
        crawl = asyncio.ensure_future(crawler.crawl_async())
        # the worker opens, pops the empty queue and goes quiet
        deadline = time.monotonic() + 30
        scheduler = None
        while time.monotonic() < deadline:
            scheduler = component_runtime(crawler).shared_queue if crawler.spider is not None else None
            if scheduler is not None and scheduler._quiet_until > time.monotonic() + 0.8:
                break
            await asyncio.sleep(0.02)
        assert scheduler is not None and isinstance(scheduler, redisqueue.Scheduler)
        quiet_until = scheduler._quiet_until
        assert quiet_until - time.monotonic() > 0.7  # without a wake-up it would look again only then
        # another worker queues a page (the queue's own push, as that worker's scheduler does)
        other = redisqueue.JsonPriorityQueue(redis_client(), crawler.spider, queue_key, ttl=60.0)
        other.push(scrapy.Request(server.url("/q0.html", host="photos.test"), callback=crawler.spider.parse))
        await crawl
    assert crawler.spider.fetched == [server.url("/q0.html", host="photos.test")]
    # its first request after the pop (the site's terms page or robots.txt, before the page
    # itself) left before the quiet second was over
    assert reached and reached[0] < quiet_until, (reached, quiet_until)
    stats = crawler.stats.get_stats()
    assert stats.get("gdpr/queue/woken", 0) >= 1, stats

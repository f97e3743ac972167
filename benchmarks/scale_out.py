"""Several workers, one crawl: throughput, politeness and Redis cost with 1, 2 and 4 workers.

    python benchmarks/scale_out.py [--workers 1,2,4] [--hosts 8] [--pages 8] [--delay 2]
                                   [--photo-pages 24] [--only politeness|cpu]

Each run starts ``scrapy crawl`` worker subprocesses of one project with
``GDPR_STATE_URL`` pointing at a private ``redis-server`` (started here on a free
port, flushed between runs), against the repository's local test server
(``tests/mockserver.py``, virtual hosts ``*.test``, every request logged with its
time).

* **politeness-bound**: ``--hosts`` hosts, each with ``Crawl-delay: --delay`` in its
  robots.txt and ``--pages`` pages. The bound is the sum of the hosts' rates
  (hosts / delay pages per second). pages/s is measured from the server's access log
  (pages after each host's first / time from the first to the last page request) and
  printed beside the bound.
* **CPU-bound**: ``--photo-pages`` pages on one host, each with one photo of
  ``tests/data/faces`` that goes through the face stage (``GDPR_FACE_WORKERS = 1``
  per worker). pages/s from the first page request to the last photo request.

For every run: politeness violations (two requests to one host less than its delay
apart, after its robots.txt was read), counted from the access log, and Redis round
trips per page (the workers' own count, stat ``gdpr/state/round_trips``: one per
command or pipeline or script sent; the commands Redis ran, scripts' included, are
printed beside it; ``by_kind`` splits the round trips per page by what they were for,
from the stats ``gdpr/state/round_trips/<kind>``), with their cost per page: round
trips x the median round trip of this machine's Redis client, measured here.

The figures are printed as measured; nothing here asserts a target.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETTINGS = """
import os
BOT_NAME = "bench"
SPIDER_MODULES = ["bench.spiders"]
ADDONS = {{"scrapy_gdpr.Addon": 0}}
GDPR_POLICY = "policy.yaml"
WORKER = os.environ.get("WORKER", "0")
GDPR_AUDIT_LOG = "out/audit-" + WORKER + ".jsonl"
GDPR_REPORT_DIR = None
GDPR_LEDGER = "sqlite:///out/ledger-" + WORKER + ".sqlite3"
GDPR_STATE_URL = {state_url!r}
GDPR_FACE_WORKERS = 1
TWISTED_DNS_RESOLVER = "tests.utils.LocalResolver"
CONCURRENT_REQUESTS = 16
LOG_LEVEL = "INFO"
TELNETCONSOLE_ENABLED = False
IMAGES_STORE = "out/images-" + WORKER
"""

SPIDER = """
import scrapy


class Bench(scrapy.Spider):
    name = "bench"

    async def start(self):
        for url in {starts!r}:
            yield scrapy.Request(url, callback=self.parse)

    def parse(self, response):
        images = [response.urljoin(src) for src in response.css("img::attr(src)").getall()]
        yield {{"url": response.url, "image_urls": images, "images": []}}
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href, callback=self.parse)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


def make_site(root: Path, hosts: int, pages: int, delay: float, photo_pages: int) -> None:
    for h in range(hosts):
        d = root / "hosts" / f"h{h}"
        d.mkdir(parents=True)
        (d / "robots.txt").write_text(f"User-agent: *\nCrawl-delay: {delay:g}\n", encoding="utf-8")
        links = "".join(f'<a href="/p{i}.html">{i}</a>' for i in range(pages))
        (d / "index.html").write_text(f"<html><body>{links}</body></html>", encoding="utf-8")
        for i in range(pages):
            (d / f"p{i}.html").write_text(f"<html><body>page {i}</body></html>", encoding="utf-8")
    img = root / "hosts" / "img"
    img.mkdir(parents=True)
    (img / "robots.txt").write_text("User-agent: *\nAllow: /\n", encoding="utf-8")
    photos = sorted((ROOT / "tests" / "data" / "faces").glob("*.jpg")) + sorted(
        (ROOT / "tests" / "data" / "faces").glob("*.png"))
    for n, photo in enumerate(photos):
        shutil.copy(photo, img / f"photo{n}{photo.suffix}")
    links = "".join(f'<a href="/q{i}.html">{i}</a>' for i in range(photo_pages))
    (img / "index.html").write_text(f"<html><body>{links}</body></html>", encoding="utf-8")
    for i in range(photo_pages):
        photo = photos[i % len(photos)]
        # one distinct image URL per page, so that every page is a face-stage job
        name = f"photo{i % len(photos)}{photo.suffix}"
        shutil.copy(photo, img / f"u{i}-{name}")
        (img / f"q{i}.html").write_text(f'<html><body><img src="/u{i}-{name}"></body></html>', encoding="utf-8")
    (root / "default").mkdir()
    shutil.copy(ROOT / "tests" / "site" / "default" / "terms.html", root / "default" / "terms.html")


def make_project(folder: Path, server: object, state_url: str, starts: list[str], hosts: list[str]) -> Path:
    from tests.utils import write_policy

    project = folder / "project"
    (project / "bench" / "spiders").mkdir(parents=True)
    (project / "out").mkdir()
    (project / "scrapy.cfg").write_text("[settings]\ndefault = bench.settings\n", encoding="utf-8")
    (project / "bench" / "__init__.py").write_text("", encoding="utf-8")
    (project / "bench" / "spiders" / "__init__.py").write_text("", encoding="utf-8")
    (project / "bench" / "settings.py").write_text(SETTINGS.format(state_url=state_url), encoding="utf-8")
    (project / "bench" / "spiders" / "bench.py").write_text(SPIDER.format(starts=starts), encoding="utf-8")
    write_policy(project / "policy.yaml", server, hosts)
    return project


def redis_commands(port: int) -> int:
    import redis

    client = redis.Redis(port=port)
    try:
        if os.environ.get("SCALE_OUT_COMMANDSTATS"):
            stats = client.info("commandstats")
            print({k: v["calls"] for k, v in stats.items()}, file=sys.stderr)
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


def round_trip_ms(port: int) -> float:
    """The median time of one reservation round trip (the script the workers run most)."""
    from scrapy_gdpr.shared.state import RedisState

    state = RedisState(f"redis://127.0.0.1:{port}/1", "rtt")
    times = []
    for i in range(2000):
        t = time.perf_counter()
        state.reserve(f"h{i % 50}", 0.0)
        times.append(time.perf_counter() - t)
    state.client.flushdb()
    state.close()
    return statistics.median(times) * 1000


def run(mode: str, workers: int, args: argparse.Namespace, redis_port: int) -> dict[str, Any]:
    import redis

    from tests.conftest import MockServer

    redis.Redis(port=redis_port).flushall()
    with tempfile.TemporaryDirectory(prefix="gdpr-scale-") as tmp:
        folder = Path(tmp)
        make_site(folder / "site", args.hosts, args.pages, args.delay, args.photo_pages)
        log = folder / "access.log"
        with MockServer(site=folder / "site", log=log) as server:
            hosts = [f"h{h}.test" for h in range(args.hosts)] if mode == "politeness" else ["img.test"]
            starts = [server.url("/index.html", host=h) for h in hosts]
            project = make_project(folder, server, f"redis://127.0.0.1:{redis_port}/0", starts, hosts)
            before = redis_commands(redis_port)
            started = time.time()
            procs = []
            for n in range(workers):
                env = {**os.environ, "WORKER": str(n), "PYTHONPATH": str(ROOT)}
                with open(project / "out" / f"log-{n}.txt", "w", encoding="utf-8") as fh:
                    procs.append(subprocess.Popen(
                        [sys.executable, "-m", "scrapy.cmdline", "crawl", "bench", "-O", f"out/items-{n}.jsonl"],
                        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=fh))
            codes = [p.wait(timeout=900) for p in procs]
            commands = redis_commands(redis_port) - before
            requests = []
            for line in log.read_text(encoding="utf-8").splitlines():
                t, host, path = line.split(" ", 2)
                if float(t) >= started:
                    requests.append((float(t), host, path))
        items = 0
        trips = 0
        kinds: dict[str, int] = {}
        for n in range(workers):
            text = (project / "out" / f"log-{n}.txt").read_text(encoding="utf-8", errors="replace")
            for line in text.splitlines():
                if "'gdpr/state/round_trips'" in line:
                    trips += int(line.split(":")[-1].strip().rstrip(",}"))
                elif "'gdpr/state/round_trips/" in line:
                    kind = line.split("'gdpr/state/round_trips/", 1)[1].split("'", 1)[0]
                    kinds[kind] = kinds.get(kind, 0) + int(line.split(":")[-1].strip().rstrip(",}"))
            items += sum(1 for line in (project / "out" / f"items-{n}.jsonl").read_text().splitlines() if line)
    page_prefix = "/p" if mode == "politeness" else "/q"
    pages = sorted(t for t, h, p in requests if p.startswith(page_prefix))
    violations = 0
    smallest = float("inf")
    by_host: dict[str, list[tuple[float, str]]] = {}
    for t, h, p in sorted(requests):
        by_host.setdefault(h, []).append((t, p))
    if mode == "politeness":
        for seq in by_host.values():
            robots = [t for t, p in seq if p == "/robots.txt"]
            times = [t for t, p in seq if robots and t > robots[0]]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            violations += sum(1 for g in gaps if g < args.delay)
            smallest = min([smallest, *gaps])
    if mode == "politeness":
        # each host's first page starts the clock: the pages after it are what the delays allow
        span = pages[-1] - pages[0] if len(pages) > 1 else 0.0
        counted = len(pages) - min(args.hosts, len(pages))
    else:
        # to the last photo fetched (its face-stage time, a fraction of a second, is left
        # out for any number of workers alike): not the workers' shutdown
        photos = [t for t, h, p in requests if p.startswith("/u")]
        span = max(photos) - pages[0] if pages and photos else 0.0
        counted = len(pages)
    rate = counted / span if span > 0 else 0.0
    return {"workers": workers, "exit": max(codes), "pages": len(pages), "items": items, "seconds": span,
            "pages_per_s": rate, "violations": violations,
            "smallest_gap_s": smallest if smallest != float("inf") else 0.0,
            "round_trips_per_page": trips / max(1, len(pages)),
            "redis_commands_per_page": commands / max(1, len(pages)),
            "by_kind": {k: round(v / max(1, len(pages)), 2) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--delay", type=float, default=2.0)
    parser.add_argument("--photo-pages", type=int, default=24)
    parser.add_argument("--only", choices=("politeness", "cpu"))
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="gdpr-scale-redis-") as rdir:
        proc, port = start_redis(Path(rdir))
        try:
            rtt = round_trip_ms(port)
            print(f"Redis round trip (reservation script, median of 2000): {rtt:.3f} ms")
            for mode in ("politeness", "cpu"):
                if args.only and mode != args.only:
                    continue
                if mode == "politeness":
                    bound = args.hosts / args.delay
                    print(f"\npoliteness-bound: {args.hosts} hosts x {args.pages} pages, Crawl-delay {args.delay:g} s; "
                          f"bound {bound:.2f} pages/s")
                else:
                    bound = 0.0
                    print(f"\nCPU-bound: {args.photo_pages} pages with one photo each through the face stage, "
                          "GDPR_FACE_WORKERS=1 per worker")
                base = None
                for n in counts:
                    r = run(mode, n, args, port)
                    base = base or r["pages_per_s"]
                    share = f", {100 * r['pages_per_s'] / bound:.0f} % of the bound" if bound else ""
                    print(json.dumps({"mode": mode, **{k: v if isinstance(v, dict) else round(v, 3)
                                                       for k, v in r.items()}}))
                    print(f"  {n} worker(s): {r['pages_per_s']:.2f} pages/s{share}, "
                          f"{r['pages_per_s'] / base:.2f}x one worker, violations {r['violations']}, "
                          f"exit {r['exit']}, {r['round_trips_per_page']:.1f} Redis round trips per page "
                          f"(~{r['round_trips_per_page'] * rtt:.2f} ms per page)", flush=True)
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()

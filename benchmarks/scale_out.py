"""Several workers, one crawl: throughput, politeness and Redis cost with 1, 2 and 4 workers.

    python benchmarks/scale_out.py [--workers 1,2,4] [--hosts 8] [--pages 8] [--delay 2]
                                   [--photo-pages 96] [--photo-hosts 8] [--no-pin | --one-core]
                                   [--only politeness|cpu] [--keep DIR]

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
* **CPU-bound**: ``--photo-pages`` pages spread over ``--photo-hosts`` hosts, each
  page with one photo of ``tests/data/faces`` (on the page's host) that goes through
  the face stage (``GDPR_FACE_WORKERS = 1``: a one-thread face pool per worker). The
  hosts ask for no delay, so politeness is not what bounds this crawl (the
  politeness-bound crawl measures that); a real CPU-bound crawl meets its photos on
  many hosts, and all of them on one host would be bound by that host's politeness.
  pages/s is from the first page request (access log) to the last item written by any
  worker (each worker logs when each item reached its feed): fetching runs ahead of
  the face stage by as many responses as Scrapy keeps in memory, so the last photo
  *request* is not the end of the work.

  Each worker is pinned to one core (``os.sched_setaffinity``; worker n to core
  n mod cores), as if it were a machine of its own: a 2-core box cannot hold two
  2-core machines, and an unpinned worker's detector (ONNX Runtime, as many threads
  as the cores it may use) already spreads one face-pool thread over both cores, so
  a second worker on the same box would have no core to scale onto. ``--no-pin``
  runs them unpinned (the workers then share this box's cores); ``--one-core`` pins
  every worker to the first core (with ``--workers 1,2``: what two processes sharing
  one core cost in CPU seconds, against two on two cores).

  Two more figures, less at the mercy of start-up and of a busy machine: the
  *steady state* (photo pages written per second from when every worker had put its
  first photo page through the face stage, its detector built, to the last item), and
  *pages per CPU second of the busiest core* (the pages over the CPU seconds of the
  workers pinned to the busiest core: what the span would be if each core ran
  nothing else), over the whole crawl (start-up included) and over the steady state
  (each worker's CPU time read from ``/proc`` when every worker had written its first
  photo page). On a shared machine whose other load takes most of the cores the
  wall-clock figures say more about that load than about the crawl; the CPU-second
  figures do not depend on it.

  Printed per worker: items written, CPU seconds (the process's user + system
  time), face-pool busy seconds (stat ``gdpr/faces/busy_seconds``), the time of its
  first response (any: robots.txt, a terms page, a page; a worker that found the
  shared queue empty at the start gets its first later) and the times of its first
  and last item, so that one can see the workers' face stages at work side by side
  (their busy seconds add up to more than the span only if they overlapped). Times
  are from the first photo page request (negative: before it).

For every run: politeness violations (two requests to one host less than its delay
apart, after its robots.txt was read), counted from the access log, and Redis round
trips per page (the workers' own count, stat ``gdpr/state/round_trips``: one per
command or pipeline or script sent; the commands Redis ran, scripts' included, are
printed beside it; ``by_kind`` splits the round trips per page by what they were for,
from the stats ``gdpr/state/round_trips/<kind>``), with their cost per page: round
trips x the median round trip of this machine's Redis client, measured here.

The figures are printed as measured; nothing here asserts a target. ``--keep DIR``
keeps each run's folder (site, access log, worker logs, feeds) under ``DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
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
EXTENSIONS = {{"bench.done.Done": 1000}}
"""

DONE = """
import time


class Done:
    \"\"\"Logs when each item was written (after the feed exporter): ``time url`` per line;
    and, in ``first-N.log``, when the worker's first response arrived.\"\"\"

    def __init__(self, crawler):
        import os

        from scrapy import signals

        self.worker = os.environ.get("WORKER", "0")
        self.fh = open("out/done-" + self.worker + ".log", "a", encoding="utf-8")
        self.first = None
        crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)
        crawler.signals.connect(self.response_received, signal=signals.response_received)
        crawler.signals.connect(self.closed, signal=signals.spider_closed)

    def response_received(self):
        if self.first is None:
            self.first = time.time()
            with open("out/first-" + self.worker + ".log", "w", encoding="utf-8") as fh:
                fh.write(f"{self.first:.3f}\\n")

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler)

    def item_scraped(self, item):
        self.fh.write(f"{time.time():.3f} {item.get('url')}\\n")
        self.fh.flush()

    def closed(self):
        self.fh.close()
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


def make_site(root: Path, hosts: int, pages: int, delay: float, photo_pages: int, photo_hosts: int) -> None:
    for h in range(hosts):
        d = root / "hosts" / f"h{h}"
        d.mkdir(parents=True)
        (d / "robots.txt").write_text(f"User-agent: *\nCrawl-delay: {delay:g}\n", encoding="utf-8")
        links = "".join(f'<a href="/p{i}.html">{i}</a>' for i in range(pages))
        (d / "index.html").write_text(f"<html><body>{links}</body></html>", encoding="utf-8")
        for i in range(pages):
            (d / f"p{i}.html").write_text(f"<html><body>page {i}</body></html>", encoding="utf-8")
    photos = sorted((ROOT / "tests" / "data" / "faces").glob("*.jpg")) + sorted(
        (ROOT / "tests" / "data" / "faces").glob("*.png"))
    for k in range(photo_hosts):
        img = root / "hosts" / f"img{k}"
        img.mkdir(parents=True)
        (img / "robots.txt").write_text("User-agent: *\nAllow: /\n", encoding="utf-8")
        # page i is on host i mod photo_hosts: the hosts' pages interleave
        mine = range(k, photo_pages, photo_hosts)
        links = "".join(f'<a href="/q{i}.html">{i}</a>' for i in mine)
        (img / "index.html").write_text(f"<html><body>{links}</body></html>", encoding="utf-8")
        for i in mine:
            photo = photos[i % len(photos)]
            # one distinct image URL per page, so that every page is a face-stage job
            name = f"u{i}-photo{i % len(photos)}{photo.suffix}"
            shutil.copy(photo, img / name)
            (img / f"q{i}.html").write_text(f'<html><body><img src="/{name}"></body></html>', encoding="utf-8")
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
    (project / "bench" / "done.py").write_text(DONE, encoding="utf-8")
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


def _stat(text: str, name: str) -> float:
    """A stat from a worker's closing stats dump (0 when absent)."""
    for line in text.splitlines():
        if f"'{name}'" in line:
            return float(line.split(":")[-1].strip().rstrip(",}"))
    return 0.0


def _has_photo_item(done_log: Path) -> bool:
    try:
        return "/q" in done_log.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False


def _proc_cpu(pid: int) -> float:
    """A running process's user + system CPU seconds (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pin(core: int | None) -> Any:
    if core is None:
        return None
    return lambda: os.sched_setaffinity(0, {core})


def run(mode: str, workers: int, args: argparse.Namespace, redis_port: int) -> dict[str, Any]:
    import redis

    from tests.conftest import MockServer

    redis.Redis(port=redis_port).flushall()
    keep = Path(args.keep) if args.keep else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    prefix = f"gdpr-scale-{mode}-{workers}-"
    place = (contextlib.nullcontext(tempfile.mkdtemp(prefix=prefix, dir=keep)) if keep is not None
             else tempfile.TemporaryDirectory(prefix=prefix))
    with place as tmp:
        folder = Path(tmp)
        make_site(folder / "site", args.hosts, args.pages, args.delay, args.photo_pages, args.photo_hosts)
        log = folder / "access.log"
        cores = sorted(os.sched_getaffinity(0))
        pin = mode == "cpu" and args.pin

        def core_of(n: int) -> int:
            return cores[0] if args.one_core else cores[n % len(cores)]

        with MockServer(site=folder / "site", log=log) as server:
            if mode == "politeness":
                hosts = [f"h{h}.test" for h in range(args.hosts)]
            else:
                hosts = [f"img{k}.test" for k in range(args.photo_hosts)]
            starts = [server.url("/index.html", host=h) for h in hosts]
            project = make_project(folder, server, f"redis://127.0.0.1:{redis_port}/0", starts, hosts)
            before = redis_commands(redis_port)
            started = time.time()
            procs = []
            for n in range(workers):
                env = {**os.environ, "WORKER": str(n), "PYTHONPATH": str(ROOT)}
                with (project / "out" / f"log-{n}.txt").open("w", encoding="utf-8") as fh:
                    procs.append(subprocess.Popen(
                        [sys.executable, "-m", "scrapy.cmdline", "crawl", "bench", "-O", f"out/items-{n}.jsonl"],
                        cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=fh,
                        preexec_fn=_pin(core_of(n) if pin else None)))  # noqa: PLW1509
            codes: dict[int, int] = {}
            cpu: dict[int, float] = {}
            # each worker's CPU seconds when every worker had written its first photo page
            # (start-up and detector built): the steady state is what comes after
            cpu_at_steady: dict[int, float] = {}
            deadline = time.monotonic() + 900
            while len(codes) < len(procs):
                for n, p in enumerate(procs):
                    if n in codes:
                        continue
                    pid, status, usage = os.wait4(p.pid, os.WNOHANG)
                    if pid:
                        p.returncode = codes[n] = os.waitstatus_to_exitcode(status)
                        cpu[n] = usage.ru_utime + usage.ru_stime
                    elif time.monotonic() > deadline:
                        p.kill()
                if mode == "cpu" and not cpu_at_steady and not codes and all(
                        _has_photo_item(project / "out" / f"done-{n}.log") for n in range(workers)):
                    cpu_at_steady = {n: _proc_cpu(p.pid) for n, p in enumerate(procs)}
                time.sleep(0.05)
            commands = redis_commands(redis_port) - before
            requests = []
            for line in log.read_text(encoding="utf-8").splitlines():
                t, host, path = line.split(" ", 2)
                if float(t) >= started:
                    requests.append((float(t), host, path))
        items = 0
        trips = 0.0
        kinds: dict[str, float] = {}
        per_worker = []
        for n in range(workers):
            text = (project / "out" / f"log-{n}.txt").read_text(encoding="utf-8", errors="replace")
            trips += _stat(text, "gdpr/state/round_trips")
            for line in text.splitlines():
                if "'gdpr/state/round_trips/" in line:
                    kind = line.split("'gdpr/state/round_trips/", 1)[1].split("'", 1)[0]
                    kinds[kind] = kinds.get(kind, 0) + int(line.split(":")[-1].strip().rstrip(",}"))
            mine = sum(1 for line in (project / "out" / f"items-{n}.jsonl").read_text().splitlines() if line)
            items += mine
            done_file = project / "out" / f"done-{n}.log"
            lines = [line.split(" ", 1) for line in
                     (done_file.read_text().splitlines() if done_file.exists() else []) if line]
            done = sorted(float(t) for t, _ in lines)
            photo_done = sorted(float(t) for t, url in lines if "/q" in url)
            first_file = project / "out" / f"first-{n}.log"
            first_response = float(first_file.read_text().split()[0]) if first_file.exists() else 0.0
            per_worker.append({"worker": n, "items": mine, "cpu_s": cpu[n], "first_response": first_response,
                               "steady_cpu_s": cpu[n] - cpu_at_steady[n] if cpu_at_steady else 0.0,
                               "face_busy_s": _stat(text, "gdpr/faces/busy_seconds"),
                               "first_item": done[0] if done else 0.0, "last_item": done[-1] if done else 0.0,
                               "photo_done": photo_done, "core": core_of(n) if pin else None})
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
        # to the last item written (its photo through the face stage), by whichever worker
        ends = [w["last_item"] for w in per_worker if w["last_item"]]
        span = max(ends) - pages[0] if pages and ends else 0.0
        counted = len(pages)
        # steady state: from when every worker had put its first photo page through the
        # face stage (its detector built) to the last item, the photo pages written then
        firsts = [w["photo_done"][0] for w in per_worker if w["photo_done"]]
        if len(firsts) == workers and ends:
            since = max(firsts)  # (the CPU sample above was taken just after this)
            steady_pages = sum(1 for w in per_worker for t in w["photo_done"] if t > since)
            steady_span = max(ends) - since
        else:
            steady_pages, steady_span = 0, 0.0
        # what the work would take with a core to itself per worker: the busiest core's CPU seconds
        by_core: dict[Any, float] = {}
        steady_by_core: dict[Any, float] = {}
        for w in per_worker:
            where = w["core"] if pin else w["worker"]
            by_core[where] = by_core.get(where, 0.0) + w["cpu_s"]
            steady_by_core[where] = steady_by_core.get(where, 0.0) + w["steady_cpu_s"]
        for w in per_worker:
            w.pop("photo_done")
            w["first_item"] = round(w["first_item"] - pages[0], 2) if w["first_item"] else None
            w["first_response"] = round(w["first_response"] - pages[0], 2) if w["first_response"] else None
            w["last_item"] = round(w["last_item"] - pages[0], 2) if w["last_item"] else None
    rate = counted / span if span > 0 else 0.0
    extra: dict[str, Any] = {}
    if mode == "cpu":
        extra = {"steady_pages_per_s": steady_pages / steady_span if steady_span > 0 else 0.0,
                 "busiest_core_cpu_s": max(by_core.values()) if by_core else 0.0,
                 "pages_per_busiest_core_cpu_s": counted / max(by_core.values()) if by_core else 0.0,
                 "steady_pages_per_busiest_core_cpu_s":
                     steady_pages / max(steady_by_core.values()) if steady_by_core and max(steady_by_core.values())
                     else 0.0}
    return {"workers": workers, "exit": max(codes.values()), "pages": len(pages), "items": items, "seconds": span,
            "pages_per_s": rate, **extra, "violations": violations,
            "smallest_gap_s": smallest if smallest != float("inf") else 0.0,
            "round_trips_per_page": trips / max(1, len(pages)),
            "redis_commands_per_page": commands / max(1, len(pages)),
            "by_kind": {k: round(v / max(1, len(pages)), 2) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "per_worker": per_worker}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--hosts", type=int, default=8)
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--delay", type=float, default=2.0)
    parser.add_argument("--photo-pages", type=int, default=96)
    parser.add_argument("--photo-hosts", type=int, default=8)
    pinning = parser.add_mutually_exclusive_group()
    pinning.add_argument("--no-pin", dest="pin", action="store_false",
                         help="CPU-bound crawl: do not pin each worker to a core of its own")
    pinning.add_argument("--one-core", action="store_true",
                         help="CPU-bound crawl: pin every worker to the first core (what sharing a core costs)")
    parser.add_argument("--only", choices=("politeness", "cpu"))
    parser.add_argument("--keep", help="keep each run's folder (site, access log, worker logs) under this folder")
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
                    pinned = ("every worker pinned to the first core" if args.one_core else
                              "each worker pinned to one core" if args.pin else "workers not pinned")
                    print(f"\nCPU-bound: {args.photo_pages} pages on {args.photo_hosts} hosts with one photo each "
                          f"through the face stage, GDPR_FACE_WORKERS=1 per worker, {pinned}")
                base = steady_base = cpu_base = steady_cpu_base = None
                for n in counts:
                    r = run(mode, n, args, port)
                    base = base or r["pages_per_s"]
                    if mode == "cpu":
                        steady_base = steady_base or r["steady_pages_per_s"]
                        cpu_base = cpu_base or r["pages_per_busiest_core_cpu_s"]
                        steady_cpu_base = steady_cpu_base or r["steady_pages_per_busiest_core_cpu_s"]
                    share = f", {100 * r['pages_per_s'] / bound:.0f} % of the bound" if bound else ""
                    per_worker = r.pop("per_worker")
                    print(json.dumps({"mode": mode, **{k: v if isinstance(v, dict) else round(v, 3)
                                                       for k, v in r.items()}}))
                    print(f"  {n} worker(s): {r['pages_per_s']:.2f} pages/s{share}, "
                          f"{r['pages_per_s'] / base:.2f}x one worker, violations {r['violations']}, "
                          f"exit {r['exit']}, {r['round_trips_per_page']:.1f} Redis round trips per page "
                          f"(~{r['round_trips_per_page'] * rtt:.2f} ms per page)", flush=True)
                    if mode == "cpu":
                        busy = sum(w["face_busy_s"] for w in per_worker)
                        for w in per_worker:
                            core = f" on core {w['core']}" if w["core"] is not None else ""
                            print(f"    worker {w['worker']}{core}: {w['items']} items, CPU {w['cpu_s']:.1f} s "
                                  f"({w['steady_cpu_s']:.1f} s in the steady state), "
                                  f"face pool busy {w['face_busy_s']:.1f} s, first response at "
                                  f"{w['first_response']} s, items written from "
                                  f"{w['first_item']} s to {w['last_item']} s", flush=True)
                        print(f"    steady state (every worker's detector built): {r['steady_pages_per_s']:.2f} pages/s, "
                              f"{r['steady_pages_per_s'] / steady_base if steady_base else 0:.2f}x one worker; "
                              f"pages per CPU second of the busiest core: {r['pages_per_busiest_core_cpu_s']:.2f}, "
                              f"{r['pages_per_busiest_core_cpu_s'] / cpu_base if cpu_base else 0:.2f}x one worker; "
                              f"in the steady state: {r['steady_pages_per_busiest_core_cpu_s']:.2f}, "
                              f"{r['steady_pages_per_busiest_core_cpu_s'] / steady_cpu_base if steady_cpu_base else 0:.2f}"
                              "x one worker", flush=True)
                        print(f"    face pools busy {busy:.1f} s in all over a span of {r['seconds']:.1f} s "
                              f"({busy / r['seconds'] if r['seconds'] else 0:.2f} pools busy at a time on average)",
                              flush=True)
        finally:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()

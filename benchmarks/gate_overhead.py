"""How much the request gate costs: the same crawl with plain Scrapy and with the add-on.

    python benchmarks/gate_overhead.py [--hosts 60] [--pages 100] [--rounds 2] [--crawls-only]
    python benchmarks/gate_overhead.py --instructions --rounds 0 --crawls-only

A local asyncio HTTP/1.1 server (keep-alive, tiny pages) answers for every
``h<N>.bench.test`` host; a resolver in each crawl maps ``*.bench.test`` to
127.0.0.1. Each crawl runs in its own subprocess so its peak RSS can be read.
Plain Scrapy runs with ``ROBOTSTXT_OBEY = True`` (the ``startproject``
default); the gated crawl with ``ADDONS = {"scrapy_gdpr.Addon": 0}`` and a policy
listing every host. Both use the same concurrency and no delay.

With ``--instructions`` it also counts the instructions each crawl executes per
page under valgrind's callgrind, a figure that does not depend on the machine's
load: each crawl runs at two sizes (``--instruction-pages``, 5 and 15 pages per
host) and the difference in instructions is divided by the difference in pages,
so start-up cancels out. Under callgrind a crawl runs tens of times slower: the
four crawls take 10-30 minutes.

It then times objection-list lookups at 1,000,000 entries
(``scrapy_gdpr.gate.objections.ObjectionList``) when that class exists.

The figures are printed as measured; nothing here asserts a target.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _localserver import serve

ROOT = Path(__file__).resolve().parent.parent
TERMS_HTML = (
    b"<html><head><title>Terms</title></head><body><h1>Terms of use</h1>"
    b"<p>Automated access is permitted for research.</p></body></html>"
)
ROBOTS_TXT = b"User-agent: *\nDisallow: /private/\n"
PAGE = b"<html><head><title>p</title></head><body><p>hello</p></body></html>"


# --------------------------------------------------------------------------- server


def respond(path: bytes) -> tuple[bytes, bytes, bytes]:
    if path == b"/robots.txt":
        return b"200 OK", b"text/plain", ROBOTS_TXT
    if path == b"/terms.html":
        return b"200 OK", b"text/html; charset=utf-8", TERMS_HTML
    if path.startswith(b"/.well-known/"):
        # a site without a TDMRep file, as most are (an HTML page here would be read as a
        # malformed tdmrep.json: every page reserved in doubt, one audit line each)
        return b"404 Not Found", b"text/plain", b"not found"
    return b"200 OK", b"text/html; charset=utf-8", PAGE


# --------------------------------------------------------------------------- crawl (child)


def _resolver_class() -> Any:
    from scrapy.resolver import CachingThreadedResolver
    from twisted.internet import defer

    class BenchResolver(CachingThreadedResolver):
        def getHostByName(self, name: str, timeout: Any = ()) -> Any:
            if name.endswith(".test"):
                return defer.succeed("127.0.0.1")
            return super().getHostByName(name, timeout)

    return BenchResolver


BenchResolver = None  # set in the child, so TWISTED_DNS_RESOLVER can name it


def write_policy(folder: Path, port: int) -> Path:
    import yaml
    from scrapy.http import HtmlResponse

    try:  # the terms middleware's own fingerprint, when it exists on this branch
        from scrapy_gdpr.gate.terms import fingerprint, normalise_terms  # type: ignore[attr-defined]

        response = HtmlResponse(f"http://bench.test:{port}/terms.html", body=TERMS_HTML, encoding="utf-8")
        terms_fp = fingerprint(normalise_terms(response))
    except ImportError:
        terms_fp = "sha256:" + "0" * 64
    data = yaml.safe_load((ROOT / "tests" / "data" / "policies" / "valid.yaml").read_text())
    data["crawler"] = {
        "product_token": "GdprBenchBot",
        "user_agent": "GdprBenchBot/1.0 (+http://127.0.0.1/crawler-info.html)",
        "info_url": "http://127.0.0.1/crawler-info.html",
    }
    data["domains"] = [
        {
            "domain": "bench.test",
            "include_subdomains": True,
            "allow_private_network": True,
            "terms": {
                "url": f"http://bench.test:{port}/terms.html",
                "verdict": "permits",
                "reviewed_on": "2026-10-01",
                "reviewed_by": "Bench",
                "fingerprint": terms_fp,
            },
        }
    ]
    data["politeness"] = {"default_delay": 0, "default_concurrency": 8}
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def child(mode: str, port: int, hosts: int, pages: int, folder: Path) -> None:
    global BenchResolver  # noqa: PLW0603 - Scrapy loads the resolver by its dotted path
    BenchResolver = _resolver_class()
    from scrapy import Request, Spider
    from scrapy.crawler import CrawlerProcess

    count = {"pages": 0}

    class BenchSpider(Spider):
        name = "bench"

        async def start(self):  # type: ignore[no-untyped-def]
            for page in range(pages):
                for host in range(hosts):
                    yield Request(f"http://h{host}.bench.test:{port}/p/{page}.html")

        def parse(self, response):  # type: ignore[no-untyped-def]
            count["pages"] += 1

    settings: dict[str, Any] = {
        "TWISTED_DNS_RESOLVER": "__main__.BenchResolver",
        "LOG_LEVEL": "WARNING",
        "TELNETCONSOLE_ENABLED": False,
        "REMOTE_CONTROL_ENABLED": False,
        "CONCURRENT_REQUESTS": 64,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 8,
        "DOWNLOAD_DELAY": 0,
        "ROBOTSTXT_OBEY": True,
    }
    if mode == "gdpr":
        settings.update(
            {
                "ADDONS": {"scrapy_gdpr.Addon": 0},
                "GDPR_POLICY": str(write_policy(folder, port)),
                "GDPR_AUDIT_LOG": str(folder / "audit.jsonl"),
                "GDPR_REPORT_DIR": str(folder / "reports"),
                "GDPR_LEDGER": f"sqlite:///{folder / 'ledger.sqlite3'}",
                "GDPR_OBJECTIONS": str(folder / "objections.txt"),
            }
        )
        (folder / "objections.txt").write_text("domain objected.example\n")
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(BenchSpider)
    process.crawl(crawler)
    profile_path = os.environ.get("GDPR_BENCH_PROFILE")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_started = usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    if profile_path:  # e.g. GDPR_BENCH_PROFILE=/tmp/gdpr.prof, one child at a time
        import cProfile

        cProfile.runctx("process.start()", globals(), {"process": process}, f"{profile_path}.{mode}")
    else:
        process.start()
    elapsed = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_started
    stats = crawler.stats.get_stats()
    print(
        json.dumps(
            {
                "mode": mode,
                "pages": count["pages"],
                "elapsed": elapsed,
                "pages_per_s": count["pages"] / elapsed,
                "cpu_s": cpu,
                "pages_per_cpu_s": count["pages"] / cpu,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "blocked": {k: v for k, v in stats.items() if k.startswith("gdpr/blocked/")},
                "errors": stats.get("log_count/ERROR", 0),
            }
        ),
        flush=True,
    )


def run_child(mode: str, port: int, hosts: int, pages: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"gdpr-bench-{mode}-") as tmp:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
        proc = subprocess.run(
            [sys.executable, __file__, "--child", mode, "--port", str(port), "--hosts", str(hosts),
             "--pages", str(pages), "--folder", tmp],
            capture_output=True, text=True, env=env, cwd=tmp, timeout=600, check=False,
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"the {mode} crawl failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def instructions(mode: str, port: int, hosts: int, pages: int) -> int:
    """The instructions one crawl executes (callgrind's ``summary``), start-up included."""
    with tempfile.TemporaryDirectory(prefix=f"gdpr-bench-{mode}-") as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
             "--child", mode, "--port", str(port), "--hosts", str(hosts), "--pages", str(pages), "--folder", tmp],
            capture_output=True, text=True, env=env, cwd=tmp, timeout=7200, check=False,
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            sys.stderr.write(proc.stderr[-3000:])
            raise SystemExit(f"the {mode} crawl under callgrind failed (exit {proc.returncode})")
        if json.loads(lines[-1])["pages"] != hosts * pages:
            print(f"WARNING: the {mode} crawl of {pages} pages per host did not fetch every page")
        summary = re.search(r"^summary:\s*(\d+)", out.read_text(), re.MULTILINE)
        if summary is None:
            raise SystemExit(f"no instruction count in callgrind's output for the {mode} crawl")
        return int(summary.group(1))


def instruction_benchmark(port: int, hosts: int, sizes: tuple[int, int]) -> None:
    small, large = sizes
    if shutil.which("valgrind") is None:
        print("instructions: valgrind is not installed; install it (apt-get install valgrind) for this figure")
        return
    if not 0 < small < large:
        raise SystemExit("--instruction-pages needs two sizes, the smaller first (e.g. 5 15)")
    pages = hosts * (large - small)
    print(f"instructions (callgrind): each crawl at {small} and {large} pages per host; per page = the difference "
          f"/ {pages:,} pages")
    per_page: dict[str, float] = {}
    for mode in ("plain", "gdpr"):
        counts = [instructions(mode, port, hosts, n) for n in (small, large)]
        per_page[mode] = (counts[1] - counts[0]) / pages
        print(f"  {mode:5s}: {counts[0]:,} and {counts[1]:,} instructions = {per_page[mode] / 1e6:.2f} M per page")
    print(f"instructions per page: plain Scrapy {per_page['plain'] / 1e6:.2f} M, with add-on "
          f"{per_page['gdpr'] / 1e6:.2f} M: {per_page['plain'] / per_page['gdpr']:.1%} of plain Scrapy's pages per "
          "instruction (does not depend on the machine's load)")


def _process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a running process (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- objections


def objection_benchmark(entries: int, lookups: int) -> None:
    try:
        from scrapy_gdpr.gate.objections import ObjectionList  # type: ignore[attr-defined]
    except ImportError:
        print("objection benchmark: not available")
        return
    rng = random.Random(42)
    with tempfile.TemporaryDirectory(prefix="gdpr-bench-objections-") as tmp:
        path = Path(tmp) / "objections.txt"
        with path.open("w", encoding="utf-8") as fh:
            for i in range(entries):
                kind = ("url", "prefix", "domain")[i % 3]
                if kind == "url":
                    fh.write(f"url https://site{i % 5000}.example/people/{i}.html\n")
                elif kind == "prefix":
                    fh.write(f"prefix https://site{i % 5000}.example/albums/{i}/\n")
                else:
                    fh.write(f"domain person{i}.example\n")
        started = time.perf_counter()
        if hasattr(ObjectionList, "from_file"):
            objections = ObjectionList.from_file(path)
        elif hasattr(ObjectionList, "load"):
            objections = ObjectionList.load(path)
        else:
            objections = ObjectionList(path)
        load_s = time.perf_counter() - started
        urls = []
        for _ in range(lookups):
            i = rng.randrange(entries * 2)
            urls.append(
                rng.choice(
                    [
                        f"https://site{i % 5000}.example/people/{i}.html",
                        f"https://site{i % 5000}.example/albums/{i}/photo.jpg",
                        f"https://person{i}.example/index.html",
                        f"https://www.person{i}.example/a/b?c=d",
                    ]
                )
            )
        started = time.perf_counter()
        hits = sum(1 for url in urls if objections.match(url))
        elapsed = time.perf_counter() - started
        print(
            f"objection lookups: {lookups / elapsed:,.0f}/s at {entries:,} entries "
            f"({hits:,} of {lookups:,} matched; loading took {load_s:.1f} s)"
        )


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=60)
    parser.add_argument("--pages", type=int, default=100, help="pages per host")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--objections", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--objections-only", action="store_true", help="skip the crawls")
    parser.add_argument("--crawls-only", action="store_true", help="skip the objection-list timing")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per page under valgrind's callgrind (slow; --rounds 0 skips "
                             "the timed crawls)")
    parser.add_argument("--instruction-pages", type=int, nargs=2, default=(5, 15), metavar=("SMALL", "LARGE"),
                        help="pages per host of the two crawls whose difference --instructions counts")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=["plain", "gdpr"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(respond)
        return
    if args.child:
        child(args.child, args.port, args.hosts, args.pages, args.folder)
        return
    if args.objections_only:
        objection_benchmark(args.objections, args.lookups)
        return

    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        total = args.hosts * args.pages
        results: dict[str, list[dict[str, Any]]] = {"plain": [], "gdpr": []}
        if args.rounds > 0:
            print(f"crawl: {total:,} pages over {args.hosts} hosts, {args.rounds} round(s) each, alternating")
        for _ in range(args.rounds):
            for mode in ("plain", "gdpr"):
                r = run_child(mode, port, args.hosts, args.pages)
                results[mode].append(r)
                print(
                    f"  {mode:5s}: {r['pages']:,} pages in {r['elapsed']:.1f} s = {r['pages_per_s']:,.0f} pages/s; "
                    f"{r['cpu_s']:.1f} CPU s = {r['pages_per_cpu_s']:,.0f} pages per CPU second; "
                    f"peak RSS {r['peak_rss_mib']:.0f} MiB"
                    + (f", refused {r['blocked']}" if r["blocked"] else "")
                    + (f", {r['errors']} ERROR log lines" if r["errors"] else "")
                )
        if args.instructions:
            instruction_benchmark(port, args.hosts, (args.instruction_pages[0], args.instruction_pages[1]))
        server_cpu = _process_cpu_seconds(server.pid)
        if server_cpu is not None and args.rounds > 0:
            crawl_cpu = sum(r["cpu_s"] for rs in results.values() for r in rs)
            print(f"server: {server_cpu:.1f} CPU s in all, against {crawl_cpu:.1f} CPU s for the crawls")
    finally:
        server.kill()
        server.wait()
    if args.rounds > 0:
        summarise(args, results, total)
    if not args.crawls_only:
        objection_benchmark(args.objections, args.lookups)


def summarise(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]], total: int) -> None:
    plain = statistics.median(r["pages_per_s"] for r in results["plain"])
    gdpr = statistics.median(r["pages_per_s"] for r in results["gdpr"])
    plain_cpu = statistics.median(r["pages_per_cpu_s"] for r in results["plain"])
    gdpr_cpu = statistics.median(r["pages_per_cpu_s"] for r in results["gdpr"])
    load = os.getloadavg()[0]
    print(
        f"plain Scrapy: {plain:,.0f} pages/s ({plain_cpu:,.0f} per CPU second), "
        f"peak RSS {max(r['peak_rss_mib'] for r in results['plain']):.0f} MiB"
    )
    print(
        f"with add-on:  {gdpr:,.0f} pages/s ({gdpr_cpu:,.0f} per CPU second), "
        f"peak RSS {max(r['peak_rss_mib'] for r in results['gdpr']):.0f} MiB"
    )
    print(f"ratio: {gdpr / plain:.1%} of plain Scrapy's pages/s (target >= 95%)")
    print(f"ratio per CPU second: {gdpr_cpu / plain_cpu:.1%} (less sensitive to other load on the machine)")
    if args.rounds > 1:
        # each round runs the two crawls back to back, so their ratio sees similar load
        pairs = list(zip(results["plain"], results["gdpr"], strict=True))
        wall = statistics.median(g["pages_per_s"] / p["pages_per_s"] for p, g in pairs)
        cpu = statistics.median(g["pages_per_cpu_s"] / p["pages_per_cpu_s"] for p, g in pairs)
        print(f"median of the per-round ratios: {wall:.1%} of pages/s, {cpu:.1%} per CPU second")
    if load > (os.cpu_count() or 1):
        print(f"note: load average {load:.1f} on {os.cpu_count()} CPUs; wall-clock figures are unreliable")
    if any(r["pages"] != total for r in results["plain"] + results["gdpr"]):
        print("WARNING: not every crawl fetched every page; the comparison is not like for like")


if __name__ == "__main__":
    main()

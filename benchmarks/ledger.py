"""Retention benchmark: stamping cost, erase by URL and purge at 1M ledger rows.

    PYTHONPATH=. python benchmarks/ledger.py [--rows 1000000] [--crawl-items 3000]
        [--rounds 5] [--backends sqlite,postgresql] [--skip-rows]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]

Prints, for each back end side by side:

* the cost of the retention components (provenance, stamp, feed filter, ledger
  recording and the feed manifest) in whole Scrapy crawls, one item per page,
  exported to JSON Lines: a crawl of a local site (article pages of about 20 KB
  served over HTTP by a server this script starts) and a crawl of tiny ``data:``
  pages (no network, almost no parsing: the worst case, where a crawl's own work
  per item is smallest). Each crawl runs in its own process; the two crawls of a
  round run back to back, in alternating order, and the cost is the median over
  the rounds of the ratio of CPU seconds per item (target: < 5 %). CPU time is
  used because a machine shared with other work disturbs it far less than
  wall-clock time; the wall-clock items/s are printed too;
* export throughput (items/s) of Scrapy's JSON Lines exporter alone, and with the
  retention stamp, the feed filter and the ledger recording (the stamp's cost per item
  against the cheapest possible baseline: no crawl at all);
* ledger write throughput (rows/s) while loading ``--rows`` rows;
* erase by URL in that ledger (ms, median of 25; target < 100 ms);
* purge of all ``--rows`` expired rows and their feed lines in JSON Lines files
  that also hold unexpired lines, so every file is rewritten (s; target < 60 s on SQLite).

PostgreSQL runs in a fresh schema that is dropped afterwards; it is skipped with a
message when the server cannot be reached.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _localserver import serve
from scrapy.exporters import JsonLinesItemExporter
from scrapy.utils.test import get_crawler

from scrapy_gdpr.audit import AuditLog
from scrapy_gdpr.items.provenance import Provenance, registry
from scrapy_gdpr.retention.expiry import purge
from scrapy_gdpr.retention.ledger import Ledger, Record, Selector, open_ledger
from scrapy_gdpr.retention.recorder import _LedgerWriter
from scrapy_gdpr.retention.stamp import RetentionItemFilter, RetentionPipeline, stamp_time
from scrapy_gdpr.runtime import get_runtime

NOW = datetime(2026, 6, 1, tzinfo=UTC)
TEXT = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore. " * 15)


def _item(i: int) -> dict[str, Any]:
    return {"url": f"https://site{i % 500}.example/page/{i}", "title": f"Page {i}", "author": "Someone",
            "published": "2026-05-01", "tags": ["a", "b", "c"], "body": TEXT}


# --------------------------------------------------------------------------- stamping


def bench_stamping(ledger_url: str, n: int, folder: Path) -> dict[str, float]:
    policy = ROOT / "tests" / "data" / "policies" / "valid.yaml"

    class _Spider:
        name = "bench"

    crawler = get_crawler(settings_dict={"GDPR_POLICY": str(policy), "GDPR_AUDIT_LOG": str(folder / "audit.jsonl"),
                                         "GDPR_LEDGER": ledger_url})
    crawler.spider = _Spider()  # type: ignore[assignment]
    rt = get_runtime(crawler)
    reg = registry(rt)
    pipeline = RetentionPipeline(crawler)
    filt = RetentionItemFilter({"format": "jsonlines"})
    items = [_item(i) for i in range(n)]
    stamped_items = [dict(it) for it in items]

    def plain() -> float:
        buf = io.BytesIO()
        exporter = JsonLinesItemExporter(buf)
        start = time.perf_counter()
        for it in items:
            exporter.export_item(it)
        return time.perf_counter() - start

    def stamped(with_ledger: bool, ledger: Ledger | None) -> float:
        for it in stamped_items:
            reg.put(it, Provenance(url=it["url"], collected_at=NOW))
        buf = io.BytesIO()
        exporter = JsonLinesItemExporter(buf)
        writer = _LedgerWriter(ledger) if with_ledger and ledger is not None else None
        if writer is not None:
            writer.start()
        start = time.perf_counter()
        for it in stamped_items:
            out = pipeline.process_item(it)
            if filt.accepts(out):
                exporter.export_item(out)
            if writer is not None:
                stamp = out["gdpr"]
                writer.put(lambda s=stamp: [Record(kind="item", location="", url=s["source_url"],
                                                         item_id=s["item_id"], expires_at=NOW)])
        if writer is not None:
            writer.close()
        return time.perf_counter() - start

    # interleave and take the best of several rounds: the machine is shared
    plain_t, stamp_t, ledger_t = [], [], []
    with open_ledger(ledger_url) as ledger:
        for _ in range(3):
            plain_t.append(plain())
            stamp_t.append(stamped(False, None))
            ledger_t.append(stamped(True, ledger))
    rt.close()
    p, s, lg = min(plain_t), min(stamp_t), min(ledger_t)
    return {
        "export_items_s": n / p,
        "stamped_items_s": n / s,
        "stamp_cost_pct": (s - p) / p * 100,
        "stamped_ledger_items_s": n / lg,
        "stamp_ledger_cost_pct": (lg - p) / p * 100,
    }


# --------------------------------------------------------------------------- crawls

#: Boilerplate around every article page (navigation, footer), as on most sites.
_NAV = "".join(f'<li><a href="/section/{i}.html">Section {i}</a></li>' for i in range(120))
_FOOT = "".join(f'<p class="legal">Footer note {i}: {TEXT[:160]}</p>' for i in range(40))


def article_page(i: int) -> bytes:
    """An article page of about 20 KB: a title, a byline, tags and six paragraphs."""
    paragraphs = "".join(f"<p>{TEXT[(i + k) % 50:][:600]} ({i}.{k})</p>" for k in range(6))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Article {i}</title></head><body>"
        f"<nav><ul>{_NAV}</ul></nav><article><h1>Article {i}</h1>"
        f"<p class='byline'>By <span class='author'>Author {i % 37}</span>, "
        f"<time datetime='2026-05-{1 + i % 28:02d}'>May {1 + i % 28}</time></p>"
        f"<ul class='tags'><li class='tag'>t{i % 7}</li><li class='tag'>t{i % 11}</li></ul>"
        f"{paragraphs}</article><footer>{_FOOT}</footer></body></html>"
    ).encode()


def respond(path: bytes) -> tuple[bytes, bytes, bytes]:
    """/a/<n>.html is article n."""
    if path.startswith(b"/a/"):
        return b"200 OK", b"text/html; charset=utf-8", article_page(int(path[3:].split(b".")[0]))
    return b"404 Not Found", b"text/plain", b"not found"


def crawl_child(source: str, retention: bool, n: int, folder: Path, ledger_url: str, port: int) -> None:
    """One crawl (in its own process): ``n`` pages, one item each, a JSON Lines feed.

    ``source`` "http": article pages from the local server; "data": tiny ``data:``
    pages (no network, almost no parsing: the cheapest page a crawl can have, so the
    retention components weigh the most there). Prints the CPU seconds of the
    crawl (all threads: the ledger writer and the feed recording count).
    """
    import scrapy
    from scrapy.crawler import CrawlerProcess

    class ItemsSpider(scrapy.Spider):
        name = "bench"

        async def start(self):  # type: ignore[no-untyped-def]
            for i in range(n):
                if source == "http":
                    yield scrapy.Request(f"http://127.0.0.1:{port}/a/{i}.html")
                else:
                    yield scrapy.Request(f"data:text/html,<title>Page {i}</title>", cb_kwargs={"i": i})

        def parse(self, response, i=None):  # type: ignore[no-untyped-def]
            if source == "http":
                yield {"url": response.url, "title": response.css("h1::text").get(),
                       "author": response.css(".author::text").get(),
                       "published": response.css("time::attr(datetime)").get(),
                       "tags": response.css(".tag::text").getall(),
                       "body": "\n".join(response.css("article > p:not(.byline)::text").getall())}
            else:
                yield {"url": f"https://site{i % 500}.example/page/{i}", "title": response.css("title::text").get(),
                       "author": "Someone", "published": "2026-05-01", "tags": ["a", "b", "c"], "body": TEXT}

    feed = str(folder / f"crawl-{source}-{retention}.jsonl")
    settings: dict[str, Any] = {
        "LOG_LEVEL": "ERROR", "TELNETCONSOLE_ENABLED": False, "CONCURRENT_REQUESTS": 32,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 32, "FEEDS": {feed: {"format": "jsonlines", "overwrite": True}},
    }
    if retention:
        from scrapy.settings import Settings

        from scrapy_gdpr.retention.feeds import configure_feeds

        feeds = Settings(settings)
        configure_feeds(feeds, None)  # type: ignore[arg-type]
        settings.update({
            "FEEDS": feeds.getdict("FEEDS"), "FEED_EXPORTERS": feeds.getdict("FEED_EXPORTERS"),
            "FEED_STORAGES": feeds.getdict("FEED_STORAGES"),
            "GDPR_POLICY": str(ROOT / "tests" / "data" / "policies" / "valid.yaml"),
            "GDPR_AUDIT_LOG": str(folder / "crawl-audit.jsonl"), "GDPR_REPORT_DIR": None, "GDPR_LEDGER": ledger_url,
            "SPIDER_MIDDLEWARES": {"scrapy_gdpr.items.provenance.ProvenanceMiddleware": 950},
            "ITEM_PIPELINES": {"scrapy_gdpr.retention.stamp.RetentionPipeline": 900},
            "EXTENSIONS": {"scrapy_gdpr.retention.recorder.RetentionExtension": 0},
        })
    process = CrawlerProcess(settings)
    crawler = process.create_crawler(ItemsSpider)
    process.crawl(crawler)
    cpu = time.process_time()
    process.start()
    cpu = time.process_time() - cpu
    stats = crawler.stats.get_stats()
    if stats.get("item_scraped_count") != n:
        raise SystemExit(f"expected {n} items, got {stats.get('item_scraped_count')}: {stats}")
    if retention:
        with open_ledger(ledger_url) as ledger:
            lines = sum(1 for r in ledger.at_location(str(Path(feed).resolve())) if r.kind == "feed_line")
        if lines != n:
            raise SystemExit(f"the ledger recorded {lines} of the feed's {n} lines")
    print(json.dumps({"cpu": cpu, "wall": (stats["finish_time"] - stats["start_time"]).total_seconds()}))


def bench_crawl(source: str, ledger_url: str, n: int, folder: Path, rounds: int, port: int) -> dict[str, float]:
    """CPU cost per item of whole Scrapy crawls without and with the retention
    components, in alternating rounds.

    The cost is measured in CPU time of the crawling process, which a machine
    shared with other work disturbs far less than wall-clock time, and the two
    crawls of a round run back to back; the median over the rounds of the
    per-round ratio is the figure (the best round of each is given too).
    """
    import subprocess

    cpu: dict[bool, list[float]] = {False: [], True: []}
    wall: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        # alternate which crawl goes first: a slow patch of the machine hits both
        for retention in ((False, True) if r % 2 == 0 else (True, False)):
            proc = subprocess.run(
                [sys.executable, __file__, "--crawl-child", source, "--retention", str(int(retention)),
                 "--crawl-items", str(n), "--folder", str(folder), "--ledger", ledger_url, "--port", str(port)],
                capture_output=True, text=True, cwd=folder, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-2000:] + proc.stdout[-500:])
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            cpu[retention].append(out["cpu"])
            wall[retention].append(out["wall"])
    ratios = [with_ / without for with_, without in zip(cpu[True], cpu[False], strict=True)]
    return {
        f"{source}_items_cpu_s": n / statistics.median(cpu[False]),
        f"{source}_stamped_items_cpu_s": n / statistics.median(cpu[True]),
        f"{source}_items_s": n / statistics.median(wall[False]),
        f"{source}_stamped_items_s": n / statistics.median(wall[True]),
        f"{source}_cost_pct": (statistics.median(ratios) - 1) * 100,
        f"{source}_cost_best_pct": (min(cpu[True]) / min(cpu[False]) - 1) * 100,
        f"{source}_us_per_item": (statistics.median(cpu[True]) - statistics.median(cpu[False])) / n * 1e6,
    }


# --------------------------------------------------------------------------- 1M rows


def load_rows(ledger: Ledger, rows: int, folder: Path, files: int = 10, live_every: int = 10) -> tuple[float, list[str]]:
    """``rows`` expired feed lines in ``files`` JSON Lines files (plus one unexpired line
    per ``live_every``), recorded in the ledger. Returns (rows/s, sample URLs)."""
    handles = [(folder / f"feed-{f}.jsonl").open("w", encoding="utf-8") for f in range(files)]
    locations = [str(folder / f"feed-{f}.jsonl") for f in range(files)]
    batch: list[Record] = []
    write_time = 0.0
    samples = []
    expires, collected = NOW - timedelta(days=1), NOW - timedelta(days=31)
    expired_at = stamp_time(expires)
    live_at = stamp_time(NOW + timedelta(days=30))
    prefix = uuid.uuid4().hex[:16]  # ids as the stamping pipeline makes them
    encode = json.JSONEncoder().encode
    for i in range(rows):
        f = i % files
        url = f"https://site{i % 997}.example/people/{i}"
        item_id = f"{prefix}{2 * i:016x}"
        stamp = {"item_id": item_id, "source_url": url, "expires_at": expired_at, "purpose": "search"}
        handles[f].write(encode({"url": url, "title": f"Page {i}", "gdpr": stamp}) + "\n")
        if (i // files) % live_every == 0:  # every file holds unexpired lines
            live = {"item_id": f"{prefix}{2 * i + 1:016x}", "source_url": url + "/live", "expires_at": live_at}
            handles[f].write(encode({"url": url + "/live", "gdpr": live}) + "\n")
        batch.append(Record(kind="feed_line", location=locations[f], url=url, item_id=item_id,
                            expires_at=expires, purpose="search", collected_at=collected))
        if i % (rows // 25 or 1) == 0:
            samples.append(url)
        if len(batch) >= 50_000:
            start = time.perf_counter()
            ledger.add(batch)
            write_time += time.perf_counter() - start
            batch = []
    if batch:
        start = time.perf_counter()
        ledger.add(batch)
        write_time += time.perf_counter() - start
    for h in handles:
        h.close()
    for f in range(files):
        ledger.set_feed_file(Record(kind="feed_file", location=str(folder / f"feed-{f}.jsonl"), url="",
                                    expires_at=NOW - timedelta(days=1)))
    return rows / write_time, samples


def bench_erase(ledger: Ledger, samples: list[str]) -> float:
    times = []
    for url in samples:
        start = time.perf_counter()
        found = ledger.find(Selector("url", url))
        ledger.delete_ids([r.id for r in found if r.id is not None])
        times.append((time.perf_counter() - start) * 1000)
        assert found, url
    return statistics.median(times)


def bench_purge(ledger: Ledger, folder: Path) -> tuple[float, int]:
    audit = AuditLog(folder / "purge-audit.jsonl")
    start = time.perf_counter()
    result = purge(ledger, NOW, audit=audit, spider="bench", keep_deleted=0)
    elapsed = time.perf_counter() - start
    audit.close()
    assert ledger.count_expired(NOW) == 0
    return elapsed, result.feed_lines


# --------------------------------------------------------------------------- main


def _postgres(dsn: str) -> tuple[str, str] | None:
    try:
        import psycopg

        schema = "gdpr_bench_" + uuid.uuid4().hex[:8]
        with psycopg.connect(dsn, connect_timeout=3, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except Exception as exc:  # noqa: BLE001 - any failure: PostgreSQL is not usable here
        print(f"PostgreSQL skipped: {exc}".strip())
        return None
    sep = "&" if "?" in dsn else "?"
    return f"{dsn}{sep}options=-csearch_path%3D{schema}", schema


def _drop(dsn: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=10_000, help="items for the exporter micro-benchmark")
    parser.add_argument("--crawl-items", type=int, default=3_000, help="pages/items per benchmark crawl")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each pair of crawls")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--postgres", default=os.environ.get("GDPR_TEST_POSTGRES_DSN",
                                                             "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--skip-rows", action="store_true", help="only the stamping figures")
    # internal: the page server and one crawl, each run in a subprocess
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--crawl-child", choices=["http", "data"], help=argparse.SUPPRESS)
    parser.add_argument("--retention", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--ledger", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(respond)
        return
    if args.crawl_child:
        crawl_child(args.crawl_child, bool(args.retention), args.crawl_items, Path(args.folder), args.ledger, args.port)
        return

    import subprocess

    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        results = run_backends(args, port)
    finally:
        server.terminate()
        server.wait()
    report(results, args)


def run_backends(args: argparse.Namespace, port: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix=f"gdpr-bench-{backend}-") as tmp:
            folder = Path(tmp)
            schema = None
            if backend == "sqlite":
                url = f"sqlite:///{folder / 'ledger.sqlite3'}"
            else:
                pg = _postgres(args.postgres)
                if pg is None:
                    continue
                url, schema = pg
            try:
                print(f"[{backend}] exporter with and without the stamp, {args.items} items ...", flush=True)
                res = bench_stamping(url, args.items, folder)
                for source in ("http", "data"):
                    print(f"[{backend}] {args.rounds} rounds of {source} crawls of {args.crawl_items} pages, "
                          "without and with retention ...", flush=True)
                    res.update(bench_crawl(source, url, args.crawl_items, folder, args.rounds, port))
                if not args.skip_rows:
                    print(f"[{backend}] loading {args.rows} rows and their feed lines ...", flush=True)
                    with open_ledger(url) as ledger:
                        res["ledger_write_rows_s"], samples = load_rows(ledger, args.rows, folder)
                        res["ledger_rows"] = ledger.count()
                        ledger.optimize()  # what autovacuum / PRAGMA optimize do after a bulk load
                        print(f"[{backend}] erase by URL ...", flush=True)
                        res["erase_by_url_ms"] = bench_erase(ledger, samples)
                        print(f"[{backend}] purge ...", flush=True)
                        res["purge_s"], res["purged_feed_lines"] = bench_purge(ledger, folder)
                results[backend] = res
            finally:
                if schema is not None:
                    _drop(args.postgres, schema)
    return results


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    names = list(results)
    rows = [
        ("crawl of a local site (20 KB article pages over HTTP), 1 item/page, JSON Lines feed:", None, None),
        ("  without retention (items per CPU second)", "http_items_cpu_s", "{:,.0f}"),
        ("  with retention (items per CPU second)", "http_stamped_items_cpu_s", "{:,.0f}"),
        ("  retention cost (% CPU per item, median of rounds)", "http_cost_pct", "{:.1f}"),
        ("  retention cost (% CPU per item, best rounds)", "http_cost_best_pct", "{:.1f}"),
        ("  retention cost (us of CPU per item)", "http_us_per_item", "{:.0f}"),
        ("  without / with retention (items/s, wall clock)", None, None),
        ("    without", "http_items_s", "{:,.0f}"),
        ("    with", "http_stamped_items_s", "{:,.0f}"),
        ("crawl of tiny data: pages (no network, no parsing), 1 item/page:", None, None),
        ("  without retention (items per CPU second)", "data_items_cpu_s", "{:,.0f}"),
        ("  with retention (items per CPU second)", "data_stamped_items_cpu_s", "{:,.0f}"),
        ("  retention cost (% CPU per item, median of rounds)", "data_cost_pct", "{:.1f}"),
        ("  retention cost (us of CPU per item)", "data_us_per_item", "{:.0f}"),
        ("exporter alone (items/s)", "export_items_s", "{:,.0f}"),
        ("  + stamp + filter (items/s)", "stamped_items_s", "{:,.0f}"),
        ("  stamping cost vs exporter alone (%)", "stamp_cost_pct", "{:.1f}"),
        ("  + stamp + filter + ledger (items/s)", "stamped_ledger_items_s", "{:,.0f}"),
        ("  stamping + ledger vs exporter alone (%)", "stamp_ledger_cost_pct", "{:.1f}"),
        ("ledger writes (rows/s)", "ledger_write_rows_s", "{:,.0f}"),
        ("ledger rows", "ledger_rows", "{:,.0f}"),
        ("erase by URL (ms, median)", "erase_by_url_ms", "{:.2f}"),
        ("purge expired rows + feed lines (s)", "purge_s", "{:.1f}"),
        ("  feed lines purged", "purged_feed_lines", "{:,.0f}"),
    ]
    width = max(len(r[0]) for r in rows) + 2
    print(f"\n{args.crawl_items} pages per crawl, {args.rounds} rounds; load average {os.getloadavg()[0]:.1f}")
    print("".ljust(width) + "".join(n.rjust(14) for n in names))
    for label, key, fmt in rows:
        if key is None:
            print(label)
        elif any(key in results[n] for n in names):
            print(label.ljust(width) + "".join(
                (fmt.format(results[n][key]) if key in results[n] else "-").rjust(14) for n in names))
    print("\ntargets: stamping cost < 5 % of a crawl's items/s, erase by URL < 100 ms at 1M rows, "
          "purge of 1M rows < 60 s on SQLite")


if __name__ == "__main__":
    main()

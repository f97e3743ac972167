"""Run the example crawl end to end, offline: serve the example site, crawl it,
render the policy's review documents, and say where everything is.

    python demo.py [--port 8760] [--keep]

Used by ``make demo``. The output goes to ``example_project/output/`` (replaced on
each run unless ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import serve


def scrapy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - this interpreter's scrapy, arguments from this script
        [sys.executable, "-m", "scrapy.cmdline", *args],
        cwd=HERE, text=True, capture_output=True, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8760)
    parser.add_argument("--keep", action="store_true", help="keep the output of earlier runs")
    args = parser.parse_args()
    output = HERE / "output"
    if output.exists() and not args.keep:
        shutil.rmtree(output)
    output.mkdir(exist_ok=True)

    # What an ops team runs in CI before deploying: is every spider really protected?
    check = scrapy("gdpr-check")
    print(check.stdout.strip().splitlines()[-1] if check.stdout.strip() else "scrapy gdpr-check printed nothing")
    if check.returncode != 0:
        print(check.stdout + check.stderr, file=sys.stderr)
        return check.returncode

    servers = serve.serve(args.port)
    print(f"Serving the example site on http://127.0.0.1:{args.port}/ (and 127.0.0.2-6)")
    try:
        print("Crawling with the gallery spider ...", flush=True)
        crawl = scrapy("crawl", "gallery", "-a", f"base=http://127.0.0.1:{args.port}", "--logfile", "output/crawl.log")
        if crawl.returncode != 0:
            print(crawl.stdout + crawl.stderr, file=sys.stderr)
            print(f"The crawl failed (exit {crawl.returncode}); see {output / 'crawl.log'}", file=sys.stderr)
            return crawl.returncode or 1
        report = scrapy("gdpr-report", "policies/gallery.yaml", "--out", "output/review")
        if report.returncode != 0:
            print(report.stdout + report.stderr, file=sys.stderr)
            return report.returncode or 1
    finally:
        for server in servers:
            server.shutdown()

    reports = sorted((output / "reports").glob("*.json"))
    print("\nDone. What the crawl produced:")
    print(f"  items (stamped JSON Lines): {output / 'items' / 'gallery.jsonl'}")
    print(f"  images (faces blurred):     {output / 'images'}")
    print(f"  audit log:                  {output / 'audit' / 'gallery.jsonl'}")
    print(f"  ledger:                     {output / 'ledger.sqlite3'}")
    print(f"  crawl log:                  {output / 'crawl.log'}")
    metrics = output / "metrics" / "scrapy_gdpr_gallery.prom"
    if metrics.exists():
        print(f"  metrics (Prometheus):       {metrics}")
    if reports:
        data = json.loads(reports[-1].read_text(encoding="utf-8"))
        print(f"  compliance report:          {reports[-1].with_suffix('.html')}")
        print("\nRefused by reason:")
        for reason, info in sorted(data.get("refusals", {}).items()):
            print(f"  {reason:<20} {info['count']:>3}  e.g. {info['samples'][0] if info['samples'] else ''}")
        totals = data.get("totals", {})
        print(f"\nItems stored: {totals.get('items_scraped', 0)}, dropped: {totals.get('items_dropped', 0)}")
    monitors = [line.split("[Spidermon] ", 1)[1] for line in (output / "crawl.log").read_text(
        encoding="utf-8", errors="replace").splitlines() if "[Spidermon] GDPR:" in line]
    if monitors:
        print("\nMonitors (Spidermon; robots.txt and terms drift fail on purpose, as the site shows both):")
        for line in monitors:
            print(f"  {line}")
    print("\nFor the privacy officer (review document, crawler information page):")
    for line in report.stdout.strip().splitlines():
        print(f"  {HERE / line.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

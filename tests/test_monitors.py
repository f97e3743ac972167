"""Monitors and metrics for scheduled crawls: Spidermon monitors that fail on a
compliance problem, and the same figures as Prometheus metrics."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from scrapy import Request, Spider
from scrapy.pipelines.images import ImagesPipeline
from scrapy.utils.test import get_crawler

from scrapy_gdpr.figures import thresholds
from scrapy_gdpr.ledger import Record, open_ledger
from scrapy_gdpr.status import exit_status
from tests.conftest import MockServer
from tests.utils import DATA, ROOT, addon_settings, coroutine_test, write_policy

pytest.importorskip("spidermon")
prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from pathlib import Path

SUITE = "scrapy_gdpr.monitors.GdprMonitorSuite"
MONITORS = {
    "unchecked": "GDPR: images stored unchecked",
    "retention": "GDPR: retention",
    "robots": "GDPR: robots.txt unreachable",
    "terms": "GDPR: terms drift",
    "refusals": "GDPR: refusals",
    "items": "GDPR: items stored",
}


# --------------------------------------------------------------------------- the site


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Any:
    """A local site: the default host, a host whose robots.txt answers 503, and a
    host whose terms changed since their review."""
    root = tmp_path_factory.mktemp("site")
    default = root / "default"
    shutil.copytree(ROOT / "tests" / "site" / "default", default)
    (default / "photo.jpg").write_bytes((DATA / "images" / "face-baseline.jpg").read_bytes())
    for host in ("robots-down", "drift"):
        folder = root / "hosts" / host
        folder.mkdir(parents=True)
        (folder / "terms.html").write_text("<html><body><h1>Terms</h1><p>Crawling is permitted.</p></body></html>",
                                           encoding="utf-8")
        (folder / "page.html").write_text("<html><head><title>p</title></head><body>p</body></html>",
                                          encoding="utf-8")
    (root / "hosts" / "robots-down" / "_routes.json").write_text(
        json.dumps({"/robots.txt": {"status": 503, "body": "down"}}), encoding="utf-8")
    with MockServer(site=root) as server:
        yield server


class PagesSpider(Spider):
    """One item per page; the first item also names ``images`` to download."""

    name = "monitored"

    def __init__(self, urls: list[str] = (), images: list[str] = (), **kw: Any) -> None:
        super().__init__(**kw)
        self.urls = list(urls)
        self.images = list(images)

    async def start(self):
        for url in self.urls:
            yield Request(url, dont_filter=True)

    def parse(self, response):
        item: dict[str, Any] = {"url": response.url, "title": response.css("title::text").get() or ""}
        if self.images:
            item["image_urls"], self.images = self.images, []
        yield item


class PlainImagesPipeline(ImagesPipeline):
    """A project's own images pipeline: Scrapy's, without the face stage."""

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler.settings["PLAIN_IMAGES_STORE"], crawler=crawler)


def monitored(tmp_path: Path, policy: Path, **extra: Any) -> dict[str, Any]:
    return addon_settings(tmp_path, policy, **{
        "SPIDERMON_ENABLED": True,
        "EXTENSIONS": {"spidermon.contrib.scrapy.extensions.Spidermon": 500},
        "SPIDERMON_SPIDER_CLOSE_MONITORS": (SUITE,),
        "RETRY_ENABLED": False,
        **extra,
    })


async def run(settings: dict[str, Any], caplog, **kw: Any) -> tuple[Any, dict[str, str], str]:
    """Crawl; return the crawler, each monitor's status (``OK``/``FAIL``/``ERROR``) and the Spidermon log."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        crawler = get_crawler(PagesSpider, settings)
        await crawler.crawl_async(**kw)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[Spidermon]")]
    text = "\n".join(lines)
    results: dict[str, str] = {}
    for key, name in MONITORS.items():
        found = [line.rsplit("... ", 1)[1] for line in lines if line.startswith(f"[Spidermon] {name}/")]
        assert len(found) == 1, f"{name} did not run exactly once:\n{text}"
        results[key] = found[0]
    return crawler, results, text


def policy_for(tmp_path: Path, server: MockServer, hosts: list[str], drifted: tuple[str, ...] = ()) -> Path:
    path = write_policy(tmp_path / "policy.yaml", server, hosts)
    if drifted:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for rule in data["domains"]:
            if rule["domain"] in drifted:
                rule["terms"]["fingerprint"] = "sha256:" + "0" * 64
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def old_record(tmp_path: Path, *, days: int = 2) -> None:
    """An item that expired ``days`` ago, in the crawl's ledger."""
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    try:
        ledger.add([Record(kind="item", location="", url="http://127.0.0.1/old.html", spider="monitored",
                           expires_at=datetime.now(UTC) - timedelta(days=days), item_id="old-1")])
    finally:
        ledger.close()


def metrics_in(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a Prometheus text file, read with prometheus-client's own parser."""
    out = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(metrics: dict, name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted({"spider": "monitored", **labels}.items())))]


# --------------------------------------------------------------------------- monitors


@coroutine_test
async def test_every_monitor_passes_on_a_clean_crawl_and_metrics_are_written(tmp_path, site, caplog):
    policy = policy_for(tmp_path, site, ["127.0.0.1"])
    old_record(tmp_path)  # expired: the purge at spider open deletes it
    textfile = tmp_path / "textfile" / "%(name)s.prom"
    settings = monitored(tmp_path, policy, GDPR_METRICS_TEXTFILE=str(textfile))
    crawler, results, text = await run(settings, caplog, urls=[site.url("/index.html"), site.url("/page.html")])
    assert results == dict.fromkeys(MONITORS, "OK"), text
    assert exit_status(crawler) == 0

    metrics = metrics_in(tmp_path / "textfile" / "monitored.prom")
    assert value(metrics, "scrapy_gdpr_items_stored") == 2
    assert value(metrics, "scrapy_gdpr_images_stored_unchecked") == 0
    assert value(metrics, "scrapy_gdpr_exit_status") == 0
    assert value(metrics, "scrapy_gdpr_robots_hosts") == 1
    assert value(metrics, "scrapy_gdpr_robots_unreachable_ratio") == 0
    assert value(metrics, "scrapy_gdpr_terms_drift") == 0
    assert value(metrics, "scrapy_gdpr_retention_expired_records") == 0
    assert value(metrics, "scrapy_gdpr_retention_overdue_seconds") == 0
    assert value(metrics, "scrapy_gdpr_retention_ledger_readable") == 1
    assert not [k for k in metrics if k[0] == "scrapy_gdpr_refusals"]
    assert 0 < datetime.now(UTC).timestamp() - value(metrics, "scrapy_gdpr_last_run_timestamp_seconds") < 300


@coroutine_test
async def test_each_monitor_fails_on_a_crawl_made_to_trip_it(tmp_path, site, caplog):
    policy = policy_for(tmp_path, site, ["127.0.0.1", "robots-down.test", "drift.test"], drifted=("drift.test",))
    old_record(tmp_path, days=3)  # and no purge at spider open: still held at the end
    settings = monitored(
        tmp_path, policy,
        GDPR_PURGE_ON_OPEN=False,
        GDPR_MONITOR_MAX_REFUSALS={"robots": 0, "*": 10},
        ITEM_PIPELINES={PlainImagesPipeline: 1},
        PLAIN_IMAGES_STORE=str(tmp_path / "plain-images"),
        GDPR_METRICS_TEXTFILE=str(tmp_path / "metrics.prom"),
    )
    urls = [
        site.url("/page.html"),
        site.url("/private/x.html"),  # robots.txt disallows: one robots refusal, above its limit 0
        site.url("/page.html", host="robots-down.test"),  # robots.txt answers 503
        site.url("/page.html", host="drift.test"),  # terms changed since the review
    ]
    _crawler, results, text = await run(settings, caplog, urls=urls, images=[site.url("/photo.jpg")])
    assert results == {
        "unchecked": "FAIL", "retention": "FAIL", "robots": "FAIL", "terms": "FAIL", "refusals": "FAIL",
        "items": "OK",
    }, text
    # each failure says what was found, and what to do, without a traceback
    assert "Traceback" not in text
    assert "1 media file(s) were stored by a pipeline without the face stage" in text
    assert site.url("/photo.jpg") in text
    assert "1 expired record(s) still held; the oldest (item http://127.0.0.1/old.html)" in text
    assert "robots.txt could not be read for 1 of 2 host(s) (50%, above GDPR_MONITOR_ROBOTS_UNREACHABLE_SHARE 20%)" in text
    assert "1 terms page(s) changed since their review" in text
    assert "refusals above GDPR_MONITOR_MAX_REFUSALS: robots: 1 (at most 0)" in text
    assert "terms_drift" not in text.split("GDPR_MONITOR_MAX_REFUSALS: ", 1)[1].split("\n", 1)[0]  # 1 <= "*" 10
    assert list((tmp_path / "plain-images").rglob("*.jpg")), "the plain pipeline really stored the image"

    metrics = metrics_in(tmp_path / "metrics.prom")
    assert value(metrics, "scrapy_gdpr_images_stored_unchecked") == 1
    assert value(metrics, "scrapy_gdpr_refusals", reason="robots") == 1
    assert value(metrics, "scrapy_gdpr_refusals", reason="robots_unreachable") == 1
    assert value(metrics, "scrapy_gdpr_refusals", reason="terms_drift") == 1
    assert value(metrics, "scrapy_gdpr_robots_unreachable_ratio") == 0.5
    assert value(metrics, "scrapy_gdpr_terms_drift") >= 1
    assert value(metrics, "scrapy_gdpr_retention_expired_records") == 1
    assert value(metrics, "scrapy_gdpr_retention_overdue_seconds") > 2 * 86400


@coroutine_test
async def test_items_monitor_fails_when_nothing_is_stored(tmp_path, site, caplog):
    policy = policy_for(tmp_path, site, ["127.0.0.1"])
    settings = monitored(tmp_path, policy)
    crawler, results, text = await run(settings, caplog, urls=[site.url("/page.html", host="unlisted.test")])
    assert results == {**dict.fromkeys(MONITORS, "OK"), "items": "FAIL"}, text
    assert "0 item(s) stored, fewer than GDPR_MONITOR_MIN_ITEMS 1 (exit status 4)" in text
    assert exit_status(crawler) == 4


@coroutine_test
async def test_thresholds_raise_the_bar_without_touching_the_crawl(tmp_path, site, caplog):
    """GDPR_MONITOR_MIN_ITEMS above what was stored fails the monitor; the crawl itself is unchanged."""
    policy = policy_for(tmp_path, site, ["127.0.0.1"])
    settings = monitored(tmp_path, policy, GDPR_MONITOR_MIN_ITEMS=3)
    crawler, results, text = await run(settings, caplog, urls=[site.url("/page.html")])
    assert results["items"] == "FAIL", text
    assert "1 item(s) stored, fewer than GDPR_MONITOR_MIN_ITEMS 3 (exit status 0)" in text
    assert exit_status(crawler) == 0


# --------------------------------------------------------------------------- metrics


class _Recorder(BaseHTTPRequestHandler):
    pushes: list[tuple[str, str, bytes]] = []

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        type(self).pushes.append((self.command, self.path, self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_POST = _record


@coroutine_test
async def test_metrics_are_pushed_to_a_pushgateway(tmp_path, site, caplog):
    _Recorder.pushes = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        policy = policy_for(tmp_path, site, ["127.0.0.1"])
        gateway = f"http://127.0.0.1:{server.server_address[1]}"
        settings = monitored(tmp_path, policy, GDPR_METRICS_PUSHGATEWAY=gateway, GDPR_METRICS_JOB="nightly")
        await run(settings, caplog, urls=[site.url("/page.html")])
    finally:
        server.shutdown()
        server.server_close()
    assert len(_Recorder.pushes) == 1
    method, path, body = _Recorder.pushes[0]
    assert (method, path) == ("PUT", "/metrics/job/nightly/spider/monitored")
    pushed = {s.name: s.value for f in text_string_to_metric_families(body.decode()) for s in f.samples}
    assert pushed["scrapy_gdpr_items_stored"] == 1
    assert pushed["scrapy_gdpr_exit_status"] == 0


@coroutine_test
async def test_an_unreachable_pushgateway_is_logged_not_hidden(tmp_path, site, caplog):
    from tests.utils import free_port

    port = free_port()  # nothing listens there
    policy = policy_for(tmp_path, site, ["127.0.0.1"])
    settings = monitored(tmp_path, policy, GDPR_METRICS_PUSHGATEWAY=f"http://127.0.0.1:{port}")
    crawler, _, _ = await run(settings, caplog, urls=[site.url("/page.html")])
    assert crawler.stats.get_value("gdpr/metrics/errors") == 1
    assert any("GDPR metrics could not be written" in r.getMessage() for r in caplog.records)
    assert exit_status(crawler) == 0


@pytest.mark.parametrize(
    ("setting", "bad", "message"),
    [
        ("GDPR_MONITOR_ROBOTS_UNREACHABLE_SHARE", 2, "a share between 0 and 1"),
        ("GDPR_MONITOR_MAX_REFUSALS", {"robots": -1}, "whole number >= 0"),
        ("GDPR_MONITOR_MAX_REFUSALS", {"robots": "many"}, "must be a whole number"),
        ("GDPR_MONITOR_MIN_ITEMS", "x", "must be a number"),
        ("GDPR_MONITOR_RETENTION_GRACE", -5, "must not be negative"),
        ("GDPR_METRICS_TEXTFILE", "metrics.txt", "ending in .prom"),
    ],
)
@coroutine_test
async def test_invalid_monitor_and_metrics_settings_refuse_the_crawl(tmp_path, site, caplog, setting, bad, message):
    policy = policy_for(tmp_path, site, ["127.0.0.1"])
    settings = addon_settings(tmp_path, policy, **{setting: bad})
    from scrapy.crawler import Crawler

    from scrapy_gdpr.status import StartupRefused

    crawler = Crawler(PagesSpider, settings)
    with caplog.at_level(logging.ERROR), pytest.raises(StartupRefused):
        await crawler.crawl_async(urls=[site.url("/page.html")])
    assert exit_status(crawler) == 3
    assert message in caplog.text
    assert not (tmp_path / "metrics.txt").exists()


def test_thresholds_defaults():
    from scrapy.settings import Settings

    t = thresholds(Settings())
    assert (t.retention_grace, t.robots_unreachable_share, t.max_refusals, t.min_items) == (0, 0.2, {}, 1)
    assert t.refusal_limit("robots") is None
    t = thresholds(Settings({"GDPR_MONITOR_MAX_REFUSALS": '{"domain": 5, "*": 0}'}))
    assert (t.refusal_limit("domain"), t.refusal_limit("robots")) == (5, 0)


@coroutine_test
async def test_a_record_expiring_during_the_crawl_is_no_breach(tmp_path, site, caplog):
    """The purge at spider open deletes what expired before; what expires while the
    crawl runs waits for the next purge, and is not a breach."""
    policy = policy_for(tmp_path, site, ["127.0.0.1"])
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    try:
        ledger.add([Record(kind="item", location="", url="http://127.0.0.1/soon.html", spider="monitored",
                           expires_at=datetime.now(UTC) + timedelta(seconds=2), item_id="soon-1")])
    finally:
        ledger.close()
    settings = monitored(tmp_path, policy, GDPR_METRICS_TEXTFILE=str(tmp_path / "m.prom"))
    _crawler, results, text = await run(settings, caplog, urls=[site.url("/_/respond?body=slow&delay=3")])
    assert results["retention"] == "OK", text
    metrics = metrics_in(tmp_path / "m.prom")
    assert value(metrics, "scrapy_gdpr_retention_expired_records") == 1  # held, until the next purge
    assert value(metrics, "scrapy_gdpr_retention_overdue_seconds") == 0


@coroutine_test
async def test_retention_grace_allows_a_purge_run_by_cron(tmp_path, site, caplog):
    """With the purge at open off and gdpr-purge run daily, the grace covers the day in between."""
    policy = policy_for(tmp_path, site, ["127.0.0.1"])
    old_record(tmp_path, days=2)
    settings = monitored(tmp_path, policy, GDPR_PURGE_ON_OPEN=False, GDPR_MONITOR_RETENTION_GRACE=3 * 86400)
    _, results, text = await run(settings, caplog, urls=[site.url("/page.html")])
    assert results["retention"] == "OK", text
    settings["GDPR_MONITOR_RETENTION_GRACE"] = 86400
    _, results, text = await run(settings, caplog, urls=[site.url("/page.html")])
    assert results["retention"] == "FAIL", text
    assert "(grace 86400 s)" in text


@coroutine_test
async def test_an_unreadable_ledger_fails_the_retention_monitor(tmp_path, site, caplog):
    policy = policy_for(tmp_path, site, ["127.0.0.1"])
    settings = monitored(tmp_path, policy, GDPR_METRICS_TEXTFILE=str(tmp_path / "m.prom"),
                         SPIDERMON_SPIDER_CLOSE_MONITORS=(), SPIDERMON_ENGINE_STOP_MONITORS=(SUITE,))
    crawler = get_crawler(PagesSpider, settings)

    def corrupt() -> None:
        # new files in place of the ledger's (the crawl's own connection keeps the old ones)
        for path in tmp_path.glob("ledger.sqlite3-*"):
            path.unlink()
        (tmp_path / "garbage").write_bytes(b"not a database" * 100)
        (tmp_path / "garbage").replace(tmp_path / "ledger.sqlite3")

    from scrapy import signals

    # after the spider closed (the crawl's own ledger writes are done), before the
    # monitors run at engine stop and the metrics are written
    crawler.signals.connect(corrupt, signal=signals.spider_closed)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        await crawler.crawl_async(urls=[site.url("/page.html")])
    text = "\n".join(r.getMessage() for r in caplog.records if r.getMessage().startswith("[Spidermon]"))
    assert "GDPR: retention/no expired record is held past GDPR_MONITOR_RETENTION_GRACE... FAIL" in text
    assert "the ledger could not be read" in text
    metrics = metrics_in(tmp_path / "m.prom")
    assert value(metrics, "scrapy_gdpr_retention_ledger_readable") == 0
    assert not [k for k in metrics if k[0] == "scrapy_gdpr_retention_overdue_seconds"]

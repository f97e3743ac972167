"""A worker of a shared crawl builds its face detectors before it takes work from the
shared queue (real Redis), so that no worker takes in pages it cannot yet check while
the others are ready, and no worker pays its detector's start-up mid-crawl."""

from __future__ import annotations

import threading
import time

import pytest
from scrapy import Request, Spider
from scrapy.utils.test import get_crawler

from scrapy_gdpr.faces.detector import build_detector
from scrapy_gdpr.runtime import get_runtime
from tests.utils import (
    REDIS_URL,
    addon_settings,
    coroutine_test,
    install_face_pool,
    redis_prefix,  # noqa: F401 - the fixture `prefix` of these tests
    write_policy,
)

pytestmark = pytest.mark.requires_redis


class PageSpider(Spider):
    name = "pages"

    def __init__(self, urls=(), **kw):
        super().__init__(**kw)
        self.urls = list(urls)
        self.fetched: list[tuple[str, float]] = []

    async def start(self):
        for url in self.urls:
            yield Request(url)

    def parse(self, response):
        self.fetched.append((response.url, time.monotonic()))
        yield {"url": response.url}


def shared_settings(tmp_path, policy, prefix, **extra):
    return addon_settings(
        tmp_path, policy,
        GDPR_STATE_URL=REDIS_URL,
        GDPR_STATE_PREFIX=prefix,
        SCHEDULER_QUEUE_KEY=prefix + ":%(spider)s:requests",
        SCHEDULER_DUPEFILTER_KEY=prefix + ":%(spider)s:dupefilter",
        SCHEDULER_PERSIST=False,
        IMAGES_STORE=str(tmp_path / "images"),
        TELNETCONSOLE_ENABLED=False,
        **{"GDPR_FACE_WORKERS": 2, **extra},
    )


@coroutine_test
async def test_a_shared_worker_takes_nothing_until_its_face_pool_has_its_detectors(
        tmp_path, logged_mockserver, prefix):
    server = logged_mockserver
    policy = write_policy(tmp_path / "policy.yaml", server, ["127.0.0.1"])
    built: list[tuple[str, float]] = []
    lock = threading.Lock()

    def slow_factory(sensitivity, min_confidence):
        time.sleep(0.8)  # a detector that takes a while to load its models
        detector = build_detector(sensitivity, min_confidence)
        with lock:
            built.append((threading.current_thread().name, time.monotonic()))
        return detector

    crawler = get_crawler(PageSpider, shared_settings(tmp_path, policy, prefix))
    pool = install_face_pool(crawler, detector_factory=slow_factory)
    await crawler.crawl_async(urls=[server.url("/page.html"), server.url("/other.html")])

    # no image was ever checked, yet both face threads built their detector, one each,
    # before this worker took its first request from the shared queue
    assert len(built) == 2, built
    assert {name for name, _ in built} == {"gdpr-faces_0", "gdpr-faces_1"}
    assert crawler.spider.fetched, crawler.stats.get_stats()
    first_page = min(at for _, at in crawler.spider.fetched)
    assert max(at for _, at in built) <= first_page
    assert pool.ready
    assert crawler.stats.get_value("scheduler/dequeued/redis") == 2
    assert get_runtime(crawler).face_pool is None  # shut down at close as ever


@coroutine_test
async def test_a_detector_that_cannot_be_built_does_not_stall_a_shared_worker(
        tmp_path, logged_mockserver, prefix, caplog):
    server = logged_mockserver
    policy = write_policy(tmp_path / "policy.yaml", server, ["127.0.0.1"])

    def broken(sensitivity, min_confidence):
        raise RuntimeError("model file missing")

    crawler = get_crawler(PageSpider, shared_settings(tmp_path, policy, prefix, GDPR_FACE_WORKERS=1))
    install_face_pool(crawler, detector_factory=broken)
    await crawler.crawl_async(urls=[server.url("/page.html")])
    # the pages are still crawled (no image is stored unchecked: each would be refused)
    assert [url for url, _ in crawler.spider.fetched] == [server.url("/page.html")]
    assert "The face detector could not be built" in caplog.text


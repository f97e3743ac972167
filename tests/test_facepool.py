"""The face pool: worker threads, one detector per thread, back-pressure, and a
reactor that stays responsive while a batch of images is processed."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from io import BytesIO

import cv2
import pytest
from PIL import Image
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from scrapy_gdpr.config import GdprConfig
from scrapy_gdpr.faces.detector import library_threads_per_worker
from scrapy_gdpr.runtime import get_runtime
from tests.conftest import MockServer
from tests.gallery import HOST, SITE, GallerySpider, Outcome, settings, stored_files
from tests.utils import coroutine_test, install_face_pool


class RecordingDetector:
    """Wraps the real detector and records where and how concurrently it runs."""

    lock = threading.Lock()
    threads: set[str] = set()
    thread_ids: set[int] = set()
    built: list[str] = []
    cv_threads: set[int] = set()
    onnx_threads: set[int] = set()
    running = 0
    max_running = 0

    def __init__(self, inner, delay: float = 0.0) -> None:
        self.inner = inner
        self.delay = delay
        self.name, self.version, self.runtime = inner.name, inner.version, inner.runtime
        session = inner._centerface._session
        if session is not None:
            type(self).onnx_threads.add(session.get_session_options().intra_op_num_threads)

    def detect(self, image):
        cls = type(self)
        with cls.lock:
            cls.threads.add(threading.current_thread().name)
            cls.thread_ids.add(threading.get_ident())
            cls.cv_threads.add(cv2.getNumThreads())
            cls.running += 1
            cls.max_running = max(cls.max_running, cls.running)
        try:
            if self.delay:
                time.sleep(self.delay)
            return self.inner.detect(image)
        finally:
            with cls.lock:
                cls.running -= 1


@pytest.fixture
def recording():
    """RecordingDetector, reset; ``RecordingDetector.factory`` is the detector factory to give the pool."""
    from scrapy_gdpr.faces.detector import build_detector as real

    RecordingDetector.threads = set()
    RecordingDetector.thread_ids = set()
    RecordingDetector.built = []
    RecordingDetector.cv_threads = set()
    RecordingDetector.onnx_threads = set()
    RecordingDetector.running = RecordingDetector.max_running = 0

    def build(*args, **kwargs):
        RecordingDetector.built.append(threading.current_thread().name)
        return RecordingDetector(real(*args, **kwargs), delay=0.02)

    RecordingDetector.factory = staticmethod(build)
    return RecordingDetector


def test_library_threads_share_out_the_cores():
    assert library_threads_per_worker(2, 2) == 1
    assert library_threads_per_worker(1, 2) == 2
    assert library_threads_per_worker(4, 2) == 1
    assert library_threads_per_worker(2, 8) == 4
    assert library_threads_per_worker(0, 2) == 2
    assert 1 <= library_threads_per_worker(1) == len(os.sched_getaffinity(0))


def test_pool_sizing_defaults():
    cfg = GdprConfig.from_settings(Settings())
    assert cfg.face_workers == len(os.sched_getaffinity(0))
    assert cfg.face_queue == 2 * cfg.face_workers
    cfg = GdprConfig.from_settings(Settings({"GDPR_FACE_WORKERS": 3, "GDPR_FACE_QUEUE": 5}))
    assert (cfg.face_workers, cfg.face_queue) == (3, 5)
    with pytest.raises(ValueError, match="positive"):
        GdprConfig.from_settings(Settings({"GDPR_FACE_WORKERS": -1}))


@coroutine_test
async def test_workers_named_gdpr_faces_one_detector_each_and_bounded(tmp_path, mockserver, recording):
    urls = [f"/astronaut-gps.jpg?n={n}" for n in range(24)]

    def make(response):
        yield {"image_urls": [response.urljoin(u) for u in urls], "images": []}

    crawler = get_crawler(
        GallerySpider, settings(tmp_path, GDPR_FACE_WORKERS=2, GDPR_FACE_QUEUE=3, CONCURRENT_REQUESTS=32)
    )
    install_face_pool(crawler, detector_factory=recording.factory)
    outcome = Outcome(crawler)
    await crawler.crawl_async(url=mockserver.url("/index.html", host=HOST), make_items=make)
    (item,) = outcome.scraped
    assert len(item["images"]) == 24

    assert recording.threads and all(n.startswith("gdpr-faces") for n in recording.threads)
    assert threading.main_thread().ident not in recording.thread_ids  # the reactor never ran detection
    assert threading.get_ident() not in recording.thread_ids
    assert len(recording.built) == len(recording.threads) <= 2  # one detector per worker thread
    assert all(n.startswith("gdpr-faces") for n in recording.built)
    assert recording.max_running <= 2

    section = get_runtime(crawler).report_sections["faces"]
    assert section["workers"] == 2 and section["queue"] == 3
    # OpenCV and ONNX Runtime ran with the cores shared out between the two
    # workers (1 each on 2 cores)
    threads = library_threads_per_worker(2)
    assert section["library_threads"] == threads
    assert recording.cv_threads == {threads}
    assert section["runtime"] == "onnxruntime"
    assert recording.onnx_threads == {threads}
    assert section["max_in_flight"] == 3  # the bound was reached and respected
    assert section["images_redacted"] == 24
    # the seconds the two threads spent on the face stage: at least the detector's
    # 20 ms per image, at most the two threads busy the whole crawl
    busy = crawler.stats.get_value("gdpr/faces/busy_seconds")
    elapsed = crawler.stats.get_value("elapsed_time_seconds") or 1e9
    assert 24 * 0.02 <= busy <= 2 * elapsed, (busy, elapsed)


@coroutine_test
async def test_pool_is_shut_down_at_close(tmp_path, mockserver):
    def make(response):
        yield {"image_urls": [response.urljoin("/coffee.jpg")], "images": []}

    crawler = get_crawler(GallerySpider, settings(tmp_path))
    await crawler.crawl_async(url=mockserver.url("/index.html", host=HOST), make_items=make)
    assert get_runtime(crawler).face_pool is None
    assert not [t for t in threading.enumerate() if t.name.startswith("gdpr-faces")]


@coroutine_test
async def test_detector_failure_fails_closed(tmp_path, mockserver):
    class Broken:
        name, version = "broken", "0"

        def detect(self, image):
            raise RuntimeError("model file missing")

    def make(response):
        yield {"image_urls": [response.urljoin("/astronaut-gps.jpg"), response.urljoin("/coffee.jpg")], "images": []}

    crawler = get_crawler(GallerySpider, settings(tmp_path))
    install_face_pool(crawler, detector_factory=lambda *a, **k: Broken())
    outcome = Outcome(crawler)
    await crawler.crawl_async(url=mockserver.url("/index.html", host=HOST), make_items=make)
    (item,) = outcome.scraped
    assert item["images"] == []
    assert stored_files(tmp_path / "images") == {}
    assert all(r["stored"] is False for r in outcome.records(item))
    assert crawler.stats.get_value("gdpr/images/dropped") == 2


@pytest.mark.slow
@coroutine_test
async def test_reactor_stays_responsive_during_a_batch(tmp_path):
    # A batch of large photos: each takes a worker a noticeable time.
    site = tmp_path / "site"
    (site / "default").mkdir(parents=True)
    (site / "default" / "index.html").write_text("<html><body>batch</body></html>")
    big = Image.open(SITE / "astronaut-gps.jpg").convert("RGB").resize((1024, 1024), Image.Resampling.BILINEAR)
    buf = BytesIO()
    big.save(buf, "JPEG", quality=90)
    (site / "default" / "big.jpg").write_bytes(buf.getvalue())

    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.02)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    with MockServer(site=site) as server:
        urls = [server.url(f"/big.jpg?n={n}") for n in range(20)]

        def make(response):
            yield {"image_urls": urls, "images": []}

        crawler = get_crawler(  # valid.yaml lists 127.0.0.1
            GallerySpider, settings(tmp_path, GDPR_FACE_WORKERS=2, IMAGES_THUMBS={"small": (200, 200)})
        )
        outcome = Outcome(crawler)
        task = asyncio.ensure_future(ticker())
        started = time.perf_counter()
        await crawler.crawl_async(url=server.url("/index.html"), make_items=make)
        elapsed = time.perf_counter() - started
        stop.set()
        await task

    (item,) = outcome.scraped
    assert len(item["images"]) == 20
    max_gap = max(gaps)
    print(f"batch of 20 1024x1024 images: {elapsed:.2f} s, longest reactor gap {max_gap * 1000:.0f} ms")
    assert max_gap < 1.0
    assert elapsed > max_gap * 2

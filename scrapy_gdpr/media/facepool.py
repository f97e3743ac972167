"""The crawl's face stage: a bounded pool of worker threads, one detector each.

Detection, redaction, decoding and re-encoding are CPU work. They run in a
dedicated :class:`~concurrent.futures.ThreadPoolExecutor` (threads named
``gdpr-faces_N``), never on the reactor thread, and are awaited with
:func:`asyncio.wrap_future`. MediaPipe and OpenCV release the GIL for most of
their work, so threads scale with the cores; a process pool would only add the
cost of pickling every image.

Each thread builds its own detector on first use (``threading.local``): detector
objects are costly to build and not safe to share between threads. The pool
sets OpenCV's thread count to the cores shared out among the workers (one
each by default, :func:`~scrapy_gdpr.faces.detector.configure_library_threads`),
so that the workers do not each fan out over every core.

Back-pressure: at most ``GDPR_FACE_QUEUE`` images hold a slot (:meth:`FacePool.slot`)
at a time, so at most that many images are decoded in memory, while the crawl
keeps downloading pages. Images beyond the limit wait, still compressed, for a
slot.

One pool serves every face-stage pipeline of a crawler (:func:`acquire_pool`);
the last pipeline to close shuts it down.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from scrapy_gdpr.faces.threads import ThreadDetectors

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from scrapy_gdpr.faces.detector import FaceDetector
    from scrapy_gdpr.faces.stage import Verdict
    from scrapy_gdpr.runtime import GdprRuntime

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

THREAD_NAME_PREFIX = "gdpr-faces"
#: Report section name in ``runtime.report_sections``.
REPORT_SECTION = "faces"

#: Builds one detector: ``(sensitivity, min_confidence) -> FaceDetector``.
DetectorFactory = Callable[[str, "float | None"], "FaceDetector"]
#: Runs the face stage on one image: :func:`scrapy_gdpr.faces.stage.process_image`.
Stage = Callable[..., "Verdict"]


def _default_detector_factory() -> DetectorFactory:
    # The face stage (numpy, OpenCV, MediaPipe) is imported when a pool is first
    # used, not when the add-on loads the pipeline classes: a crawl that stores no
    # images never pays for it.
    from scrapy_gdpr.faces.detector import build_detector

    return build_detector


def _default_stage() -> Stage:
    from scrapy_gdpr.faces.stage import process_image

    return process_image


def _safe_record(record: dict[str, Any]) -> dict[str, Any]:
    """Only scalar values: never boxes, landmarks or other biometric data."""
    return {k: v for k, v in record.items() if isinstance(v, (str, int, float, bool)) or v is None}


class FacePool:
    """Runs the face stage for one crawl in a bounded pool of worker threads.

    ``detector_factory`` builds each worker's detector and ``stage`` runs the face
    stage on one image; they default to
    :func:`~scrapy_gdpr.faces.detector.build_detector` and
    :func:`~scrapy_gdpr.faces.stage.process_image`, imported on first use. Whatever
    they are, the pool fails closed: an exception from either, or a stored verdict
    without data, means the image is not stored.
    """

    def __init__(
        self,
        runtime: GdprRuntime,
        *,
        detector_factory: DetectorFactory | None = None,
        stage: Stage | None = None,
    ) -> None:
        self.runtime = runtime
        self._detector_factory = detector_factory
        self._stage = stage
        self.crawler = runtime.crawler
        self.face_policy = runtime.policy.faces
        self.workers: int = runtime.config.face_workers
        self.queue: int = runtime.config.face_queue
        # One library thread per worker (cores shared out): OpenCV's DNN would
        # otherwise fan every worker's layers out over all cores, and N workers
        # would fight over the same cores with N x cores threads.
        # (Set when the pool is first used, so a crawl that checks no image never
        # imports the face stage.)
        self.library_threads: int | None = None
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=THREAD_NAME_PREFIX)
        self._detectors: ThreadDetectors | None = None
        self._slots = asyncio.Semaphore(self.queue)
        self._lock = threading.Lock()
        self._users = 0
        self._closed = False
        #: Images waiting for a slot (all ``GDPR_FACE_QUEUE`` taken): the face stage is
        #: the bottleneck (a worker of a shared crawl then takes no more requests).
        self.waiting = 0
        #: Items in the media pipelines (their files downloading, waiting for a slot or
        #: in the face stage).
        self.items = 0
        #: Images holding a slot now, and the most there ever were.
        self.in_flight = 0
        self.max_in_flight = 0
        #: Names of the threads that ran the detector (for the tests and the log).
        self.detector_threads: set[str] = set()
        #: Seconds the pool's threads spent on the face stage (stat ``gdpr/faces/busy_seconds``).
        self.busy_seconds = 0.0
        self._dropped_by_reason: dict[str, int] = defaultdict(int)
        self._items_dropped_by_reason: dict[str, int] = defaultdict(int)
        self.section: dict[str, Any] = {
            "action": self.face_policy.action,
            "margin": self.face_policy.margin,
            "sensitivity": self.face_policy.sensitivity,
            "max_pixels": self.face_policy.max_pixels,
            "allow_unchecked_types": list(self.face_policy.allow_unchecked_types),
            "workers": self.workers,
            "library_threads": self.library_threads,
            "queue": self.queue,
            "images_checked": 0,
            "faces_detected": 0,
            "images_clean": 0,
            "images_redacted": 0,
            "images_dropped": 0,
            "images_dropped_by_reason": {},
            "files_unchecked_stored": 0,
            "items_dropped": 0,
            "items_dropped_by_reason": {},
            "max_in_flight": 0,
        }
        runtime.report_sections[REPORT_SECTION] = self.section

    # -- lifetime -----------------------------------------------------------------
    def acquire(self) -> None:
        with self._lock:
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            last = self._users <= 0
        if last:
            self.shutdown()

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Every item has left the pipelines when close_spider runs: nothing is queued.
        self._executor.shutdown(wait=True, cancel_futures=True)
        stats = getattr(self.crawler, "stats", None)
        if stats is not None and self.busy_seconds:
            stats.set_value("gdpr/faces/busy_seconds", round(self.busy_seconds, 3))
        if self.runtime.face_pool is self:
            self.runtime.face_pool = None
        logger.debug(
            "Face pool shut down: %(workers)d workers, at most %(max)d images in flight",
            {"workers": self.workers, "max": self.max_in_flight},
        )

    # -- running work -------------------------------------------------------------
    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``GDPR_FACE_QUEUE`` in-flight places while an image is worked on."""
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        try:
            self.in_flight += 1
            if self.in_flight > self.max_in_flight:
                self.max_in_flight = self.section["max_in_flight"] = self.in_flight
            try:
                yield
            finally:
                self.in_flight -= 1
        finally:
            self._slots.release()

    async def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn(*args)`` in a worker thread and await its result."""
        if self._closed:
            raise RuntimeError("the face pool is shut down")
        if self.library_threads is None:
            from scrapy_gdpr.faces.detector import configure_library_threads

            self.library_threads = configure_library_threads(self.workers)
            self.section["library_threads"] = self.library_threads
        return await asyncio.wrap_future(self._executor.submit(fn, *args))

    async def check(self, data: bytes, *, mime: str | None = None) -> Verdict:
        """Run the face stage on ``data`` in a worker; takes a slot for its duration."""
        async with self.slot():
            return await self.call(self.run_stage, data, mime)

    # -- in the worker thread -----------------------------------------------------
    def _detector(self) -> FaceDetector:
        if self._detectors is None:
            self._detectors = ThreadDetectors(self._detector_factory or _default_detector_factory())
        detector, built = self._detectors.get(self.face_policy.sensitivity, self.face_policy.min_confidence)
        if built:
            runtime = getattr(detector, "runtime", None)
            if runtime:
                self.section["runtime"] = runtime
        return detector

    def run_stage(self, data: bytes, mime: str | None = None, output: str = "auto") -> Verdict:
        """The face stage on one image, in the calling (worker) thread. Never raises:
        any failure is a verdict that the image is not stored (fail closed).
        ``output`` as for :func:`~scrapy_gdpr.faces.stage.process_image`."""
        started = time.perf_counter()
        try:
            return self._run_stage(data, mime, output)
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self.busy_seconds += elapsed

    def _run_stage(self, data: bytes, mime: str | None, output: str) -> Verdict:
        from scrapy_gdpr.faces.stage import Verdict

        try:
            detector = self._detector()
            self.detector_threads.add(threading.current_thread().name)
            if self._stage is None:
                self._stage = _default_stage()
            verdict = self._stage(
                data,
                action=self._action(),
                margin=self.face_policy.margin,
                detector=detector,
                max_pixels=self.face_policy.max_pixels,
                face_policy=self.face_policy,
                mime=mime,
                output=output,
            )
        except Exception as exc:  # fail closed: nothing unchecked is stored
            logger.exception("Face stage failed; the image is not stored")
            return Verdict(False, reason="stage_error", record={"error": type(exc).__name__})
        if verdict.stored and not verdict.data and verdict.pixels is None:
            return Verdict(False, reason="stage_error", faces=verdict.faces, record={"error": "no output"})
        return verdict

    def _action(self) -> str:
        # The policy's action as it is: keep without an Art. 9 condition is refused by
        # the stage (policy.model.keep_refused), never turned into another action.
        return self.face_policy.action

    # -- accounting ---------------------------------------------------------------
    def record(self, verdict: Verdict, **extra: Any) -> dict[str, Any]:
        """What the item may record about one image: no coordinates, no biometrics."""
        rec: dict[str, Any] = {
            **extra,
            "stored": verdict.stored,
            "faces": verdict.faces,
            "action": verdict.action or ("none" if not verdict.faces else self.face_policy.action),
        }
        if verdict.stored:
            rec["mime"] = verdict.mime
        else:
            rec["reason"] = verdict.reason
        for key, value in _safe_record(verdict.record).items():
            rec.setdefault(key, value)
        return rec

    def count_checked(self, verdict: Verdict) -> None:
        stats = self.crawler.stats
        self.section["images_checked"] += 1
        if verdict.faces:
            stats.inc_value("gdpr/faces/detected", verdict.faces)
            self.section["faces_detected"] += verdict.faces

    def count_stored(self, verdict: Verdict) -> None:
        outcome = "redacted" if verdict.faces else "clean"
        self.crawler.stats.inc_value(f"gdpr/images/{outcome}")
        self.section[f"images_{outcome}"] += 1

    def count_dropped(self, reason: str) -> None:
        stats = self.crawler.stats
        reason = _stat_suffix(reason)
        stats.inc_value("gdpr/images/dropped")
        stats.inc_value(f"gdpr/images/dropped/{reason}")
        self.section["images_dropped"] += 1
        self._dropped_by_reason[reason] += 1
        self.section["images_dropped_by_reason"] = dict(self._dropped_by_reason)

    def count_unchecked_stored(self) -> None:
        self.crawler.stats.inc_value("gdpr/files/unchecked")
        self.section["files_unchecked_stored"] += 1

    def count_item_dropped(self, reason: str) -> None:
        reason = _stat_suffix(reason)
        self.section["items_dropped"] += 1
        self._items_dropped_by_reason[reason] += 1
        self.section["items_dropped_by_reason"] = dict(self._items_dropped_by_reason)


def _stat_suffix(reason: str) -> str:
    out = "".join(c if c.isalnum() or c in "_-" else "_" for c in (reason or "unknown").lower())
    return out or "unknown"


def install_pool(runtime: GdprRuntime, pool: FacePool) -> FacePool:
    """Make ``pool`` the crawl's face pool, before the pipelines acquire it (a pool
    built with another detector factory or stage, e.g. in an evaluation)."""
    current = runtime.face_pool
    if current is not None and not current._closed and current is not pool:
        raise RuntimeError("the crawl already has a face pool in use")
    runtime.face_pool = pool
    return pool


def acquire_pool(runtime: GdprRuntime) -> FacePool:
    """The crawler's face pool, created on first use; call :meth:`FacePool.release` when done."""
    pool = runtime.face_pool
    if pool is None or pool._closed:
        pool = runtime.face_pool = FacePool(runtime)
    pool.acquire()
    return pool

"""One face detector per thread: detectors hold native state (ONNX Runtime sessions,
OpenCV networks) that is not shared between threads, and building one costs far more
than a detection. The face stage (its default detector) and the crawl's worker pool
(its detector factory) both keep theirs here."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from scrapy_gdpr.faces.detector import FaceDetector



class ThreadDetectors:
    """Detectors made by ``factory``, one per thread and (sensitivity, min_confidence)."""

    def __init__(self, factory: Callable[[str, float | None], FaceDetector]) -> None:
        self.factory = factory
        self._local = threading.local()

    def get(self, sensitivity: str, min_confidence: float | None) -> tuple[FaceDetector, bool]:
        """This thread's detector, and whether it was built by this call."""
        cache: dict[tuple[str, float | None], FaceDetector] | None = getattr(self._local, "detectors", None)
        if cache is None:
            cache = self._local.detectors = {}
        key = (sensitivity, min_confidence)
        detector = cache.get(key)
        if detector is not None:
            return detector, False
        detector = cache[key] = self.factory(sensitivity, min_confidence)
        return detector, True

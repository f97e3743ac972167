"""Helpers for the face-stage tests: a test policy, settings, a gallery spider.

The face-stage pipelines are enabled on their own (plus ProvenanceMiddleware),
without the add-on, so that these tests do not depend on the request gates
(domains, terms, robots) that are tested elsewhere.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scrapy import Request, Spider, signals

from scrapy_gdpr.faces.detector import build_detector
from scrapy_gdpr.provenance import provenance_of
from tests.utils import GALLERY_HOST
from tests.utils import faces_policy as write_policy

HOST = GALLERY_HOST
SITE = Path(__file__).resolve().parent / "site" / "hosts" / "gallery-people"

IMAGES = "scrapy_gdpr.images.GdprImagesPipeline"
FILES = "scrapy_gdpr.images.GdprFilesPipeline"
BYTES = "scrapy_gdpr.images.ImageBytesPipeline"
PROVENANCE = "scrapy_gdpr.provenance.ProvenanceMiddleware"


def settings(tmp_path: Path, pipelines: tuple[str, ...] = (IMAGES,), policy: Path | None = None, **extra: Any) -> dict[str, Any]:
    order = {IMAGES: 20, FILES: 30, BYTES: 40}
    return {
        "GDPR_POLICY": str(policy or write_policy(tmp_path)),
        "GDPR_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "GDPR_REPORT_DIR": None,
        "ITEM_PIPELINES": {p: order[p] for p in pipelines},
        "SPIDER_MIDDLEWARES": {PROVENANCE: 950},
        "IMAGES_STORE": str(tmp_path / "images"),
        "FILES_STORE": str(tmp_path / "files"),
        "LOG_LEVEL": "INFO",
        **extra,
    }


class GallerySpider(Spider):
    """Fetches one page and yields the items ``make_items(response)`` builds."""

    name = "gallery"

    def __init__(self, url: str = "", make_items: Any = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.url = url
        self.make_items = make_items

    async def start(self):  # type: ignore[no-untyped-def]
        yield Request(self.url)

    def parse(self, response):  # type: ignore[no-untyped-def]
        yield from self.make_items(response)


class Outcome:
    """Items scraped and dropped in a crawl, with their face-stage notes."""

    def __init__(self, crawler: Any) -> None:
        self.crawler = crawler
        self.scraped: list[Any] = []
        self.dropped: list[tuple[Any, Exception]] = []
        self.notes: dict[int, list[dict[str, Any]]] = {}
        crawler.signals.connect(self._scraped, signal=signals.item_scraped)
        crawler.signals.connect(self._dropped, signal=signals.item_dropped)

    def _keep_notes(self, item: Any) -> None:
        prov = provenance_of(self.crawler, item)
        self.notes[id(item)] = list(prov.notes.get("faces", [])) if prov is not None else []

    def _scraped(self, item: Any, **kw: Any) -> None:
        self._keep_notes(item)
        self.scraped.append(item)

    def _dropped(self, item: Any, exception: Exception, **kw: Any) -> None:
        self._keep_notes(item)
        self.dropped.append((item, exception))

    def records(self, item: Any) -> list[dict[str, Any]]:
        return self.notes[id(item)]


@functools.cache
def _second_detector() -> Any:
    import mediapipe as mp

    return mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5)


@functools.cache
def _strict_detector() -> Any:
    return build_detector("strict")


def detect(data: bytes) -> list[tuple[int, int, int, int]]:
    """Face boxes a second, independent detector (MediaPipe full range, confidence
    0.5) finds in encoded image bytes: a redacted face must not be found by it."""
    img = decode(data)
    h, w = img.shape[:2]
    result = _second_detector().process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    out = []
    for d in result.detections or []:
        b = d.location_data.relative_bounding_box
        out.append((int(b.xmin * w), int(b.ymin * h), int(b.width * w), int(b.height * h)))
    return out


def leaked(original: bytes, stored: bytes) -> list[tuple[int, int, int, int]]:
    """Faces of ``original`` that ``stored`` still shows, by the leak rule of the face
    benchmarks: the box is nearly unmodified (SSIM >= 0.8), or the stage's own strict
    detector finds the face again (IoU >= 0.5) and the box still looks like the
    original (SSIM >= 0.5). (At a low threshold the strict detector also "finds" the
    blurred head shape, so being found alone is not a leak.)"""
    from scrapy_gdpr.faces import leak

    strict = _strict_detector()
    orig, out = decode(original), decode(stored)
    assert orig.shape == out.shape
    faces = [[d.x, d.y, d.w, d.h] for d in strict.detect(orig)]
    assert faces, "the strict detector finds no face in the original"
    return [tuple(int(v) for v in face) for face in leak.leaked(orig, out, faces, strict.detect(out))]


def decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def box_difference(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Mean absolute pixel difference of two same-size images inside ``box``."""
    x, y, w, h = box
    pa = a[y : y + h, x : x + w].astype(np.int16)
    pb = b[y : y + h, x : x + w].astype(np.int16)
    return float(np.abs(pa - pb).mean())


def stored_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def assert_no_metadata(data: bytes) -> None:
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(data)) as im:
        assert not im.getexif(), "EXIF left in a stored image"
        assert "exif" not in im.info
        assert "comment" not in im.info
        assert "icc_profile" not in im.info
        assert "xmp" not in im.info
    assert b"Exif\x00\x00" not in data
    assert b"Jane Photographer" not in data
    assert b"1 Example Street" not in data

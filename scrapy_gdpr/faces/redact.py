"""Redaction of face boxes: blur, pixelate, fill (provisional; see the face stage work)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from scrapy_gdpr.faces.detector import Detection

ACTIONS = ("blur", "pixelate", "fill")


def redact(image_bgr: np.ndarray, detections: Sequence[Detection], action: str, margin: float) -> np.ndarray:
    """Return a copy of ``image_bgr`` with every box (grown by ``margin``) redacted."""
    if action not in ACTIONS:
        raise ValueError(f"unknown redaction {action!r}")
    out = image_bgr.copy()
    h, w = out.shape[:2]
    for d in detections:
        x0, y0 = max(0, int(d.x - margin * d.w)), max(0, int(d.y - margin * d.h))
        x1, y1 = min(w, int(d.x + d.w * (1 + margin)) + 1), min(h, int(d.y + d.h * (1 + margin)) + 1)
        roi = out[y0:y1, x0:x1]
        if not roi.size:
            continue
        if action == "fill":
            roi[:] = 0
        elif action == "pixelate":
            small = cv2.resize(roi, (4, 4), interpolation=cv2.INTER_AREA)
            roi[:] = cv2.resize(small, (roi.shape[1], roi.shape[0]), interpolation=cv2.INTER_NEAREST)
        else:
            k = max(3, (max(roi.shape[:2]) // 2) | 1)
            roi[:] = cv2.GaussianBlur(roi, (k, k), 0)
    return out

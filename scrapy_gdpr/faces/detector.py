"""Face detectors behind one interface.

Provisional implementation (MediaPipe full range on the whole image); the face
stage work replaces it with the multi-scale ensemble, keeping this interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Detection:
    """A face box in pixels of the image given to ``detect``, with a score in [0, 1]."""

    x: float
    y: float
    w: float
    h: float
    score: float


class FaceDetector(Protocol):
    """Finds faces. One instance per thread: implementations need not be thread-safe."""

    name: str
    version: str

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Detect faces in an 8-bit BGR image (H x W x 3). Raise on failure."""
        ...


class _MediaPipeFullRange:
    name = "mediapipe-full"
    version = "provisional"

    def __init__(self, min_confidence: float = 0.5) -> None:
        import mediapipe as mp

        self._fd = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_confidence)

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        import cv2

        h, w = image_bgr.shape[:2]
        result = self._fd.process(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        out = []
        for d in result.detections or []:
            b = d.location_data.relative_bounding_box
            out.append(Detection(b.xmin * w, b.ymin * h, b.width * w, b.height * h, float(d.score[0])))
        return out


def build_detector(sensitivity: str = "strict", min_confidence: float | None = None) -> FaceDetector:
    """Build the detector for a policy's ``faces.sensitivity`` and ``faces.min_confidence``."""
    return _MediaPipeFullRange()

"""Overlap of face boxes (x, y, w, h in pixels): one definition for the stage, the detector
and the leak rule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray


class _Box(Protocol):
    @property
    def x(self) -> float: ...
    @property
    def y(self) -> float: ...
    @property
    def w(self) -> float: ...
    @property
    def h(self) -> float: ...


def _xywh(box: _Box | Sequence[float]) -> tuple[float, float, float, float]:
    if isinstance(box, Sequence):
        x, y, w, h = box[:4]
        return float(x), float(y), float(w), float(h)
    return box.x, box.y, box.w, box.h


def iou(a: _Box | Sequence[float], b: _Box | Sequence[float]) -> float:
    """Intersection over union of two boxes (a detection or ``[x, y, w, h]``); 0 for empty boxes."""
    ax, ay, aw, ah = _xywh(a)
    bx, by, bw, bh = _xywh(b)
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def overlaps(a: NDArray[Any], b: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """For every box of ``a`` and every box of ``b`` (rows x, y, w, h): the IoU, and the
    share of the ``a`` box that lies inside the ``b`` box (both ``len(a) x len(b)``)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b))), np.zeros((len(a), len(b)))
    ax1, ay1 = a[:, 0:1], a[:, 1:2]
    ax2, ay2 = ax1 + a[:, 2:3], ay1 + a[:, 3:4]
    bx1, by1 = b[:, 0], b[:, 1]
    bx2, by2 = bx1 + b[:, 2], by1 + b[:, 3]
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None)
    inter = iw * ih
    area_a = a[:, 2:3] * a[:, 3:4]
    area_b = b[:, 2] * b[:, 3]
    union = area_a + area_b - inter
    return inter / np.maximum(union, 1e-9), inter / np.maximum(area_a, 1e-9)

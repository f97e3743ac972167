"""Redaction of face boxes: blur, pixelate, fill.

The strength scales with the face: whatever the face size, what is left holds
only a few samples across it, so it cannot be recognised (light blurs and
fine mosaics can be partly reversed; see docs/face-detection.md).

* ``blur``: the ellipse through the corners of the face box is replaced by a
  copy reduced to about 1 sample across the face and smoothed back up; the
  edge is feathered over ``margin`` (a share of the face size) beyond it, so the
  result does not draw a hard frame. (Cutting the feather at the grown box
  leaves a hard edge that the detector still takes for a face outline: the
  leak of faces of 20 px and more doubled on the development set.)
* ``pixelate``: the grown box becomes a mosaic of 1.5 blocks across the face
  (about 2 across the box with the default margin). With 2 blocks across, the
  mosaic of a face of about 20 px kept enough of its light and shade for the
  detector to find it again (two such faces of the development set).
* ``fill``: the grown box is filled with black.

``pixelate`` and ``fill`` keep within the box grown by ``margin``; the blur's
feathered ellipse reaches a little beyond it, except with ``margin`` 0 (no
feather), which blurs exactly the box.

A box under :data:`SMALL_FACE_HEIGHT` px high is redacted with a margin of at
least :data:`SMALL_FACE_MARGIN` (unless the margin is 0): a small face's box is
coarse (the detector's grid is 4 px), and with the default margin of 0.25 the
outline of the head around a blurred small face, or a neighbour in a crowd that
no box covers, was still found by a detector (see docs/face-detection.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from scrapy_gdpr.faces import SMALL_FACE_HEIGHT, SMALL_FACE_MARGIN

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from scrapy_gdpr.faces.detector import Detection

ACTIONS = ("blur", "pixelate", "fill")

#: Samples left across a face (the box as detected, before the margin). With 2,
#: a blurred face of 20-70 px kept enough light and shade for a detector to find
#: it again with its box still similar (SSIM >= 0.5): 14 of the 49 faces of 20 px
#: and more left recognisable on the dev-wider set had been found and blurred.
BLUR_SAMPLES = 1.0
PIXELATE_BLOCKS = 1.5
FILL_BGR = (0, 0, 0)
#: Pixels per cell of the intermediate image the blur is smoothed on.
MID_PX = 4


def _grown(d: Detection, margin: float, extra: float, w: int, h: int) -> tuple[int, int, int, int]:
    """The box grown by ``margin`` (share of its size, each side) times ``extra``, clipped."""
    cx, cy = d.x + d.w / 2, d.y + d.h / 2
    hw, hh = d.w * (0.5 + margin) * extra, d.h * (0.5 + margin) * extra
    x0, y0 = max(0, int(np.floor(cx - hw))), max(0, int(np.floor(cy - hh)))
    x1, y1 = min(w, int(np.ceil(cx + hw))), min(h, int(np.ceil(cy + hh)))
    return x0, y0, x1, y1


def _coarse(roi: NDArray[Any], cells_x: int, cells_y: int, interpolation: int) -> NDArray[Any]:
    small = cv2.resize(roi, (max(cells_x, 1), max(cells_y, 1)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (roi.shape[1], roi.shape[0]), interpolation=interpolation)


def _blur_one(out: NDArray[Any], d: Detection, margin: float) -> None:
    h, w = out.shape[:2]
    # Fully blurred inside the ellipse through the box's corners (semi-axes
    # sqrt(2) times the half-sides); feathered out to ``margin`` beyond it.
    # With no margin there is no feather: exactly the box is blurred.
    core = np.sqrt(0.5) if margin > 0 else 0.5
    outer = core + margin
    x0, y0, x1, y1 = _grown(d, outer - 0.5, 1.0, w, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    roi = out[y0:y1, x0:x1]
    # cells across the whole region so that about BLUR_SAMPLES fall on the face
    cells_x = int(np.ceil(BLUR_SAMPLES * (x1 - x0) / max(d.w, 1.0)))
    cells_y = int(np.ceil(BLUR_SAMPLES * (y1 - y0) / max(d.h, 1.0)))
    small = cv2.resize(roi, (max(cells_x, 1), max(cells_y, 1)), interpolation=cv2.INTER_AREA)
    # Smooth at a low resolution (MID_PX px per cell), where a Gaussian of half
    # a cell is cheap whatever the face size, then scale up. The kernel is
    # truncated at 2 sigma (a whole cell): crowds have hundreds of small boxes.
    mid = cv2.resize(small, (MID_PX * small.shape[1], MID_PX * small.shape[0]), interpolation=cv2.INTER_LINEAR)
    mid = cv2.GaussianBlur(mid, (2 * MID_PX + 1, 2 * MID_PX + 1), MID_PX / 2)
    blurred = cv2.resize(mid, (roi.shape[1], roi.shape[0]), interpolation=cv2.INTER_LINEAR)
    # The mask is computed at 128 px at most and scaled up: it is smooth anyway.
    rh, rw = roi.shape[:2]
    f = min(1.0, 128.0 / max(rh, rw))
    mh, mw = max(2, round(rh * f)), max(2, round(rw * f))
    cx, cy = (d.x + d.w / 2 - x0) / rw, (d.y + d.h / 2 - y0) / rh
    ys = ((np.arange(mh, dtype=np.float32) + 0.5) / mh - cy) * rh / max(d.h, 1e-3)
    xs = ((np.arange(mw, dtype=np.float32) + 0.5) / mw - cx) * rw / max(d.w, 1e-3)
    r = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    alpha = np.clip((outer - r) / margin, 0.0, 1.0).astype(np.float32) if margin > 0 else np.ones_like(r, np.float32)
    if (mh, mw) != (rh, rw):
        alpha = cv2.resize(alpha, (rw, rh), interpolation=cv2.INTER_LINEAR).astype(np.float32, copy=False)
    roi[:] = cv2.blendLinear(blurred, roi, alpha, 1.0 - alpha)


def _pixelate_one(out: NDArray[Any], d: Detection, margin: float) -> None:
    h, w = out.shape[:2]
    x0, y0, x1, y1 = _grown(d, margin, 1.0, w, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    block = max(2.0, max(d.w, d.h) / PIXELATE_BLOCKS)
    roi = out[y0:y1, x0:x1]
    roi[:] = _coarse(roi, int(np.ceil((x1 - x0) / block)), int(np.ceil((y1 - y0) / block)), cv2.INTER_NEAREST)


def _fill_one(out: NDArray[Any], d: Detection, margin: float) -> None:
    h, w = out.shape[:2]
    x0, y0, x1, y1 = _grown(d, margin, 1.0, w, h)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = FILL_BGR[: out.shape[2]] if out.ndim == 3 else FILL_BGR[0]


_ONE = {"blur": _blur_one, "pixelate": _pixelate_one, "fill": _fill_one}


def redact(image_bgr: NDArray[Any], detections: Sequence[Detection], action: str, margin: float) -> NDArray[Any]:
    """Return a copy of ``image_bgr`` with every box (grown by ``margin`` of its
    width/height on each side; by at least :data:`SMALL_FACE_MARGIN` for a box under
    :data:`SMALL_FACE_HEIGHT` px high, unless ``margin`` is 0) redacted; the input is
    not modified."""
    if action not in ACTIONS:
        raise ValueError(f"unknown redaction {action!r}")
    if margin < 0:
        raise ValueError("margin must not be negative")
    out = image_bgr.copy()
    one = _ONE[action]
    # Larger faces first: a small box inside a large one is redacted again on top.
    for d in sorted(detections, key=lambda d: (-(d.w * d.h), d.y, d.x)):
        if d.w <= 0 or d.h <= 0:
            continue
        if margin and margin < SMALL_FACE_MARGIN and d.h < SMALL_FACE_HEIGHT:
            one(out, d, SMALL_FACE_MARGIN)  # the wider region first, the face's own on top
        one(out, d, margin)
    return out

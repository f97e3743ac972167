from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from scrapy_gdpr.faces import leak
from scrapy_gdpr.faces.detector import Detection, FaceDetector, build_detector
from scrapy_gdpr.faces.redact import ACTIONS, SMALL_FACE_HEIGHT, SMALL_FACE_MARGIN, redact

DATA = Path(__file__).parent / "data" / "faces"


def load(name: str) -> np.ndarray:
    img = cv2.imread(str(DATA / name), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def faces_of(name: str) -> list[list[float]]:
    with (DATA / "annotations.json").open() as f:
        return next(e["faces"] for e in json.load(f)["images"] if e["file"] == name)


def still_found(dets: list[Detection], faces: list[list[float]]) -> list[list[float]]:
    return [f for f in faces if any(leak.iou(d, f) >= 0.3 for d in dets)]


def detail(img: np.ndarray, box: list[float]) -> float:
    """Mean absolute Laplacian (fine detail) inside a box."""
    x, y, w, h = (round(v) for v in box)
    gray = cv2.cvtColor(img[y : y + h, x : x + w], cv2.COLOR_BGR2GRAY)
    return float(np.abs(cv2.Laplacian(gray, cv2.CV_64F)).mean())


@pytest.fixture(scope="module")
def strict() -> FaceDetector:
    return build_detector("strict")


@pytest.fixture(scope="module")
def balanced() -> FaceDetector:
    return build_detector("balanced")


def leaked(orig: np.ndarray, out: np.ndarray, faces: list[list[float]], det: FaceDetector) -> list[list[float]]:
    """Faces still recognisable after redaction (the leak rule of scrapy_gdpr.faces.leak)."""
    return [list(f) for f in leak.leaked(orig, out, faces, det.detect(out))]


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("name", ["skimage_astronaut.png", "skimage_camera.png", "deface_city.jpg"])
def test_redacted_faces_no_longer_found(strict: FaceDetector, balanced: FaceDetector, action: str, name: str) -> None:
    img = load(name)
    faces = faces_of(name)
    dets = strict.detect(img)
    assert len(still_found(dets, faces)) == len(faces)
    out = redact(img, dets, action, 0.25)
    np.testing.assert_array_equal(img, load(name))  # input left alone
    assert leaked(img, out, faces, strict) == []
    assert leaked(img, out, faces, balanced) == []


@pytest.mark.parametrize("action", ACTIONS)
def test_redaction_strength_scales_with_face_size(action: str) -> None:
    img = load("skimage_astronaut.png")
    face = faces_of("skimage_astronaut.png")[0]
    for scale in (0.5, 1.0, 2.0):
        big = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        x, y, w, h = box = [v * scale for v in face]
        out = redact(big, [Detection(*box, score=0.9)], action, 0.25)
        if action == "pixelate":
            # a few blocks across the face, whatever its size
            row = out[int(y + h / 2), int(x) : int(x + w)]
            blocks = 1 + int(np.any(row[1:] != row[:-1], axis=1).sum())
            assert 2 <= blocks <= 5, scale
        else:
            # almost all fine detail of the face is gone, whatever its size
            assert detail(out, box) < 0.25 * detail(big, box), scale
        assert leak.box_ssim(big, out, box) < 0.5


@pytest.mark.parametrize("action", ACTIONS)
def test_only_the_face_region_changes(action: str) -> None:
    img = load("deface_city.jpg")
    d = Detection(300, 200, 40, 50, 0.9)
    out = redact(img, [d], action, 0.25)
    changed = np.any(out != img, axis=2)
    ys, xs = np.nonzero(changed)
    assert changed[225, 320]  # the face centre
    # nothing changes beyond the box grown by the margin (plus the blur's ellipse)
    assert xs.min() >= 300 - 0.25 * 40 - 0.21 * 40 - 1 and xs.max() <= 340 + 0.46 * 40 + 1
    assert ys.min() >= 200 - 0.46 * 50 - 1 and ys.max() <= 250 + 0.46 * 50 + 1
    # with no margin, exactly the box
    changed = np.any(redact(img, [d], action, 0.0) != img, axis=2)
    assert changed[200:250, 300:340].all()
    assert not changed[:, :300].any() and not changed[:, 340:].any()
    assert not changed[:200].any() and not changed[250:].any()


@pytest.mark.parametrize("action", ACTIONS)
def test_a_small_face_is_redacted_over_a_wider_margin(action: str) -> None:
    """A box under SMALL_FACE_HEIGHT px is redacted over at least SMALL_FACE_MARGIN of
    its size around it (its outline and a neighbour no box covers were still found
    with 0.25), with the face itself as strongly redacted as with its own margin; a
    margin of 0 still redacts exactly the box."""
    assert SMALL_FACE_HEIGHT == 40 and SMALL_FACE_MARGIN == 0.5
    img = load("deface_city.jpg")
    x, y, w, h = 300, 200, 24, 30
    small = Detection(x, y, w, h, 0.9)
    out = redact(img, [small], action, 0.25)
    ys, xs = np.nonzero(np.any(out != img, axis=2))
    # beyond the box grown by 0.25 (what a face of 40 px and more gets) on every side,
    # within the box grown by 0.5 (plus the blur's ellipse, sqrt(0.5) - 0.5 more)
    ellipse = np.sqrt(0.5) - 0.5 if action == "blur" else 0.0
    reach, before = 0.5 + ellipse, 0.25 + ellipse + 0.05
    assert xs.min() < x - before * w and xs.max() > x + w + before * w
    assert ys.min() < y - before * h and ys.max() > y + h + before * h
    assert xs.min() >= x - reach * w - 1 and xs.max() <= x + w + reach * w + 1
    assert ys.min() >= y - reach * h - 1 and ys.max() <= y + h + reach * h + 1
    if action != "fill":
        assert leak.box_ssim(img, out, [x, y, w, h]) < 0.15
    # a policy margin over the floor is the policy's
    wide = redact(img, [small], action, 1.0)
    assert np.any(wide != img, axis=2)[:, : int(x - 0.6 * w)].any()
    # no margin: exactly the box, whatever its size
    changed = np.any(redact(img, [small], action, 0.0) != img, axis=2)
    assert changed[y : y + h, x : x + w].all()
    assert not changed[:, :x].any() and not changed[:, x + w :].any()
    assert not changed[:y].any() and not changed[y + h :].any()


def test_edges_empty_and_errors() -> None:
    img = load("skimage_astronaut.png")
    np.testing.assert_array_equal(redact(img, [], "blur", 0.25), img)
    # boxes crossing the border or degenerate are handled
    dets = [Detection(-20, -20, 80, 80, 0.5), Detection(480, 480, 100, 100, 0.5), Detection(10, 10, 0, 0, 0.5)]
    for action in ACTIONS:
        out = redact(img, dets, action, 0.5)
        assert out.shape == img.shape and out.dtype == img.dtype
        assert np.any(out[:40, :40] != img[:40, :40])
    with pytest.raises(ValueError, match="unknown redaction 'smudge'"):
        redact(img, [], "smudge", 0.25)
    with pytest.raises(ValueError, match="margin must not be negative"):
        redact(img, [], "blur", -0.1)


def test_redaction_is_deterministic() -> None:
    img = load("deface_city.jpg")
    dets = [Detection(300, 200, 40, 50, 0.9), Detection(100, 100, 15, 18, 0.4)]
    for action in ACTIONS:
        np.testing.assert_array_equal(redact(img, dets, action, 0.25), redact(img, dets, action, 0.25))


def test_leak_rule_edges() -> None:
    img = load("skimage_astronaut.png")
    face = faces_of("skimage_astronaut.png")[0]
    assert leak.leaked(img, img.copy(), [face], []) == [face]  # unchanged: leaked, found or not
    assert leak.box_ssim(img, img, [5, 5, 1, 1]) == 0.0  # too small to judge
    assert leak.box_ssim(img, img, [-20, -20, 60, 60]) > 0.99  # clipped to the image
    assert leak.iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0 and leak.iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0

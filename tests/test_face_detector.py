from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from scrapy_gdpr.faces import detector as detector_module
from scrapy_gdpr.faces.detector import (
    MODELS,
    MODELS_DIR,
    PROFILES,
    CenterFaceNet,
    Detection,
    EnsembleDetector,
    FaceDetector,
    ModelIntegrityError,
    MtcnnONet,
    build_detector,
    load_model_bytes,
    register_detector,
    registered_detectors,
)

DATA = Path(__file__).parent / "data" / "faces"


def load(name: str) -> np.ndarray:
    img = cv2.imread(str(DATA / name), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def annotations() -> dict[str, dict]:
    with (DATA / "annotations.json").open() as f:
        return {e["file"]: e for e in json.load(f)["images"]}


def iou(a: Detection, box: list[float]) -> float:
    x, y, w, h = box
    iw = max(0.0, min(a.x + a.w, x + w) - max(a.x, x))
    ih = max(0.0, min(a.y + a.h, y + h) - max(a.y, y))
    inter = iw * ih
    return inter / (a.w * a.h + w * h - inter)


def found(dets: list[Detection], faces: list[list[float]], thr: float = 0.5) -> int:
    """Faces matched greedily by a detection at IoU >= thr."""
    left = list(dets)
    n = 0
    for face in faces:
        best = max(left, key=lambda d: iou(d, face), default=None)
        if best is not None and iou(best, face) >= thr:
            left.remove(best)
            n += 1
    return n


@pytest.fixture(scope="module")
def strict() -> FaceDetector:
    return build_detector("strict")


def test_interface(strict: FaceDetector) -> None:
    assert strict.name == "ensemble"
    assert "strict" in strict.version
    dets = strict.detect(load("skimage_astronaut.png"))
    assert dets and all(isinstance(d, Detection) for d in dets)
    assert all(0.0 <= d.score <= 1.0 for d in dets)


def test_finds_portrait(strict: FaceDetector) -> None:
    face = annotations()["skimage_astronaut.png"]["faces"]
    dets = strict.detect(load("skimage_astronaut.png"))
    assert found(dets, face) == 1
    assert len(dets) == 1


def test_finds_small_faces_in_street_photo(strict: FaceDetector) -> None:
    entry = annotations()["deface_city.jpg"]
    dets = strict.detect(load("deface_city.jpg"))
    assert found(dets, entry["faces"]) >= 16  # of 17, 16-48 px high


def test_grayscale_profile(strict: FaceDetector) -> None:
    gray = cv2.imread(str(DATA / "skimage_camera.png"), cv2.IMREAD_UNCHANGED)
    assert gray.ndim == 2
    dets = strict.detect(gray)
    assert found(dets, annotations()["skimage_camera.png"]["faces"]) == 1


@pytest.mark.parametrize("sensitivity", ["strict", "balanced", "fast"])
@pytest.mark.parametrize("name", ["skimage_coffee.png", "skimage_chelsea.png"])
def test_no_face_on_face_free_images(sensitivity: str, name: str, strict: FaceDetector) -> None:
    det = strict if sensitivity == "strict" else build_detector(sensitivity)
    assert det.detect(load(name)) == []


def test_deterministic(strict: FaceDetector) -> None:
    img = load("deface_city.jpg")
    first = strict.detect(img)
    assert strict.detect(img.copy()) == first
    assert build_detector("strict").detect(img) == first


RUNTIMES = ["onnxruntime", "opencv"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_differently_sized_images_in_sequence(runtime: str) -> None:
    """With OpenCV 4.11 a CenterFace net reused across input sizes returned garbage
    from the second size on unless layer fusion is off; a runtime must give the
    same boxes for an image whatever it saw before."""
    city = load("deface_city.jpg")
    astronaut = load("skimage_astronaut.png")
    small = cv2.resize(city, (400, 282), interpolation=cv2.INTER_AREA)
    fresh = {}
    for name, img in (("city", city), ("astronaut", astronaut), ("small", small)):
        fresh[name] = EnsembleDetector("strict", runtime=runtime).detect(img)
        assert fresh[name]
    det = EnsembleDetector("strict", runtime=runtime)
    assert det.runtime == runtime
    for name, img in (("astronaut", astronaut), ("city", city), ("small", small), ("astronaut", astronaut)):
        assert det.detect(img) == fresh[name], name
    net = CenterFaceNet(runtime=runtime)
    raw_city = net.run(city, 1.0, 0.3)
    for role in ("main", "refine"):
        net.run(astronaut, 1.5, 0.3, role)
        np.testing.assert_array_equal(net.run(city, 1.0, 0.3), raw_city)


def test_runtimes_give_the_same_boxes() -> None:
    """ONNX Runtime and OpenCV's DNN module run the same graph: the network's
    outputs agree to float rounding and the detector finds the same faces."""
    ort, ocv = CenterFaceNet(runtime="onnxruntime"), CenterFaceNet(runtime="opencv")
    for name in ("deface_city.jpg", "skimage_astronaut.png", "skimage_chelsea.png"):
        img = load(name)
        blob = cv2.dnn.blobFromImage(cv2.resize(img, (512, 384)), 1.0, (512, 384), (0, 0, 0), swapRB=True)
        for a, b in zip(ort.forward(blob), ocv.forward(blob), strict=False):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=2e-4)
    fast, plain = EnsembleDetector("strict", runtime="onnxruntime"), EnsembleDetector("strict", runtime="opencv")
    for name in ("deface_city.jpg", "skimage_astronaut.png", "skimage_camera.png"):
        a, b = fast.detect_array(load(name)), plain.detect_array(load(name))
        assert len(a) == len(b), name
        np.testing.assert_allclose(a[:, :4], b[:, :4], atol=0.5)
        np.testing.assert_allclose(a[:, 4], b[:, 4], atol=1e-3)


def test_blob_is_opencvs_blob() -> None:
    """CenterFaceNet.blob copies planes instead of calling blobFromImage, for the same values."""
    for name in ("deface_city.jpg", "skimage_astronaut.png"):
        img = load(name)
        for part in (img, img[7:301, 13:411], cv2.flip(img, 1)):
            expected = cv2.dnn.blobFromImage(part, 1.0, part.shape[1::-1], (0, 0, 0), swapRB=True, crop=False)
            blob = CenterFaceNet.blob(part)
            assert blob.dtype == np.float32 and blob.flags.c_contiguous
            np.testing.assert_array_equal(blob, expected)


def test_runtime_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_detector("strict").runtime == "onnxruntime"  # installed with the package
    with pytest.raises(ValueError, match="runtime"):
        CenterFaceNet(runtime="tensorflow")
    monkeypatch.setattr(detector_module, "_onnxruntime", lambda: None)
    assert CenterFaceNet().runtime == "opencv"  # "auto" falls back to OpenCV
    with pytest.raises(RuntimeError, match="onnxruntime"):
        CenterFaceNet(runtime="onnxruntime")


def test_vendored_centerface_has_no_landmark_output() -> None:
    """The landmark head was cut from the vendored graph: no runtime can compute it."""
    import onnxruntime

    session = onnxruntime.InferenceSession(
        load_model_bytes(MODELS_DIR / "centerface.onnx", MODELS["centerface.onnx"]), providers=["CPUExecutionProvider"]
    )
    assert [o.name for o in session.get_outputs()] == CenterFaceNet.OUTPUTS
    assert [o.shape[1] for o in session.get_outputs()] == [1, 2, 2]  # heatmap, box size, offset
    net = cv2.dnn.readNetFromONNX(str(MODELS_DIR / "centerface.onnx"))
    assert sorted(net.getUnconnectedOutLayersNames()) == sorted(CenterFaceNet.OUTPUTS)


def test_model_checksums_match_vendored_files() -> None:
    for name, digest in MODELS.items():
        assert load_model_bytes(MODELS_DIR / name, digest)


def test_corrupted_model_refused(tmp_path: Path) -> None:
    bad = tmp_path / "centerface.onnx"
    shutil.copy(MODELS_DIR / "centerface.onnx", bad)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        CenterFaceNet(bad)
    with pytest.raises(ModelIntegrityError):
        CenterFaceNet(tmp_path / "missing.onnx")


def test_build_refuses_when_checksum_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODELS, "centerface.onnx", "0" * 64)
    with pytest.raises(ModelIntegrityError):
        build_detector("strict")


def test_profiles_and_min_confidence() -> None:
    with pytest.raises(ValueError, match="unknown face sensitivity 'paranoid'"):
        build_detector("paranoid")
    with pytest.raises(ValueError, match="min_confidence must be between 0 and 1"):
        build_detector("strict", 1.5)
    det = build_detector("balanced", 0.6)
    assert isinstance(det, EnsembleDetector)
    assert det.profile.threshold == 0.6
    assert det.version != build_detector("balanced").version
    img = load("deface_city.jpg")
    # a higher threshold never finds more
    assert len(det.detect(img)) <= len(build_detector("balanced").detect(img))


def test_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detector_module, "_REGISTRY", dict(detector_module._REGISTRY))
    assert "ensemble" in registered_detectors()

    class Fixed:
        name = "fixed"
        version = "1"

        def __init__(self, sensitivity: str, min_confidence: float | None) -> None:
            self.args = (sensitivity, min_confidence)

        def detect(self, image_bgr: np.ndarray) -> list[Detection]:
            return [Detection(1, 2, 3, 4, 0.5)]

    register_detector("fixed", Fixed)
    det = build_detector("fast", 0.4, backend="fixed")
    assert isinstance(det, Fixed)
    assert det.args == ("fast", 0.4)
    assert build_detector("fast", backend="fixed") is not det  # one per thread
    with pytest.raises(ValueError, match="'fixed' is already registered"):
        register_detector("fixed", Fixed)
    register_detector("fixed", Fixed, replace=True)
    with pytest.raises(KeyError):
        build_detector(backend="nope")
    assert "fixed" in registered_detectors()


def test_degenerate_images(strict: FaceDetector) -> None:
    assert strict.detect(np.zeros((5, 5, 3), np.uint8)) == []
    assert strict.detect(np.full((300, 400, 3), 127, np.uint8)) == []
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    assert len(strict.detect(noise)) < 20
    bgra = cv2.cvtColor(load("skimage_astronaut.png"), cv2.COLOR_BGR2BGRA)
    assert strict.detect(bgra) == strict.detect(load("skimage_astronaut.png"))
    with pytest.raises(TypeError):
        strict.detect(np.zeros((64, 64, 3), np.float32))


def test_merge_rects_joins_neighbours_only() -> None:
    rects = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [100, 100, 110, 110]], np.float64)
    merged, groups = detector_module._merge_rects(rects, [[1], [2], [3]], slack=0.0)
    # the two touching squares become one rectangle of the same area; the far one stays apart
    assert merged.tolist() == [[0, 0, 20, 10], [100, 100, 110, 110]]
    assert groups == [[1, 2], [3]]
    # with room for the gap, everything is one call
    merged, groups = detector_module._merge_rects(rects, [[1], [2], [3]], slack=20000.0)
    assert merged.tolist() == [[0, 0, 110, 110]] and sorted(groups[0]) == [1, 2, 3]


class CountingNet:
    """Wraps a CenterFace net and records the size of every image it is run on."""

    def __init__(self, inner: CenterFaceNet) -> None:
        self.inner = inner
        self.calls: list[tuple[int, int, float]] = []
        self.roles: list[str] = []

    def run(self, image: np.ndarray, scale: float, threshold: float, role: str = "main") -> np.ndarray:
        # the rotated passes look at a small copy of the whole image, the
        # mirrored pass at a smaller scale than the main pass
        if role not in ("rotated", "flip"):
            self.calls.append((image.shape[0], image.shape[1], scale))
        self.roles.append(role)
        return self.inner.run(image, scale, threshold, role)


def test_small_faces_are_refined_in_windows_only() -> None:
    """The refinement looks again, closer, at windows around small faces only."""
    det = build_detector("strict")
    assert det.profile.refine_height > 0
    net = det._centerface = CountingNet(det._centerface)
    city = load("deface_city.jpg")  # 17 faces of 16-48 px
    h, w = city.shape[:2]
    dets = det.detect(city)
    main_scale = det.main_scale(h, w)
    refine = [c for c in net.calls if c[2] > main_scale * 1.01]
    assert refine, "small faces were not looked at again"
    assert all(c[2] == pytest.approx(main_scale * det.profile.refine_zoom) for c in refine)
    assert sum(c[0] * c[1] for c in refine) < 0.5 * h * w  # windows, not the whole image again
    assert found(dets, annotations()["deface_city.jpg"]["faces"]) >= 16

    # no small face, no refinement: the astronaut's face is large
    net.calls.clear()
    det.detect(load("skimage_astronaut.png"))
    assert len(net.calls) <= 2 and all(c[2] <= det.main_scale(512, 512) for c in net.calls)

    # without refinement the same photo is processed by the main and coarse passes only
    plain = build_detector("strict")
    plain.profile = detector_module.Profile(**{**plain.profile.__dict__, "refine_height": 0.0})
    plain._centerface = CountingNet(plain._centerface)
    plain.detect(city)
    assert len(plain._centerface.calls) <= 2


def test_small_box_the_closer_look_rejects_is_dropped_only_below_refine_keep() -> None:
    """A small box the refinement looks at again and does not confirm is kept
    only if it scored at least ``refine_keep``; one it could not look at (over
    its budget) is always kept."""
    det = build_detector("strict")
    keep = det.profile.refine_keep
    assert keep > det.profile.threshold
    blank = np.full((400, 600, 3), 127, np.uint8)  # nothing for the closer look to find
    seeds = np.array([[100, 100, 12, 14, keep - 0.01], [300, 200, 12, 14, keep + 0.01]], np.float64)
    out = det._refine_small(blank, seeds, 1.0, det.profile.refine_zoom)
    assert out[:, 4].tolist() == [keep + 0.01]
    # nothing looked at: with no budget, both stay (fail safe)
    det.REFINE_BUDGET = 0.0
    out = det._refine_small(blank, seeds, 1.0, det.profile.refine_zoom)
    assert sorted(out[:, 4].tolist()) == [keep - 0.01, keep + 0.01]


# --------------------------------------------------------------------------- second model (MTCNN's O-Net)


def test_vendored_onet_has_only_the_face_output() -> None:
    """The landmark output and the box regression were cut from the vendored
    O-Net: it gives a face probability and nothing else."""
    import onnxruntime

    session = onnxruntime.InferenceSession(
        load_model_bytes(MODELS_DIR / "mtcnn_onet.onnx", MODELS["mtcnn_onet.onnx"]), providers=["CPUExecutionProvider"]
    )
    assert [o.name for o in session.get_outputs()] == [MtcnnONet.OUTPUT]
    assert session.get_outputs()[0].shape[1] == 2
    net = cv2.dnn.readNetFromONNX(str(MODELS_DIR / "mtcnn_onet.onnx"))
    assert list(net.getUnconnectedOutLayersNames()) == [MtcnnONet.OUTPUT]


def onet_boxes() -> tuple[np.ndarray, np.ndarray]:
    """The street photo, its annotated faces, then boxes on things that are not faces."""
    img = load("deface_city.jpg")
    faces = np.asarray(annotations()["deface_city.jpg"]["faces"], np.float64).reshape(-1, 4)
    h, w = img.shape[:2]
    others = np.array([[0, 0, 40, 40], [w - 60, h - 60, 50, 50], [w / 2, h - 40, 30, 30], [10, h / 2, 25, 25]])
    return img, np.vstack([faces, others])


def test_onet_runtimes_agree() -> None:
    img, boxes = onet_boxes()
    a = MtcnnONet(runtime="onnxruntime").score(img, boxes)
    b = MtcnnONet(runtime="opencv").score(img, boxes)
    assert a.shape == (len(boxes),)
    assert np.abs(a - b).max() < 1e-4


def test_onet_tells_faces_from_other_things() -> None:
    """Every annotated face of the street photo (16-48 px), the portrait and the
    near-profile get a high face probability, far above the strict profile's
    rejection level; street background and the cat's face get a low one."""
    reject = PROFILES["strict"].onet_reject
    assert reject > 0
    img, boxes = onet_boxes()
    n_faces = len(annotations()["deface_city.jpg"]["faces"])
    probs = MtcnnONet().score(img, boxes)
    assert probs[:n_faces].min() >= max(0.5, 100 * reject), probs[:n_faces]
    assert probs[n_faces:].max() < 0.05, probs[n_faces:]
    for name in ("skimage_astronaut.png", "skimage_camera.png"):
        faces = np.asarray(annotations()[name]["faces"], np.float64).reshape(-1, 4)
        assert MtcnnONet().score(load(name), faces).min() >= 0.9
    cat = load("skimage_chelsea.png")
    h, w = cat.shape[:2]
    assert MtcnnONet().score(cat, np.array([[w / 4, h / 4, w / 2, h / 2]]))[0] < 0.05


def test_weak_boxes_onet_rejects_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only boxes under onet_below are shown to O-Net, and only those under
    onet_reject are dropped."""
    det = EnsembleDetector("strict")
    p = det.profile
    assert p.onet_below > p.threshold and p.onet_reject > 0
    img = load("deface_city.jpg")
    before = det.detect_array(img)
    shown: list[np.ndarray] = []

    def score(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        shown.append(boxes.copy())
        return np.where(np.arange(len(boxes)) % 2 == 0, 0.0, 1.0)  # reject every other box

    monkeypatch.setattr(det._onet, "score", score)
    after = det.detect_array(img)
    assert len(shown) == 1 and (shown[0][:, 4] < p.onet_below).all()
    weak = shown[0]
    assert len(weak) >= 2
    # the strong boxes are untouched; of the weak ones every other is gone
    strong = before[:, 4] >= p.onet_below
    np.testing.assert_array_equal(after[after[:, 4] >= p.onet_below], before[strong])
    assert (after[:, 4] < p.onet_below).sum() == len(weak) // 2


MEDIAPIPE_PROBE = """
import sys
{before}
import cv2
from scrapy_gdpr.faces.detector import build_detector

detector = build_detector()
image = cv2.imread({image!r})
found = len(detector.detect(image))
loaded_early = [n for n in ("matplotlib", "matplotlib.pyplot") if n in sys.modules]
import mediapipe as mp
figure = mp.solutions.drawing_utils.plt.figure  # MediaPipe's plotting helper, used
import matplotlib.pyplot as plt
print(found, loaded_early, figure is plt.figure, type(plt).__name__, type(sys.modules["matplotlib"]).__name__)
"""


@pytest.mark.parametrize(
    ("before", "early"),
    [("", "[]"), ("import matplotlib", "['matplotlib']"), ("import matplotlib.pyplot", "['matplotlib', 'matplotlib.pyplot']")],
    ids=["fresh", "matplotlib-imported", "pyplot-imported"],
)
def test_mediapipe_is_imported_without_matplotlib(before, early):
    """Building the detector imports MediaPipe without the matplotlib its drawing helpers
    import (0.3 CPU seconds of every first image); matplotlib, when anything uses it
    later (MediaPipe's helpers included), is the real module."""
    import subprocess
    import sys

    image = str(DATA.parent / "images" / "face-baseline.jpg")
    code = MEDIAPIPE_PROBE.format(before=before, image=image)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    found, rest = result.stdout.strip().split(" ", 1)
    assert int(found) >= 1  # the detector works
    # not imported by the detector (when pyplot was there first, MediaPipe is imported as it
    # is); used later, the real modules
    assert rest == f"{early} True module module", result.stdout


def test_native_lines_kept_off_stderr_while_logged_lines_wait(capfd: pytest.CaptureFixture[str]) -> None:
    """While a detector is built, what native code writes to file descriptor 2 goes to
    the null device; a line another thread logs to stderr meanwhile waits for the
    handler and is written afterwards, not lost."""
    import logging
    import os
    import threading

    stream = open(2, "w", closefd=False, encoding="utf-8")  # stderr itself, closed below
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("tests.native_stderr")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        logged = threading.Event()
        with detector_module.native_stderr_quiet():
            os.write(2, b"NATIVE start-up line\n")
            other = threading.Thread(target=lambda: (log.info("LOGGED meanwhile"), logged.set()))
            other.start()
            assert not logged.wait(0.2)  # held while descriptor 2 points elsewhere
            os.write(2, b"NATIVE second line\n")
        other.join(5)
        assert logged.is_set()
        os.write(2, b"after\n")
    finally:
        log.removeHandler(handler)
        stream.close()
    err = capfd.readouterr().err
    assert "NATIVE" not in err
    assert err.index("LOGGED meanwhile") < err.index("after")

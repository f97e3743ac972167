"""Face detectors behind one interface.

The default back end (``"ensemble"``) combines two vendored models:

* **CenterFace** (ONNX, run through ONNX Runtime, or OpenCV's DNN module where
  ONNX Runtime is not installed: both give the same boxes), a CNN trained on WIDER
  FACE that finds faces from about 10 px up to a few hundred px high. It runs on
  the image at a working resolution chosen by the profile (small images are
  upscaled, huge ones downscaled), and again on a coarse copy (longer side
  384 px) that only answers for faces too big for the first pass.
* **MediaPipe BlazeFace short range** (TFLite, through the MediaPipe Tasks API),
  which sees the whole image squashed to 128 px: it adds close-up portraits and
  faces that fill the frame.
* **MTCNN's O-Net** (ONNX, same runtime as CenterFace), a second opinion on
  CenterFace's weak boxes: it scores a 48 x 48 crop around a box as face or
  not, and the ``strict`` profile drops weak boxes it rejects.

The boxes of all passes are merged by score-weighted box voting and
non-maximum suppression. Only boxes and scores are read: the vendored
CenterFace and O-Net graphs have no landmark outputs and MediaPipe's keypoints are discarded unread; no
embedding or template is computed.

Every model file is checked against its SHA-256 before it is loaded
(:class:`ModelIntegrityError` otherwise). Detectors are not thread-safe: build
one per thread with :func:`build_detector`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import cv2
import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = [
    "MODELS",
    "PROFILES",
    "Detection",
    "EnsembleDetector",
    "FaceDetector",
    "ModelIntegrityError",
    "build_detector",
    "configure_library_threads",
    "library_threads_per_worker",
    "register_detector",
    "registered_detectors",
]

MODELS_DIR = Path(__file__).parent / "models"

#: Vendored model files and their SHA-256 (see ``models/README.md``).
MODELS: dict[str, str] = {
    "centerface.onnx": "f751a27af7b883bc48327f153af1521fe51ffe8badd42beae916358fc4b68e24",
    "face_detection_short_range.tflite": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    "mtcnn_onet.onnx": "3be2b2c7c1c2b753cac6a5803a720632c6654359c8c9add84c36cdbe3d4714d3",
}


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

    def detect(self, image_bgr: NDArray[Any]) -> list[Detection]:
        """Detect faces in an 8-bit BGR image (H x W x 3). Raise on failure."""
        ...


class ModelIntegrityError(RuntimeError):
    """A model file is missing or its SHA-256 is not the expected one."""


_verified: dict[tuple[str, str], bytes] = {}
_verified_lock = threading.Lock()


def load_model_bytes(path: Path | str, sha256: str) -> bytes:
    """Read a model file and return its bytes if their SHA-256 is ``sha256``.

    The bytes that were hashed are the bytes that get loaded, so the file cannot
    change between the check and the load. Verified files are cached by path.
    """
    key = (str(path), sha256)
    with _verified_lock:
        cached = _verified.get(key)
    if cached is not None:
        return cached
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelIntegrityError(f"cannot read face model {path}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ModelIntegrityError(
            f"face model {path} has sha256 {digest}, expected {sha256}; refusing to run a modified model"
        )
    with _verified_lock:
        _verified[key] = data
    return data


# --------------------------------------------------------------------------
# library threads
# --------------------------------------------------------------------------


def library_threads_per_worker(workers: int, cpus: int | None = None) -> int:
    """Threads OpenCV may use inside one detector call when ``workers`` detectors
    run at once on ``cpus`` cores: the cores shared out, at least one.

    With one worker per core (the pool's default) this is 1: each worker then
    keeps to its core instead of every worker's DNN layers fanning out over all
    cores and fighting over them.
    """
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cpus = os.cpu_count() or 1
    return max(1, int(cpus) // max(1, int(workers)))


_configured_threads: int | None = None


def configure_library_threads(workers: int, cpus: int | None = None) -> int:
    """Set the threads the detector's libraries may use inside one call when
    ``workers`` detectors run at once, and return that number.

    OpenCV's setting is process-wide and takes effect at once; ONNX Runtime,
    which runs the CenterFace passes (nearly all of the work) when installed,
    takes it when a detector is built, so call this before building the
    workers' detectors. MediaPipe's short-range model takes a few ms per image
    and is left at its defaults.
    """
    global _configured_threads  # noqa: PLW0603 - one process-wide setting, as OpenCV's
    threads = library_threads_per_worker(workers, cpus)
    cv2.setNumThreads(threads)
    _configured_threads = threads
    return threads


def _library_threads() -> int:
    """Threads for a new detector: as configured, else all cores (one worker)."""
    return _configured_threads or library_threads_per_worker(1)


# --------------------------------------------------------------------------
# box helpers (arrays of rows x, y, w, h, score)
# --------------------------------------------------------------------------


def _empty() -> NDArray[Any]:
    return np.zeros((0, 5), np.float64)


def _row_overlaps(box: NDArray[Any], boxes: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """IoU of ``box`` with each of ``boxes`` (xywh), and the share of each of
    ``boxes`` that lies inside ``box``."""
    iw = np.clip(np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    areas = boxes[:, 2] * boxes[:, 3]
    return inter / np.maximum(box[2] * box[3] + areas - inter, 1e-9), inter / np.maximum(areas, 1e-9)


def _sorted_by_score(dets: NDArray[Any]) -> NDArray[Any]:
    # Deterministic order: score, then position and size as tie-breakers.
    order = np.lexsort((dets[:, 3], dets[:, 2], dets[:, 0], dets[:, 1], -dets[:, 4]))
    sorted_dets: NDArray[Any] = dets[order]
    return sorted_dets


def nms_keep(dets: NDArray[Any], iou: float) -> NDArray[Any]:
    """Row indices of ``dets`` (x, y, w, h, score) that greedy non-maximum
    suppression at ``iou`` keeps, best score first (OpenCV's NMSBoxes)."""
    kept = cv2.dnn.NMSBoxes(dets[:, :4].tolist(), dets[:, 4].tolist(), 0.0, iou)
    keep: NDArray[Any] = np.asarray(kept, np.int64).reshape(-1)
    return keep


#: Candidate boxes kept per pass (best scores first): bounds time and memory on
#: pathological images (dense texture at a low threshold).
MAX_CANDIDATES = 6000


def box_vote(dets: NDArray[Any], iou: float = 0.4, min_votes: int = 1) -> NDArray[Any]:
    """Greedy non-maximum suppression at ``iou`` in which each kept box becomes
    the score-weighted mean of the boxes it suppresses (keeping the best score).
    Groups with fewer than ``min_votes`` members are dropped: a real face makes
    the CNN fire on several neighbouring cells, a speck of texture on one."""
    if len(dets) == 0:
        return _empty()
    dets = _sorted_by_score(dets)[:MAX_CANDIDATES]
    keepers = np.sort(nms_keep(dets, iou))  # rows are sorted by score
    if len(keepers) == 0:
        return _empty()
    # each box belongs to the best-scoring kept box that overlaps it (as in
    # greedy NMS); computed in blocks of kept boxes to bound memory
    first = np.full(len(dets), -1, np.int64)
    x1, y1, x2, y2 = dets[:, 0], dets[:, 1], dets[:, 0] + dets[:, 2], dets[:, 1] + dets[:, 3]
    areas = dets[:, 2] * dets[:, 3]
    for start in range(0, len(keepers), 256):
        idx = keepers[start : start + 256]
        k = dets[idx]
        iw = np.clip(np.minimum(k[:, 0:1] + k[:, 2:3], x2) - np.maximum(k[:, 0:1], x1), 0, None)
        ih = np.clip(np.minimum(k[:, 1:2] + k[:, 3:4], y2) - np.maximum(k[:, 1:2], y1), 0, None)
        inter = iw * ih
        member = inter / np.maximum(k[:, 2:3] * k[:, 3:4] + areas - inter, 1e-9) >= iou
        member[np.arange(len(idx)), idx] = True
        hit = (first < 0) & member.any(0)
        first[hit] = start + member[:, hit].argmax(0)
    k = dets[keepers]
    ok = first >= 0
    g, w = first[ok], dets[ok, 4]
    votes = np.bincount(g, minlength=len(keepers))
    wsum = np.bincount(g, weights=w, minlength=len(keepers))
    boxes = np.stack([np.bincount(g, weights=w * dets[ok, c], minlength=len(keepers)) for c in range(4)], 1)
    boxes = boxes / np.maximum(wsum, 1e-12)[:, None]
    sel = votes >= min_votes
    return np.hstack([boxes[sel], k[sel, 4:5]]).astype(np.float64)


def nms(dets: NDArray[Any], iou: float = 0.4, contained: float = 0.8) -> NDArray[Any]:
    """Non-maximum suppression: drop a box overlapping a better one by ``iou``
    or lying mostly (``contained``) inside it. Best score first."""
    if len(dets) == 0:
        return _empty()
    dets = _sorted_by_score(dets)
    suppressed = np.zeros(len(dets), bool)
    keep = []
    for i in range(len(dets)):
        if suppressed[i]:
            continue
        keep.append(i)
        ious, inside = _row_overlaps(dets[i], dets)
        suppressed |= (ious >= iou) | (inside >= contained)
    return dets[keep]


def _as_bgr(image: NDArray[Any]) -> NDArray[Any]:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError("detect() needs an 8-bit image (numpy uint8 array)")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    raise ValueError(f"unsupported image shape {image.shape}")


# --------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------


def _merge_rects(
    rects: NDArray[Any], groups: list[list[int]], slack: float
) -> tuple[NDArray[Any], list[list[int]]]:
    """Greedily merge rectangles (x0, y0, x1, y1) while the union of a pair is at
    most ``slack`` pixels larger than the two apart. ``groups`` follow the merges."""
    rects = rects.copy()
    groups = [list(g) for g in groups]
    while len(rects) > 1:
        area = (rects[:, 2] - rects[:, 0]) * (rects[:, 3] - rects[:, 1])
        ux0 = np.minimum(rects[:, None, 0], rects[None, :, 0])
        uy0 = np.minimum(rects[:, None, 1], rects[None, :, 1])
        ux1 = np.maximum(rects[:, None, 2], rects[None, :, 2])
        uy1 = np.maximum(rects[:, None, 3], rects[None, :, 3])
        extra = (ux1 - ux0) * (uy1 - uy0) - area[:, None] - area[None, :]
        np.fill_diagonal(extra, np.inf)
        i, j = np.unravel_index(int(np.argmin(extra)), extra.shape)
        if extra[i, j] > slack:
            break
        i, j = min(i, j), max(i, j)
        rects[i] = [ux0[i, j], uy0[i, j], ux1[i, j], uy1[i, j]]
        groups[i] += groups[j]
        rects = np.delete(rects, j, 0)
        del groups[j]
    return rects, groups


def _onnxruntime() -> Any:
    """The ``onnxruntime`` module, or None when it is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime


def _ort_session(data: bytes, runtime: str, threads: int | None) -> Any:
    """An ONNX Runtime session for the model ``data`` when ``runtime`` asks for (or
    allows) ONNX Runtime and it is installed, else None (OpenCV's DNN module then
    runs the model). One thread pool per session of the threads the pool shares
    out, run sequentially, and an idle worker does not spin on a core the other
    workers need."""
    ort = _onnxruntime() if runtime in ("auto", "onnxruntime") else None
    if runtime == "onnxruntime" and ort is None:
        raise RuntimeError("the onnxruntime package is not installed")
    if ort is None:
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or _library_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # no memory plan per input shape: the same time per pass once running, and about
    # half the time of a session's first run (a worker's start-up)
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


#: Runtimes that can run CenterFace: ONNX Runtime (about twice as fast on a
#: CPU) and OpenCV's DNN module. Both give the same boxes (outputs agree to
#: about 1e-5); ``"auto"`` takes ONNX Runtime when it is installed.
CENTERFACE_RUNTIMES = ("auto", "onnxruntime", "opencv")


class CenterFaceNet:
    """CenterFace through ONNX Runtime or OpenCV's DNN module. One instance per thread.

    The vendored graph has no landmark head (see ``models/README.md``): only
    the heatmap, box scale and offset outputs exist.
    """

    OUTPUTS: ClassVar[list[str]] = ["537", "538", "539"]  # heatmap, scale, offset
    INPUT = "input.1"

    def __init__(
        self,
        path: Path | str | None = None,
        sha256: str | None = None,
        runtime: str = "auto",
        threads: int | None = None,
    ) -> None:
        if runtime not in CENTERFACE_RUNTIMES:
            raise ValueError(f"unknown CenterFace runtime {runtime!r}; use one of {CENTERFACE_RUNTIMES}")
        self._data = load_model_bytes(
            path or MODELS_DIR / "centerface.onnx", sha256 or MODELS["centerface.onnx"]
        )
        self._session = _ort_session(self._data, runtime, threads)
        self._nets: dict[str, cv2.dnn.Net] = {}
        self.runtime = "opencv" if self._session is None else "onnxruntime"
        if self._session is None:
            self._net("main")  # fail at construction, not at the first image

    def _net(self, role: str) -> cv2.dnn.Net:
        """OpenCV's net for one pass. Each pass keeps its own: OpenCV sets a net up
        for the input size it last saw, and setting it up again for every pass
        costs as much as half a pass."""
        net = self._nets.get(role)
        if net is None:
            net = cv2.dnn.readNetFromONNX(np.frombuffer(self._data, np.uint8))
            # OpenCV 4.11 fuses layers for the first input shape it sees; reusing the
            # net on an image of another size then returns garbage. No fusion: same speed.
            net.enableFusion(False)
            net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
            self._nets[role] = net
        return net

    def forward(self, blob: NDArray[Any], role: str = "main") -> list[NDArray[Any]]:
        """The network's heatmap, scale and offset for a 1 x 3 x H x W blob."""
        if self._session is not None:
            outputs: list[NDArray[Any]] = self._session.run(self.OUTPUTS, {self.INPUT: blob})
            return outputs
        net = self._net(role)
        net.setInput(blob)
        return list(net.forward(self.OUTPUTS))

    @staticmethod
    def blob(image_bgr: NDArray[Any]) -> NDArray[Any]:
        """The network's input for an 8-bit BGR image: 1 x 3 x H x W float32, RGB,
        unscaled. The same values as ``cv2.dnn.blobFromImage(image, swapRB=True)``
        at a twentieth of its cost (it converts pixel by pixel; this copies
        whole planes)."""
        h, w = image_bgr.shape[:2]
        blob = np.empty((1, 3, h, w), np.float32)
        b, g, r = cv2.split(image_bgr)
        blob[0, 0], blob[0, 1], blob[0, 2] = r, g, b
        return blob

    def run(self, image_bgr: NDArray[Any], scale: float, threshold: float, role: str = "main") -> NDArray[Any]:
        """Raw candidate boxes (one per heatmap cell >= ``threshold``) of the image
        resized by ``scale``, in pixels of ``image_bgr``. ``role`` names the pass
        (main, coarse, refine)."""
        h, w = image_bgr.shape[:2]
        nw = max(32, int(np.ceil(w * scale / 32) * 32))
        nh = max(32, int(np.ceil(h * scale / 32) * 32))
        sx, sy = nw / w, nh / h
        interp = cv2.INTER_AREA if sx < 1 else cv2.INTER_LINEAR
        resized = cv2.resize(image_bgr, (nw, nh), interpolation=interp)
        heatmap, sizes, offsets = self.forward(self.blob(resized), role)
        hm = heatmap[0, 0]
        rows, cols = np.nonzero(hm >= threshold)
        if len(rows) == 0:
            return _empty()
        bh = np.exp(sizes[0, 0, rows, cols].astype(np.float64)) * 4
        bw = np.exp(sizes[0, 1, rows, cols].astype(np.float64)) * 4
        cx = (cols + offsets[0, 1, rows, cols] + 0.5) * 4
        cy = (rows + offsets[0, 0, rows, cols] + 0.5) * 4
        return np.stack(
            [(cx - bw / 2) / sx, (cy - bh / 2) / sy, bw / sx, bh / sy, hm[rows, cols].astype(np.float64)], 1
        )


class MtcnnONet:
    """MTCNN's output network (O-Net) as a second opinion on a box: the
    probability that a square crop around the box is a face. One instance per
    thread.

    The vendored graph keeps only the face/non-face output (see
    ``models/README.md``): no landmarks, no box regression. It sees a 48 x 48
    crop, so a batch of a hundred boxes costs a few ms.
    """

    SIZE = 48
    INPUT = "input_3"
    OUTPUT = "softmax_2"

    def __init__(self, runtime: str = "auto", threads: int | None = None) -> None:
        if runtime not in CENTERFACE_RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; use one of {CENTERFACE_RUNTIMES}")
        data = load_model_bytes(MODELS_DIR / "mtcnn_onet.onnx", MODELS["mtcnn_onet.onnx"])
        self._session = _ort_session(data, runtime, threads)
        self._net = None
        if self._session is None:
            self._net = cv2.dnn.readNetFromONNX(np.frombuffer(data, np.uint8))
            self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def crops(self, image_bgr: NDArray[Any], boxes: NDArray[Any]) -> NDArray[Any]:
        """N x 48 x 48 x 3 RGB crops: the square of each box's longer side
        around its centre, zero outside the image (as MTCNN crops)."""
        h, w = image_bgr.shape[:2]
        size = self.SIZE
        out = np.zeros((len(boxes), size, size, 3), np.uint8)
        for k, (x, y, bw, bh) in enumerate(boxes[:, :4]):
            side = max(round(float(max(bw, bh))), 2)
            x0, y0 = round(float(x + bw / 2 - side / 2)), round(float(y + bh / 2 - side / 2))
            square = np.zeros((side, side, 3), np.uint8)
            ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
            if ax1 > ax0 and ay1 > ay0:
                square[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = image_bgr[ay0:ay1, ax0:ax1]
            interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
            out[k] = cv2.resize(square, (size, size), interpolation=interp)[:, :, ::-1]
        return out

    def score(self, image_bgr: NDArray[Any], boxes: NDArray[Any]) -> NDArray[Any]:
        """Face probability of each box (rows x, y, w, h, ...)."""
        if len(boxes) == 0:
            return np.zeros(0)
        # MTCNN's networks were trained on transposed images (Caffe's layout)
        blob = np.transpose((self.crops(image_bgr, boxes).astype(np.float32) - 127.5) * 0.0078125, (0, 2, 1, 3))
        probs = []
        for start in range(0, len(blob), 256):
            part = np.ascontiguousarray(blob[start : start + 256])
            if self._session is not None:
                out = self._session.run([self.OUTPUT], {self.INPUT: part})[0]
            else:
                assert self._net is not None  # one of the two runtimes is built
                self._net.setInput(part)
                out = self._net.forward()
            probs.append(out[:, 1].astype(np.float64))
        return np.concatenate(probs)


class _DeferredModule(types.ModuleType):
    """A stand-in for a module that imports the real one when an attribute of it is first
    used (then taken out of ``sys.modules``, so that imports get the real module)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)  # the import system's own questions do not load it
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


_MEDIAPIPE_IMPORT = threading.Lock()


def import_mediapipe() -> Any:
    """``import mediapipe``, without the matplotlib it imports for drawing helpers.

    ``mediapipe/__init__.py`` imports its legacy solutions, whose ``drawing_utils``
    imports ``matplotlib.pyplot`` at import time: about 0.3 CPU seconds (more than the
    rest of MediaPipe and the detector together) and some 20 MB in every process that
    checks its first image, for plotting helpers the face stage never calls. While
    MediaPipe is imported (only when neither it nor ``matplotlib.pyplot`` is imported
    yet), ``matplotlib`` and ``matplotlib.pyplot`` are stand-ins that import the real
    modules on first use; they are taken out of ``sys.modules`` right after, so any
    later ``import matplotlib.pyplot`` is the real module, and MediaPipe's own
    ``drawing_utils.plt`` imports it when it is used.
    """
    with _MEDIAPIPE_IMPORT:
        if "mediapipe" in sys.modules or "matplotlib.pyplot" in sys.modules:
            return importlib.import_module("mediapipe")
        placed = {name: _DeferredModule(name) for name in ("matplotlib", "matplotlib.pyplot")
                  if name not in sys.modules}
        if "matplotlib" in placed:
            # ``import matplotlib.pyplot as plt`` takes it as the package's attribute
            placed["matplotlib"].__dict__["pyplot"] = placed["matplotlib.pyplot"]
        sys.modules.update(placed)
        try:
            return importlib.import_module("mediapipe")
        finally:
            for name, module in placed.items():
                if sys.modules.get(name) is module:
                    del sys.modules[name]


def _stderr_handlers() -> list[logging.Handler]:
    """The logging handlers that write to the process's stderr (file descriptor 2)."""
    loggers: list[Any] = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    found: dict[int, logging.Handler] = {}
    for log in loggers:
        for handler in getattr(log, "handlers", ()):
            stream = getattr(handler, "stream", None)
            try:
                to_stderr = stream is not None and stream.fileno() == 2
            except (AttributeError, OSError, ValueError):
                to_stderr = False
            if to_stderr:
                found[id(handler)] = handler
    return list(found.values())


@contextlib.contextmanager
def native_stderr_quiet() -> Iterator[None]:
    """Keep what native code writes to stderr (file descriptor 2) meanwhile off it.

    MediaPipe's graph writes four lines of its own to stderr when a detector is built
    (absl's "All log messages before absl::InitializeLog() ...", "GPU support is not
    available", "Created TensorFlow Lite XNNPACK delegate for CPU", the feedback
    manager's warning), whatever Python's logging says and whatever the environment
    asks (``GLOG_minloglevel``, ``TF_CPP_MIN_LOG_LEVEL``): a crawl run with ``--nolog``,
    or from cron, would print them at its first image. While the detector is built,
    descriptor 2 points at the null device. The logging handlers that write to stderr
    are held meanwhile, so a line another thread logs then waits (a few milliseconds)
    and is written afterwards, not lost.
    """
    handlers = _stderr_handlers()
    for handler in handlers:
        handler.acquire()
    try:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr to keep clean
            yield
            return
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, 2)
            finally:
                os.close(null)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    finally:
        for handler in reversed(handlers):
            handler.release()


class BlazeFaceShort:
    """MediaPipe's short-range BlazeFace through the Tasks API (which, unlike
    ``mp.solutions``, honours thresholds below 0.5). One instance per thread."""

    def __init__(self, threshold: float, path: Path | str | None = None, sha256: str | None = None) -> None:
        mp = import_mediapipe()
        from mediapipe.tasks.python.core.base_options import BaseOptions
        from mediapipe.tasks.python.vision import FaceDetector as _MPFaceDetector
        from mediapipe.tasks.python.vision import FaceDetectorOptions

        data = load_model_bytes(
            path or MODELS_DIR / "face_detection_short_range.tflite",
            sha256 or MODELS["face_detection_short_range.tflite"],
        )
        options = FaceDetectorOptions(
            base_options=BaseOptions(model_asset_buffer=data),
            min_detection_confidence=threshold,
            min_suppression_threshold=0.3,
        )
        self._mp = mp
        with native_stderr_quiet():  # MediaPipe's own start-up lines, not the crawl's
            self._detector = _MPFaceDetector.create_from_options(options)

    def run(self, image_bgr: NDArray[Any]) -> NDArray[Any]:
        rgb = np.ascontiguousarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        result = self._detector.detect(self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb))
        rows = []
        for d in result.detections:
            b = d.bounding_box
            # BlazeFace boxes are square, brow to mouth; faces are annotated (and
            # must be covered) from the hairline to the chin: grow upwards and down.
            h = float(b.height)
            rows.append([float(b.origin_x), b.origin_y - 0.2 * h, float(b.width), 1.3 * h, d.categories[0].score])
        return np.asarray(rows, np.float64).reshape(-1, 5)

    def close(self) -> None:
        self._detector.close()


# --------------------------------------------------------------------------
# the ensemble
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """Passes and thresholds of one ``faces.sensitivity`` level."""

    #: CenterFace threshold on the main pass (``faces.min_confidence`` overrides it).
    threshold: float
    #: Boxes of a candidate group needed to keep it (see :func:`box_vote`).
    min_votes: int
    #: Threshold for boxes at least ``large_height`` px high as the network saw
    #: them: large faces score high, large low-score boxes are texture (a cat's face).
    large_threshold: float
    large_height: float
    #: The main pass works on at least ``min_pixels`` (small images are
    #: upscaled, by ``max_upscale`` at most) and at most ``max_pixels``.
    min_pixels: float
    max_pixels: float
    max_upscale: float
    #: Longer side of the coarse pass for big faces (0: no coarse pass).
    coarse_side: int
    coarse_threshold: float
    #: MediaPipe threshold (0: MediaPipe not used).
    mediapipe_threshold: float
    #: IoU at which the main pass's candidate boxes are grouped for voting.
    vote_iou: float = 0.4
    #: Refinement of small faces: boxes under ``refine_height`` px high (as the
    #: main pass saw them) are looked at again at ``refine_zoom`` times the main
    #: pass's scale, in windows around them (0: no refinement).
    refine_height: float = 0.0
    refine_zoom: float = 1.25
    #: A small box that the refinement's closer look does not confirm is kept
    #: only if it scored at least this (0: always kept).
    refine_keep: float = 0.0
    #: Tiles for images larger than ``max_pixels``: the main pass (with its
    #: refinement) runs again on overlapping tiles at ``tile_scale`` (0: no
    #: tiles), so that faces of 20 px keep the pixels they have in a small
    #: image. Tiles are ``tile_side`` px (as the network sees them) and overlap
    #: by ``tile_overlap`` px; a tile answers for faces up to ``tile_answer`` px
    #: (the downscaled main pass and the coarse pass answer for larger ones).
    tile_scale: float = 0.0
    tile_side: int = 1536
    tile_overlap: int = 192
    tile_answer: int = 160
    #: Rotated passes for faces lying sideways or upside down: CenterFace on a
    #: copy whose longer side is ``rotate_side`` px, turned by 90, 180 and 270
    #: degrees (0: none), kept for boxes at least ``rotate_min_height`` px high
    #: there; MediaPipe (when used) also looks at the three turned copies.
    rotate_side: int = 0
    rotate_threshold: float = 0.4
    rotate_min_height: float = 24.0
    rotate_mediapipe: bool = False
    #: A horizontally flipped copy of the main pass (costs a second main pass).
    flip: bool = False
    #: Second look: the main pass also proposes boxes down to
    #: ``proposal_threshold`` (0: no proposals below ``threshold``); every box
    #: scoring under ``verify_below`` is looked at again in a crop around it,
    #: upscaled so that the face is ``verify_height`` px high (by 3x at most),
    #: and kept only if the closer look finds it at ``verify_threshold`` or more
    #: (its box then replaces the first one). The crops process at most
    #: ``verify_budget`` times the main pass's pixels, best boxes first; a box
    #: over the budget is kept as it is if it reached ``threshold``.
    proposal_threshold: float = 0.0
    verify_below: float = 0.0
    verify_threshold: float = 0.3
    verify_height: float = 40.0
    verify_budget: float = 0.3
    #: Second model: every box scoring under ``onet_below`` after all passes
    #: is shown to MTCNN's O-Net, and dropped when O-Net's face probability is
    #: under ``onet_reject`` (0: O-Net not used). The two networks were trained
    #: apart and err on different things: most of CenterFace's weak false
    #: positives (hands, backs of heads, texture) get a probability of a few
    #: thousandths, while the real faces CenterFace scores low rarely do.
    onet_below: float = 0.0
    onet_reject: float = 0.0
    #: A horizontally mirrored pass at ``flip_scale`` times the main pass's
    #: scale (0: none), kept for boxes at least ``flip_min_height`` px high:
    #: CenterFace is not symmetric, and a mirrored profile is often found
    #: where the original is not.
    flip_scale: float = 0.0
    flip_min_height: float = 20.0


PROFILES: dict[str, Profile] = {
    "strict": Profile(
        0.1, 3, 0.3, 100, 0.5e6, 2.4e6, 2.0, 256, 0.3, 0.5, vote_iou=0.3, refine_height=24, refine_keep=0.12,
        tile_scale=1.0,
        rotate_side=256,
        onet_below=0.3, onet_reject=0.003,
        flip_scale=0.7,
    ),
    "balanced": Profile(0.2, 1, 0.35, 100, 0.3e6, 1.2e6, 1.5, 384, 0.35, 0.5),
    "fast": Profile(0.3, 1, 0.4, 100, 0.0, 0.5e6, 1.0, 320, 0.4, 0.6),
}

VERSION = "4"


class EnsembleDetector:
    """CenterFace (main, mirrored, coarse, tile and rotated passes) + MediaPipe BlazeFace, merged by box
    voting and NMS, with MTCNN's O-Net as a second opinion on weak boxes."""

    name = "ensemble"

    def __init__(
        self, sensitivity: str = "strict", min_confidence: float | None = None, runtime: str = "auto"
    ) -> None:
        try:
            profile = PROFILES[sensitivity]
        except KeyError:
            raise ValueError(f"unknown face sensitivity {sensitivity!r}; use one of {sorted(PROFILES)}") from None
        if min_confidence is not None:
            if not 0 < min_confidence < 1:
                raise ValueError("min_confidence must be between 0 and 1")
            mc = float(min_confidence)
            profile = Profile(
                **{**profile.__dict__, "threshold": mc, "large_threshold": max(mc, profile.large_threshold)}
            )
        self.sensitivity = sensitivity
        self.profile = profile
        self._centerface = CenterFaceNet(runtime=runtime)
        self.runtime = self._centerface.runtime
        self.version = f"{VERSION}-{sensitivity}-t{profile.threshold:g}"
        self._blazeface = BlazeFaceShort(profile.mediapipe_threshold) if profile.mediapipe_threshold else None
        self._onet: MtcnnONet | None = None
        if profile.onet_reject:
            self._second_model()

    def _second_model(self) -> MtcnnONet:
        """O-Net, built on first use (a profile overridden after construction
        may turn it on)."""
        if self._onet is None:
            self._onet = MtcnnONet(runtime=self.runtime)
        return self._onet

    def main_scale(self, height: int, width: int) -> float:
        p = self.profile
        pixels = float(height * width)
        if pixels > p.max_pixels:
            return float(np.sqrt(p.max_pixels / pixels))
        if pixels < p.min_pixels:
            return float(min(p.max_upscale, np.sqrt(p.min_pixels / pixels)))
        return 1.0

    #: Refinement windows: a small box's window reaches ``REFINE_PAD`` times its
    #: size from its centre plus ``REFINE_CONTEXT`` px (as the network sees
    #: them); the network gets another ``REFINE_CONTEXT`` px of context around
    #: each window. Windows are merged on a grid of ``REFINE_CELL`` px.
    REFINE_PAD = 1.0
    REFINE_CONTEXT = 16.0
    REFINE_CELL = 8
    #: Rectangles are merged when that adds fewer pixels (as the network sees
    #: them) than one more network call costs (about 100 x 100 px).
    REFINE_CALL_PIXELS = 10000.0
    #: Pixels the refinement may process, as a share of the main pass's.
    REFINE_BUDGET = 2.0

    def _refine_small(self, img: NDArray[Any], main: NDArray[Any], scale: float, zoom: float) -> NDArray[Any]:
        """Look again, at ``zoom`` (the profile's ``refine_zoom`` times the main
        pass's scale), at windows around the main pass's small boxes.

        At 10-20 px a face covers only a few cells of the network's 4 px grid,
        so its box is coarse; a closer look places it better and finds faces
        next to it (small faces come in crowds). A small box that a refined box
        overlaps is replaced by it; one the closer look does not confirm is
        kept (fail safe: it is still redacted). Costs little unless the image
        holds many small faces: only the windows are processed again.
        """
        p = self.profile
        small = main[:, 3] * scale < p.refine_height
        if not small.any():
            return main
        h, w = img.shape[:2]
        cell = self.REFINE_CELL
        gh, gw = -(-h // cell), -(-w // cell)
        grid = np.zeros((gh, gw), np.uint8)
        ctx = self.REFINE_CONTEXT / scale
        seeds = main[small]
        for x, y, bw, bh, _ in seeds:
            r = self.REFINE_PAD * max(bw, bh) + ctx
            cx, cy = x + bw / 2, y + bh / 2
            grid[max(0, int((cy - r) // cell)) : int((cy + r) // cell) + 1,
                 max(0, int((cx - r) // cell)) : int((cx + r) // cell) + 1] = 1
        n, labels, stats, _ = cv2.connectedComponentsWithStats(grid, connectivity=8)
        # each window's rectangle in pixels, plus context for the network
        rects = np.stack([
            np.maximum(0, stats[1:, 0] * cell - ctx), np.maximum(0, stats[1:, 1] * cell - ctx),
            np.minimum(w, (stats[1:, 0] + stats[1:, 2]) * cell + ctx),
            np.minimum(h, (stats[1:, 1] + stats[1:, 3]) * cell + ctx),
        ], 1).astype(np.float64)
        groups = [[k] for k in range(1, n)]
        rects, groups = _merge_rects(rects, groups, self.REFINE_CALL_PIXELS / zoom**2)
        # A budget: at most REFINE_BUDGET times the main pass's pixels, the
        # rectangles holding the most small boxes per pixel first.
        cx = np.clip(((seeds[:, 0] + seeds[:, 2] / 2) // cell).astype(np.int64), 0, gw - 1)
        cy = np.clip(((seeds[:, 1] + seeds[:, 3] / 2) // cell).astype(np.int64), 0, gh - 1)
        seed_label = labels[cy, cx]
        areas = (rects[:, 2] - rects[:, 0]) * (rects[:, 3] - rects[:, 1])
        density = np.array([np.isin(seed_label, g).sum() for g in groups]) / np.maximum(areas, 1.0)
        budget = self.REFINE_BUDGET * h * w * scale * scale / (zoom * zoom)
        found = []
        looked: list[int] = []  # window labels looked at again
        for i in np.argsort(-density, kind="stable"):
            if areas[i] > budget:
                continue
            budget -= areas[i]
            x0, y0, x1, y1 = (int(v) for v in rects[i])
            if x1 - x0 < 8 or y1 - y0 < 8:
                continue
            looked.extend(groups[i])
            raw = self._centerface.run(img[y0:y1, x0:x1], zoom, p.threshold, "refine")
            if not len(raw):
                continue
            raw[:, 0] += x0
            raw[:, 1] += y0
            boxes = box_vote(raw, p.vote_iou, p.min_votes)
            # only small faces whose centre lies in a window of this rectangle
            cgx = np.clip(((boxes[:, 0] + boxes[:, 2] / 2) // cell).astype(np.int64), 0, gw - 1)
            cgy = np.clip(((boxes[:, 1] + boxes[:, 3] / 2) // cell).astype(np.int64), 0, gh - 1)
            ok = np.isin(labels[cgy, cgx], groups[i]) & (boxes[:, 3] * scale < 1.5 * p.refine_height)
            found.append(boxes[ok])
        refined = np.vstack(found) if found else _empty()
        # a small box the closer look did not confirm is kept if it scored at
        # least refine_keep, or if its window was not looked at (over budget)
        examined = np.isin(seed_label, looked)
        kept = [
            b for b, seen in zip(seeds, examined, strict=False)
            if (not seen or b[4] >= p.refine_keep) and (not len(refined) or _row_overlaps(b, refined)[0].max() < 0.1)
        ]
        return np.vstack([main[~small], np.asarray(kept, np.float64).reshape(-1, 5), refined])

    def _main_pass(self, img: NDArray[Any], scale: float, role: str = "main") -> NDArray[Any]:
        """CenterFace at ``scale`` with box voting, the large-box threshold, the
        second look at uncertain boxes and the refinement of small faces; boxes
        in pixels of ``img``."""
        p = self.profile
        low = min(p.threshold, p.proposal_threshold or p.threshold)
        main = box_vote(self._centerface.run(img, scale, low, role), p.vote_iou, p.min_votes)
        main = main[(main[:, 3] * scale < p.large_height) | (main[:, 4] >= p.large_threshold)]
        # boxes under the threshold (proposals) and under verify_below need the second look
        unsure = main[:, 4] < max(p.verify_below, p.threshold if low < p.threshold else 0.0)
        if unsure.any():
            main = np.vstack([main[~unsure], self._second_look(img, main[unsure], scale)])
        if p.refine_height and len(main):
            main = self._refine_small(img, main, scale, scale * p.refine_zoom)
        return main

    #: Context around a box in the second look, as a share of its size on each side.
    VERIFY_CONTEXT = 1.0

    def _second_look(self, img: NDArray[Any], boxes: NDArray[Any], scale: float) -> NDArray[Any]:
        """Look again at each of ``boxes`` in an upscaled crop around it; return
        the boxes the closer look confirms (as it places them), and those over
        the budget that reached the profile's threshold."""
        p = self.profile
        h, w = img.shape[:2]
        budget = p.verify_budget * h * w * scale * scale
        kept = []
        for box in _sorted_by_score(boxes):
            x, y, bw, bh, score = box
            zoom = scale * float(np.clip(p.verify_height / max(bh * scale, 1.0), 1.0, 3.0))
            pad = self.VERIFY_CONTEXT * max(bw, bh) + 8.0 / zoom
            x0, y0 = int(max(0, x - pad)), int(max(0, y - pad))
            x1, y1 = int(min(w, x + bw + pad)), int(min(h, y + bh + pad))
            cost = (x1 - x0) * (y1 - y0) * zoom * zoom
            if cost > budget or x1 - x0 < 4 or y1 - y0 < 4:
                if score >= p.threshold:
                    kept.append(box)
                continue
            budget -= cost
            raw = self._centerface.run(img[y0:y1, x0:x1], zoom, p.verify_threshold, "verify")
            if not len(raw):
                continue
            raw[:, 0] += x0
            raw[:, 1] += y0
            again = box_vote(raw, p.vote_iou, 1)
            ious = _row_overlaps(box, again)[0]
            if ious.max() >= 0.3:
                kept.append(again[int(np.argmax(np.where(ious >= 0.3, again[:, 4], -1.0)))])
        return np.asarray(kept, np.float64).reshape(-1, 5)

    @staticmethod
    def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
        """Starts of tiles of ``tile`` px covering ``length`` px, neighbours
        overlapping by at least ``overlap`` px, spread evenly."""
        if length <= tile:
            return [0]
        n = int(np.ceil((length - overlap) / (tile - overlap)))
        return [round(i * (length - tile) / (n - 1)) for i in range(n)]

    def tiles(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """The tiles (x0, y0, x1, y1) the tile pass reads for an image of this
        size (none when the main pass keeps enough pixels)."""
        p = self.profile
        if not p.tile_scale or self.main_scale(height, width) >= p.tile_scale:
            return []
        side = max(int(p.tile_side / p.tile_scale), 32)
        overlap = int(np.ceil(p.tile_overlap / p.tile_scale))
        return [
            (x0, y0, min(x0 + side, width), min(y0 + side, height))
            for y0 in self.tile_starts(height, side, overlap)
            for x0 in self.tile_starts(width, side, overlap)
        ]

    def _tile_pass(self, img: NDArray[Any]) -> NDArray[Any]:
        """The main pass at ``tile_scale`` on overlapping tiles of a large image.

        A tile answers for faces up to ``tile_answer`` px (as the network sees
        them) that do not touch an edge it shares with another tile: the overlap
        is larger than these faces, so each of them lies whole in some tile.
        """
        p = self.profile
        h, w = img.shape[:2]
        ts = p.tile_scale
        found = []
        for x0, y0, x1, y1 in self.tiles(h, w):
            boxes = self._main_pass(img[y0:y1, x0:x1], ts, "tile")
            if not len(boxes):
                continue
            edge = 2.0 / ts
            inner = np.zeros(len(boxes), bool)
            if x0 > 0:
                inner |= boxes[:, 0] <= edge
            if y0 > 0:
                inner |= boxes[:, 1] <= edge
            if x1 < w:
                inner |= boxes[:, 0] + boxes[:, 2] >= (x1 - x0) - edge
            if y1 < h:
                inner |= boxes[:, 1] + boxes[:, 3] >= (y1 - y0) - edge
            small = np.maximum(boxes[:, 2], boxes[:, 3]) * ts <= p.tile_answer
            boxes = boxes[small & ~inner].copy()
            boxes[:, 0] += x0
            boxes[:, 1] += y0
            found.append(boxes)
        return np.vstack(found) if found else _empty()

    #: (OpenCV rotation, inverse) for the rotated passes: 90 degrees clockwise,
    #: 180 and 90 counter-clockwise.
    ROTATIONS = (cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE)

    @staticmethod
    def unrotate(boxes: NDArray[Any], rotation: int, height: int, width: int) -> NDArray[Any]:
        """Boxes found on ``cv2.rotate(image, rotation)``, in pixels of the
        upright ``image`` (``height`` x ``width``)."""
        b = boxes.copy()
        x, y, bw, bh = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
        if rotation == cv2.ROTATE_90_CLOCKWISE:
            b[:, 0], b[:, 1], b[:, 2], b[:, 3] = y, height - (x + bw), bh, bw
        elif rotation == cv2.ROTATE_180:
            b[:, 0], b[:, 1] = width - (x + bw), height - (y + bh)
        elif rotation == cv2.ROTATE_90_COUNTERCLOCKWISE:
            b[:, 0], b[:, 1], b[:, 2], b[:, 3] = width - (y + bh), x, bh, bw
        else:
            raise ValueError(f"unknown rotation {rotation}")
        return b

    def _rotated_passes(self, img: NDArray[Any]) -> list[NDArray[Any]]:
        """CenterFace (on a small copy) and MediaPipe on the image turned by 90,
        180 and 270 degrees: faces lying sideways or upside down."""
        p = self.profile
        h, w = img.shape[:2]
        out = []
        rs = min(1.0, p.rotate_side / max(h, w)) if p.rotate_side else 0.0
        small = cv2.resize(img, (max(1, round(w * rs)), max(1, round(h * rs))), interpolation=cv2.INTER_AREA) if rs else None
        for rotation in self.ROTATIONS:
            if small is not None:
                turned = cv2.rotate(small, rotation)
                boxes = box_vote(self._centerface.run(turned, 1.0, p.rotate_threshold, "rotated"), 0.4, 1)
                boxes = boxes[boxes[:, 3] >= p.rotate_min_height]
                if len(boxes):
                    boxes = self.unrotate(boxes, rotation, small.shape[0], small.shape[1])
                    boxes[:, :4] /= rs
                    out.append(boxes)
            if self._blazeface is not None and p.rotate_mediapipe:
                boxes = self._blazeface.run(cv2.rotate(img, rotation))
                if len(boxes):
                    out.append(self.unrotate(boxes, rotation, h, w))
        return out

    def detect_array(self, image_bgr: NDArray[Any]) -> NDArray[Any]:
        """Like :meth:`detect`, as an N x 5 array (x, y, w, h, score), best first."""
        img = _as_bgr(image_bgr)
        h, w = img.shape[:2]
        if h < 8 or w < 8:
            return _empty()
        p = self.profile
        parts = []
        scale = self.main_scale(h, w)
        parts.append(self._main_pass(img, scale))
        if p.flip:
            flipped = self._main_pass(cv2.flip(img, 1), scale, "flip")
            flipped[:, 0] = w - flipped[:, 0] - flipped[:, 2]
            parts.append(flipped)
        if p.flip_scale:
            fs = scale * p.flip_scale
            mirrored = cv2.flip(img, 1)  # the same array as img[:, ::-1], copied at a fiftieth of numpy's cost
            flipped = box_vote(self._centerface.run(mirrored, fs, p.threshold, "flip"), p.vote_iou, p.min_votes)
            flipped = flipped[(flipped[:, 3] * fs < p.large_height) | (flipped[:, 4] >= p.large_threshold)]
            flipped = flipped[flipped[:, 3] >= p.flip_min_height]
            flipped[:, 0] = w - flipped[:, 0] - flipped[:, 2]
            parts.append(flipped)
        if p.tile_scale and scale < p.tile_scale:
            parts.append(self._tile_pass(img))
        longer = max(h, w) * scale
        if p.coarse_side and longer > 1.6 * p.coarse_side:
            cs = p.coarse_side / max(h, w)
            coarse = box_vote(self._centerface.run(img, cs, p.coarse_threshold, "coarse"), 0.4, 1)
            # The coarse pass only answers for faces too big for the main pass.
            parts.append(coarse[coarse[:, 3] * cs >= 40])
        if self._blazeface is not None:
            parts.append(self._blazeface.run(img))
        upright = np.vstack(parts)
        if p.rotate_side or p.rotate_mediapipe:
            # the rotated passes only add faces the upright passes did not find:
            # on an upright face their boxes (width and height swapped) fit worse
            turned = [b for b in self._rotated_passes(img) if len(b)]
            if turned and len(upright):
                turned = [b[[_row_overlaps(row, upright)[0].max() < 0.3 for row in b]] for b in turned]
            parts.extend(turned)
        dets = nms(np.vstack(parts), 0.4)
        if p.onet_reject and len(dets):
            weak = dets[:, 4] < p.onet_below
            if weak.any():
                keep = np.ones(len(dets), bool)
                keep[weak] = self._second_model().score(img, dets[weak]) >= p.onet_reject
                dets = dets[keep]
        if len(dets):
            # clip to the image
            x1 = np.clip(dets[:, 0], 0, w)
            y1 = np.clip(dets[:, 1], 0, h)
            x2 = np.clip(dets[:, 0] + dets[:, 2], 0, w)
            y2 = np.clip(dets[:, 1] + dets[:, 3], 0, h)
            dets = np.stack([x1, y1, x2 - x1, y2 - y1, np.clip(dets[:, 4], 0, 1)], 1)
            dets = dets[(dets[:, 2] >= 1) & (dets[:, 3] >= 1)]
        return dets

    def detect(self, image_bgr: NDArray[Any]) -> list[Detection]:
        return [Detection(*map(float, row)) for row in self.detect_array(image_bgr)]


# --------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------

DetectorFactory = Callable[[str, "float | None"], FaceDetector]

_REGISTRY: dict[str, DetectorFactory] = {}


def register_detector(name: str, factory: DetectorFactory, *, replace: bool = False) -> None:
    """Make a back end available to :func:`build_detector` under ``name``.

    ``factory(sensitivity, min_confidence)`` must return a new detector (one is
    built per worker thread).
    """
    if name in _REGISTRY and not replace:
        raise ValueError(f"a face detector named {name!r} is already registered")
    _REGISTRY[name] = factory


def registered_detectors() -> list[str]:
    return sorted(_REGISTRY)


register_detector("ensemble", EnsembleDetector)

DEFAULT_BACKEND = "ensemble"


def build_detector(
    sensitivity: str = "strict", min_confidence: float | None = None, backend: str = DEFAULT_BACKEND
) -> FaceDetector:
    """Build the detector for a policy's ``faces.sensitivity`` and ``faces.min_confidence``.

    Raises :class:`ModelIntegrityError` if a model file fails its SHA-256 check,
    ``KeyError`` for an unknown back end.
    """
    try:
        factory = _REGISTRY[backend]
    except KeyError:
        raise KeyError(f"unknown face detector back end {backend!r}; registered: {registered_detectors()}") from None
    return factory(sensitivity, min_confidence)

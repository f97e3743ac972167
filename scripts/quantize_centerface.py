"""Quantize the vendored ``centerface.onnx`` to int8 (for measurement; not vendored).

    python scripts/quantize_centerface.py scrapy_gdpr/faces/models/centerface.onnx /tmp/centerface_int8.onnx

The int8 model costs about a quarter less CPU per detection on an AVX2 CPU
but leaves more faces recognisable on the development sets, so the detector
does not use it (see *Cheaper passes, same boxes* in docs/face-detection.md).
The script is kept so that the measurement can be repeated, e.g. on a CPU with
VNNI (this machine has AVX2 only).

Needs the ``onnx`` package and ONNX Runtime's quantization tools (not
dependencies of scrapy-gdpr; install ``onnx``, ``sympy`` and the same
``onnxruntime`` in a separate environment: ``onnx`` requires a newer protobuf
than mediapipe allows). Prints the new file's sha256.

The graph is the vendored one (no landmark head, any input size), brought to
opset 13 (per-channel quantization needs it), with its convolutions quantized
statically by ONNX Runtime (``quantize_static``: QDQ format, weights int8 per
output channel, activations uint8 per tensor, ``reduce_range`` because AVX2
CPUs without VNNI can overflow on full-range int8 weights). The activation
ranges are calibrated (min/max) on the redistributable test photos only
(``tests/data/faces``, see their README): each photo and its mirror image,
with the longer side at 1280, 1024, 640 and 256 px, as the detector's passes
see them. No development-set photo is used. The same input gives the same
file (the calibration is deterministic).
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import onnx
from onnx import version_converter
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

if TYPE_CHECKING:
    from collections.abc import Iterator

SOURCE_SHA256 = "f751a27af7b883bc48327f153af1521fe51ffe8badd42beae916358fc4b68e24"
PHOTOS = Path(__file__).resolve().parent.parent / "tests" / "data" / "faces"
SIDES = (1280, 1024, 640, 256)


def blob(image_bgr: np.ndarray) -> np.ndarray:
    """The detector's input for an image (1 x 3 x H x W, RGB, float32, unscaled)."""
    return cv2.dnn.blobFromImage(image_bgr, 1.0, image_bgr.shape[1::-1], (0, 0, 0), swapRB=True, crop=False)


def calibration_inputs() -> Iterator[dict[str, np.ndarray]]:
    files = sorted(p for p in PHOTOS.iterdir() if p.suffix in (".jpg", ".png"))
    for path in files:
        photo = cv2.imread(str(path), cv2.IMREAD_COLOR)
        for image in (photo, cv2.flip(photo, 1)):
            h, w = image.shape[:2]
            for side in SIDES:
                s = side / max(h, w)
                nw, nh = max(32, int(np.ceil(w * s / 32) * 32)), max(32, int(np.ceil(h * s / 32) * 32))
                interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
                yield {"input.1": blob(cv2.resize(image, (nw, nh), interpolation=interp))}


class Reader(CalibrationDataReader):
    def __init__(self) -> None:
        self._inputs = calibration_inputs()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._inputs, None)


def quantize(src: str, dst: str) -> str:
    data = Path(src).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        sys.exit(f"{src}: sha256 {digest}, expected {SOURCE_SHA256}")
    model = version_converter.convert_version(onnx.load_from_string(data), 13)
    for node in model.graph.node:  # stable names (the exporter left them empty)
        node.name = f"{node.op_type}_{node.output[0]}"
    with tempfile.TemporaryDirectory() as tmp:
        opset13, prepared = f"{tmp}/opset13.onnx", f"{tmp}/prepared.onnx"
        onnx.save(model, opset13)
        quant_pre_process(opset13, prepared, skip_symbolic_shape=True)
        quantize_static(
            prepared, dst, Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    onnx.checker.check_model(dst)
    return hashlib.sha256(Path(dst).read_bytes()).hexdigest()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(quantize(sys.argv[1], sys.argv[2]))

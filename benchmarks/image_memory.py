"""Peak memory of one image in the face stage near the pixel limit, and the cost of
refusing hostile images before decoding them.

    .venv/bin/python benchmarks/image_memory.py [--sizes 12,24,48,60] [--formats JPEG,PNG]

Each measurement runs in its own process: the process imports the stage, builds the
detector and runs it once on a small picture (the baseline), then runs one image
through ``decode`` + ``encode`` (the input and output part of the stage) or through
``process_image`` (everything: decode, detect, redact, encode). The figure is the
peak resident set size above the baseline (``ru_maxrss``), in MB and bytes per
pixel. Pictures are synthetic (lines on a flat colour), so the file sizes stay small;
peak memory depends on the pixel count, not on the content.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import resource, sys
import numpy as np
from scrapy_gdpr.faces.detector import build_detector
from scrapy_gdpr.faces.imageio import decode, encode, output_format
from scrapy_gdpr.faces.stage import process_image
detector = build_detector("strict")
detector.detect(np.zeros((480, 640, 3), np.uint8))
data = open(sys.argv[1], "rb").read()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[2] == "io":
    image = decode(data, max_pixels=10**9, max_frames=100)
    encode(image, output_format(image))
else:
    verdict = process_image(data, detector=detector, max_pixels=10**9)
    assert verdict.stored, verdict.reason
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
"""


def _picture(path: Path, megapixels: int, fmt: str) -> int:
    from PIL import Image, ImageDraw

    side = int((megapixels * 1_000_000) ** 0.5)
    im = Image.new("RGB", (side, side), (200, 180, 160))
    draw = ImageDraw.Draw(im)
    for i in range(0, side, 97):
        draw.line((0, i, side, side - i), fill=(i % 256, 90, 30), width=9)
    im.save(path, fmt)
    return side * side


def _gif_stray_byte(frames: int, side: int) -> bytes:
    sys.path.insert(0, str(ROOT))
    from tests.test_imageio import _gif_with_stray_byte

    return _gif_with_stray_byte(frames, side)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="12,24,48,60", help="megapixels, comma-separated")
    parser.add_argument("--formats", default="JPEG,PNG")
    args = parser.parse_args()
    env = {"PYTHONPATH": str(ROOT)}
    print(f"{'format':6} {'Mpx':>5} {'part':>6} {'peak MB':>8} {'B/px':>5}")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats.split(","):
            for mpx in (int(s) for s in args.sizes.split(",")):
                path = Path(tmp) / f"p.{fmt.lower()}"
                pixels = _picture(path, mpx, fmt)
                for part in ("io", "stage"):
                    done = subprocess.run([sys.executable, "-c", _CHILD, str(path), part], capture_output=True,
                                          text=True, env=env, check=False)
                    if done.returncode:
                        print(f"{fmt:6} {mpx:>5} {part:>6} failed: {done.stderr.strip().splitlines()[-1:]}")
                        continue
                    peak = int(done.stdout.split()[-1]) * 1024
                    print(f"{fmt:6} {mpx:>5} {part:>6} {peak / 2**20:8.0f} {peak / pixels:5.1f}", flush=True)

    from scrapy_gdpr.faces.imageio import ImageRefused, decode

    data = _gif_stray_byte(100, 2000)
    started = time.perf_counter()
    try:
        decode(data, max_pixels=60_000_000, max_frames=100)
    except ImageRefused as exc:
        print(f"GIF, 100 frames of 2000x2000 after a stray byte ({len(data)} bytes): refused "
              f"({exc.reason}) in {1000 * (time.perf_counter() - started):.1f} ms")


if __name__ == "__main__":
    main()

"""CPU time of one face detection, per image and per pass, on one thread.

Usage (from the repository root)::

    python benchmarks/face_cpu.py [--sensitivity strict] [--size 1024x768] [--repeat 5]
                                  [--images DIR] [--limit N]

Wall-clock rates on a shared machine mostly measure the other programs; the
CPU time a process spends (``time.process_time()``) hardly depends on them.
This benchmark builds one detector with one library thread (as the face pool
sets it with one worker per core), runs it on a fixed set of images
``--repeat`` times, and prints the CPU ms per image (the median over the
repeats of the mean over the images, and the lowest) and where it goes: each
CenterFace pass by role (main, flip, refine, coarse, rotated, tile), O-Net,
MediaPipe, and the rest (resizing, voting, NMS).

The images are the throughput benchmark's inputs (made from the
redistributable test photos, so no outside data is needed), or the photos in
``--images DIR`` resized to ``--size`` (e.g. a development set, read where it
lies, never copied).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from face_throughput import fill, make_inputs

from scrapy_gdpr.faces import detector as D


def timed(totals: dict[str, float], key: Any, fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        name = key(*args, **kwargs) if callable(key) else key
        t0 = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] += time.process_time() - t0

    return wrapper


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sensitivity", default="strict", choices=sorted(D.PROFILES))
    p.add_argument("--size", default="1024x768", help="W x H of the images")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--images", type=Path, help="a folder of photos to use instead of the test photos")
    p.add_argument("--limit", type=int, default=20, help="photos taken from --images (sorted by name)")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))

    if args.images:
        files = sorted(f for f in args.images.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        imgs = [fill(cv2.imread(str(f), cv2.IMREAD_COLOR), w, h) for f in files[: args.limit]]
    else:
        imgs = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in make_inputs(w, h)]
    imgs = [np.ascontiguousarray(i) for i in imgs]

    threads = D.configure_library_threads(len(D.os.sched_getaffinity(0)))
    det = D.EnsembleDetector(args.sensitivity)
    totals: dict[str, float] = defaultdict(float)
    net = det._centerface
    net.run = timed(totals, lambda _img, _s, _t, role="main": f"centerface {role}", net.run)  # type: ignore[method-assign]
    onet = getattr(det, "_onet", None)  # older checkouts have no O-Net
    if onet is not None:
        onet.score = timed(totals, "o-net", onet.score)  # type: ignore[method-assign]
    if det._blazeface is not None:
        det._blazeface.run = timed(totals, "mediapipe", det._blazeface.run)  # type: ignore[method-assign]

    for img in imgs:  # warm-up: graph set-up is not timed
        det.detect_array(img)
    totals.clear()
    per_round = []
    for _ in range(args.repeat):
        t0 = time.process_time()
        for img in imgs:
            det.detect_array(img)
        per_round.append(1000 * (time.process_time() - t0) / len(imgs))
    n = args.repeat * len(imgs)
    print(f"detector {det.version} on {det.runtime}, {threads} library thread(s); "
          f"{len(imgs)} images of {w}x{h}, {args.repeat} repeats")
    print(f"CPU per image: median {statistics.median(per_round):.1f} ms, lowest {min(per_round):.1f} ms "
          f"[{', '.join(f'{r:.1f}' for r in per_round)}]")
    accounted = 0.0
    for name, t in sorted(totals.items(), key=lambda kv: -kv[1]):
        accounted += t
        print(f"  {name:20s} {1000 * t / n:6.1f} ms")
    print(f"  {'rest':20s} {statistics.mean(per_round) - 1000 * accounted / n:6.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

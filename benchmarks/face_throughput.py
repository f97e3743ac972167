"""End-to-end throughput of the face stage's image work: decode, detect, redact, encode.

Usage (from the repository root)::

    python benchmarks/face_throughput.py [--sensitivity strict] [--workers N] [--seconds 20] [--pipeline]

Inputs are JPEGs generated from the redistributable test photos in
``tests/data/faces`` (resized, cropped and tiled to 640x480 and 1024x768), so
the benchmark needs no outside data. It prints images per second for one
worker and for the pool (threads, one detector per thread; the libraries get
the cores shared out between the workers, as the face stage's pool does, so with
one worker per core each worker uses one core), a few rounds
each: the best and the median round. The machine's other load shows up in the
median.

``--pipeline`` also times what ``GdprImagesPipeline`` does with one downloaded
image in its worker, from the response's bytes to the encoded files it stores
(the full JPEG and one 270x270 thumbnail): the whole face stage (type checks,
decoding with its limits, detection, redaction) and the renditions, one worker.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scrapy_gdpr.faces.detector import CENTERFACE_RUNTIMES, EnsembleDetector, FaceDetector, configure_library_threads
from scrapy_gdpr.faces.redact import redact

DATA = ROOT / "tests" / "data" / "faces"


def fill(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Scale to cover w x h, then centre-crop."""
    s = max(w / img.shape[1], h / img.shape[0])
    r = cv2.resize(img, (max(w, round(img.shape[1] * s)), max(h, round(img.shape[0] * s))), interpolation=cv2.INTER_AREA)
    y0, x0 = (r.shape[0] - h) // 2, (r.shape[1] - w) // 2
    return r[y0 : y0 + h, x0 : x0 + w]


def make_inputs(w: int, h: int) -> list[bytes]:
    names = ["deface_city.jpg", "skimage_astronaut.png", "skimage_camera.png", "skimage_coffee.png", "skimage_chelsea.png"]
    photos = [cv2.imread(str(DATA / n), cv2.IMREAD_COLOR) for n in names]
    imgs = [fill(p, w, h) for p in photos]
    # a 2x2 mosaic (four smaller faces and scenes) and a 3x3 tiling of the street scene (many small faces)
    half = [fill(p, w // 2, h // 2) for p in photos[:4]]
    imgs.append(np.vstack([np.hstack(half[:2]), np.hstack(half[2:])]))
    third = fill(photos[0], w // 3, h // 3)
    imgs.append(fill(np.vstack([np.hstack([third] * 3)] * 3), w, h))
    out = []
    for img in imgs:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out.append(buf.tobytes())
    return out


def process(det: FaceDetector, data: bytes) -> bytes:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    faces = det.detect(img)
    out = redact(img, faces, "blur", 0.25)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def run_round(inputs: list[bytes], workers: int, detectors: list[FaceDetector], seconds: float) -> tuple[float, float]:
    """Process the inputs round-robin for about ``seconds``; return images/s and
    CPU ms per image (process CPU time: unlike wall time, hardly affected by
    other programs competing for the cores)."""
    n_each = max(1, len(inputs))
    local = threading.local()
    pool_dets = list(detectors)
    lock = threading.Lock()

    def det_for_thread() -> FaceDetector:
        d = getattr(local, "det", None)
        if d is None:
            with lock:
                d = local.det = pool_dets.pop()
        return d

    done = 0
    cpu0 = time.process_time()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench-faces") as ex:
        while time.perf_counter() - start < seconds:
            batch = [inputs[i % n_each] for i in range(max(workers * 2, n_each))]
            list(ex.map(lambda b: process(det_for_thread(), b), batch))
            done += len(batch)
    return done / (time.perf_counter() - start), 1000 * (time.process_time() - cpu0) / done


def pipeline_worker(sensitivity: str) -> Any:
    """``work(data) -> list of stored bytes``: the images pipeline's worker-thread work
    for one downloaded image, on a pipeline built for a throwaway crawler."""
    import tempfile

    import yaml
    from scrapy import Request, Spider
    from scrapy.http import Response
    from scrapy.utils.test import get_crawler

    from scrapy_gdpr.images import GdprImagesPipeline

    folder = Path(tempfile.mkdtemp(prefix="gdpr-face-bench-"))
    policy = yaml.safe_load((ROOT / "tests" / "data" / "policies" / "valid.yaml").read_text(encoding="utf-8"))
    policy["faces"] = {**policy.get("faces", {}), "sensitivity": sensitivity, "action": "blur"}
    (folder / "policy.yaml").write_text(yaml.safe_dump(policy), encoding="utf-8")
    crawler = get_crawler(Spider, {
        "GDPR_POLICY": str(folder / "policy.yaml"), "GDPR_AUDIT_LOG": str(folder / "audit.jsonl"),
        "GDPR_REPORT_DIR": str(folder / "reports"), "GDPR_LEDGER": f"sqlite:///{folder / 'ledger.sqlite3'}",
        "IMAGES_STORE": str(folder / "images"), "IMAGES_THUMBS": {"small": (270, 270)}, "GDPR_FACE_WORKERS": 1,
    })
    pipe = GdprImagesPipeline.from_crawler(crawler)
    request = Request("https://images.bench.test/photo.jpg")

    def work(data: bytes) -> list[bytes]:
        response = Response(request.url, body=data, headers={"Content-Type": "image/jpeg"}, request=request)
        if hasattr(pipe, "_check_and_render"):  # one decode, one encode per stored file
            verdict, renditions, _ = pipe._check_and_render(response, request, None, None)
            return [r.data for r in renditions]
        # an older checkout: the stage's output decoded and encoded again
        verdict = pipe.faces.run_stage(data, "image/jpeg")
        return [buf.getvalue() for _, _, buf in pipe._convert_all(response.replace(body=verdict.data), request, None, None)]

    return work


def time_pipeline(work: Any, inputs: list[bytes], seconds: float) -> tuple[float, float]:
    """(images per second, CPU ms per image) for ``work`` on one thread."""
    start, cpu0, done = time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - start < seconds:
        for data in inputs:
            stored = work(data)
            assert len(stored) == 2, "the image was not stored"
            done += 1
    return done / (time.perf_counter() - start), 1000 * (time.process_time() - cpu0) / done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sensitivity", default="strict", choices=["strict", "balanced", "fast"])
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="pool size (default: CPU count)")
    p.add_argument("--seconds", type=float, default=15.0, help="length of one round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runtime", default="auto", choices=CENTERFACE_RUNTIMES,
                   help="what runs CenterFace (default: ONNX Runtime when installed)")
    p.add_argument("--pipeline", action="store_true",
                   help="also time the images pipeline's work per image (stage and stored files, one worker)")
    args = p.parse_args(argv)

    # threads per worker as the face pool sets them (one core per worker when there
    # are as many workers as cores); the one-worker rounds use the same setting, so
    # they give the time per image per worker
    threads = configure_library_threads(max(args.workers, 1))
    detectors = [EnsembleDetector(args.sensitivity, runtime=args.runtime) for _ in range(max(args.workers, 1))]
    import scrapy_gdpr

    # which checkout is measured (when comparing two side by side)
    print(f"package {Path(scrapy_gdpr.__file__).parent}")
    print(f"detector {detectors[0].name} {detectors[0].version} on {detectors[0].runtime}, "
          f"{threads} library thread(s) per worker; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}; rounds of {args.seconds:.0f} s")
    for w, h in ((640, 480), (1024, 768)):
        inputs = make_inputs(w, h)
        for d in detectors:  # warm-up: graph set-up is not timed
            process(d, inputs[0])
        for workers in sorted({1, args.workers}):
            res = [run_round(inputs, workers, detectors[:workers], args.seconds) for _ in range(args.rounds)]
            rates = [r for r, _ in res]
            best, med = max(rates), statistics.median(rates)
            cpu = min(c for _, c in res)
            print(f"{w}x{h} JPEG, {workers} worker{'s' if workers > 1 else ''}: "
                  f"best {best:5.2f} images/s ({1000 * workers / best:4.0f} ms per image per worker), "
                  f"median {med:5.2f} images/s, CPU {cpu:4.0f} ms per image  "
                  f"[rounds: {', '.join(f'{r:.2f}' for r in rates)}]")
        if args.pipeline:
            work = pipeline_worker(args.sensitivity)
            work(inputs[0])  # warm-up
            res = [time_pipeline(work, inputs, args.seconds) for _ in range(args.rounds)]
            rates = [r for r, _ in res]
            print(f"{w}x{h} JPEG through GdprImagesPipeline (stage + full image + 1 thumbnail), 1 worker: "
                  f"best {max(rates):5.2f} images/s, median {statistics.median(rates):5.2f} images/s, "
                  f"CPU {min(c for _, c in res):4.0f} ms per image  [rounds: {', '.join(f'{r:.2f}' for r in rates)}]")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

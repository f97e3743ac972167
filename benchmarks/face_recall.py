"""Recall, false positives and leak of the face detector and redaction on an annotated set.

Usage (from the repository root)::

    python benchmarks/face_recall.py [--dataset DIR] [--out DIR] [--sensitivity strict]

``DIR/annotations.json`` uses the dev set's format: ``{"images": [{"file",
"faces": [[x, y, w, h], ...], "ignore": [[x, y, w, h], ...]}, ...]}`` with
boxes in pixels of the stored image. The default dataset is
``../shared/faces/dev`` relative to the repository root, when it exists.

Scoring follows the reference rules: greedy matching by descending score at
IoU >= 0.5; unmatched detections on an ``ignore`` region are not false
positives. The leak counts annotated faces whose box is nearly unmodified
after redaction (SSIM >= 0.8), or still found by a second detector pass on the
redacted image while SSIM >= 0.5.

``--out`` receives ``detections.json`` (``{"file": [[x, y, w, h, score], ...]}``),
the redacted images under ``redacted/`` (same file names), and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scrapy_gdpr.faces.detector import (  # noqa: E402
    CENTERFACE_RUNTIMES,
    EnsembleDetector,
    build_detector,
    configure_library_threads,
    registered_detectors,
)
from scrapy_gdpr.faces.redact import ACTIONS, redact  # noqa: E402
from scrapy_gdpr.faces.leak import ssim  # noqa: E402

BUCKETS = [("<20", 0, 20), ("20-50", 20, 50), ("50-150", 50, 150), (">150", 150, float("inf"))]


def bucket(h: float) -> str:
    for name, lo, hi in BUCKETS:
        if lo <= h < hi:
            return name
    return BUCKETS[-1][0]


def overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU and intersection over the area of each box of ``a`` (xywh)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b))), np.zeros((len(a), len(b)))
    ax1, ay1 = a[:, 0:1], a[:, 1:2]
    ax2, ay2 = ax1 + a[:, 2:3], ay1 + a[:, 3:4]
    bx1, by1 = b[:, 0], b[:, 1]
    bx2, by2 = bx1 + b[:, 2], by1 + b[:, 3]
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None)
    inter = iw * ih
    union = a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter
    return inter / np.maximum(union, 1e-9), inter / np.maximum(a[:, 2:3] * a[:, 3:4], 1e-9)


def match(gt: np.ndarray, ignore: np.ndarray, dets: np.ndarray, thr: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching; returns (ground-truth face matched, detection is a false positive)."""
    matched = np.zeros(len(gt), bool)
    fp = np.zeros(len(dets), bool)
    if len(dets) == 0:
        return matched, fp
    ious, _ = overlaps(dets[:, :4], gt)
    for di in np.argsort(-dets[:, 4], kind="stable"):
        if len(gt):
            cand = np.where(matched, -1.0, ious[di])
            j = int(np.argmax(cand))
            if cand[j] >= thr:
                matched[j] = True
                continue
        fp[di] = True
    if len(ignore) and fp.any():
        idx = np.nonzero(fp)[0]
        iou, ioa = overlaps(dets[idx, :4], ignore)
        fp[idx[(iou.max(1) >= 0.5) | (ioa.max(1) >= 0.5)]] = False
    return matched, fp


def face_ssims(orig: np.ndarray, anon: np.ndarray, faces: np.ndarray) -> np.ndarray:
    h, w = orig.shape[:2]
    out = []
    for x, y, fw, fh in faces:
        x1, y1, x2, y2 = int(max(x, 0)), int(max(y, 0)), int(min(x + fw, w)), int(min(y + fh, h))
        out.append(0.0 if x2 - x1 < 2 or y2 - y1 < 2 else ssim(orig[y1:y2, x1:x2], anon[y1:y2, x1:x2]))
    return np.asarray(out)


def boxes(entry: dict, key: str) -> np.ndarray:
    return np.asarray(entry.get(key, []), np.float64).reshape(-1, 4)


def default_dataset() -> Path | None:
    cand = ROOT.parent / "shared" / "faces" / "dev"
    return cand if (cand / "annotations.json").is_file() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path, default=None, help="folder with annotations.json and the images")
    p.add_argument("--out", type=Path, default=None, help="where detections, redacted images and results go")
    p.add_argument("--sensitivity", default="strict", choices=["strict", "balanced", "fast"])
    p.add_argument("--min-confidence", type=float, default=None)
    p.add_argument("--backend", default="ensemble", choices=registered_detectors())
    p.add_argument("--action", default="blur", choices=ACTIONS)
    p.add_argument("--margin", type=float, default=0.25)
    p.add_argument("--threads", type=int, default=1,
                   help="library threads for the detector (default 1: one pool worker's share on 2 cores)")
    p.add_argument("--runtime", default="auto", choices=CENTERFACE_RUNTIMES,
                   help="what runs CenterFace (ensemble only; default: ONNX Runtime when installed)")
    args = p.parse_args(argv)

    dataset = args.dataset or default_dataset()
    if dataset is None:
        p.error("no --dataset given and ../shared/faces/dev (relative to the repository root) does not exist")
    ann_path = dataset / "annotations.json"
    if not ann_path.is_file():
        p.error(f"{ann_path} not found: --dataset must be a folder holding annotations.json and the images")
    with ann_path.open() as f:
        data = json.load(f)
    entries = data["images"] if isinstance(data, dict) else data
    out = args.out or Path(tempfile.mkdtemp(prefix="face_recall_"))
    (out / "redacted").mkdir(parents=True, exist_ok=True)
    configure_library_threads(1, cpus=args.threads)  # args.threads for the one detector

    if args.backend == "ensemble":
        det = EnsembleDetector(args.sensitivity, args.min_confidence, runtime=args.runtime)
    else:
        det = build_detector(args.sensitivity, args.min_confidence, backend=args.backend)
    n_by = {b[0]: 0 for b in BUCKETS}
    hit_by = {b[0]: 0 for b in BUCKETS}
    leak_by = {b[0]: 0 for b in BUCKETS}
    n_fp = 0
    nonface_px = redacted_nonface_px = 0
    t_detect: list[float] = []
    t_redact: list[float] = []
    all_dets: dict[str, list[list[float]]] = {}
    per_image = []
    warm = True
    for e in entries:
        img = cv2.imread(str(dataset / e["file"]), cv2.IMREAD_COLOR)
        if img is None:
            p.error(f"cannot read {dataset / e['file']}")
        gt, ign = boxes(e, "faces"), boxes(e, "ignore")
        if warm:
            det.detect(img)  # model initialisation is not timed
            warm = False
        t0 = time.perf_counter()
        found = det.detect(img)
        t1 = time.perf_counter()
        anon = redact(img, found, args.action, args.margin)
        t2 = time.perf_counter()
        t_detect.append(t1 - t0)
        t_redact.append(t2 - t1)
        d = np.asarray([[f.x, f.y, f.w, f.h, f.score] for f in found], np.float64).reshape(-1, 5)
        all_dets[e["file"]] = np.round(d, 2).tolist()
        matched, fp = match(gt, ign, d)
        n_fp += int(fp.sum())

        dst = out / "redacted" / e["file"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        ext = dst.suffix.lower()
        params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
        if not cv2.imwrite(str(dst), anon, params):
            p.error(f"cannot write {dst}")
        anon_read = cv2.imread(str(dst), cv2.IMREAD_COLOR)

        # share of the non-face area that the redaction changed
        changed = np.abs(anon.astype(np.int16) - img.astype(np.int16)).max(2) > 2
        face_mask = np.zeros(img.shape[:2], bool)
        for x, y, w, h in np.vstack([gt, ign]):
            face_mask[max(int(y), 0) : max(int(np.ceil(y + h)), 0), max(int(x), 0) : max(int(np.ceil(x + w)), 0)] = True
        nonface_px += int((~face_mask).sum())
        redacted_nonface_px += int((changed & ~face_mask).sum())

        # leak: box left nearly unmodified, or still found on the redacted image
        ss = face_ssims(img, anon_read, gt) if len(gt) else np.zeros(0)
        again = det.detect(anon_read)
        d2 = np.asarray([[f.x, f.y, f.w, f.h, f.score] for f in again], np.float64).reshape(-1, 5)
        matched2, _ = match(gt, ign, d2)
        leak = (ss >= 0.8) | (matched2 & (ss >= 0.5))
        for k, (_, _, _, h) in enumerate(gt):
            b = bucket(h)
            n_by[b] += 1
            hit_by[b] += int(matched[k])
            leak_by[b] += int(leak[k])
        per_image.append({"file": e["file"], "faces": len(gt), "found": int(matched.sum()), "fp": int(fp.sum()),
                          "leaked": int(leak.sum()), "ms_detect": round(1000 * (t1 - t0), 1)})

    with (out / "detections.json").open("w") as f:
        json.dump(all_dets, f)
    n = sum(n_by.values())
    hits = sum(hit_by.values())
    leaks = sum(leak_by.values())
    small_n, small_leak = n_by["<20"], leak_by["<20"]
    big_n, big_leak = n - small_n, leaks - small_leak

    def pct(a: int, b: int) -> str:
        return f"{100 * a / b:5.1f} %" if b else "   -   "

    results = {
        "dataset": str(dataset), "images": len(entries), "faces": n, "detector": f"{det.name} {det.version}",
        "runtime": getattr(det, "runtime", None),
        "action": args.action, "margin": args.margin,
        "recall": hits / max(n, 1),
        "recall_by_height": {k: (hit_by[k] / n_by[k] if n_by[k] else None, n_by[k]) for k in n_by},
        "fp_per_image": n_fp / max(len(entries), 1),
        "leak": leaks / max(n, 1), "leak_ge20": big_leak / max(big_n, 1), "leak_lt20": small_leak / max(small_n, 1),
        "leak_by_height": {k: (leak_by[k], n_by[k]) for k in n_by},
        "nonface_area_redacted": redacted_nonface_px / max(nonface_px, 1),
        "ms_detect_mean": 1000 * float(np.mean(t_detect)), "ms_detect_median": 1000 * float(np.median(t_detect)),
        "ms_redact_mean": 1000 * float(np.mean(t_redact)),
        "per_image": per_image,
    }
    with (out / "results.json").open("w") as f:
        json.dump(results, f, indent=1)

    print(f"dataset {dataset}: {len(entries)} images, {n} faces; detector {det.name} {det.version}; "
          f"redaction {args.action} margin {args.margin}")
    print(f"recall (IoU >= 0.5): {pct(hits, n)}  ({hits}/{n})")
    print("  by face height: " + "  ".join(f"{k}: {pct(hit_by[k], n_by[k])} (n={n_by[k]})" for k in n_by))
    print(f"false positives per image: {results['fp_per_image']:.2f}")
    print(f"leak: {pct(leaks, n)} ({leaks}/{n});  faces >= 20 px: {pct(big_leak, big_n)} ({big_leak}/{big_n});  "
          f"faces < 20 px: {pct(small_leak, small_n)} ({small_leak}/{small_n})")
    print("  by face height: " + "  ".join(f"{k}: {leak_by[k]}/{n_by[k]}" for k in n_by))
    print(f"non-face area redacted: {100 * results['nonface_area_redacted']:.2f} %")
    print(f"ms per image: detect mean {results['ms_detect_mean']:.0f} (median {results['ms_detect_median']:.0f}), "
          f"redact mean {results['ms_redact_mean']:.1f}  [{getattr(det, 'runtime', det.name)}, {args.threads} thread(s)]")
    print(f"wrote {out / 'detections.json'}, {out / 'redacted'}/, {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

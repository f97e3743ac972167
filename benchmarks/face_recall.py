"""Recall, false positives and leak of the face detector and redaction on annotated sets.

Usage (from the repository root)::

    python benchmarks/face_recall.py [--dataset DIR ...] [--out DIR] [--sensitivity strict]
                                     [--set NAME=VALUE ...]

``DIR/annotations.json`` uses the dev set's format: ``{"images": [{"file",
"faces": [[x, y, w, h], ...], "ignore": [[x, y, w, h], ...]}, ...]}`` with
boxes in pixels of the stored image. By default both shared development sets
are measured, ``../shared/faces/dev-wider`` (305 photos) and
``../shared/faces/dev`` (26 photos), relative to the repository root, those
that exist; a summary line per set follows.

Scoring follows the reference rules: greedy matching by descending score at
IoU >= 0.5; unmatched detections on an ``ignore`` region are not false
positives. The leak counts annotated faces whose box is nearly unmodified
after redaction (SSIM >= 0.8), or still found on the redacted image by the
reference detector (CenterFace at the image's size, threshold 0.2, as
``face_eval.py residual --reference centerface`` runs it) while SSIM >= 0.5.
Every leak figure is printed with the false positives per image and the share
of the non-face area redacted beside it.

``--set NAME=VALUE`` overrides one field of the profile (see
``scrapy_gdpr.faces.detector.Profile``), to measure an ingredient on its own,
e.g. ``--set rotate_side=0`` (no rotated passes) or ``--set flip=true``.

``--out`` receives, per set (in a sub-folder named after it when there are
several), ``detections.json`` (``{"file": [[x, y, w, h, score], ...]}``), the
redacted images under ``redacted/`` (same file names), and ``results.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scrapy_gdpr.faces.boxes import overlaps
from scrapy_gdpr.faces.detector import (
    CENTERFACE_RUNTIMES,
    PROFILES,
    EnsembleDetector,
    Profile,
    build_detector,
    configure_library_threads,
    registered_detectors,
)
from scrapy_gdpr.faces.leak import ReferenceDetector, ssim
from scrapy_gdpr.faces.redact import ACTIONS, redact

BUCKETS = [("<20", 0, 20), ("20-50", 20, 50), ("50-150", 50, 150), (">150", 150, float("inf"))]


def bucket(h: float) -> str:
    for name, lo, hi in BUCKETS:
        if lo <= h < hi:
            return name
    return BUCKETS[-1][0]


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


def default_datasets() -> list[Path]:
    """The shared face sets next to the repository that exist: dev-wider, then dev."""
    base = ROOT.parent / "shared" / "faces"
    return [base / n for n in ("dev-wider", "dev") if (base / n / "annotations.json").is_file()]


def profile_overrides(items: list[str]) -> dict[str, object]:
    """``--set name=value`` pairs, typed like the profile's fields."""
    fields = {f.name: f for f in dataclasses.fields(Profile)}
    out: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set {item!r}: use NAME=VALUE with NAME one of {sorted(fields)}")
        kind = type(getattr(PROFILES["strict"], name))
        out[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out


def evaluate(dataset: Path, det, ref: ReferenceDetector, out: Path, args: argparse.Namespace) -> dict:
    """Detect, redact and score every image of one annotated set."""
    with (dataset / "annotations.json").open() as f:
        data = json.load(f)
    entries = data["images"] if isinstance(data, dict) else data
    (out / "redacted").mkdir(parents=True, exist_ok=True)
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
            raise SystemExit(f"cannot read {dataset / e['file']}")
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
            raise SystemExit(f"cannot write {dst}")
        anon_read = cv2.imread(str(dst), cv2.IMREAD_COLOR)

        # share of the non-face area that the redaction changed
        changed = np.abs(anon.astype(np.int16) - img.astype(np.int16)).max(2) > 2
        face_mask = np.zeros(img.shape[:2], bool)
        for x, y, w, h in np.vstack([gt, ign]):
            face_mask[max(int(y), 0) : max(int(np.ceil(y + h)), 0), max(int(x), 0) : max(int(np.ceil(x + w)), 0)] = True
        nonface_px += int((~face_mask).sum())
        redacted_nonface_px += int((changed & ~face_mask).sum())

        # leak: box left nearly unmodified, or still found on the redacted image
        # by the reference detector (not the detector under test)
        ss = face_ssims(img, anon_read, gt) if len(gt) else np.zeros(0)
        matched2, _ = match(gt, ign, ref.detect_array(anon_read))
        leak = (ss >= 0.8) | (matched2 & (ss >= 0.5))
        for k, (_, _, _, h) in enumerate(gt):
            b = bucket(h)
            n_by[b] += 1
            hit_by[b] += int(matched[k])
            leak_by[b] += int(leak[k])
        per_image.append({"file": e["file"], "faces": len(gt), "found": int(matched.sum()), "fp": int(fp.sum()),
                          "leaked": int(leak.sum()), "ms_detect": round(1000 * (t1 - t0), 1),
                          "leaked_boxes": gt[leak].tolist()})

    with (out / "detections.json").open("w") as f:
        json.dump(all_dets, f)
    n = sum(n_by.values())
    hits = sum(hit_by.values())
    leaks = sum(leak_by.values())
    small_n, small_leak = n_by["<20"], leak_by["<20"]
    big_n, big_leak = n - small_n, leaks - small_leak
    results = {
        "dataset": str(dataset), "images": len(entries), "faces": n, "detector": f"{det.name} {det.version}",
        "runtime": getattr(det, "runtime", None), "profile_overrides": args.set,
        "action": args.action, "margin": args.margin,
        "recall": hits / max(n, 1), "found": hits,
        "recall_by_height": {k: (hit_by[k] / n_by[k] if n_by[k] else None, n_by[k]) for k in n_by},
        "fp_per_image": n_fp / max(len(entries), 1),
        "leak": leaks / max(n, 1), "leaks": leaks, "leak_ge20": big_leak / max(big_n, 1),
        "leak_lt20": small_leak / max(small_n, 1), "leaks_ge20": [big_leak, big_n], "leaks_lt20": [small_leak, small_n],
        "leak_by_height": {k: (leak_by[k], n_by[k]) for k in n_by},
        "nonface_area_redacted": redacted_nonface_px / max(nonface_px, 1),
        "ms_detect_mean": 1000 * float(np.mean(t_detect)), "ms_detect_median": 1000 * float(np.median(t_detect)),
        "ms_redact_mean": 1000 * float(np.mean(t_redact)),
        "per_image": per_image,
    }
    with (out / "results.json").open("w") as f:
        json.dump(results, f, indent=1)
    return results


def pct(a: int, b: int) -> str:
    return f"{100 * a / b:5.1f} %" if b else "   -   "


def report(r: dict, out: Path, threads: int) -> None:
    n_by = {k: v[1] for k, v in r["leak_by_height"].items()}
    (bl, bn), (sl, sn) = r["leaks_ge20"], r["leaks_lt20"]
    print(f"dataset {r['dataset']}: {r['images']} images, {r['faces']} faces; detector {r['detector']}; "
          f"redaction {r['action']} margin {r['margin']}")
    print(f"recall (IoU >= 0.5): {pct(r['found'], r['faces'])}  ({r['found']}/{r['faces']})")
    print("  by face height: " + "  ".join(
        f"{k}: {pct(round((v or 0) * n_by[k]), n_by[k])} (n={n_by[k]})" for k, (v, _) in r["recall_by_height"].items()))
    fp_area = f"FP/img {r['fp_per_image']:.2f}, non-face area redacted {100 * r['nonface_area_redacted']:.2f} %"
    print(f"leak: {pct(r['leaks'], r['faces'])} ({r['leaks']}/{r['faces']});  faces >= 20 px: {pct(bl, bn)} "
          f"({bl}/{bn});  faces < 20 px: {pct(sl, sn)} ({sl}/{sn});  {fp_area}")
    print("  leak by face height: " + "  ".join(f"{k}: {a}/{b}" for k, (a, b) in r["leak_by_height"].items()))
    print(f"false positives per image: {r['fp_per_image']:.2f}")
    print(f"non-face area redacted: {100 * r['nonface_area_redacted']:.2f} %")
    print(f"ms per image: detect mean {r['ms_detect_mean']:.0f} (median {r['ms_detect_median']:.0f}), "
          f"redact mean {r['ms_redact_mean']:.1f}  [{r['runtime']}, {threads} thread(s)]")
    print(f"wrote {out / 'detections.json'}, {out / 'redacted'}/, {out / 'results.json'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", type=Path, action="append", default=None,
                   help="folder with annotations.json and the images (repeatable; default: "
                        "../shared/faces/dev-wider and ../shared/faces/dev, those that exist)")
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
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a field of the profile (ensemble only), to measure one ingredient: "
                        "e.g. --set rotate_side=0, --set flip=true")
    args = p.parse_args(argv)

    datasets = args.dataset or default_datasets()
    if not datasets:
        p.error("no --dataset given and neither ../shared/faces/dev-wider nor ../shared/faces/dev "
                "(relative to the repository root) exists")
    for ds in datasets:
        if not (ds / "annotations.json").is_file():
            p.error(f"{ds / 'annotations.json'} not found: --dataset must be a folder holding annotations.json "
                    "and the images")
    out = args.out or Path(tempfile.mkdtemp(prefix="face_recall_"))
    configure_library_threads(1, cpus=args.threads)  # args.threads for the one detector

    if args.backend == "ensemble":
        det = EnsembleDetector(args.sensitivity, args.min_confidence, runtime=args.runtime)
        if args.set:
            det.profile = dataclasses.replace(det.profile, **profile_overrides(args.set))
            det.version += "+" + ",".join(args.set)
    else:
        if args.set:
            p.error("--set only applies to the ensemble back end")
        det = build_detector(args.sensitivity, args.min_confidence, backend=args.backend)
    ref = ReferenceDetector(runtime=args.runtime)
    summary = []
    for i, ds in enumerate(datasets):
        sub = out / ds.name if len(datasets) > 1 else out
        r = evaluate(ds, det, ref, sub, args)
        if i:
            print()
        report(r, sub, args.threads)
        summary.append(r)
    if len(summary) > 1:
        print("\nsummary (leak with FP/img and non-face area beside it):")
        for r in summary:
            (bl, bn), (sl, sn) = r["leaks_ge20"], r["leaks_lt20"]
            print(f"  {Path(r['dataset']).name:10s} recall {100 * r['recall']:5.1f} %  leak >= 20 px {pct(bl, bn)} "
                  f"({bl}/{bn})  < 20 px {pct(sl, sn)} ({sl}/{sn})  >150 px {r['leak_by_height']['>150'][0]}  "
                  f"FP/img {r['fp_per_image']:.2f}  non-face area {100 * r['nonface_area_redacted']:.2f} %  "
                  f"ms/img {r['ms_detect_mean']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

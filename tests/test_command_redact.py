"""scrapy gdpr-redact, run as a user runs it (in a subprocess)."""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING

import cv2
import numpy as np
import yaml
from PIL import Image

from scrapy_gdpr.faces.imageio import source_box
from tests.utils import DATA, run_scrapy

if TYPE_CHECKING:
    from pathlib import Path

IMAGES = DATA / "images"
FACE_BOX = (91, 31, 43, 58)  # upright astronaut face in the fixtures


def iou(a, b) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def make_input(tmp_path: Path, names: dict[str, str]) -> Path:
    src = tmp_path / "in"
    for target, name in names.items():
        (src / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(IMAGES / name, src / target)
    return src


def test_redacts_a_folder_under_the_same_names(tmp_path):
    src = make_input(tmp_path, {
        "face.jpg": "face-baseline.jpg",
        "coffee.png": "noface.png",
        "sideways.jpg": "face-exif-gps-rot6.jpg",
        "nested/deeper/face.bmp": "face.bmp",
        "animated.gif": "face-animated.gif",
    })
    (src / "notes.txt").write_text("not an image", encoding="utf-8")
    (src / ".hidden.jpg").write_bytes((IMAGES / "face-baseline.jpg").read_bytes())
    out, dets = tmp_path / "out", tmp_path / "detections.json"
    result = run_scrapy("gdpr-redact", str(src), "--out", str(out), "--detections-out", str(dets), "--workers", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 image(s), action blur: 5 written" in result.stdout
    assert "0 not stored" in result.stdout

    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["animated.gif", "coffee.png", "face.jpg", "nested/deeper/face.bmp", "sideways.jpg"]
    for name, fmt in (("face.jpg", "JPEG"), ("coffee.png", "PNG"), ("nested/deeper/face.bmp", "BMP"),
                      ("animated.gif", "GIF"), ("sideways.jpg", "JPEG")):
        with Image.open(out / name) as im:
            assert im.format == fmt, name  # the content matches the name
            assert not im.getexif() and "icc_profile" not in im.info, name
            assert getattr(im, "n_frames", 1) == (3 if fmt == "GIF" else 1)
    # what face_eval.py residual does: read both with OpenCV (which reads no GIF), same shapes
    for name in ("face.jpg", "coffee.png", "nested/deeper/face.bmp", "sideways.jpg"):
        original, anonymised = cv2.imread(str(src / name)), cv2.imread(str(out / name))
        assert original is not None and anonymised is not None and original.shape == anonymised.shape, name
    # the no-face PNG is pixel-identical; the face JPEG is not
    with Image.open(out / "coffee.png") as a, Image.open(src / "coffee.png") as b:
        assert (np.asarray(a) == np.asarray(b)).all()

    boxes = json.loads(dets.read_text(encoding="utf-8"))
    assert sorted(boxes) == written
    assert boxes["coffee.png"] == []
    for name in ("face.jpg", "nested/deeper/face.bmp", "sideways.jpg"):
        assert boxes[name], name
        for box in boxes[name]:
            assert len(box) == 5 and all(isinstance(v, (int, float)) for v in box)
            assert 0 < box[4] <= 1
    assert max(iou(b, FACE_BOX) for b in boxes["face.jpg"]) > 0.3
    # boxes are in pixels of the input as stored: the sideways file is 192 wide and 256 high
    expected = source_box(FACE_BOX, 6, (192, 256))
    assert max(iou(b, expected) for b in boxes["sideways.jpg"]) > 0.3
    assert all(b[0] + b[2] <= 192.5 and b[1] + b[3] <= 256.5 for b in boxes["sideways.jpg"])


def test_refused_files_are_listed_and_the_exit_code_is_one(tmp_path):
    src = make_input(tmp_path, {"a.svg": "bad-image.svg", "b.jpg": "bad-truncated.jpg", "c.jpg": "face-baseline.jpg",
                                "d.png": "bad-bomb.png"})
    out = tmp_path / "out"
    result = run_scrapy("gdpr-redact", str(src / "a.svg"), str(src / "b.jpg"), str(src / "c.jpg"),
                        str(src / "d.png"), "--out", str(out), "--workers", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "4 image(s), action blur: 1 written" in result.stdout
    assert "not stored: a.svg: unsupported_type (image/svg+xml)" in result.stdout
    assert "not stored: b.jpg: undecodable" in result.stdout
    assert "not stored: d.png: too_many_pixels" in result.stdout
    assert [p.name for p in out.iterdir()] == ["c.jpg"]


def test_policy_and_action_options(tmp_path):
    policy = yaml.safe_load((DATA / "policies" / "valid.yaml").read_text(encoding="utf-8"))
    policy["faces"] = {"action": "fill", "margin": 0, "allow_unchecked_types": ["image/svg+xml"]}
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    src = make_input(tmp_path, {"face.bmp": "face.bmp"})
    drawing = DATA.parent / "site" / "hosts" / "gallery-people" / "drawing.svg"
    shutil.copy(drawing, src / "logo.svg")
    out = tmp_path / "out"
    result = run_scrapy("gdpr-redact", str(src), "--out", str(out), "--policy", str(policy_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "action fill" in result.stdout
    assert (out / "logo.svg").read_bytes() == (src / "logo.svg").read_bytes()  # unchecked, allowed by policy
    # an SVG carrying a picture is not stored unchecked, even with SVG allowed
    shutil.copy(IMAGES / "bad-image.svg", src / "embedded.svg")
    again = run_scrapy("gdpr-redact", str(src / "embedded.svg"), "--out", str(tmp_path / "out3"),
                       "--policy", str(policy_path))
    assert again.returncode == 1 and "not stored: embedded.svg: embedded_image" in again.stdout
    with Image.open(out / "face.bmp") as im:
        filled = np.asarray(im)
    assert (filled == 0).all(axis=2).sum() > 1000  # a black box where the face was

    dropped = run_scrapy("gdpr-redact", str(src / "face.bmp"), "--out", str(tmp_path / "out2"),
                         "--policy", str(policy_path), "--action", "drop_image")
    assert dropped.returncode == 1
    assert "not stored: face.bmp: faces_drop_image" in dropped.stdout
    assert not (tmp_path / "out2" / "face.bmp").exists()


def test_usage_errors(tmp_path):
    src = make_input(tmp_path, {"face.jpg": "face-baseline.jpg"})
    assert run_scrapy("gdpr-redact", str(src)).returncode == 2  # no --out
    inside = run_scrapy("gdpr-redact", str(src), "--out", str(src))
    assert inside.returncode == 2 and "inside the input folder" in inside.stderr
    # a new folder inside an input folder: the next run would take the outputs for inputs
    for out in (src / "sub", src / "a" / "b", tmp_path / "x" / ".." / "in" / "sub"):
        nested = run_scrapy("gdpr-redact", str(src), "--out", str(out))
        assert nested.returncode == 2 and "inside the input folder" in nested.stderr, out
        assert not out.exists()
    (tmp_path / "link").symlink_to(src)
    linked = run_scrapy("gdpr-redact", str(src), "--out", str(tmp_path / "link" / "sub"))
    assert linked.returncode == 2 and "inside the input folder" in linked.stderr
    beside = run_scrapy("gdpr-redact", str(src / "face.jpg"), "--out", str(src))
    assert beside.returncode == 2 and "overwrite" in beside.stderr
    bad_policy = tmp_path / "bad.yaml"
    bad_policy.write_text("version: 1\n", encoding="utf-8")
    invalid = run_scrapy("gdpr-redact", str(src), "--out", str(tmp_path / "out"), "--policy", str(bad_policy))
    assert invalid.returncode == 2 and "policy_id" in invalid.stderr


def test_one_file_too_large_is_refused_and_the_rest_written(tmp_path):
    src = make_input(tmp_path, {"a.jpg": "face-baseline.jpg", "b.png": "noface.png", "c.jpg": "face-gray.jpg"})
    huge = src / "huge.bmp"
    with huge.open("wb") as fh:  # sparse: large on disk in name only
        fh.truncate(3 * 1024 * 1024)
    out = tmp_path / "out"
    result = run_scrapy("gdpr-redact", str(src), "--out", str(out), "--max-bytes", str(2 * 1024 * 1024),
                        "--workers", "1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "4 image(s), action blur: 3 written" in result.stdout
    assert "not stored: huge.bmp: too_large (3145728 bytes, the limit is 2097152 (--max-bytes))" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg", "b.png", "c.jpg"]
    assert "Traceback" not in result.stderr


_PEAK = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True)
assert done.returncode == 0, done.stdout + done.stderr
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _peak_rss_mb(*args: str) -> float:
    import os
    import subprocess
    import sys

    from tests.utils import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _PEAK, sys.executable, "-m", "scrapy.cmdline", *args],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return int(done.stdout.split()[-1]) / 1024


def test_results_are_written_as_they_are_done_not_held_to_the_end(tmp_path):
    # 12 MB pictures (BMP stays BMP, uncompressed). The detector's own memory settles
    # after the first images, so compare 4 files with 24: holding every output to the
    # end grows the peak by 12 MB a file (measured: +114 MB for 10 more files), while
    # writing each as it is done keeps it flat (measured: within 35 MB).
    noise = np.random.default_rng(3).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    few, many = tmp_path / "few", tmp_path / "many"
    few.mkdir()
    many.mkdir()
    Image.fromarray(noise).save(tmp_path / "noise.bmp")
    for i in range(24):
        for folder in (few, many) if i < 4 else (many,):
            shutil.copy(tmp_path / "noise.bmp", folder / f"p{i:02}.bmp")
    small = _peak_rss_mb("gdpr-redact", str(few), "--out", str(tmp_path / "o1"), "--workers", "1")
    large = _peak_rss_mb("gdpr-redact", str(many), "--out", str(tmp_path / "o2"), "--workers", "1")
    assert len(list((tmp_path / "o1").iterdir())) == 4
    assert len(list((tmp_path / "o2").iterdir())) == 24
    assert large - small < 100, (small, large)  # holding 20 more outputs would add 240 MB

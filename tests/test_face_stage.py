"""One image through the face stage (scrapy_gdpr.faces.stage.process_image)."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING

import numpy as np
import pytest
import yaml
from PIL import Image

from scrapy_gdpr.faces import leak
from scrapy_gdpr.faces.detector import Detection, build_detector
from scrapy_gdpr.faces.imageio import decode
from scrapy_gdpr.faces.stage import REASONS, Verdict, process_image
from scrapy_gdpr.policy import FacePolicy, load_policy
from tests.utils import DATA

if TYPE_CHECKING:
    from pathlib import Path

IMAGES = DATA / "images"
FACE_BOX = (91, 31, 43, 58)  # the astronaut's face in the 256x256 fixtures (x, y, w, h)
LIMITS = {"max_pixels": 60_000_000, "max_frames": 100}


class FixedDetector:
    """Returns the same boxes for every image and counts its calls."""

    name = "fixed"
    version = "1"

    def __init__(self, boxes=(), fail: Exception | None = None):
        self.boxes = [Detection(*b) for b in boxes]
        self.fail = fail
        self.calls = 0

    def detect(self, image_bgr):
        assert image_bgr.dtype == np.uint8 and image_bgr.ndim == 3 and image_bgr.shape[2] == 3
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return list(self.boxes)


@pytest.fixture(scope="module")
def detector():
    return build_detector("strict")


def read(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


def frames_of(data: bytes) -> list[np.ndarray]:
    im = Image.open(io.BytesIO(data))
    out = []
    for i in range(getattr(im, "n_frames", 1)):
        im.seek(i)
        out.append(np.asarray(im.convert("RGB")).astype(int))
    return out


def region(arr: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    return arr[y : y + h, x : x + w]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(float) - b.astype(float)) ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def rgb(frame) -> np.ndarray:
    p = frame.pixels.astype(int)
    return np.repeat(p[..., None], 3, axis=2) if p.ndim == 2 else p


def policy_file(tmp_path: Path, faces: dict, biometric: bool) -> Path:
    data = yaml.safe_load((DATA / "policies" / "valid.yaml").read_text(encoding="utf-8"))
    data["faces"] = faces
    data["purposes"][0]["dpia_reference"] = "DPIA-2026-01"
    if biometric:
        data["special_categories"] = {
            "biometric": {"condition": "explicit_consent", "reference": "CONSENT-2026-7",
                          "reviewed_by": "Dana Protection", "reviewed_on": "2026-10-01"}
        }
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- every format, real faces

FACE_FILES = [
    "face-baseline.jpg",
    "face-progressive.jpg",
    "face-cmyk-adobe.jpg",
    "face-ycck.jpg",
    "face-rgb16.png",
    "face-gray16.png",
    "face-palette-trns.png",
    "face-gray.png",
    "face-gray.jpg",
    "face-rgba.png",
    "face-la.png",
    "face-lossy.webp",
    "face-lossless.webp",
    "face-animated.webp",
    "face-animated.gif",
    "face-multipage.tif",
    "face.bmp",
    "face-icc-text.png",
]


@pytest.mark.parametrize("name", FACE_FILES)
def test_every_format_is_decoded_and_redacted(name, detector):
    data = read(name)
    source = decode(data, **LIMITS)
    verdict = process_image(data, face_policy=FacePolicy(), detector=detector)
    assert verdict.stored, (verdict.reason, verdict.detail)
    assert verdict.faces >= 1 and verdict.action == "blur"
    assert verdict.record["faces"] == verdict.faces and verdict.record["action"] == "blur"
    out = frames_of(verdict.data)
    assert len(out) == len(source.frames)
    for i, (frame, result) in enumerate(zip(source.frames, out, strict=True)):
        if name == "face-multipage.tif" and i == 1:  # the second page shows no face: untouched
            assert np.abs(result - rgb(frame)).mean() < 1
            continue
        box = FACE_BOX if not (name.startswith("face-animated") and i == 1) else (256 - 91 - 43, 31, 43, 58)
        changed = np.abs(region(result, box) - region(rgb(frame), box)).mean()
        assert changed > 8, (i, changed)  # the face was redacted
        far = np.abs(result[200:, :60] - rgb(frame)[200:, :60]).mean()
        assert far < 6, (i, far)  # the rest was not


def test_orientation_applied_and_metadata_removed(detector):
    verdict = process_image(read("face-exif-gps-rot6.jpg"), face_policy=FacePolicy(), detector=detector)
    assert verdict.stored and verdict.mime == "image/jpeg" and verdict.extension == ".jpg"
    im = Image.open(io.BytesIO(verdict.data))
    assert im.size == (256, 192)  # upright
    assert not im.getexif()
    assert not im.getexif().get_ifd(0x8825)  # no GPS
    for key in ("exif", "icc_profile", "xmp", "comment", "photoshop"):
        assert key not in im.info
    for marker in (b"Jane", b"Exif", b"ExampleCam", b"8BIM", b"xpacket", b"ICC_PROFILE"):
        assert marker not in verdict.data
    assert verdict.record["metadata_removed"] == ["comment", "exif", "gps", "icc", "iptc", "xmp"]
    # the face is where an upright astronaut has it
    upright = np.asarray(Image.open(IMAGES / "sources" / "astronaut-256.png").convert("RGB")).astype(int)[:192]
    result = np.asarray(im).astype(int)
    assert np.abs(region(result, FACE_BOX) - region(upright, FACE_BOX)).mean() > 8
    assert np.abs(result[150:, :60] - upright[150:, :60]).mean() < 6


def test_png_text_chunks_and_profile_removed(detector):
    verdict = process_image(read("face-icc-text.png"), face_policy=FacePolicy(), detector=detector, output="same")
    assert verdict.mime == "image/png"
    im = Image.open(io.BytesIO(verdict.data))
    assert im.text == {} and "icc_profile" not in im.info and not im.getexif()
    assert b"Jane" not in verdict.data and b"iCCP" not in verdict.data and b"eXIf" not in verdict.data


def test_no_metadata_in_any_stored_output():
    quiet = FixedDetector()
    for path in sorted(IMAGES.glob("*")):
        if not path.is_file() or path.suffix == ".py":
            continue
        for output in ("auto", "same"):
            verdict = process_image(path.read_bytes(), detector=quiet, output=output)
            if not verdict.stored:
                continue
            im = Image.open(io.BytesIO(verdict.data))
            assert not {"exif", "icc_profile", "xmp", "comment", "photoshop"} & set(im.info), path.name
            assert getattr(im, "text", {}) == {}, path.name
            assert b"Jane" not in verdict.data and b"ICC_PROFILE" not in verdict.data, path.name


# --------------------------------------------------------------------------- images without faces


def test_no_face_images_are_untouched_apart_from_metadata(detector):
    png = read("noface.png")
    source = decode(png, **LIMITS).frames[0].pixels.astype(int)
    same = process_image(png, detector=detector, output="same")
    assert same.stored and same.faces == 0 and same.action == "none" and same.mime == "image/png"
    assert (frames_of(same.data)[0] == source).all()  # pixel-identical
    auto = process_image(png, detector=detector)
    assert auto.mime == "image/jpeg"
    assert psnr(frames_of(auto.data)[0], source) > 35  # encoder tolerance
    jpeg = read("noface.jpg")
    again = process_image(jpeg, detector=detector)  # re-encoded with the source's quantisation tables
    assert psnr(frames_of(again.data)[0], decode(jpeg, **LIMITS).frames[0].pixels) > 40
    webp = read("noface-lossless.webp")
    kept = process_image(webp, detector=detector, output="same")
    assert kept.mime == "image/webp"
    assert (frames_of(kept.data)[0] == decode(webp, **LIMITS).frames[0].pixels).all()


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bad-truncated.jpg", "undecodable"),
        ("bad-random.bin", "unsupported_type"),
        ("bad-image.svg", "unsupported_type"),
        ("bad-document.pdf", "unsupported_type"),
        ("bad-video.mp4", "unsupported_type"),
        ("bad-bomb.png", "too_many_pixels"),
        ("bad-many-frames.gif", "too_many_frames"),
    ],
)
def test_bad_inputs_are_not_stored(name, reason):
    detector = FixedDetector()
    verdict = process_image(read(name), face_policy=FacePolicy(), detector=detector, mime="image/jpeg")
    assert not verdict.stored and verdict.reason == reason and not verdict.data
    assert verdict.record == {"stored": False, "checked": False, "reason": reason, "type": verdict.source_mime}
    assert verdict.audit_reason == "unchecked"
    assert detector.calls == 0  # nothing was decoded, nothing was looked at


def test_policy_limits_apply():
    detector = FixedDetector()
    small = FacePolicy(max_pixels=256 * 256 * 2)
    assert process_image(read("face-animated.gif"), face_policy=small, detector=detector).reason == "too_many_pixels"
    few = FacePolicy(max_frames=2)
    assert process_image(read("face-animated.gif"), face_policy=few, detector=detector).reason == "too_many_frames"
    assert process_image(read("face-multipage.tif"), face_policy=FacePolicy(max_frames=1),
                         detector=detector).reason == "too_many_frames"
    assert detector.calls == 0


def test_unchecked_types_pass_only_when_the_policy_lists_them():
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>\n'
    policy = FacePolicy(allow_unchecked_types=["image/svg+xml", "application/x-thing"])
    verdict = process_image(svg, face_policy=policy, detector=FixedDetector())
    assert verdict.stored and verdict.data == svg and verdict.mime == "image/svg+xml"
    assert verdict.reason == "unchecked_allowed" and verdict.record["note"] == "unchecked, allowed by policy"
    assert not verdict.record["checked"]
    # a declared type counts only when the bytes are of no known type
    unknown = read("bad-random.bin")
    assert process_image(unknown, face_policy=policy, mime="application/x-thing; q=1", detector=FixedDetector()).stored
    pdf = process_image(read("bad-document.pdf"), face_policy=policy, mime="application/x-thing",
                        detector=FixedDetector())
    assert not pdf.stored and pdf.reason == "type_mismatch"  # a PDF is known by its bytes: not an x-thing
    # an SVG with a picture in it is never stored unchecked (the fixture embeds a PNG data: URL)
    embedded = process_image(read("bad-image.svg"), face_policy=policy, detector=FixedDetector())
    assert not embedded.stored and embedded.reason == "embedded_image" and embedded.audit_reason == "unchecked"
    # ...and never lets an image skip the check
    jpeg = process_image(read("face-baseline.jpg"), face_policy=FacePolicy(allow_unchecked_types=["image/jpeg"]),
                         detector=FixedDetector([(*FACE_BOX, 0.9)]))
    assert jpeg.stored and jpeg.reason == "" and jpeg.faces == 1 and jpeg.action == "blur"


# --------------------------------------------------------------------------- actions


def test_drop_actions():
    face = FixedDetector([(*FACE_BOX, 0.9)])
    dropped = process_image(read("face-baseline.jpg"), face_policy=FacePolicy(action="drop_image"), detector=face)
    assert not dropped.stored and dropped.reason == "faces_drop_image" and not dropped.drop_item
    assert dropped.audit_reason == "faces" and dropped.record["faces"] == 1
    item = process_image(read("face-baseline.jpg"), face_policy=FacePolicy(action="drop_item"), detector=face)
    assert not item.stored and item.reason == "faces_drop_item" and item.drop_item
    # no face: nothing to drop
    none = process_image(read("noface.png"), face_policy=FacePolicy(action="drop_item"), detector=FixedDetector())
    assert none.stored and none.action == "none"


@pytest.mark.parametrize("action", ["blur", "pixelate", "fill"])
def test_redactions(action):
    face = FixedDetector([(*FACE_BOX, 0.9)])
    verdict = process_image(read("face.bmp"), face_policy=FacePolicy(action=action, margin=0), detector=face,
                            output="same")
    assert verdict.stored and verdict.action == action and verdict.mime == "image/bmp"
    result = frames_of(verdict.data)[0]
    source = decode(read("face.bmp"), **LIMITS).frames[0].pixels.astype(int)
    assert np.abs(region(result, FACE_BOX) - region(source, FACE_BOX)).mean() > 8
    if action == "fill":
        assert (region(result, FACE_BOX) == 0).all()
    outside = np.ones(result.shape[:2], bool)
    outside[31 : 31 + 59, 91 : 91 + 44] = False
    assert (result[outside] == source[outside]).all()  # BMP is lossless: only the box changed


def test_keep_is_refused_without_an_art9_condition(tmp_path):
    face = FixedDetector([(*FACE_BOX, 0.9)])
    verdict = process_image(read("face-baseline.jpg"), face_policy=FacePolicy(action="keep"), detector=face)
    assert not verdict.stored and verdict.reason == "keep_without_art9"
    assert face.calls == 0
    # load_policy refuses such a policy outright; an override can still ask for it
    override = process_image(read("face-baseline.jpg"), action="keep", detector=face)
    assert override.reason == "keep_without_art9"
    without = load_policy(policy_file(tmp_path, {"action": "blur"}, biometric=False))
    assert not without.faces.keep_allowed
    assert process_image(read("face-baseline.jpg"), face_policy=without.faces, action="keep",
                         detector=face).reason == "keep_without_art9"


def test_keep_is_honoured_with_an_art9_condition(tmp_path):
    policy = load_policy(policy_file(tmp_path, {"action": "keep"}, biometric=True))
    assert policy.faces_may_be_kept()
    face = FixedDetector([(*FACE_BOX, 0.9)])
    data = read("face-exif-gps-rot6.jpg")
    verdict = process_image(data, policy=policy, detector=face)
    assert verdict.stored and verdict.action == "keep" and verdict.faces == 1
    assert b"ExampleCam" not in verdict.data and not Image.open(io.BytesIO(verdict.data)).getexif()
    upright = decode(data, **LIMITS).frames[0].pixels.astype(int)
    assert np.abs(frames_of(verdict.data)[0] - upright).mean() < 1.5  # the face is still there
    # the policy's faces section alone knows its policy documents the condition
    assert policy.faces.keep_allowed
    assert process_image(data, face_policy=policy.faces, detector=face).action == "keep"
    refused = process_image(data, face_policy=policy.faces, keep_allowed=False, detector=face)
    assert refused.reason == "keep_without_art9"
    # as the crawl's face pool calls it
    pool = process_image(data, action="keep", margin=0.25, detector=face, max_pixels=10**7,
                         face_policy=policy.faces, mime="image/jpeg")
    assert pool.stored and pool.action == "keep"


def test_policy_faces_section_is_used_directly(tmp_path):
    policy = load_policy(policy_file(tmp_path, {"action": "fill", "margin": 0}, biometric=False))
    verdict = process_image(read("face.bmp"), face_policy=policy.faces, detector=FixedDetector([(*FACE_BOX, 0.9)]),
                            mime="image/bmp", output="same")
    assert verdict.action == "fill"
    assert (region(frames_of(verdict.data)[0], FACE_BOX) == 0).all()


def test_legacy_keyword_arguments_still_work():
    verdict = process_image(read("face-baseline.jpg"), action="pixelate", margin=0.1,
                            detector=FixedDetector([(*FACE_BOX, 0.9)]), max_pixels=10**7)
    assert isinstance(verdict, Verdict) and verdict.stored and verdict.action == "pixelate"
    assert verdict.mime == "image/jpeg" and verdict.faces == 1


# --------------------------------------------------------------------------- failing closed


def test_detector_errors_fail_closed():
    broken = FixedDetector(fail=RuntimeError("model file missing"))
    verdict = process_image(read("face-baseline.jpg"), detector=broken)
    assert not verdict.stored and verdict.reason == "detection_failed" and "model file missing" in verdict.detail
    assert verdict.audit_reason == "undecided"
    nan = FixedDetector([(float("nan"), 1, 2, 3, 0.9)])
    assert process_image(read("face-baseline.jpg"), detector=nan).reason == "detection_failed"


def test_any_exception_becomes_a_verdict():
    verdict = process_image(None, detector=FixedDetector())  # type: ignore[arg-type]
    assert not verdict.stored and verdict.reason == "internal_error"
    assert process_image(read("noface.png"), action="explode", detector=FixedDetector()).reason == "invalid_action"
    assert set(REASONS) >= {"undecodable", "too_many_pixels", "unsupported_type", "detection_failed",
                            "faces_drop_image", "faces_drop_item", "keep_without_art9"}


# --------------------------------------------------------------------------- transparency and frames


def test_face_hidden_under_transparent_pixels_does_not_survive(detector):
    face = np.asarray(Image.open(IMAGES / "sources" / "astronaut-256.png").convert("RGB"))
    for alpha_value in (0, 2):
        im = Image.fromarray(face).convert("RGBA")
        im.putalpha(alpha_value)
        buf = io.BytesIO()
        im.save(buf, "PNG")
        verdict = process_image(buf.getvalue(), detector=detector)
        assert verdict.stored and verdict.mime == "image/png"
        out = np.asarray(Image.open(io.BytesIO(verdict.data)).convert("RGBA")).astype(int)
        if alpha_value == 0:
            assert (out[..., :3] == 0).all()  # invisible colour is not kept
        else:  # nearly invisible, but the colour holds a face: found and redacted
            assert verdict.faces >= 1
            assert np.abs(region(out[..., :3], FACE_BOX) - region(face.astype(int), FACE_BOX)).mean() > 8


def test_identical_frames_are_checked_once():
    face = FixedDetector([(*FACE_BOX, 0.9)])
    verdict = process_image(read("face-animated.gif"), detector=face)
    assert face.calls == 2  # frames 0 and 2 are the same picture
    assert verdict.frames == 3 and verdict.record["frames"] == 3
    assert len(verdict.detections) == 1


def test_record_is_small_and_has_no_coordinates():
    verdict = process_image(read("face-exif-gps-rot6.jpg"), detector=FixedDetector([(*FACE_BOX, 0.9)]))
    record = verdict.record
    json.dumps(record)
    assert set(record) <= {"stored", "checked", "reason", "faces", "action", "detector", "frames", "type",
                           "stored_type", "metadata_removed", "note"}
    assert record["detector"] == "fixed/1"
    for value in record.values():
        assert isinstance(value, (str, int, bool)) or all(isinstance(v, str) for v in value)


def test_boxes_map_back_to_the_stored_orientation():
    # upright 256x192; stored sideways as 192x256 (orientation 6)
    verdict = process_image(read("face-exif-gps-rot6.jpg"), detector=FixedDetector([(10, 20, 30, 40, 0.5)]))
    assert verdict.source_size == (192, 256) and verdict.orientation == 6
    assert verdict.source_boxes() == [[20.0, 216.0, 40.0, 30.0, 0.5]]


def test_default_detector_is_built_per_thread():
    verdict = process_image(read("face-baseline.jpg"), face_policy=FacePolicy())
    assert verdict.stored and verdict.faces >= 1 and verdict.detector


def test_images_too_small_for_a_face_are_stored_without_detection():
    buf = io.BytesIO()
    Image.new("P", (1, 1), 0).save(buf, "GIF", transparency=0)  # a tracking pixel
    detector = FixedDetector(fail=RuntimeError("must not be called"))
    verdict = process_image(buf.getvalue(), detector=detector)
    assert verdict.stored and verdict.faces == 0 and detector.calls == 0


class PerFrameDetector(FixedDetector):
    """Finds the face only in the first picture it is shown."""

    def detect(self, image_bgr):
        self.calls += 1
        return list(self.boxes) if self.calls == 1 else []


def test_animation_frames_borrow_their_neighbours_boxes():
    verdict = process_image(read("face-animated.webp"), detector=PerFrameDetector([(*FACE_BOX, 0.9)]),
                            face_policy=FacePolicy(action="fill", margin=0))
    frames = frames_of(verdict.data)
    assert region(frames[0], FACE_BOX).mean() < 6  # found here (lossy WebP: nearly black)
    assert region(frames[1], FACE_BOX).mean() < 6  # missed here, filled from frame 0's box
    assert region(frames[2], FACE_BOX).mean() > 60  # two frames away: not touched


# --------------------------------------------------------------------------- orientation in every format

# What a camera stores for each EXIF orientation, given the upright picture: the
# inverse of the transposition that makes it upright again.
_STORED_AS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
#: Every format that carries an EXIF orientation and that the stage reads (TIFF in
#: its own tag directory; PNG in an eXIf chunk; AVIF as irot/imir boxes).
_ORIENTED_FORMATS = {
    "JPEG": {"quality": 95},
    "TIFF": {},
    "TIFF-deflate": {"compression": "tiff_adobe_deflate"},
    "PNG": {},
    "WEBP": {"quality": 95},
    "AVIF": {"quality": 90},
}


def _upright_portrait() -> Image.Image:
    # not square, so that a picture turned a quarter too far has the wrong shape
    return Image.open(IMAGES / "sources" / "astronaut-256.png").convert("RGB").crop((0, 0, 256, 200))


def _stored_with_orientation(fmt: str, orientation: int) -> bytes:
    upright = _upright_portrait()
    stored = upright.transpose(_STORED_AS[orientation]) if orientation in _STORED_AS else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    stored.save(buf, fmt.split("-", maxsplit=1)[0], exif=exif, **_ORIENTED_FORMATS[fmt])
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", sorted(_ORIENTED_FORMATS))
def test_every_orientation_in_every_format_is_stored_upright_and_redacted(fmt, orientation, detector):
    data = _stored_with_orientation(fmt, orientation)
    upright = np.asarray(_upright_portrait()).astype(int)
    assert detector.detect(np.ascontiguousarray(upright[..., ::-1]).astype(np.uint8)), "the portrait shows a face"
    verdict = process_image(data, face_policy=FacePolicy(), detector=detector, output="same")
    assert verdict.stored and verdict.faces >= 1 and verdict.action == "blur", (fmt, orientation, verdict.reason)
    assert verdict.orientation == orientation
    (out,) = frames_of(verdict.data)
    assert out.shape == upright.shape, "stored upright"
    # upright: the picture away from the face is the source's; the face is blurred
    x, y, w, h = FACE_BOX
    mask = np.ones(upright.shape[:2], bool)
    mask[max(0, y - 40) : y + h + 40, max(0, x - 40) : x + w + 40] = False
    assert np.abs(out - upright)[mask].mean() < 6, (fmt, orientation)
    assert np.abs(region(out, FACE_BOX) - region(upright, FACE_BOX)).mean() > 10
    original = np.ascontiguousarray(upright[..., ::-1]).astype(np.uint8)
    stored = np.ascontiguousarray(out[..., ::-1]).astype(np.uint8)
    faces = [[d.x, d.y, d.w, d.h] for d in detector.detect(original)]
    assert leak.leaked(original, stored, faces, detector.detect(stored)) == [], "no face left recognisable"


def test_each_tiff_page_is_turned_by_its_own_orientation(detector):
    upright = _upright_portrait()
    pages = []
    for orientation in (6, 3):
        page = upright.transpose(_STORED_AS[orientation])
        exif = Image.Exif()
        exif[0x0112] = orientation
        pages.append((page, exif))
    buf = io.BytesIO()
    pages[0][0].save(buf, "TIFF", save_all=True, append_images=[pages[1][0]], exif=pages[0][1])
    data = buf.getvalue()
    # the second page's own tag (Pillow writes the first page's tags only)
    from PIL import TiffImagePlugin

    im = Image.open(io.BytesIO(data))
    im.seek(1)
    if im.getexif().get(0x0112) != 3:
        buf = io.BytesIO()
        with TiffImagePlugin.AppendingTiffWriter(buf, True) as tf:
            for page, exif in pages:
                page.save(tf, "TIFF", exif=exif)
                tf.newFrame()
        data = buf.getvalue()
    image = decode(data, **LIMITS)
    assert len(image.frames) == 2
    expected = np.asarray(upright).astype(int)
    for frame in image.frames:
        assert frame.pixels.shape == expected.shape
        assert np.abs(frame.pixels.astype(int) - expected).mean() < 3


def test_video_wildcard_means_the_same_in_the_stage_as_in_the_files_pipeline():
    policy = FacePolicy(allow_unchecked_types=["application/pdf", "video/*"])
    video = read("bad-video.mp4")
    verdict = process_image(video, face_policy=policy, mime="video/mp4", detector=FixedDetector())
    assert verdict.stored and verdict.reason == "unchecked_allowed" and verdict.data == video
    assert verdict.mime == "video/mp4"
    # an AVIF photograph whose brand says mp42 is an image, checked whatever the list says
    face = Image.open(IMAGES / "sources" / "astronaut-256.png").convert("RGB")
    buf = io.BytesIO()
    face.save(buf, "AVIF", quality=90)
    disguised = buf.getvalue()[:8] + b"mp42" + buf.getvalue()[12:]
    checked = process_image(disguised, face_policy=policy, mime="video/mp4", detector=FixedDetector([(*FACE_BOX, 0.9)]))
    assert checked.stored and checked.checked and checked.faces == 1 and checked.action == "blur"
    assert checked.source_mime == "image/avif" and checked.data != disguised

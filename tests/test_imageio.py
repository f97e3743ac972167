"""Decoding, limits, orientation and metadata-free encoding (scrapy_gdpr.faces.imageio)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageOps

from scrapy_gdpr.faces.imageio import (
    _TRANSPOSE,
    _webp_canvas,
    DecodedImage,
    Frame,
    ImageRefused,
    decode,
    encode,
    output_format,
    sniff_mime,
    source_box,
)
from tests.utils import DATA

IMAGES = DATA / "images"
LIMITS = {"max_pixels": 60_000_000, "max_frames": 100}


def read(name: str) -> bytes:
    return (IMAGES / name).read_bytes()


def astronaut() -> np.ndarray:
    return np.asarray(Image.open(IMAGES / "sources" / "astronaut-256.png").convert("RGB")).astype(int)


@pytest.mark.parametrize(
    ("name", "mime"),
    [
        ("face-baseline.jpg", "image/jpeg"),
        ("face-rgb16.png", "image/png"),
        ("face-animated.gif", "image/gif"),
        ("face-lossy.webp", "image/webp"),
        ("face-multipage.tif", "image/tiff"),
        ("face.bmp", "image/bmp"),
        ("bad-image.svg", "image/svg+xml"),
        ("bad-document.pdf", "application/pdf"),
        ("bad-video.mp4", "video/mp4"),
        ("bad-random.bin", "application/octet-stream"),
    ],
)
def test_sniff_mime_from_bytes(name, mime):
    assert sniff_mime(read(name)) == mime


def test_sniff_ignores_names_and_finds_svg_after_whitespace():
    assert sniff_mime(b"\xef\xbb\xbf\n  <svg xmlns='http://www.w3.org/2000/svg'/>") == "image/svg+xml"
    assert sniff_mime(b"<!DOCTYPE html><html></html>") == "text/html"
    assert sniff_mime(b"\x00\x00\x00\x1cftypavif") == "image/avif"
    assert sniff_mime(b"") == "application/octet-stream"


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        ("face-baseline.jpg", 4),
        ("face-progressive.jpg", 4),
        ("face-cmyk-adobe.jpg", 4),  # Adobe inverted CMYK
        ("face-ycck.jpg", 4),  # YCCK (Adobe transform 2)
        ("face-rgb16.png", 0.5),  # 16 bits per channel, scaled to 8
        ("face-lossless.webp", 0.5),
        ("face-lossy.webp", 5),
        ("face.bmp", 0.5),
        ("face-animated.gif", 6),  # quantised to 256 colours
        ("face-multipage.tif", 4),
        ("face-icc-text.png", 4),  # stored with swapped channels and a profile that swaps them back
    ],
)
def test_decodes_colour_formats_to_srgb(name, tolerance):
    image = decode(read(name), **LIMITS)
    first = image.frames[0]
    assert first.pixels.dtype == np.uint8 and first.pixels.shape == (256, 256, 3)
    assert np.abs(first.pixels.astype(int) - astronaut()).mean() <= tolerance


def test_decodes_gray_and_16_bit_gray():
    gray = np.asarray(Image.open(IMAGES / "sources" / "astronaut-256.png").convert("L")).astype(int)
    for name, tolerance in (("face-gray.png", 0), ("face-gray16.png", 0), ("face-gray.jpg", 4)):
        frame = decode(read(name), **LIMITS).frames[0]
        assert frame.pixels.shape == (256, 256), name
        assert np.abs(frame.pixels.astype(int) - gray).mean() <= tolerance, name


def test_decodes_alpha_and_drops_colour_under_transparent_pixels():
    image = decode(read("face-rgba.png"), **LIMITS)
    frame = image.frames[0]
    assert frame.alpha is not None and frame.alpha[0, 0] == 0 and frame.alpha[128, 128] == 255
    assert (frame.pixels[frame.alpha == 0] == 0).all()
    la = decode(read("face-la.png"), **LIMITS).frames[0]
    assert la.pixels.ndim == 2 and la.alpha is not None
    pal = decode(read("face-palette-trns.png"), **LIMITS).frames[0]
    assert pal.pixels.ndim == 3 and pal.alpha is not None
    assert (pal.alpha[:24] == 0).all() and (pal.alpha[24:] == 255).all()


def test_opaque_alpha_channel_is_dropped():
    im = Image.new("RGBA", (8, 8), (10, 20, 30, 255))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    assert decode(buf.getvalue(), **LIMITS).frames[0].alpha is None


def test_animations_and_pages_keep_every_frame():
    gif = decode(read("face-animated.gif"), **LIMITS)
    assert gif.animated and len(gif.frames) == 3 and gif.loop == 0
    assert [f.duration for f in gif.frames] == [100, 120, 140]
    webp = decode(read("face-animated.webp"), **LIMITS)
    assert webp.animated and len(webp.frames) == 3 and not webp.lossless
    assert [f.duration for f in webp.frames] == [100, 120, 140]
    tif = decode(read("face-multipage.tif"), **LIMITS)
    assert not tif.animated and len(tif.frames) == 2
    assert tif.frames[1].pixels.shape == (200, 300, 3)


def test_orientation_is_applied():
    image = decode(read("face-exif-gps-rot6.jpg"), **LIMITS)
    assert image.orientation == 6
    assert image.source_size == (192, 256)
    assert image.size == (256, 192)
    assert np.abs(image.frames[0].pixels.astype(int) - astronaut()[:192]).mean() < 6
    assert image.metadata == ["comment", "exif", "gps", "icc", "iptc", "xmp"]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_source_box_maps_back_through_every_orientation(orientation):
    source = np.zeros((50, 80), np.uint8)
    source[10:20, 30:45] = 255  # x 30..45, y 10..20
    im = Image.fromarray(source)
    upright = np.asarray(im.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else im)
    ys, xs = np.nonzero(upright)
    box = (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min())
    assert source_box(box, orientation, (80, 50)) == pytest.approx((30, 10, 15, 10))


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
def test_bad_inputs_are_refused(name, reason):
    with pytest.raises(ImageRefused) as info:
        decode(read(name), **LIMITS)
    assert info.value.reason == reason


def test_bomb_is_refused_even_when_the_policy_allows_more_than_pillow():
    # Pillow would warn (an error here) or raise; the stage answers first
    with pytest.raises(ImageRefused) as info:
        decode(read("bad-bomb.png"), max_pixels=10**12, max_frames=100)
    assert info.value.reason == "too_many_pixels"


def test_gif_frame_beyond_its_canvas_is_counted():
    # a 10x10 screen with a 30000x30000 frame: Pillow would grow the canvas to fit it
    gif = bytearray(b"GIF89a" + struct.pack("<HHBBB", 10, 10, 0, 0, 0))
    gif += b"\x2c" + struct.pack("<HHHHB", 0, 0, 30000, 30000, 0) + b"\x02\x02\x44\x01\x00\x3b"
    with pytest.raises(ImageRefused) as info:
        decode(bytes(gif), **LIMITS)
    assert info.value.reason == "too_many_pixels"


def test_pixel_limits_per_frame_and_in_total():
    with pytest.raises(ImageRefused) as info:
        decode(read("face-baseline.jpg"), max_pixels=256 * 256 - 1, max_frames=100)
    assert info.value.reason == "too_many_pixels"
    # three 256x256 frames: each fits, together they do not
    with pytest.raises(ImageRefused) as info:
        decode(read("face-animated.webp"), max_pixels=256 * 256 * 2, max_frames=100)
    assert info.value.reason == "too_many_pixels"
    with pytest.raises(ImageRefused) as info:
        decode(read("face-animated.gif"), max_pixels=256 * 256 * 2, max_frames=100)
    assert info.value.reason == "too_many_pixels"
    with pytest.raises(ImageRefused) as info:
        decode(read("face-multipage.tif"), max_pixels=10**8, max_frames=1)
    assert info.value.reason == "too_many_frames"
    assert len(decode(read("face-animated.gif"), max_pixels=256 * 256 * 3, max_frames=3).frames) == 3


# --------------------------------------------------------------------------- encoding


def test_output_format_choice():
    opaque = decode(read("noface.png"), **LIMITS)
    alpha = decode(read("face-rgba.png"), **LIMITS)
    gif = decode(read("face-animated.gif"), **LIMITS)
    assert output_format(opaque) == "JPEG"
    assert output_format(opaque, "same") == "PNG"
    assert output_format(alpha) == "PNG"
    assert output_format(gif) == "GIF"
    assert output_format(decode(read("face-multipage.tif"), **LIMITS)) == "TIFF"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"])
def test_encode_writes_no_metadata(fmt):
    image = decode(read("face-exif-gps-rot6.jpg"), **LIMITS)
    data = encode(image, fmt)
    im = Image.open(io.BytesIO(data))
    assert im.format == fmt
    assert im.size == (256, 192)
    for key in ("exif", "icc_profile", "xmp", "XML:com.adobe.xmp", "comment", "photoshop"):
        assert key not in im.info, (fmt, key)
    if fmt != "TIFF":  # a TIFF's EXIF view is its own tag directory, checked below
        assert not im.getexif()
    else:
        # only the tags needed to read the pixels (no Software, DateTime, Artist, ...)
        assert set(im.tag_v2) <= {256, 257, 258, 259, 262, 273, 277, 278, 279, 282, 283, 284, 296, 317, 338, 339}
    for marker in (b"Jane", b"Exif\0\0", b"ICC_PROFILE", b"8BIM", b"xpacket", b"ExampleCam"):
        assert marker not in data, (fmt, marker)


def test_encode_png_keeps_pixels_exactly():
    image = decode(read("noface.png"), **LIMITS)
    out = np.asarray(Image.open(io.BytesIO(encode(image, "PNG"))))
    assert (out == image.frames[0].pixels).all()


def test_encode_animated_keeps_frames_and_timing():
    image = decode(read("face-animated.gif"), **LIMITS)
    for fmt in ("GIF", "WEBP", "PNG"):
        im = Image.open(io.BytesIO(encode(image, fmt)))
        assert im.n_frames == 3, fmt
        durations = []
        for i in range(3):
            im.seek(i)
            im.load()  # WebP reports a frame's duration once it is loaded
            durations.append(im.info.get("duration"))
            arr = np.asarray(im.convert("RGB")).astype(int)
            assert np.abs(arr - image.frames[i].pixels).mean() < 3, (fmt, i)
        assert durations == [100, 120, 140], fmt


def test_encode_gray_with_alpha_in_every_format():
    frame = Frame(np.full((4, 6), 100, np.uint8), np.full((4, 6), 128, np.uint8))
    image = DecodedImage([frame], "image/png", "PNG", (6, 4))
    for fmt in ("PNG", "WEBP", "TIFF", "BMP", "GIF"):
        im = Image.open(io.BytesIO(encode(image, fmt)))
        assert im.size == (6, 4), fmt
    with pytest.raises(ValueError, match="transparency"):
        encode(image, "JPEG")


def test_apng_is_read_frame_by_frame():
    apng = encode(decode(read("face-animated.gif"), **LIMITS), "PNG")
    image = decode(apng, **LIMITS)
    assert image.animated and len(image.frames) == 3
    assert [f.duration for f in image.frames] == [100, 120, 140]
    assert output_format(image) == "PNG"


def test_webp_canvas_is_checked_before_pillow_opens_it():
    # a 16384 x 16384 canvas in a 30-byte file
    chunk = b"VP8X" + struct.pack("<I", 10) + b"\x02\0\0\0" + (16383).to_bytes(3, "little") * 2
    data = b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk
    with pytest.raises(ImageRefused) as info:
        decode(data, **LIMITS)
    assert info.value.reason == "too_many_pixels"
    for name in ("face-lossy.webp", "face-lossless.webp", "face-animated.webp"):
        assert _webp_canvas(read(name)) == (256, 256), name


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(orientation):
    im = Image.fromarray(np.arange(6 * 10 * 3, dtype=np.uint8).reshape(6, 10, 3) * 3)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))))
    image = decode(buf.getvalue(), **LIMITS)
    assert image.orientation == orientation
    assert (image.frames[0].pixels == expected).all()

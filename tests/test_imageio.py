"""Decoding, limits, orientation and metadata-free encoding (scrapy_gdpr.faces.imageio)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageOps

from scrapy_gdpr.faces.imageio import (
    _TRANSPOSE,
    DecodedImage,
    Frame,
    ImageRefused,
    _gif_scan,
    _webp_canvas,
    decide_type,
    decode,
    embedded_image,
    encode,
    image_type,
    output_format,
    sniff_mime,
    source_box,
    type_allowed,
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


# --------------------------------------------------------------------------- what the bytes are


def _photo_b64() -> bytes:
    import base64

    return base64.b64encode(read("face-baseline.jpg"))


def test_iso_media_with_an_image_brand_is_an_image_whatever_its_major_brand():
    avif = read("face-exif-gps-rot6.jpg")  # any picture; only the boxes matter here
    assert avif
    ftyp = struct.pack(">I", 32) + b"ftypmp42" + b"\0\0\0\0" + b"mp42isomavifmif1"
    assert sniff_mime(ftyp) == "image/avif"
    assert sniff_mime(struct.pack(">I", 24) + b"ftypmp42\0\0\0\0mp42heic") == "image/heic"
    # no image brand, but a 'meta' box with a 'pict' handler: still pictures
    meta = struct.pack(">I", 33) + b"meta\0\0\0\0" + struct.pack(">I", 21) + b"hdlr\0\0\0\0\0\0\0\0pict\0"
    assert sniff_mime(struct.pack(">I", 20) + b"ftypmp42\0\0\0\0isom" + meta) == "image/heic"
    assert sniff_mime(struct.pack(">I", 20) + b"ftypmp42\0\0\0\0isom" + b"\0\0\0\x08free") == "video/mp4"


def test_a_document_that_starts_as_markup_is_markup_even_with_a_pdf_marker():
    assert sniff_mime(b'<?xml version="1.0"?><!-- %PDF-1.7 --><svg xmlns="x"/>') == "image/svg+xml"
    assert sniff_mime(b"<!DOCTYPE html><p>%PDF-1.4</p>") == "text/html"
    assert sniff_mime(b"<p>hello</p>") == "text/html"
    assert sniff_mime("<svg/>".encode("utf-16")) == "image/svg+xml"
    assert sniff_mime(b"junk\n%PDF-1.7\n") == "application/pdf"


@pytest.mark.parametrize(
    "document",
    [
        b'<svg><image href="data:image/jpeg;base64,PHOTO"/></svg>',
        b'<svg><image href="data:IMAGE/JPEG;base64,PHOTO"/></svg>',
        b'<svg><image href="&#100;ata:image/jpeg;base64,PHOTO"/></svg>',  # character reference
        b'<svg><image href="data%3Aimage%2Fjpeg%3Bbase64%2CPHOTO"/></svg>',  # percent-escaped
        b'<svg><image href="data:application/octet-stream;base64,PHOTO"/></svg>',  # any label: the bytes count
        b"<html><body><img src='data:;base64,PHOTO'></body></html>",
        b"<html><style>body{background:url(data:x;base64,PHOTO)}</style></html>",
        b"<svg><image href='data:image/svg+xml;base64,NESTED'/></svg>",  # an SVG in an SVG
    ],
)
def test_embedded_pictures_are_found(document):
    import base64

    photo = _photo_b64()
    spaced = b"\n ".join(photo[i : i + 76] for i in range(0, len(photo), 76))  # line breaks inside the data
    nested = base64.b64encode(b'<svg><image href="data:image/png;base64,' + base64.b64encode(read("face-rgba.png")) + b'"/></svg>')
    for photo_text in (photo, spaced):
        doc = document.replace(b"PHOTO", photo_text).replace(b"NESTED", nested)
        assert embedded_image(doc), doc[:80]


def test_documents_without_embedded_pictures_pass_the_embedded_check():
    assert embedded_image((IMAGES.parent.parent / "site" / "hosts" / "gallery-people" / "drawing.svg").read_bytes()) is None
    font = b"<svg><style>@font-face{src:url(data:font/woff2;base64," + b"d09GMgABAAAAA" * 20 + b")}</style></svg>"
    assert embedded_image(font) is None
    assert embedded_image(b"<html><img src='https://example.org/photo.jpg'></html>") is None  # linked, not in the file


def test_type_allowed_is_one_rule():
    assert type_allowed("video/mp4", ["video/*"])
    assert type_allowed("Video/MP4; codecs=x", ["video/*"])
    assert not type_allowed("video", ["video/*"]) and not type_allowed("videos/x", ["video/*"])
    assert type_allowed("application/x-pdf", ["application/pdf"])
    assert not type_allowed("application/pdf", ["application/*pdf"])


@pytest.mark.parametrize(
    ("data", "declared", "allowed", "expected"),
    [
        # images: always checked, never stored unchecked
        (b"JPEG", None, ["image/jpeg"], ("image", "")),
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\0" * 20, None, ["image/jp2"], ("refused", "unsupported_type")),
        (b"\x00\x00\x00\x18ftypmp42\0\0\0\0heic", "video/mp4", ["video/*"], ("refused", "unsupported_type")),
        (b"random bytes", "image/png", ["image/png"], ("refused", "unsupported_type")),
        # documents: what the bytes are decides, and the declared type must agree
        (b"%PDF-1.7\n", "application/pdf", ["application/pdf"], ("unchecked", "")),
        (b"%PDF-1.7\n", "application/x-pdf", ["application/pdf"], ("unchecked", "")),
        (b"%PDF-1.7\n", None, ["application/pdf"], ("unchecked", "")),
        (b"<html><p>hi</p></html>", "application/pdf", ["application/pdf"], ("refused", "type_mismatch")),
        (b"<svg xmlns='x'/>", "application/pdf", ["application/pdf"], ("refused", "type_mismatch")),
        (b"<?xml version='1.0'?><!-- %PDF-1.7 --><svg/>", "image/svg+xml", ["image/svg+xml", "application/pdf"],
         ("refused", "type_mismatch")),
        (b"opaque bytes", "application/pdf", ["application/pdf"], ("refused", "type_mismatch")),
        (b"opaque bytes", "application/x-thing", ["application/x-thing"], ("unchecked", "")),
        (b"opaque bytes", None, ["application/x-thing"], ("refused", "unsupported_type")),
        (b"\x00\x00\x00\x18ftypisom\0\0\0\0isom", "video/quicktime", ["video/*"], ("unchecked", "")),
        (b"\x00\x00\x00\x18ftypisom\0\0\0\0isom", "application/pdf", ["video/*", "application/pdf"],
         ("refused", "type_mismatch")),
        (b"<svg xmlns='x'/>", "image/svg+xml", ["application/pdf"], ("refused", "unsupported_type")),
        (b"<p>x<img src='data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk'></p>",
         "application/x-thing", ["application/x-thing"], ("refused", "type_mismatch")),
    ],
)
def test_decide_type(data, declared, allowed, expected):
    if data == b"JPEG":
        data = read("face-baseline.jpg")
    decision = decide_type(data, declared, allowed)
    assert (decision.kind, decision.reason) == expected, decision


def test_an_image_only_pillow_can_name_is_never_unchecked():
    # TGA has no signature: the bytes sniff as nothing, yet Pillow reads a picture
    buf = io.BytesIO()
    Image.open(IMAGES / "sources" / "astronaut-256.png").convert("RGB").save(buf, "TGA")
    assert sniff_mime(buf.getvalue()) == "application/octet-stream"
    assert image_type(buf.getvalue()) == "image/x-pillow-tga"
    decision = decide_type(buf.getvalue(), "application/x-thing", ["application/x-thing"])
    assert (decision.kind, decision.reason) == ("refused", "unsupported_type")


# --------------------------------------------------------------------------- bounded decoding


def _gif_with_stray_byte(frames: int, side: int) -> bytes:
    """A GIF whose frames after the first follow a stray byte (Pillow skips it)."""
    ims = [Image.new("L", (side, side), i % 256) for i in range(frames)]
    buf = io.BytesIO()
    ims[0].save(buf, "GIF", save_all=True, append_images=ims[1:], duration=20, loop=0)
    data = buf.getvalue()
    flags = data[10]
    pos = 13 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0)
    while data[pos] != 0x2C:  # extensions before the first frame: label, sub-blocks
        pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    flags = data[pos + 9]
    end = pos + 10 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0) + 1
    while data[end]:
        end += data[end] + 1
    end += 1  # past the first frame's data
    return data[:end] + b"\x99" + data[end:]


def test_gif_frames_after_a_stray_byte_are_counted_before_decoding():
    data = _gif_with_stray_byte(12, 64)
    im = Image.open(io.BytesIO(data))
    assert im.n_frames == 12  # Pillow reads past the stray byte
    assert _gif_scan(data) == (12, 64, 64)  # and so does the count made before decoding
    # the budget sees all twelve frames: refused before any pixel is decoded
    with pytest.raises(ImageRefused) as info:
        decode(data, max_pixels=64 * 64 * 11, max_frames=100)
    assert info.value.reason == "too_many_pixels"
    with pytest.raises(ImageRefused) as info:
        decode(data, max_pixels=10**6, max_frames=11)
    assert info.value.reason == "too_many_frames"
    assert len(decode(data, max_pixels=10**6, max_frames=12).frames) == 12


def test_gif_budget_is_spent_before_pillow_sees_the_file(monkeypatch):
    from scrapy_gdpr.faces import imageio

    class Untouchable:
        def __init__(self, fp):
            raise AssertionError("the GIF reached Pillow")

    monkeypatch.setitem(imageio.DECODERS, "image/gif", Untouchable)
    data = _gif_with_stray_byte(100, 64)
    with pytest.raises(ImageRefused) as info:
        decode(data, max_pixels=64 * 64 * 99, max_frames=100)
    assert info.value.reason == "too_many_pixels"


def test_animation_frames_are_budgeted_as_full_canvases():
    # three 256 x 256 frames: 196,608 pixels decoded, whatever each frame's own size
    for name in ("face-animated.gif", "face-animated.webp"):
        with pytest.raises(ImageRefused) as info:
            decode(read(name), max_pixels=256 * 256 * 3 - 1, max_frames=100)
        assert info.value.reason == "too_many_pixels", name


def test_a_jpeg_with_too_many_scans_is_refused_before_decoding():
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, "JPEG", progressive=True)
    data = buf.getvalue()
    sos = data.index(b"\xff\xda")
    # repeat the first scan (header and data up to the next marker) many times
    nxt = data.index(b"\xff", sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big"))
    while data[nxt + 1] == 0:
        nxt = data.index(b"\xff", nxt + 2)
    bloated = data[:sos] + data[sos:nxt] * 500 + data[sos:]
    with pytest.raises(ImageRefused) as info:
        decode(bloated, **LIMITS)
    assert info.value.reason == "decode_limit"
    assert decode(data, **LIMITS).size == (16, 16)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_frames_are_copied_in_strips_and_turned_exactly(orientation, monkeypatch):
    from scrapy_gdpr.faces import imageio

    monkeypatch.setattr(imageio, "_STRIP_PIXELS", 7 * 3)  # strips of 3 rows of a 7-pixel-wide picture
    rgba = np.random.default_rng(orientation).integers(1, 256, (11, 7, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0
    im = Image.fromarray(rgba, "RGBA")
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))))
    frame = decode(buf.getvalue(), **LIMITS).frames[0]
    assert frame.alpha is not None and (frame.alpha == expected[..., 3]).all()
    visible = expected[..., 3] > 0
    assert (frame.pixels[visible] == expected[..., :3][visible]).all()


# --------------------------------------------------------------------------- memory near the pixel limit

_MEASURE = """
import resource, sys
from scrapy_gdpr.faces.imageio import decode, encode, output_format
data = open(sys.argv[1], "rb").read()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = decode(data, max_pixels=60_000_000, max_frames=100)
encode(image, output_format(image))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
"""


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_decode_and_encode_memory_near_the_pixel_limit(tmp_path, fmt):
    """docs/image-formats.md: decoding and re-encoding a JPEG or PNG take under 8
    bytes per pixel at their peak (Pillow's 4 and the frame's 3; never two full
    copies of either), within the budget of 10 bytes per pixel of the limit."""
    import subprocess
    import sys

    from PIL import ImageDraw

    from tests.utils import ROOT

    side = 7745  # 59,985,025 pixels: just under the default limit of 60 million
    im = Image.new("RGB", (side, side), (200, 180, 160))
    draw = ImageDraw.Draw(im)
    for i in range(0, side, 97):
        draw.line((0, i, side, side - i), fill=(i % 256, 90, 30), width=9)
    path = tmp_path / f"big.{fmt.lower()}"
    im.save(path, fmt)
    del im, draw
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT)}, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    peak_bytes = int(done.stdout.split()[-1]) * 1024
    assert peak_bytes / (side * side) < 8, f"{peak_bytes / 2**20:.0f} MB above the baseline"


def test_avif_still_alpha_and_animated():
    face = Image.open(IMAGES / "sources" / "astronaut-256.png").convert("RGB")
    buf = io.BytesIO()
    face.save(buf, "AVIF", quality=95)
    still = decode(buf.getvalue(), **LIMITS)
    assert still.source_format == "AVIF" and still.size == (256, 256) and not still.animated
    assert np.abs(still.frames[0].pixels.astype(int) - astronaut()).mean() < 5
    rgba = face.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((256, 256)))
    buf = io.BytesIO()
    rgba.save(buf, "AVIF", quality=95)
    assert decode(buf.getvalue(), **LIMITS).frames[0].alpha is not None
    frames = [face.rotate(a) for a in (0, 5, 10)]
    buf = io.BytesIO()
    frames[0].save(buf, "AVIF", save_all=True, append_images=frames[1:], duration=[100, 120, 140], quality=90)
    animated = decode(buf.getvalue(), **LIMITS)
    assert animated.animated and len(animated.frames) == 3
    with pytest.raises(ImageRefused) as info:
        decode(buf.getvalue(), max_pixels=256 * 256 * 3 - 1, max_frames=100)
    assert info.value.reason == "too_many_pixels"
    out = Image.open(io.BytesIO(encode(animated, output_format(animated))))
    assert out.format == "AVIF" and out.n_frames == 3


def test_a_webp_is_read_up_to_its_share_of_the_memory_budget(monkeypatch):
    """Pillow's WebP reader holds about 16 bytes a pixel (the decoder's canvas, a copy,
    Pillow's picture): a WebP may have 10/16 of the pixel limit, refused before opening."""
    from scrapy_gdpr.faces import imageio

    class Untouchable:
        def __init__(self, fp):
            raise AssertionError("the WebP reached Pillow")

    monkeypatch.setitem(imageio.DECODERS, "image/webp", Untouchable)
    chunk = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (7999).to_bytes(3, "little") + (4999).to_bytes(3, "little")
    data = b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk  # 8000 x 5000 = 40 Mpx
    with pytest.raises(ImageRefused) as info:
        decode(data, max_pixels=60_000_000, max_frames=100)
    assert info.value.reason == "decode_limit" and "37500000" in info.value.detail


def test_a_cmyk_jpeg_pays_for_its_conversion():
    buf = io.BytesIO()
    Image.new("CMYK", (100, 100)).save(buf, "JPEG")
    with pytest.raises(ImageRefused) as info:
        decode(buf.getvalue(), max_pixels=100 * 100 * 14 // 10 - 1, max_frames=100)
    assert info.value.reason == "decode_limit"
    assert decode(buf.getvalue(), max_pixels=100 * 100 * 14 // 10, max_frames=100).size == (100, 100)


def test_a_decode_past_its_time_is_stopped_between_frames():
    with pytest.raises(ImageRefused) as info:
        decode(read("face-animated.gif"), max_pixels=10**7, max_frames=100, max_seconds=0)
    assert info.value.reason == "decode_limit" and "1 of 3 frames" in info.value.detail
    assert len(decode(read("face-animated.gif"), max_pixels=10**7, max_frames=100, max_seconds=60).frames) == 3

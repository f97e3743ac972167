"""Generate the image fixtures in this folder (run from the repository root).

    python tests/data/images/make_fixtures.py
    python tests/data/images/make_fixtures.py --from-original DIR   # also rebuild sources/

Every fixture is made from the two photos in ``sources/`` (see README.md there for
their origin and licence) or from synthetic content. The output is deterministic.
"""

from __future__ import annotations

import argparse
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "sources"
#: Hostile files the test web site serves, each with the Content-Type it is served as.
HOSTILE = HERE.parents[1] / "site" / "hosts" / "gallery-people" / "hostile"


# --------------------------------------------------------------------------- sources


def build_sources(original: Path) -> None:
    """Downscale the two redistributable photos into sources/ (the only modification)."""
    SOURCES.mkdir(exist_ok=True)
    face = Image.open(original / "skimage_astronaut.png").convert("RGB")
    face.resize((256, 256), Image.Resampling.LANCZOS).save(SOURCES / "astronaut-256.png", optimize=True)
    noface = Image.open(original / "skimage_coffee.png").convert("RGB")
    noface.resize((300, 200), Image.Resampling.LANCZOS).save(SOURCES / "coffee-300.png", optimize=True)


def face() -> Image.Image:
    return Image.open(SOURCES / "astronaut-256.png").convert("RGB")


def noface() -> Image.Image:
    return Image.open(SOURCES / "coffee-300.png").convert("RGB")


# --------------------------------------------------------------------------- helpers


def save(im: Image.Image, name: str, fmt: str | None = None, **params: object) -> None:
    im.save(HERE / name, fmt, **params)


def write(name: str, data: bytes) -> None:
    (HERE / name).write_bytes(data)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def icc_matrix_profile(red: tuple[float, float, float], green: tuple[float, float, float],
                       blue: tuple[float, float, float], gamma: float, description: str) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC display profile with a text description."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(v: tuple[float, float, float]) -> bytes:
        return b"XYZ " + b"\0" * 4 + b"".join(s15(c) for c in v)

    def desc(text: str) -> bytes:
        raw = text.encode("ascii") + b"\0"
        return b"desc" + b"\0" * 4 + struct.pack(">I", len(raw)) + raw + b"\0" * 11 + b"\0" * 67

    def text(t: str) -> bytes:
        return b"text" + b"\0" * 4 + t.encode("ascii") + b"\0"

    curve = b"curv" + b"\0" * 4 + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [
        (b"desc", desc(description)),
        (b"cprt", text("Test profile, no copyright")),
        (b"wtpt", xyz((0.9642, 1.0, 0.8249))),
        (b"rXYZ", xyz(red)),
        (b"gXYZ", xyz(green)),
        (b"bXYZ", xyz(blue)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        while (offset + len(body)) % 4:
            body += b"\0"
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I", size) + b"lcms" + bytes([2, 0x10, 0, 0]) + b"mntr" + b"RGB " + b"XYZ "
        + b"\0" * 12 + b"acsp" + b"APPL" + b"\0" * 4 + b"\0" * 8 + b"\0" * 8 + struct.pack(">I", 0)
        + s15(0.9642) + s15(1.0) + s15(0.8249) + b"lcms" + b"\0" * 44
    )
    assert len(header) == 128, len(header)
    return header + struct.pack(">I", len(tags)) + table + body


SRGB_RED = (0.4361, 0.2225, 0.0139)
SRGB_GREEN = (0.3851, 0.7169, 0.0971)
SRGB_BLUE = (0.1431, 0.0606, 0.7141)


def exif_with_gps(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "ExampleCam"  # Make
    exif[0x0110] = "Model 1"  # Model
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.5), 3: "E", 4: (13.0, 24.0, 36.25)}  # GPS IFD
    return exif.tobytes()


def insert_jpeg_segment(data: bytes, marker: int, payload: bytes) -> bytes:
    """Insert an APPn/COM segment right after SOI."""
    seg = bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + seg + data[2:]


def iptc_app13() -> bytes:
    # Photoshop 3.0 resource 0x0404 holding IPTC-IIM: 2:80 By-line, 2:116 Copyright notice
    iim = b"\x1c\x02\x50" + struct.pack(">H", 11) + b"Jane Doe ph" + b"\x1c\x02\x74" + struct.pack(">H", 8) + b"(c) Jane"
    res = b"8BIM" + struct.pack(">H", 0x0404) + b"\0\0" + struct.pack(">I", len(iim)) + iim
    if len(iim) % 2:
        res += b"\0"
    return b"Photoshop 3.0\0" + res


XMP = (
    b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:creator>Jane Doe</dc:creator>'
    b'</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
)


# --------------------------------------------------------------------------- fixtures


def make_faces() -> None:
    im = face()
    save(im, "face-baseline.jpg", quality=90)
    save(im, "face-progressive.jpg", quality=90, progressive=True)
    # CMYK with an Adobe APP14 marker: Pillow writes inverted CMYK, as Photoshop does
    cmyk = Image.merge("CMYK", [*(c.point(lambda v: 255 - v) for c in im.split()), Image.new("L", im.size, 0)])
    save(cmyk, "face-cmyk-adobe.jpg", quality=90)
    write("face-ycck.jpg", ycck_jpeg(im))
    # 16 bits per channel (RGB and gray)
    rgb16 = np.asarray(im).astype(np.uint16) * 257
    write("face-rgb16.png", png16(rgb16))
    gray16 = np.asarray(im.convert("L")).astype(np.uint16) * 257
    Image.fromarray(gray16).save(HERE / "face-gray16.png")
    # palette with a transparent index, grayscale, alpha
    pal = im.quantize(255, dither=Image.Dither.NONE)
    pal_arr = np.asarray(pal).copy()
    pal_arr[:24, :] = 255  # a transparent band at the top
    pal2 = Image.fromarray(pal_arr, "P")
    palette = pal.getpalette() or []
    pal2.putpalette([*palette[:255 * 3], 0, 255, 0])
    save(pal2, "face-palette-trns.png", transparency=255)
    save(im.convert("L"), "face-gray.png")
    save(im.convert("L"), "face-gray.jpg", quality=90)
    rgba = im.copy()
    rgba.putalpha(radial_alpha(im.size))
    save(rgba, "face-rgba.png")
    la = im.convert("L")
    la.putalpha(radial_alpha(im.size))
    save(la, "face-la.png")
    # WebP, GIF, TIFF, BMP
    save(im, "face-lossy.webp", quality=85)
    save(im, "face-lossless.webp", lossless=True)
    frames = [im, im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), im]
    save(frames[0], "face-animated.webp", save_all=True, append_images=frames[1:], duration=[100, 120, 140], loop=0,
         quality=85)
    save(frames[0], "face-animated.gif", save_all=True, append_images=frames[1:], duration=[100, 120, 140], loop=0)
    save(im, "face-multipage.tif", save_all=True, append_images=[noface()], compression="jpeg", quality=85)
    save(im, "face.bmp")
    # metadata: EXIF with GPS and an orientation, XMP, IPTC, ICC profile, comment
    # stored sideways (192 wide, 256 high); orientation 6 makes it upright (256 x 192)
    rotated = im.crop((0, 0, 256, 192)).transpose(Image.Transpose.ROTATE_90)
    icc = icc_matrix_profile(SRGB_RED, SRGB_GREEN, SRGB_BLUE, 2.2, "Camera profile of Jane Doe")
    buf = io.BytesIO()
    rotated.save(buf, "JPEG", quality=92, exif=exif_with_gps(6), icc_profile=icc, comment=b"Photo of Jane Doe",
                 xmp=XMP)
    write("face-exif-gps-rot6.jpg", insert_jpeg_segment(buf.getvalue(), 0xED, iptc_app13()))
    # a PNG with text chunks, eXIf, iCCP whose primaries are swapped (stored as BGR)
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doe")
    info.add_itxt("Description", "Jane Doe at home", lang="en")
    info.add_text("XML:com.adobe.xmp", XMP.decode())
    swapped = Image.merge("RGB", im.split()[::-1])
    swapped_icc = icc_matrix_profile(SRGB_BLUE, SRGB_GREEN, SRGB_RED, 2.2, "Swapped primaries")
    save(swapped, "face-icc-text.png", pnginfo=info, icc_profile=swapped_icc, exif=exif_with_gps(1))


def radial_alpha(size: tuple[int, int]) -> Image.Image:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(xx - w / 2, yy - h / 2) / (min(w, h) / 2)
    alpha = np.clip((1.15 - r) * 4, 0, 1) * 255  # opaque disc, soft edge, transparent corners
    return Image.fromarray(alpha.astype(np.uint8), "L")


def png16(arr: np.ndarray) -> bytes:
    """An RGB PNG with 16 bits per channel (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")


def ycck_jpeg(im: Image.Image) -> bytes:
    """A YCCK JPEG (Adobe transform 2), as Photoshop writes CMYK files.

    Pillow cannot write YCCK, so write the four components as plain CMYK and mark
    them YCCK: for an image whose CMYK is (255-R, 255-G, 255-B, 0) the stored
    components are YCbCr(255-R, 255-G, 255-B) and K = 255 (Adobe inverted).
    """
    inverted = Image.merge("RGB", [c.point(lambda v: 255 - v) for c in im.split()])
    y, cb, cr = inverted.convert("YCbCr").split()
    # Pillow inverts CMYK on write ("CMYK;I"), so hand it the complement of what must be stored
    comps = [c.point(lambda v: 255 - v) for c in (y, cb, cr)] + [Image.new("L", im.size, 0)]
    buf = io.BytesIO()
    Image.merge("CMYK", comps).save(buf, "JPEG", quality=95)
    data = bytearray(buf.getvalue())
    at = data.find(b"\xff\xeeAdobe")
    if at < 0:
        at = data.find(b"Adobe") - 4
    assert data[at + 4 : at + 9] == b"Adobe"
    data[at + 15] = 2  # transform: YCCK
    return bytes(data)


def make_nofaces() -> None:
    im = noface()
    save(im, "noface.png")
    save(im, "noface.jpg", quality=92)
    save(im, "noface-lossless.webp", lossless=True)


def make_bad() -> None:
    good = (HERE / "face-baseline.jpg").read_bytes()
    write("bad-truncated.jpg", good[: len(good) // 2])
    write("bad-random.bin", np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    write("bad-image.svg", b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
          b'<script>alert(1)</script><image href="data:image/png;base64,AAAA"/></svg>\n')
    write("bad-document.pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj <</Type/Catalog>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n")
    write("bad-video.mp4", b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00\x00\x00\x08free")
    # a decompression bomb: a 100000 x 100000 header and a few bytes of data
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    write("bad-bomb.png", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
          + png_chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + png_chunk(b"IEND", b""))
    # 150 tiny frames: over the default frame limit (100)
    frames = [Image.new("RGB", (8, 8), (i, 255 - i, i // 2)) for i in range(150)]
    save(frames[0], "bad-many-frames.gif", save_all=True, append_images=frames[1:], duration=20, loop=0)


def make_hostile() -> None:
    """Files that claim to be a type the policy lets through unchecked, and are not.

    Served by the test site (``tests/site/hosts/gallery-people/hostile/``) under the
    Content-Type in each ``<name>.headers.json``.
    """
    import base64
    import json

    HOSTILE.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    face().save(buf, "JPEG", quality=85)
    photo = base64.b64encode(buf.getvalue())
    svg_photo = (b'<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256">'
                 b'<image width="256" height="256" href="data:image/jpeg;base64,' + photo + b'"/></svg>\n')
    files = {
        # an SVG with "%PDF-" in its first kilobyte, served as a PDF
        "svg-pdf-marker.pdf": (b'<?xml version="1.0"?>\n<!-- %PDF-1.7 -->\n' + svg_photo, "application/pdf"),
        # an SVG and an HTML page with an embedded photograph, served as PDFs
        "svg-photo.pdf": (svg_photo, "application/pdf"),
        "page-photo.pdf": (b'<!DOCTYPE html>\n<html><body><img src="data:image/jpeg;base64,' + photo
                           + b'"></body></html>\n', "application/pdf"),
        # the same SVG served as what it is
        "svg-photo.svg": (svg_photo, "image/svg+xml"),
        # a real (tiny) video, and an AVIF photograph whose major brand says mp42
        "clip.mp4": ((HERE / "bad-video.mp4").read_bytes(), "video/mp4"),
        "portrait.mp4": (_avif_as_mp4(), "video/mp4"),
        # a portrait stored sideways in a TIFF (orientation 6), and a GIF hiding 100
        # frames of 1000 x 1000 behind a stray byte after its first
        "sideways.tif": (_tiff_sideways(), "image/tiff"),
        "frames.gif": (_gif_stray_byte(100, 1000), "image/gif"),
    }
    for name, (data, ctype) in files.items():
        (HOSTILE / name).write_bytes(data)
        (HOSTILE / f"{name}.headers.json").write_text(json.dumps({"Content-Type": ctype}) + "\n", encoding="utf-8")


def _tiff_sideways() -> bytes:
    big = face().resize((512, 512), Image.Resampling.LANCZOS).crop((0, 0, 512, 400))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    big.transpose(Image.Transpose.ROTATE_90).save(buf, "TIFF", exif=exif, compression="tiff_adobe_deflate")
    return buf.getvalue()


def _gif_stray_byte(frames: int, side: int) -> bytes:
    ims = [Image.new("L", (side, side), i % 256) for i in range(frames)]
    buf = io.BytesIO()
    ims[0].save(buf, "GIF", save_all=True, append_images=ims[1:], duration=20, loop=0)
    data = buf.getvalue()
    flags = data[10]
    pos = 13 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0)
    while data[pos] != 0x2C:
        pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    flags = data[pos + 9]
    end = pos + 10 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0) + 1
    while data[end]:
        end += data[end] + 1
    return data[: end + 1] + b"\x99" + data[end + 1 :]


def _avif_as_mp4() -> bytes:
    big = face().resize((512, 512), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    big.save(buf, "AVIF", quality=90)
    data = buf.getvalue()
    assert data[4:12] == b"ftypavif"
    return data[:8] + b"mp42" + data[12:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-original", type=Path, help="folder with skimage_astronaut.png and skimage_coffee.png")
    args = parser.parse_args()
    if args.from_original:
        build_sources(args.from_original)
    make_faces()
    make_nofaces()
    make_bad()
    make_hostile()


if __name__ == "__main__":
    main()

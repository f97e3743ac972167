"""Decoding, normalising and re-encoding images for the face stage.

Bytes in, plain 8-bit arrays out, and back: :func:`sniff_mime` names the real type
from the bytes, :func:`decode` checks the pixel and frame limits from the header
*before* any pixel is decoded and returns upright (EXIF orientation applied),
sRGB, 8-bit frames, and :func:`encode` writes them again without any metadata.
Nothing of the source file but its pixels survives: no EXIF (so no GPS), XMP,
IPTC, ICC profile, comments or text chunks, and no colour data hidden under
fully transparent pixels.

Pure code: no Scrapy imports. See ``docs/image-formats.md``.
"""

from __future__ import annotations

import base64
import binascii
import html
import io
import re
import struct
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import (
    AvifImagePlugin,
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageCms,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
    features,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from numpy.typing import NDArray

__all__ = [
    "DecodedImage",
    "Frame",
    "ImageRefused",
    "TypeDecision",
    "decide_type",
    "decode",
    "embedded_image",
    "encode",
    "image_in_value",
    "image_type",
    "output_format",
    "sniff_mime",
    "source_box",
    "type_allowed",
]

#: The types :func:`decode` reads, with the Pillow class that reads each. Pillow's
#: own format detection (``Image.open``) is not used: it would try every plugin,
#: including ones for formats nobody should accept from the web (EPS, PSD, ...).
DECODERS: dict[str, type[ImageFile.ImageFile]] = {
    "image/jpeg": JpegImagePlugin.JpegImageFile,
    "image/png": PngImagePlugin.PngImageFile,
    "image/gif": GifImagePlugin.GifImageFile,
    "image/webp": WebPImagePlugin.WebPImageFile,
    "image/tiff": TiffImagePlugin.TiffImageFile,
    "image/bmp": BmpImagePlugin.BmpImageFile,
}
if features.check("avif"):  # Pillow's wheels include libavif; a build without it refuses AVIF
    DECODERS["image/avif"] = AvifImagePlugin.AvifImageFile

#: Output format (Pillow name) -> (MIME type, file extension).
FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("image/jpeg", ".jpg"),
    "PNG": ("image/png", ".png"),
    "GIF": ("image/gif", ".gif"),
    "WEBP": ("image/webp", ".webp"),
    "TIFF": ("image/tiff", ".tif"),
    "BMP": ("image/bmp", ".bmp"),
}
if features.check("avif"):
    FORMATS["AVIF"] = ("image/avif", ".avif")

# EXIF orientation -> the transposition that makes the image upright (as
# PIL.ImageOps.exif_transpose does).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

class ImageRefused(Exception):
    """The image cannot be checked; ``reason`` is the stage's reason code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class Frame:
    """One frame or page: ``pixels`` is H x W (gray) or H x W x 3 (RGB), uint8."""

    pixels: NDArray[Any]
    alpha: NDArray[Any] | None = None  # H x W uint8, None when opaque
    duration: int = 0  # milliseconds, animations only


@dataclass
class DecodedImage:
    """An image as the stage sees it: upright, sRGB, 8 bits per channel."""

    frames: list[Frame]
    source_mime: str
    source_format: str  # Pillow's name: JPEG, PNG, GIF, WEBP, TIFF, BMP
    source_size: tuple[int, int]  # width, height as stored, before orientation
    orientation: int = 1  # the EXIF orientation that was applied (1: none)
    animated: bool = False  # an animation (GIF, WebP, APNG), not a multi-page TIFF
    loop: int | None = None
    lossless: bool = True  # the source coding was lossless (WebP VP8L, PNG, GIF, ...)
    jpeg_qtables: list[list[int]] | None = None
    jpeg_subsampling: int = -1
    metadata: list[str] = field(default_factory=list)  # kinds of metadata found (and not kept)

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.frames[0].pixels.shape[:2]
        return w, h

    @property
    def has_alpha(self) -> bool:
        return any(f.alpha is not None for f in self.frames)


# --------------------------------------------------------------------------- sniffing

#: ISO base media file brands (``ftyp``) that make a file an image, whatever its
#: major brand says: libavif and libheif open a file when any of them is listed.
_AVIF_BRANDS = frozenset({b"avif", b"avis", b"avio"})
_HEIF_BRANDS = frozenset({
    b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"heif", b"mif1", b"mif2", b"msf1", b"miaf",
    b"avci", b"avcs", b"jpgs", b"j2ki", b"j2is",
})

#: Documents whose text the stage reads for embedded pictures.
MARKUP = frozenset({"image/svg+xml", "text/html", "text/xml"})

# WHATWG MIME sniffing: the tags that make a resource HTML.
_HTML_STARTS = tuple(
    b"<" + tag for tag in (
        b"!doctype html", b"html", b"head", b"script", b"iframe", b"h1", b"div", b"font", b"table", b"a",
        b"style", b"title", b"b", b"body", b"br", b"p", b"img", b"meta", b"link",
    )
)


def _isobmff_type(data: bytes) -> str:
    """The type of an ISO base media file (MP4, QuickTime, AVIF, HEIF) from its
    ``ftyp`` brands, the compatible ones included, and its ``meta`` handler."""
    size = int.from_bytes(data[:4], "big")
    end = min(len(data), size if 16 <= size <= 4096 else 4096)
    brands = {data[8:12]} | {data[i:i + 4] for i in range(16, end - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "image/avif"
    if brands & _HEIF_BRANDS:
        return "image/heic"
    # A top-level 'meta' box with a 'pict' handler holds still pictures (HEIF),
    # whatever the brands claim.
    pos, boxes = 0, 0
    while pos + 8 <= len(data) and boxes < 64:
        box_size, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        if kind == b"meta":
            body = data[pos + 8:pos + min(max(box_size, 8), 4096)]
            at = body.find(b"hdlr")
            if at >= 0 and body[at + 12:at + 16] == b"pict":
                return "image/avif" if b"av01" in data[pos:pos + max(box_size, 8)] else "image/heic"
        if box_size == 1 and pos + 16 <= len(data):
            box_size = int.from_bytes(data[pos + 8:pos + 16], "big")
        if box_size < 8:
            break
        pos += box_size
        boxes += 1
    if data[8:12] == b"qt  ":
        return "video/quicktime"
    return "video/mp4"


def _markup(data: bytes) -> str | None:
    """``image/svg+xml``, ``text/html`` or ``text/xml`` for a document that starts
    like one (after a byte-order mark, white space and comments), else None."""
    text = data[:4096]
    if text.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16
        text = text.decode("utf-16", "replace").encode("utf-8", "replace")
    text = text.lstrip(b"\xef\xbb\xbf \t\r\n\x0c").lower()
    if not text.startswith(b"<"):
        return None
    if b"<svg" in text and text.startswith((b"<?xml", b"<svg", b"<!--", b"<!doctype svg")):
        return "image/svg+xml"
    if _html_tag_end(text):
        return "text/html"
    if text.startswith((b"<?xml", b"<!--", b"<!doctype")):
        return "text/html" if b"<html" in text else "text/xml"
    return None


def _html_tag_end(text: bytes) -> bool:
    """The tag name that starts ``text`` ends with a space or ``>`` (WHATWG)."""
    for start in _HTML_STARTS:
        if text.startswith(start) and text[len(start):len(start) + 1] in (b" ", b">", b"\t", b"\n", b"\r", b"\x0c", b"/", b""):
            return True
    return False


def sniff_mime(data: bytes) -> str:
    """The MIME type the bytes really are; ``application/octet-stream`` when unknown.

    Names refused types too (SVG, PDF, video, ...) so that a refusal says what was
    refused and the policy's ``faces.allow_unchecked_types`` can match them. An
    ISO media file listing an image brand among its compatible brands is an
    image, whatever its major brand says; a document that starts as SVG or HTML is
    that document even if ``%PDF-`` follows (see :func:`decide_type` for such
    polyglots).
    """
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF":
        kind = head[8:12]
        return {b"WEBP": "image/webp", b"AVI ": "video/x-msvideo", b"WAVE": "audio/wav"}.get(
            kind, "application/octet-stream"
        )
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "image/tiff"
    if head[:2] == b"BM" and len(data) >= 26:
        return "image/bmp"
    if head[4:8] == b"ftyp":
        return _isobmff_type(data)
    if head[:4] == b"\x1aE\xdf\xa3":
        return "video/webm"
    if head[:4] == b"\x00\x00\x01\x00":
        return "image/x-icon"
    if head[:2] == b"\x1f\x8b":
        return "application/gzip"  # e.g. SVGZ
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head[:4] == b"\xff\x4f\xff\x51":
        return "image/jp2"
    if head[:2] == b"\xff\x0a" or head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "image/jxl"
    if head[:4] == b"8BPS":
        return "image/vnd.adobe.photoshop"
    if head[:4] == b"OggS":
        return "application/ogg"
    if head[:4] == b"fLaC":
        return "audio/flac"
    if head[:3] == b"ID3":
        return "audio/mpeg"
    if head[:3] == b"FLV":
        return "video/x-flv"
    if head[:4] == b"\x00\x00\x01\xba":
        return "video/mpeg"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "application/zip"
    markup = _markup(data)
    if markup is not None:
        return markup
    if b"%PDF-" in data[:1024]:
        return "application/pdf"
    return "application/octet-stream"


# --------------------------------------------------------------------------- what may be stored unchecked

#: Types whose bytes :func:`sniff_mime` recognises: a file declared as one of these
#: must be one.
_SNIFFABLE = frozenset({
    "image/jpeg", "image/png", "image/gif", "image/webp", "image/tiff", "image/bmp", "image/avif", "image/heic",
    "image/x-icon", "image/jp2", "image/jxl", "image/vnd.adobe.photoshop", "image/svg+xml",
    "application/pdf", "video/mp4", "video/quicktime", "video/webm", "video/x-msvideo", "video/x-flv",
    "video/mpeg", "audio/wav", "audio/flac", "audio/mpeg", "application/ogg", "application/gzip",
    "application/zip", "text/html", "text/xml",
})

#: Other names of one type, and container families whose members may be served
#: under each other's names (an MP4 served as video/quicktime is still a video).
_ALIASES = {
    "application/x-pdf": "application/pdf",
    "image/svg": "image/svg+xml",
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/x-ms-bmp": "image/bmp",
    "image/heif": "image/heic",
    "image/vnd.microsoft.icon": "image/x-icon",
    "application/xhtml+xml": "text/html",
    "application/xml": "text/xml",
    "application/x-gzip": "application/gzip",
    "application/x-zip-compressed": "application/zip",
    "audio/x-wav": "audio/wav",
    "audio/wave": "audio/wav",
    "audio/vnd.wave": "audio/wav",
    "audio/mp3": "audio/mpeg",
    "audio/x-flac": "audio/flac",
}
_FAMILIES = (
    frozenset({"video/mp4", "video/quicktime", "audio/mp4", "audio/x-m4a", "video/3gpp", "video/3gpp2",
               "application/mp4", "video/x-m4v"}),
    frozenset({"video/webm", "audio/webm", "video/x-matroska", "audio/x-matroska"}),
    frozenset({"application/ogg", "video/ogg", "audio/ogg"}),
)
_NO_CLAIM = frozenset({"", "application/octet-stream", "binary/octet-stream", "application/unknown"})


def normalise_mime(mime: str | None) -> str:
    """``Type/Sub; charset=x`` -> ``type/sub``, aliases resolved."""
    value = (mime or "").split(";", 1)[0].strip().lower()
    return _ALIASES.get(value, value)


def type_allowed(mime: str, allowed: list[str] | tuple[str, ...]) -> bool:
    """Whether ``mime`` matches an entry of ``faces.allow_unchecked_types``: an exact
    type (aliases count as the same), or ``type/*``. One rule for every pipeline."""
    mime = normalise_mime(mime)
    for given in allowed:
        entry = given.split(";", 1)[0].strip().lower()
        if entry.endswith("/*"):
            if mime.startswith(entry[:-1]) and len(mime) > len(entry) - 1:
                return True
        elif normalise_mime(entry) == mime:
            return True
    return False


def _consistent(declared: str, sniffed: str) -> bool:
    if declared in _NO_CLAIM or declared == sniffed:
        return True
    if sniffed == "application/octet-stream":
        return declared not in _SNIFFABLE  # a type whose bytes we know would have been recognised
    return any(declared in family and sniffed in family for family in _FAMILIES)


def image_type(data: bytes) -> str | None:
    """The image type of ``data`` if any image decoder could open it, else None.

    A raster type recognised by its bytes (including the ones the stage cannot
    decode: HEIC, JPEG 2000, ICO, ...), SVG, or anything one of Pillow's readers
    identifies (TGA, PCX, PPM, ...: formats without a reliable signature).
    """
    sniffed = sniff_mime(data)
    if sniffed.startswith("image/"):
        return sniffed
    if sniffed in MARKUP or sniffed == "application/pdf":
        return None  # documents: Pillow's PDF/XBM/XPM readers would only guess
    try:
        with Image.open(io.BytesIO(data)) as im:
            return f"image/x-pillow-{(im.format or 'unknown').lower()}"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "image/x-pillow-large"
    except Exception:  # noqa: BLE001 - any decoder failure: the type is unknown
        return None


# base64 runs long enough to hold an image header (whitespace allowed inside, as in data: URLs)
_BASE64_RUN = re.compile(rb"(?:[A-Za-z0-9+/]\s*){24,}={0,2}")
_DATA_IMAGE = re.compile(rb"data:image/([a-z0-9.+-]+)")
_WS = re.compile(rb"\s+")


def embedded_image(data: bytes, *, depth: int = 0) -> str | None:
    """The type of a picture embedded in a document (SVG, HTML, XML), or None.

    Looks for ``data:image/...`` URLs and for base64 text that decodes to any
    image, in the text as written, with character references resolved and with
    percent-escapes decoded; nested documents are searched too. Pictures the
    document only links to (``href="https://..."``) are not in the file.
    """
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        data = data.decode("utf-16", "replace").encode("utf-8", "replace")
    text = data.decode("utf-8", "replace")
    variants = {data}
    unescaped = html.unescape(text)
    variants.add(unescaped.encode("utf-8", "replace"))
    for v in (text, unescaped):
        variants.add(urllib.parse.unquote_to_bytes(v))
    for variant in variants:
        compact = _WS.sub(b"", variant.lower())
        for m in _DATA_IMAGE.finditer(compact):
            if m.group(1) != b"svg+xml":
                return f"image/{m.group(1).decode('ascii', 'replace')}"
        for m in _BASE64_RUN.finditer(variant):
            run = _WS.sub(b"", m.group(0))
            for shift in range(4):  # the run may start with a word glued to the data
                chunk = run[shift:]
                chunk = chunk[: len(chunk) // 4 * 4]
                try:
                    decoded = base64.b64decode(chunk[:4096] if depth < 2 else chunk[:64])
                except (binascii.Error, ValueError):
                    continue
                found = sniff_mime(decoded)
                if found.startswith("image/") and found != "image/svg+xml":
                    return found
                if found in MARKUP and depth < 2:
                    try:
                        whole = base64.b64decode(run[shift:][: len(run[shift:]) // 4 * 4])
                    except (binascii.Error, ValueError):
                        continue
                    inner = embedded_image(whole, depth=depth + 1)
                    if inner:
                        return inner
    return None


def _texty(data: bytes) -> bool:
    """Whether the bytes look like text (markup a browser might still render)."""
    head = data[:4096]
    return b"<" in head and not any(c < 9 or 13 < c < 32 for c in head[:512] if c != 27)


@dataclass(frozen=True)
class TypeDecision:
    """What the stage does with some bytes, from their type.

    ``kind`` is ``image`` (decode and check), ``unchecked`` (the policy lets this
    type be stored unchanged, as ``mime``) or ``refused`` (``reason``, ``detail``).
    """

    kind: str
    mime: str
    reason: str = ""
    detail: str = ""


def decide_type(data: bytes, declared: str | None, allowed: list[str] | tuple[str, ...]) -> TypeDecision:
    """Decide from the bytes (and the declared type) whether to check, store
    unchecked, or refuse. The same rule serves every pipeline and command:

    * anything an image decoder can open is an image: it is checked, or refused
      when the stage cannot decode it, never stored unchecked;
    * a document that embeds a picture (an SVG or HTML page with a ``data:`` image)
      is refused: its picture cannot be checked;
    * bytes that are two types at once (an SVG that is also a PDF) are refused;
    * a declared type the bytes contradict is refused (an HTML page served as
      ``application/pdf``): the type a viewer will use is not the one checked;
    * otherwise the type (the sniffed one; the declared one only when the bytes
      match no known type) is stored unchecked if ``allowed`` lists it
      (``faces.allow_unchecked_types``: exact types or ``type/*``).
    """
    sniffed = sniff_mime(data)
    if sniffed in DECODERS:
        return TypeDecision("image", sniffed)
    claim = normalise_mime(declared)
    found = image_type(data)
    if found is not None and found != "image/svg+xml":
        # an image the stage cannot decode: images are never stored unchecked
        return TypeDecision("refused", found, "unsupported_type", found)
    if claim.startswith("image/") and claim != "image/svg+xml" and sniffed == "application/octet-stream":
        return TypeDecision("refused", sniffed, "unsupported_type",
                            f"served as {claim} but the bytes are no image the stage can read")
    mime = claim if sniffed == "application/octet-stream" and claim not in _NO_CLAIM else sniffed
    if not (type_allowed(mime, allowed) or type_allowed(claim, allowed)):
        return TypeDecision("refused", mime, "unsupported_type", mime)  # not in faces.allow_unchecked_types
    # something would be stored unchecked: the bytes must be what they claim, and one thing only
    if sniffed != "application/pdf" and b"%PDF-" in data[:1024]:
        return TypeDecision("refused", sniffed, "type_mismatch", f"the bytes are both {sniffed} and application/pdf")
    if not _consistent(claim, sniffed):
        return TypeDecision("refused", sniffed, "type_mismatch", f"served as {claim} but the bytes are {sniffed}")
    if sniffed in MARKUP or (sniffed == "application/octet-stream" and _texty(data)):
        inner = embedded_image(data)
        if inner:
            return TypeDecision("refused", sniffed, "embedded_image", f"{sniffed} with an embedded {inner} picture")
    if type_allowed(mime, allowed):
        return TypeDecision("unchecked", mime)
    return TypeDecision("refused", mime, "unsupported_type", mime)  # not in faces.allow_unchecked_types


# --------------------------------------------------------------------------- limits

#: Scans a JPEG may have. A progressive JPEG has about ten; each scan makes the
#: decoder pass over the whole picture again, so thousands of tiny scans cost
#: minutes for a small file (libjpeg-turbo's own tools stop at 100 too).
MAX_JPEG_SCANS = 100
#: Memory a decode and re-encode may take, in bytes per pixel of the pixel limit
#: (600 MB at the default 60 million pixels).
MEMORY_PER_PIXEL = 10
#: Peak bytes per decoded pixel of each reader, decode and re-encode together, as
#: measured by benchmarks/image_memory.py (Pillow's copy, the frame's, and the
#: reader's own buffers). A format costing more than MEMORY_PER_PIXEL has a lower
#: effective pixel limit, so that no image can take more than the budget.
_PEAK_PER_PIXEL = {"WEBP": 16, "JPEG": 10, "AVIF": 10, "GIF": 9}
_DEFAULT_PEAK_PER_PIXEL = 8


#: Modes converted through a second full picture before the frame is copied out,
#: with the bytes per pixel that adds (measured: a CMYK JPEG 11.9, a palette PNG 9.1;
#: a GIF's conversion is in its own figure).
_CONVERSION_COST = {"CMYK": 4, "YCbCr": 4, "LAB": 4, "HSV": 4, "P": 1, "PA": 1, "1": 1}


def _check_memory(fmt: str, pixels: int, limit: int, mode: str = "") -> None:
    cost = _PEAK_PER_PIXEL.get(fmt, _DEFAULT_PEAK_PER_PIXEL) + (0 if fmt == "GIF" else _CONVERSION_COST.get(mode, 0))
    if pixels * cost > limit * MEMORY_PER_PIXEL:
        most = limit * MEMORY_PER_PIXEL // cost
        raise ImageRefused(
            "decode_limit",
            f"a {fmt} of {pixels} pixels needs about {pixels * cost // 2**20} MB to decode; "
            f"{fmt} is read up to {most} pixels under the pixel limit of {limit}",
        )


#: Wall-clock seconds a decode may take, checked between frames: a last guard
#: behind the pixel and frame budgets, which bound the work before it starts.
MAX_DECODE_SECONDS = 60.0


def _gif_scan(data: bytes) -> tuple[int, int, int]:
    """Frames and the largest frame extent (width, height) of a GIF, from its blocks.

    Walks the blocks exactly as Pillow's reader does: a byte that starts no block
    (a stray byte between frames) is skipped, not taken for the end, so the count
    is the number of frames Pillow would decode. Pillow grows the canvas to fit a
    frame that extends beyond it; the extent counts that too. No pixel is decoded.
    """
    if len(data) < 13:
        raise ImageRefused("undecodable", "truncated GIF header")
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    pos = 13 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0)
    frames = 0
    size = len(data)
    while pos < size:
        kind = data[pos]
        pos += 1
        if kind == 0x3B:  # trailer
            break
        if kind == 0x21:  # extension: label, then sub-blocks
            pos += 1
        elif kind == 0x2C:  # image descriptor
            if pos + 9 > size:
                break
            x, y, w, h, flags = struct.unpack_from("<HHHHB", data, pos)
            width, height = max(width, x + w), max(height, y + h)
            frames += 1
            pos += 9 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0) + 1  # + LZW code size
        else:
            continue  # a stray byte: Pillow skips it and reads on
        while pos < size and data[pos]:  # sub-blocks
            pos += data[pos] + 1
        pos += 1
    return frames, width, height


def _webp_canvas(data: bytes) -> tuple[int, int] | None:
    """A WebP's canvas size from its first chunk (libwebp's animation decoder
    allocates the canvas as soon as Pillow opens the file, so check it first)."""
    kind = data[12:16]
    if kind == b"VP8X" and len(data) >= 30:
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if kind == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return struct.unpack_from("<H", data, 26)[0] & 0x3FFF, struct.unpack_from("<H", data, 28)[0] & 0x3FFF
    if kind == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    return None


def _check_size(size: tuple[int, int], limit: int, what: str) -> int:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageRefused("undecodable", f"{what} has no pixels ({w}x{h})")
    if w * h > limit:
        raise ImageRefused("too_many_pixels", f"{what} is {w}x{h} = {w * h} pixels, the limit is {limit}")
    return w * h


def _pixel_limit(max_pixels: int) -> int:
    # Pillow warns above Image.MAX_IMAGE_PIXELS and raises above twice that; staying
    # under its limit keeps its warning from firing (and the check process-safe: no
    # global settings or warning filters are changed).
    pillow = Image.MAX_IMAGE_PIXELS
    return min(max_pixels, pillow) if pillow else max_pixels


# --------------------------------------------------------------------------- decoding


def decode(
    data: bytes, *, max_pixels: int, max_frames: int, max_seconds: float = MAX_DECODE_SECONDS
) -> DecodedImage:
    """Check the limits from the header, then decode every frame.

    The work is bounded before it starts: the pixels of all frames together (each
    animation frame counts as a full canvas, as the decoder composes it) may not
    exceed ``max_pixels``, nor the frames ``max_frames``, nor a JPEG's scans
    :data:`MAX_JPEG_SCANS`; ``max_seconds`` is checked between frames. Decoding
    and re-encoding take at most :data:`MEMORY_PER_PIXEL` bytes per pixel of the
    limit: a format whose reader needs more (WebP) is read up to a correspondingly
    lower pixel count. The frames hold 3 bytes per pixel (1 for gray) once decoded.

    Raises :class:`ImageRefused` with ``unsupported_type``, ``too_many_pixels``,
    ``too_many_frames``, ``decode_limit`` or ``undecodable``.
    """
    started = time.monotonic()
    mime = sniff_mime(data)
    decoder = DECODERS.get(mime)
    if decoder is None:
        raise ImageRefused("unsupported_type", mime)
    limit = _pixel_limit(max_pixels)
    canvas: tuple[int, int] | None = None
    if mime == "image/gif":
        n, w, h = _gif_scan(data)
        canvas = (w, h)
        _check_size(canvas, limit, "the GIF canvas")
        if n > max_frames:
            raise ImageRefused("too_many_frames", f"{n} frames, the limit is {max_frames}")
        if n * w * h > limit:
            raise ImageRefused("too_many_pixels", f"{n} frames of {w}x{h}, the limit is {limit} pixels in all")
    if mime == "image/webp":
        canvas = _webp_canvas(data)
        if canvas is None:
            raise ImageRefused("undecodable", "no WebP image header")
        _check_size(canvas, limit, "the WebP canvas")
        _check_memory("WEBP", canvas[0] * canvas[1], limit)  # Pillow's reader allocates it on opening
    if mime == "image/jpeg":
        scans = data.count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS:
            raise ImageRefused("decode_limit", f"a JPEG with {scans} scans, the limit is {MAX_JPEG_SCANS}")
    try:
        im = decoder(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRefused("too_many_pixels", str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure: not stored (fail closed)
        raise ImageRefused("undecodable", f"{type(exc).__name__}: {exc}") from None
    try:
        return _decode_opened(im, data, mime, limit, max_frames, canvas, started + max_seconds)
    except ImageRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRefused("too_many_pixels", str(exc)) from None
    except MemoryError:
        raise ImageRefused("decode_limit", "out of memory while decoding") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure: not stored (fail closed)
        raise ImageRefused("undecodable", f"{type(exc).__name__}: {exc}") from None
    finally:
        im.close()


def _decode_opened(
    im: ImageFile.ImageFile,
    data: bytes,
    mime: str,
    limit: int,
    max_frames: int,
    canvas: tuple[int, int] | None,
    deadline: float,
) -> DecodedImage:
    source_size = im.size
    _check_size(source_size, limit, "the image")
    n = int(getattr(im, "n_frames", 1))
    if n > max_frames:
        raise ImageRefused("too_many_frames", f"{n} frames or pages, the limit is {max_frames}")
    fmt = im.format or ""
    animated = n > 1 and fmt != "TIFF"
    if animated:
        # every frame of an animation is composed on the full canvas: budget it so,
        # without seeking (seeking a GIF or APNG decodes the frames on the way)
        w, h = canvas or source_size
        w, h = max(w, source_size[0]), max(h, source_size[1])
        if n * w * h > limit:
            raise ImageRefused("too_many_pixels", f"{n} frames of {w}x{h}, the limit is {limit} pixels in all")
        total = n * w * h
    elif n > 1:
        total = 0
        for i in range(n):  # reads headers (TIFF IFDs) only
            im.seek(i)
            total += _check_size(im.size, limit, f"page {i}")
        if total > limit:
            raise ImageRefused("too_many_pixels", f"{n} pages with {total} pixels in all, the limit is {limit}")
        im.seek(0)
    else:
        total = source_size[0] * source_size[1]
    _check_memory(fmt, total, limit, im.mode)

    metadata = _metadata_kinds(im)
    orientation = _orientation(im)  # as stored, for mapping boxes back (source_box)
    icc = im.info.get("icc_profile") or None
    image = DecodedImage(
        frames=[],
        source_mime=mime,
        source_format=fmt,
        source_size=source_size,
        orientation=orientation,
        animated=animated,
        loop=im.info.get("loop") if n > 1 else None,
        lossless=_lossless(fmt, data),
        metadata=metadata,
    )
    if fmt == "JPEG" and im.mode in ("L", "RGB"):
        qtables = getattr(im, "quantization", None)
        if qtables:
            image.jpeg_qtables = [list(qtables[k]) for k in sorted(qtables)]
            image.jpeg_subsampling = JpegImagePlugin.get_sampling(im)
    for i in range(n):
        if i:
            if time.monotonic() > deadline:
                raise ImageRefused("decode_limit", f"decoding took too long; stopped after {i} of {n} frames")
            im.seek(i)
        pending = _orientation(im)  # before loading: what this frame's tags say
        im.load()
        if pending != 1 and _orientation(im) == 1:
            # Pillow's TIFF reader turns the pixels upright itself while loading (and
            # removes the tag): applying the tag again would turn them twice.
            pending = 1
        frame_icc = im.info.get("icc_profile") or icc
        image.frames.append(_frame(im, frame_icc, pending, int(im.info.get("duration") or 0)))
    _unify(image.frames)
    return image


def _metadata_kinds(im: Image.Image) -> list[str]:
    """What kinds of metadata the source carries (for the record; none is kept)."""
    info = im.info
    found = set()
    if info.get("exif") or (isinstance(im, TiffImagePlugin.TiffImageFile) and 34665 in im.tag_v2):
        found.add("exif")
    try:
        exif = im.getexif()
        if exif.get(0x8825) or exif.get_ifd(0x8825):
            found.add("gps")
    except Exception:  # noqa: BLE001 - unreadable EXIF counts as EXIF found
        found.add("exif")
    if info.get("xmp") or info.get("XML:com.adobe.xmp"):
        found.add("xmp")
    if info.get("photoshop") or (isinstance(im, TiffImagePlugin.TiffImageFile) and 33723 in im.tag_v2):
        found.add("iptc")
    if info.get("icc_profile"):
        found.add("icc")
    if info.get("comment"):
        found.add("comment")
    if isinstance(im, PngImagePlugin.PngImageFile) and im.text:
        found.add("text")
    return sorted(found)


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF: upright
        return 1
    return value if value in _TRANSPOSE else 1


def _lossless(fmt: str, data: bytes) -> bool:
    if fmt == "JPEG":
        return False
    if fmt == "WEBP":
        return b"VP8L" in data[12:4096] and b"VP8 " not in data[12:4096]
    return True


def _to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """Convert to L/LA/RGB/RGBA, through the embedded ICC profile when there is one."""
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    elif im.mode.startswith("I;16") or im.mode == "I":
        im = _gray8(im, lambda a: (np.clip(a, 0, 65535) >> 8).astype(np.uint8))
    elif im.mode == "F":
        peak = max((float(np.nan_to_num(np.asarray(s)).max()) for s in _strips(im)), default=0.0)
        scale = 255.0 if peak <= 1.0 else 1.0
        im = _gray8(im, lambda a: np.clip(np.nan_to_num(a) * scale + 0.5, 0, 255).astype(np.uint8))
    elif im.mode == "La":
        im = im.convert("LA")
    elif im.mode == "RGBa":
        im = im.convert("RGBA")
    if icc and im.mode in ("L", "LA", "RGB", "RGBA", "CMYK"):
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            srgb = ImageCms.createProfile("sRGB")  # per call: LittleCMS profiles are not shared across threads
            out_mode = "RGBA" if im.mode in ("LA", "RGBA") else "RGB"
            if im.mode == "LA":  # LittleCMS has no gray+alpha transform
                alpha = im.getchannel("A")
                rgb = ImageCms.profileToProfile(im.convert("L"), src, srgb, outputMode="RGB")
                assert rgb is not None
                rgb.putalpha(alpha)
                converted = rgb
            elif im.mode == out_mode:  # in place: no second copy of the picture
                ImageCms.profileToProfile(im, src, srgb, outputMode=out_mode, inPlace=True)
                converted = im
            else:
                converted = ImageCms.profileToProfile(im, src, srgb, outputMode=out_mode) or im
            assert converted is not None
            if im.mode in ("L", "LA"):
                converted = _collapse_gray(converted)
            return converted
        except (ImageCms.PyCMSError, OSError, ValueError, AssertionError):
            pass  # a broken profile: convert without it (colours may be off; the profile is dropped anyway)
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGB")  # CMYK (Adobe inverted handled by the JPEG reader), YCbCr, LAB, HSV
    return im


def _strips(im: Image.Image) -> list[Image.Image]:
    w, h = im.size
    rows = max(1, _STRIP_PIXELS // max(w, 1))
    return [im.crop((0, y, w, min(h, y + rows))) for y in range(0, h, rows)]


def _gray8(im: Image.Image, convert: Callable[[NDArray[Any]], NDArray[Any]]) -> Image.Image:
    """A 16-bit, 32-bit or float gray picture as 8-bit gray, strip by strip (the
    temporary wide arrays stay the size of one strip)."""
    w, h = im.size
    out = np.empty((h, w), np.uint8)
    y = 0
    for strip in _strips(im):
        out[y:y + strip.height] = convert(np.asarray(strip))
        y += strip.height
    return Image.fromarray(out, "L")


def _collapse_gray(im: Image.Image) -> Image.Image:
    arr = np.asarray(im)
    if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
        return Image.fromarray(np.ascontiguousarray(arr[..., 0]), "L") if im.mode == "RGB" else Image.merge(
            "LA", (Image.fromarray(np.ascontiguousarray(arr[..., 0]), "L"), im.getchannel("A"))
        )
    return im


#: Pixels copied out of Pillow at a time: the frame is copied strip by strip
#: (and turned upright on the way), so no second full-size copy is ever made.
_STRIP_PIXELS = 1 << 22


def _place(out: NDArray[Any], block: NDArray[Any], y0: int, y1: int, orientation: int, src_h: int) -> None:
    """Write source rows ``y0:y1`` (``block``) into the upright array ``out``."""
    if orientation == 1:
        out[y0:y1] = block
    elif orientation == 2:
        out[y0:y1] = block[:, ::-1]
    elif orientation == 3:
        out[src_h - y1:src_h - y0] = block[::-1, ::-1]
    elif orientation == 4:
        out[src_h - y1:src_h - y0] = block[::-1]
    elif orientation == 5:
        out[:, y0:y1] = block.swapaxes(0, 1)
    elif orientation == 6:
        out[:, src_h - y1:src_h - y0] = block[::-1].swapaxes(0, 1)
    elif orientation == 7:
        out[:, src_h - y1:src_h - y0] = block[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        out[:, y0:y1] = block[:, ::-1].swapaxes(0, 1)
    else:  # pragma: no cover - _orientation returns 1..8 only
        raise ValueError(f"orientation {orientation}")


def _frame(im: Image.Image, icc: bytes | None, orientation: int, duration: int) -> Frame:
    rgb = _to_srgb(im, icc)
    w, h = rgb.size
    bands = len(rgb.getbands())
    colour = 3 if bands >= 3 else 1
    has_alpha = bands in (2, 4)
    upright = (w, h) if orientation in (1, 2, 3, 4) else (h, w)
    pixels = np.empty((upright[1], upright[0], colour) if colour == 3 else (upright[1], upright[0]), np.uint8)
    alpha = np.empty((upright[1], upright[0]), np.uint8) if has_alpha else None
    rows = max(1, _STRIP_PIXELS // max(w, 1))
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        block = np.asarray(rgb.crop((0, y0, w, y1)), dtype=np.uint8)
        if block.ndim == 2:
            block = block[..., None]
        _place(pixels, block[..., :colour] if colour == 3 else block[..., 0], y0, y1, orientation, h)
        if alpha is not None:
            _place(alpha, block[..., -1], y0, y1, orientation, h)
    del rgb
    if alpha is not None:
        if (alpha == 255).all():
            alpha = None
        else:
            pixels[alpha == 0] = 0  # colour under fully transparent pixels is invisible data: drop it
    return Frame(pixels, alpha, duration)


def _unify(frames: list[Frame]) -> None:
    """Give every frame the same layout (RGB if any is RGB; alpha if any has alpha)."""
    if len(frames) < 2:
        return
    color = any(f.pixels.ndim == 3 for f in frames)
    alpha = any(f.alpha is not None for f in frames)
    for f in frames:
        if color and f.pixels.ndim == 2:
            f.pixels = np.repeat(f.pixels[..., None], 3, axis=2)
        if alpha and f.alpha is None:
            f.alpha = np.full(f.pixels.shape[:2], 255, np.uint8)


# --------------------------------------------------------------------------- orientation


Box = tuple[float, float, float, float]


def source_box(box: Box, orientation: int, source_size: tuple[int, int]) -> Box:
    """Map an ``(x, y, w, h)`` box on the upright image back to the image as stored."""
    if orientation not in _TRANSPOSE:
        return box
    sw, sh = source_size
    x, y, w, h = box

    def back(u: float, v: float) -> tuple[float, float]:
        return {
            2: (sw - u, v),
            3: (sw - u, sh - v),
            4: (u, sh - v),
            5: (v, u),
            6: (v, sh - u),
            7: (sw - v, sh - u),
            8: (sw - v, u),
        }[orientation]

    pts = [back(x, y), back(x + w, y), back(x, y + h), back(x + w, y + h)]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


# --------------------------------------------------------------------------- encoding


def output_format(image: DecodedImage, output: str = "auto") -> str:
    """The Pillow format to write: ``auto`` or ``same`` (see docs/image-formats.md)."""
    src = image.source_format if image.source_format in FORMATS else "PNG"
    if output == "same" or len(image.frames) > 1:
        if src in ("JPEG", "BMP") and len(image.frames) > 1:
            return "PNG"
        if src == "JPEG" and image.has_alpha:
            return "PNG"
        return src
    if output != "auto":
        raise ValueError(f"unknown output {output!r}: use 'auto' or 'same'")
    return "PNG" if image.has_alpha else "JPEG"


def frame_image(frame: Frame) -> Image.Image:
    """A Pillow image of ``frame`` built from its bare arrays (so it carries no metadata)."""
    return _pil(frame)


def _pil(frame: Frame) -> Image.Image:
    im = Image.fromarray(frame.pixels, "L" if frame.pixels.ndim == 2 else "RGB")
    if frame.alpha is not None:
        im.putalpha(Image.fromarray(frame.alpha, "L"))
    return im


def encode(image: DecodedImage, fmt: str, *, jpeg_quality: int = 90) -> bytes:
    """Write the frames as ``fmt`` with no metadata at all.

    The images written are built from bare arrays, so they carry no ``info`` that
    Pillow's writers could copy (EXIF, XMP, ICC profile, comments, text chunks).
    """
    frames = [_pil(f) for f in image.frames]
    first, rest = frames[0], frames[1:]
    out = io.BytesIO()
    params: dict[str, object] = {}
    if rest:
        params.update(save_all=True, append_images=rest)
        if image.animated:
            params["duration"] = [max(f.duration, 0) or 100 for f in image.frames]
            if image.loop is not None:
                params["loop"] = image.loop
    if fmt == "JPEG":
        if first.mode not in ("L", "RGB"):
            raise ValueError("JPEG cannot hold transparency")
        if image.jpeg_qtables and (1 if first.mode == "L" else 2) <= len(image.jpeg_qtables) <= 4:
            params.update(qtables=image.jpeg_qtables)
            if image.jpeg_subsampling >= 0 and first.mode == "RGB":
                params["subsampling"] = image.jpeg_subsampling
        else:  # from a lossless source: keep full colour resolution
            params.update(quality=jpeg_quality, subsampling="4:4:4" if first.mode == "RGB" else -1)
    elif fmt == "PNG":
        params.update(compress_level=6)
        if rest:
            params.update(default_image=False, disposal=1, blend=0)
    elif fmt == "WEBP":
        params.update(lossless=image.lossless, quality=100 if image.lossless else jpeg_quality, method=4)
        if first.mode in ("L", "LA"):
            frames = [f.convert("RGBA" if f.mode == "LA" else "RGB") for f in frames]
            first, rest = frames[0], frames[1:]
            if rest:
                params["append_images"] = rest
    elif fmt == "AVIF":
        params.update(quality=jpeg_quality)
        if first.mode in ("L", "LA"):
            frames = [f.convert("RGBA" if f.mode == "LA" else "RGB") for f in frames]
            first, rest = frames[0], frames[1:]
            if rest:
                params["append_images"] = rest
    elif fmt == "GIF":
        params.update(optimize=False)
    elif fmt == "TIFF":
        params.update(compression="tiff_adobe_deflate")
    elif fmt == "BMP":
        if first.mode == "LA":
            first = first.convert("RGBA")
    else:
        raise ValueError(f"cannot write {fmt}")
    first.save(out, fmt, **params)
    return out.getvalue()


# --------------------------------------------------------------------------- image bytes in other values

_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/\s]{32,}={0,2}\s*")


def image_in_value(value: object) -> str | None:
    """The image type of a value that is an image, or None.

    Bytes (``bytes``, ``bytearray``, ``memoryview``) that any image decoder could
    open (:func:`image_type`), and text that is an image: a ``data:`` URL of one,
    or base64 that decodes to one. Text that merely contains an image (an HTML
    page with an inline picture) is not an image itself.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return image_type(bytes(value))
    if not isinstance(value, str) or len(value) < 16:
        return None
    text = value.strip()
    if text[:5].lower() == "data:":
        header, _, payload = text.partition(",")
        label = header[5:].split(";", 1)[0].strip().lower()
        if label.startswith("image/"):
            return label
        try:
            raw = (base64.b64decode(re.sub(r"\s+", "", payload)[:1 << 16] + "==", validate=False)
                   if ";base64" in header.lower() else urllib.parse.unquote_to_bytes(payload))
        except (binascii.Error, ValueError):
            return None
        return image_type(raw)
    head = text[:4096]
    # base64 runs on, or breaks lines: a space means words, not an encoded image
    if " " not in head and _BASE64_TEXT.fullmatch(head) and not head.isalpha():
        chunk = re.sub(r"\s+", "", text[:4096])
        try:
            raw = base64.b64decode(chunk[: len(chunk) // 4 * 4])
        except (binascii.Error, ValueError):
            return None
        found = sniff_mime(raw)
        return found if found.startswith("image/") else None
    return None

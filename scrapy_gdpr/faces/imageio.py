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

import io
import struct
from dataclasses import dataclass, field

import numpy as np
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageCms,
    ImageFile,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

__all__ = [
    "DecodedImage",
    "Frame",
    "ImageRefused",
    "decode",
    "encode",
    "output_format",
    "sniff_mime",
    "source_box",
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

#: Output format (Pillow name) -> (MIME type, file extension).
FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("image/jpeg", ".jpg"),
    "PNG": ("image/png", ".png"),
    "GIF": ("image/gif", ".gif"),
    "WEBP": ("image/webp", ".webp"),
    "TIFF": ("image/tiff", ".tif"),
    "BMP": ("image/bmp", ".bmp"),
}

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

    pixels: np.ndarray
    alpha: np.ndarray | None = None  # H x W uint8, None when opaque
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


def sniff_mime(data: bytes) -> str:
    """The MIME type the bytes really are; ``application/octet-stream`` when unknown.

    Names refused types too (SVG, PDF, video, ...) so that a refusal says what was
    refused and the policy's ``faces.allow_unchecked_types`` can match them.
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
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"):
            return "image/heic"
        if brand == b"qt  ":
            return "video/quicktime"
        return "video/mp4"
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
    if b"%PDF-" in data[:1024]:
        return "application/pdf"
    text = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<?xml", b"<svg", b"<!--", b"<!doctype svg")) and b"<svg" in text:
        return "image/svg+xml"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "text/html"
    return "application/octet-stream"


# --------------------------------------------------------------------------- limits


def _gif_scan(data: bytes) -> tuple[int, int, int]:
    """Frames and the largest frame extent (width, height) of a GIF, from its blocks.

    Pillow grows the canvas to fit a frame that extends beyond it, and counts frames
    by walking the file; this does both without decoding a pixel.
    """
    if len(data) < 13:
        raise ImageRefused("undecodable", "truncated GIF header")
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    pos = 13 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0)
    frames = 0
    while pos < len(data):
        kind = data[pos]
        if kind == 0x3B:  # trailer
            break
        if kind == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif kind == 0x2C:  # image descriptor
            if pos + 10 > len(data):
                break
            x, y, w, h, flags = struct.unpack_from("<HHHHB", data, pos + 1)
            width, height = max(width, x + w), max(height, y + h)
            frames += 1
            pos += 10 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0) + 1  # + LZW code size
        else:
            break  # garbage: Pillow will refuse or stop here too
        while pos < len(data) and data[pos]:  # sub-blocks
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


def decode(data: bytes, *, max_pixels: int, max_frames: int) -> DecodedImage:
    """Check the limits from the header, then decode every frame.

    Raises :class:`ImageRefused` with ``unsupported_type``, ``too_many_pixels``,
    ``too_many_frames`` or ``undecodable``.
    """
    mime = sniff_mime(data)
    decoder = DECODERS.get(mime)
    if decoder is None:
        raise ImageRefused("unsupported_type", mime)
    limit = _pixel_limit(max_pixels)
    if mime == "image/gif":
        n, w, h = _gif_scan(data)
        _check_size((w, h), limit, "the GIF canvas")
        if n > max_frames:
            raise ImageRefused("too_many_frames", f"{n} frames, the limit is {max_frames}")
        if n * w * h > limit:
            raise ImageRefused("too_many_pixels", f"{n} frames of {w}x{h}, the limit is {limit} pixels in all")
    if mime == "image/webp":
        canvas = _webp_canvas(data)
        if canvas is None:
            raise ImageRefused("undecodable", "no WebP image header")
        _check_size(canvas, limit, "the WebP canvas")
    try:
        im = decoder(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRefused("too_many_pixels", str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any parser error means "cannot be checked"
        raise ImageRefused("undecodable", f"{type(exc).__name__}: {exc}") from None
    try:
        return _decode_opened(im, data, mime, limit, max_frames)
    except ImageRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRefused("too_many_pixels", str(exc)) from None
    except Exception as exc:  # noqa: BLE001
        raise ImageRefused("undecodable", f"{type(exc).__name__}: {exc}") from None
    finally:
        im.close()


def _decode_opened(im: ImageFile.ImageFile, data: bytes, mime: str, limit: int, max_frames: int) -> DecodedImage:
    source_size = im.size
    _check_size(source_size, limit, "the image")
    n = int(getattr(im, "n_frames", 1))
    if n > max_frames:
        raise ImageRefused("too_many_frames", f"{n} frames or pages, the limit is {max_frames}")
    if n > 1:
        total = 0
        for i in range(n):  # reads headers (TIFF IFDs) only
            im.seek(i)
            total += _check_size(im.size, limit, f"frame {i}")
        if total > limit:
            raise ImageRefused("too_many_pixels", f"{n} frames with {total} pixels in all, the limit is {limit}")
        im.seek(0)

    fmt = im.format or ""
    metadata = _metadata_kinds(im)
    orientation = _orientation(im)
    icc = im.info.get("icc_profile") or None
    image = DecodedImage(
        frames=[],
        source_mime=mime,
        source_format=fmt,
        source_size=source_size,
        orientation=orientation,
        animated=n > 1 and fmt != "TIFF",
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
            im.seek(i)
        im.load()
        frame_icc = im.info.get("icc_profile") or icc
        image.frames.append(_frame(im, frame_icc, orientation, int(im.info.get("duration") or 0)))
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
    except Exception:  # noqa: BLE001 - a broken EXIF block is dropped all the same
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
    except Exception:  # noqa: BLE001
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
        arr = np.asarray(im).astype(np.int64)
        im = Image.fromarray((np.clip(arr, 0, 65535) >> 8).astype(np.uint8), "L")
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        arr = np.nan_to_num(arr)
        scale = 255.0 if arr.size and float(arr.max()) <= 1.0 else 1.0
        im = Image.fromarray(np.clip(arr * scale + 0.5, 0, 255).astype(np.uint8), "L")
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
            else:
                converted = ImageCms.profileToProfile(im, src, srgb, outputMode=out_mode)
            assert converted is not None
            if im.mode in ("L", "LA"):
                converted = _collapse_gray(converted)
            return converted
        except (ImageCms.PyCMSError, OSError, ValueError, AssertionError):
            pass  # a broken profile: convert without it (colours may be off; the profile is dropped anyway)
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGB")  # CMYK (Adobe inverted handled by the JPEG reader), YCbCr, LAB, HSV
    return im


def _collapse_gray(im: Image.Image) -> Image.Image:
    arr = np.asarray(im)
    if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
        return Image.fromarray(np.ascontiguousarray(arr[..., 0]), "L") if im.mode == "RGB" else Image.merge(
            "LA", (Image.fromarray(np.ascontiguousarray(arr[..., 0]), "L"), im.getchannel("A"))
        )
    return im


def _frame(im: Image.Image, icc: bytes | None, orientation: int, duration: int) -> Frame:
    rgb = _to_srgb(im, icc)
    if orientation in _TRANSPOSE:
        rgb = rgb.transpose(_TRANSPOSE[orientation])
    arr = np.array(rgb, dtype=np.uint8)
    alpha = None
    if rgb.mode in ("LA", "RGBA"):
        pixels, alpha = np.ascontiguousarray(arr[..., :-1]), np.ascontiguousarray(arr[..., -1])
        if pixels.shape[-1] == 1:
            pixels = np.ascontiguousarray(pixels[..., 0])
        if (alpha == 255).all():
            alpha = None
        else:
            pixels[alpha == 0] = 0  # colour under fully transparent pixels is invisible data: drop it
    else:
        pixels = arr
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

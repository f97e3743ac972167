"""One image through the face stage: decode, detect, redact, strip metadata, encode.

:func:`process_image` takes the bytes of one image and returns a :class:`Verdict`.
It never raises: an image that cannot be decoded, is too large, has too many
frames, whose type cannot be checked, or whose detection fails is *not stored*
and the verdict says why (fail closed). Every stored image is re-encoded from its
pixels alone, so no metadata survives. No face embedding, template or landmark
is computed; what the item may record (:attr:`Verdict.record`) holds counts,
the action and the detector version, never coordinates.

Pure code: no Scrapy imports. Reason codes and formats: ``docs/image-formats.md``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from scrapy_gdpr.faces.boxes import iou as _iou
from scrapy_gdpr.faces.detector import Detection, FaceDetector, build_detector
from scrapy_gdpr.faces.imageio import (
    FORMATS,
    DecodedImage,
    Frame,
    ImageRefused,
    decide_type,
    decode,
    encode,
    output_format,
    sniff_mime,
    source_box,
)
from scrapy_gdpr.faces.redact import redact
from scrapy_gdpr.faces.threads import ThreadDetectors

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from scrapy_gdpr.policy import FacePolicy, Policy

__all__ = ["REASONS", "Verdict", "process_image"]

logger = logging.getLogger(__name__)

#: Every reason code a verdict can carry, with what it means.
REASONS: dict[str, str] = {
    "": "checked and stored",
    "unchecked_allowed": "stored unchanged without a check: the policy lists its type in faces.allow_unchecked_types",
    "unsupported_type": "a type the stage cannot check (SVG, PDF, video, HEIC, ...) and the policy does not allow "
    "unchecked, or an image the stage cannot decode: not stored",
    "type_mismatch": "the bytes contradict the declared type, or are two types at once (an SVG that is also "
    "a PDF): not stored",
    "embedded_image": "a document (SVG, HTML) with a picture embedded in it, which cannot be checked: not stored",
    "undecodable": "the bytes could not be decoded (truncated, corrupt, random): not stored",
    "too_many_pixels": "a frame, or all frames together, exceed faces.max_pixels: not stored",
    "too_many_frames": "more frames or pages than faces.max_frames: not stored",
    "decode_limit": "decoding would take too long or too much memory (a format needing more than its share "
    "of the memory budget, a JPEG with too many scans, a decode past its time limit, memory exhausted): "
    "not stored",
    "detection_failed": "the detector could not be built or raised: not stored",
    "redaction_failed": "redaction raised: not stored",
    "encode_failed": "the clean image could not be written: not stored",
    "faces_drop_image": "faces found and faces.action is drop_image: the image is not stored",
    "faces_drop_item": "faces found and faces.action is drop_item: the image and its item are dropped",
    "keep_without_art9": "faces.action is keep but no Art. 9 condition is documented: not stored",
    "invalid_action": "faces.action is not a known action: not stored",
    "internal_error": "an unexpected error inside the stage: not stored",
}

#: Which audit reason (scrapy_gdpr.audit.Reason value) each refusal belongs to.
_AUDIT_REASON = {
    "unsupported_type": "unchecked",
    "type_mismatch": "unchecked",
    "embedded_image": "unchecked",
    "decode_limit": "unchecked",
    "undecodable": "unchecked",
    "too_many_pixels": "unchecked",
    "too_many_frames": "unchecked",
    "faces_drop_image": "faces",
    "faces_drop_item": "faces",
    "keep_without_art9": "faces",
    "invalid_action": "faces",
}

REDACTIONS = ("blur", "pixelate", "fill")
#: Frames whose shorter side is below this many pixels cannot show an identifiable
#: face (tracking pixels, spacers, icons): they are re-encoded without detection.
MIN_FACE_SIDE = 10
ACTIONS = (*REDACTIONS, "drop_image", "drop_item", "keep")


@dataclass
class Verdict:
    """What the stage decided for one image.

    ``stored`` is False when the image must not be stored (``reason`` says why,
    ``detail`` says more for logs); otherwise ``data`` holds the re-encoded,
    metadata-free image (``mime``, ``extension``). ``record`` is what may be
    written into the item: counts, the action and the detector version, never
    coordinates or any biometric data. ``detections`` (boxes on the upright image,
    all frames) are for ``scrapy gdpr-redact`` and tests only: never store them.
    """

    stored: bool
    reason: str = ""
    data: bytes = b""
    mime: str = ""
    faces: int = 0
    action: str = ""
    drop_item: bool = False
    detections: list[Detection] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    detail: str = ""
    detector: str = ""  # "name/version"
    source_mime: str = ""
    frames: int = 0
    checked: bool = False  # decoded and run through the detector
    orientation: int = 1
    source_size: tuple[int, int] = (0, 0)
    #: With ``output="pixels"``: the checked, redacted image, upright and without
    #: metadata, for a caller that writes its own renditions (``data`` is empty).
    pixels: DecodedImage | None = None

    @property
    def extension(self) -> str:
        """The file extension for ``mime`` (``.jpg``, ``.png``, ...), or ``""``."""
        for mime, ext in FORMATS.values():
            if mime == self.mime:
                return ext
        return ""

    @property
    def audit_reason(self) -> str:
        """The ``scrapy_gdpr.audit.Reason`` value for a refusal: faces, unchecked or undecided."""
        return _AUDIT_REASON.get(self.reason, "undecided")

    def source_boxes(self) -> list[list[float]]:
        """``[[x, y, w, h, score], ...]`` in pixels of the image as it was given."""
        out = []
        for d in self.detections:
            x, y, w, h = source_box((d.x, d.y, d.w, d.h), self.orientation, self.source_size)
            out.append([round(x, 2), round(y, 2), round(w, 2), round(h, 2), round(float(d.score), 4)])
        return out


# --------------------------------------------------------------------------- detectors per thread

_detectors = ThreadDetectors(build_detector)


def _thread_detector(sensitivity: str, min_confidence: float | None) -> FaceDetector:
    return _detectors.get(sensitivity, min_confidence)[0]


def _detector_label(detector: FaceDetector | None) -> str:
    if detector is None:
        return ""
    name = getattr(detector, "name", type(detector).__name__)
    version = getattr(detector, "version", "")
    return f"{name}/{version}" if version else str(name)


# --------------------------------------------------------------------------- the stage


def process_image(
    data: bytes,
    *,
    face_policy: FacePolicy | None = None,
    policy: Policy | None = None,
    detector: FaceDetector | None = None,
    mime: str | None = None,
    action: str | None = None,
    margin: float | None = None,
    max_pixels: int | None = None,
    max_frames: int | None = None,
    keep_allowed: bool | None = None,
    output: str = "auto",
    jpeg_quality: int = 90,
) -> Verdict:
    """Run one image through the face stage; never raises.

    Settings come from ``face_policy`` (a policy's ``faces`` section) or ``policy``
    (the whole policy, which also answers whether faces may be kept); the keyword
    arguments ``action``, ``margin``, ``max_pixels`` and ``max_frames`` override
    them. ``keep_allowed`` says an Art. 9 condition is documented (default: what
    the policy's faces section says, ``face_policy.keep_allowed``; False for a
    section built on its own). ``mime`` is the declared type
    (Content-Type): bytes that contradict it are not stored unchecked, and it names
    the type only when the bytes themselves are of no recognisable type
    (:func:`~scrapy_gdpr.faces.imageio.decide_type`). ``detector`` defaults to one per
    thread built from the policy's sensitivity. ``output`` is ``auto`` (JPEG, or
    PNG with transparency; animations keep their format), ``same`` (the source
    format where it can be written) or ``pixels`` (nothing is encoded: a stored
    verdict carries the redacted image in ``pixels``, and the caller encodes each
    rendition it stores from it, so that no image is encoded twice).
    """
    try:
        return _process(
            data, face_policy=face_policy, policy=policy, detector=detector, mime=mime, action=action,
            margin=margin, max_pixels=max_pixels, max_frames=max_frames, keep_allowed=keep_allowed,
            output=output, jpeg_quality=jpeg_quality,
        )
    except Exception as exc:
        logger.exception("Face stage error")
        return _refused("internal_error", f"{type(exc).__name__}: {exc}")


def _refused(reason: str, detail: str = "", **fields: Any) -> Verdict:
    verdict = Verdict(False, reason=reason, detail=detail, drop_item=reason == "faces_drop_item", **fields)
    verdict.record = _record(verdict)
    return verdict


def _record(v: Verdict, metadata: list[str] | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"stored": v.stored, "checked": v.checked}
    if v.reason:
        record["reason"] = v.reason
    if v.checked:
        record.update(faces=v.faces, action=v.action, detector=v.detector, frames=v.frames)
    if v.source_mime:
        record["type"] = v.source_mime
    if v.stored and v.mime:
        record["stored_type"] = v.mime
    if metadata:
        record["metadata_removed"] = metadata
    if v.reason == "unchecked_allowed":
        record["note"] = "unchecked, allowed by policy"
    return record


def _process(
    data: bytes,
    *,
    face_policy: FacePolicy | None,
    policy: Policy | None,
    detector: FaceDetector | None,
    mime: str | None,
    action: str | None,
    margin: float | None,
    max_pixels: int | None,
    max_frames: int | None,
    keep_allowed: bool | None,
    output: str,
    jpeg_quality: int,
) -> Verdict:
    if face_policy is None and policy is not None:
        face_policy = policy.faces
    if keep_allowed is None:
        # a policy's faces section knows whether its policy documents an Art. 9 condition
        keep_allowed = bool(getattr(face_policy, "keep_allowed", False))
    action = action or (face_policy.action if face_policy is not None else "blur")
    margin = margin if margin is not None else (face_policy.margin if face_policy is not None else 0.25)
    max_pixels = max_pixels or (face_policy.max_pixels if face_policy is not None else 60_000_000)
    max_frames = max_frames or (getattr(face_policy, "max_frames", None) or 100)

    data = bytes(data)
    sniffed = sniff_mime(data)
    if action not in ACTIONS:
        return _refused("invalid_action", f"faces.action {action!r}", source_mime=sniffed)
    if action == "keep" and not keep_allowed:
        return _refused("keep_without_art9", "faces.action is keep without special_categories.biometric",
                        source_mime=sniffed)

    # What the bytes are decides (docs/image-formats.md): images are checked, other
    # types pass unchecked only when the policy names them and nothing contradicts it.
    decision = decide_type(data, mime, face_policy.allow_unchecked_types if face_policy else [])
    if decision.kind == "unchecked":
        v = Verdict(True, reason="unchecked_allowed", data=data, mime=decision.mime, action="unchecked",
                    source_mime=decision.mime)
        v.record = _record(v)
        return v
    if decision.kind == "refused":
        return _refused(decision.reason, decision.detail, source_mime=decision.mime)

    try:
        image = decode(data, max_pixels=max_pixels, max_frames=max_frames)
    except ImageRefused as exc:
        return _refused(exc.reason, exc.detail, source_mime=sniffed)
    base: dict[str, Any] = {
        "source_mime": image.source_mime,
        "frames": len(image.frames),
        "orientation": image.orientation,
        "source_size": image.source_size,
    }

    try:
        if detector is None:
            sensitivity = face_policy.sensitivity if face_policy is not None else "strict"
            min_conf = face_policy.min_confidence if face_policy is not None else None
            detector = _thread_detector(sensitivity, min_conf)
        per_frame = _detect_frames(image.frames, detector)
    except Exception as exc:  # noqa: BLE001 - any detector failure: not stored (fail closed)
        return _refused("detection_failed", f"{type(exc).__name__}: {exc}", detector=_detector_label(detector), **base)
    label = _detector_label(detector)
    faces = max((len(d) for d in per_frame), default=0)
    unique = {(d.x, d.y, d.w, d.h, d.score): d for frame in per_frame for d in frame}  # frames repeat boxes
    detections = list(unique.values())
    base.update(detector=label, faces=faces, detections=detections, checked=True)

    if faces and action in ("drop_image", "drop_item"):
        v = _refused(f"faces_{action}", f"{faces} face(s) found", action=action, **base)
        v.record = _record(v, image.metadata)
        return v
    taken = "none"
    if faces and action in REDACTIONS:
        try:
            for i, frame in enumerate(image.frames):
                dets = per_frame[i]
                if image.animated:
                    # a face found in a neighbouring frame is redacted here too, in case
                    # the detector missed it in this one (faces move little between frames)
                    before = per_frame[i - 1] if i else []
                    after = per_frame[i + 1] if i + 1 < len(per_frame) else []
                    dets = [*dets, *before, *after]
                if dets:
                    _redact_frame(frame, dets, action, margin)
        except Exception as exc:  # noqa: BLE001 - any redaction failure: not stored (fail closed)
            return _refused("redaction_failed", f"{type(exc).__name__}: {exc}", action=action, **base)
        taken = action
    elif faces and action == "keep":
        taken = "keep"

    if output == "pixels":
        v = Verdict(True, action=taken, pixels=image, **base)
        v.record = _record(v, image.metadata)
        return v
    try:
        fmt = output_format(image, output)
        out = encode(image, fmt, jpeg_quality=jpeg_quality)
    except Exception as exc:  # noqa: BLE001 - any encoder failure: not stored (fail closed)
        return _refused("encode_failed", f"{type(exc).__name__}: {exc}", action=taken, **base)
    v = Verdict(True, data=out, mime=FORMATS[fmt][0], action=taken, **base)
    v.record = _record(v, image.metadata)
    return v


# --------------------------------------------------------------------------- detection and redaction


def _bgr(pixels: NDArray[Any]) -> NDArray[Any]:
    return cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR if pixels.ndim == 2 else cv2.COLOR_RGB2BGR)


def _composite(frame: Frame) -> NDArray[Any]:
    """The frame as a viewer sees it: over white where it is transparent."""
    bgr = _bgr(frame.pixels).astype(np.float32)
    assert frame.alpha is not None
    a = frame.alpha.astype(np.float32)[..., None] / 255.0
    return np.ascontiguousarray((bgr * a + 255.0 * (1.0 - a) + 0.5).astype(np.uint8))


def _detect_frames(frames: list[Frame], detector: FaceDetector) -> list[list[Detection]]:
    """Detections per frame; identical frames (common in animations) are checked once."""
    seen: dict[bytes, list[Detection]] = {}
    out = []
    for frame in frames:
        digest = hashlib.blake2b(frame.pixels.tobytes(), digest_size=16)
        if frame.alpha is not None:
            digest.update(frame.alpha.tobytes())
        key = digest.digest()
        if key not in seen:
            seen[key] = _detect(frame, detector)
        out.append(seen[key])
    return out


def _detect(frame: Frame, detector: FaceDetector) -> list[Detection]:
    h, w = frame.pixels.shape[:2]
    if min(h, w) < MIN_FACE_SIDE:
        return []
    if frame.alpha is None:
        found = _valid(detector.detect(_bgr(frame.pixels)), w, h)
    else:
        # what a viewer sees, and the colour channels alone: a face can be drawn by
        # the alpha channel, or hidden in colour under partly transparent pixels
        seen = _valid(detector.detect(_composite(frame)), w, h)
        found = _merge(seen + _valid(detector.detect(_bgr(frame.pixels)), w, h))
    return found


def _valid(dets: list[Detection], w: int, h: int) -> list[Detection]:
    out = []
    for d in dets:
        values = (d.x, d.y, d.w, d.h, d.score)
        if not all(math.isfinite(float(v)) for v in values):
            raise ValueError(f"the detector returned a non-finite box {values}")
        if d.w <= 0 or d.h <= 0 or d.x >= w or d.y >= h or d.x + d.w <= 0 or d.y + d.h <= 0:
            continue
        out.append(d)
    return out


def _merge(dets: list[Detection]) -> list[Detection]:
    kept: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        if all(_iou(d, k) < 0.5 for k in kept):
            kept.append(d)
    return kept


def _redact_frame(frame: Frame, dets: list[Detection], action: str, margin: float) -> None:
    bgr = redact(_bgr(frame.pixels), dets, action, margin)
    frame.pixels = np.ascontiguousarray(bgr[..., 0]) if frame.pixels.ndim == 2 else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if frame.alpha is not None:
        a = redact(cv2.cvtColor(frame.alpha, cv2.COLOR_GRAY2BGR), dets, action, margin)
        frame.alpha = np.ascontiguousarray(a[..., 0])
        frame.pixels[frame.alpha == 0] = 0

"""The face stage inside Scrapy's media pipelines and for image bytes in items.

* :class:`GdprImagesPipeline` replaces Scrapy's ``ImagesPipeline``: every
  downloaded image goes through the face stage in a worker thread before any byte
  of it reaches ``IMAGES_STORE``; the full image and its thumbnails are made from
  the redacted, metadata-free pixels.
* :class:`GdprFilesPipeline` replaces ``FilesPipeline``: images (recognised by
  their bytes, not by their name) go through the same stage; other types are
  stored only when the policy lists them in ``faces.allow_unchecked_types``.
* :class:`ImageBytesPipeline` runs the stage on image bytes an item carries
  (``GDPR_IMAGE_BYTES_FIELDS``, e.g. browser screenshots).

What was done to each image is recorded, without coordinates or any biometric
data, in the item's provenance notes (``notes["faces"]``).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from io import BytesIO
from typing import TYPE_CHECKING, Any, NoReturn

from itemadapter import ItemAdapter
from scrapy.pipelines.files import FilesPipeline
from scrapy.exceptions import IgnoreRequest
from scrapy.pipelines.images import ImageException, ImagesPipeline
from scrapy.pipelines.media import FileException
from scrapy.utils.defer import ensure_awaitable

from scrapy_gdpr._component import component_runtime
from scrapy_gdpr.audit import Reason, drop, note_refusal
from scrapy_gdpr.exceptions import PolicyViolation
from scrapy_gdpr.facepool import acquire_pool
from scrapy_gdpr.provenance import provenance_of

if TYPE_CHECKING:
    from os import PathLike

    from PIL import Image
    from scrapy.crawler import Crawler
    from scrapy.http import Request, Response
    from scrapy.pipelines.media import FileInfoOrError, MediaPipeline
    from twisted.python.failure import Failure
    from typing_extensions import Self

    from scrapy_gdpr.facepool import FacePool
    from scrapy_gdpr.faces.imageio import DecodedImage
    from scrapy_gdpr.faces.stage import Verdict
    from scrapy_gdpr.runtime import GdprRuntime

logger = logging.getLogger(__name__)

#: Note key in the item's provenance where the face stage records what it did.
NOTES_KEY = "faces"


class FaceStageRefusal(ImageException):
    """An image (or file) the face stage refused to store.

    Scrapy records it as a failed media result; ``item_completed`` reads
    ``record`` (what the item may say about it) and ``drop_item``.
    """

    def __init__(self, reason: str, *, record: dict[str, Any], drop_item: bool = False) -> None:
        super().__init__(f"not stored by the face stage: {reason}")
        self.reason = reason
        self.record = record
        self.drop_item = drop_item


class _QuietRefusals(logging.Filter):
    """Drops Scrapy's own log records about a :class:`FaceStageRefusal`.

    Scrapy logs every exception from ``file_downloaded`` as a warning and again as
    an error, with tracebacks. A refusal is a decision, not an error: it is logged
    and audited once by :mod:`scrapy_gdpr.audit`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, FaceStageRefusal)


_QUIET = _QuietRefusals()


def _quiet_scrapy_media_logs() -> None:
    for name in ("scrapy.pipelines.files", "scrapy.pipelines.media"):
        log = logging.getLogger(name)
        if _QUIET not in log.filters:
            log.addFilter(_QUIET)


# --------------------------------------------------------------------------- content sniffing

def sniff_mime(data: bytes) -> str | None:
    """The MIME type the bytes start with, or None when the bytes do not say
    (then the declared Content-Type decides). Names are not trusted."""
    from scrapy_gdpr.faces.imageio import sniff_mime as _sniff_mime  # numpy/Pillow only when needed

    mime = _sniff_mime(data)
    return None if mime in ("application/octet-stream", "text/html") else mime


def _header_mime(response: Response) -> str | None:
    value = response.headers.get(b"Content-Type")
    if not value:
        return None
    mime = value.decode("latin-1").split(";", 1)[0].strip().lower()
    return mime or None



# --------------------------------------------------------------------------- shared behaviour


@dataclass(frozen=True)
class Rendition:
    """One file a media pipeline stored for a downloaded image or file: ``kind`` is
    ``image``, ``thumbnail`` or ``file``; ``path`` is relative to the store."""

    kind: str
    path: str
    data: bytes = field(repr=False)
    size: tuple[int, int] = (0, 0)

    @property
    def sha256(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()


#: How many stored files a media pipeline remembers until the recorder asks for
#: them (an item that a later pipeline drops is never asked for).
_STORED_MEMORY = 10_000


class _FaceStageMixin:
    """What the three pipelines share: the pool, refusals and per-item records."""

    crawler: Crawler
    runtime: GdprRuntime
    faces: FacePool

    def _setup_faces(self, crawler: Crawler) -> None:
        self.runtime = component_runtime(crawler)
        self.faces = acquire_pool(self.runtime)
        _quiet_scrapy_media_logs()
        #: store path of each file stored by this crawl -> (kind, path, sha256) of it
        #: and of the files stored with it (thumbnails), hashed from the bytes written
        self._stored: OrderedDict[str, list[tuple[str, str, str]]] = OrderedDict()

    def stored_renditions(self, renditions: list[Rendition]) -> None:
        """Remember what was stored for the recorder (:meth:`renditions_of`)."""
        if not renditions:
            return
        self._stored[renditions[0].path] = [(r.kind, r.path, r.sha256) for r in renditions]
        while len(self._stored) > _STORED_MEMORY:
            self._stored.popitem(last=False)

    def renditions_of(self, path: str) -> list[tuple[str, str, str]] | None:
        """``(kind, path, sha256)`` of every file stored with ``path`` by this crawl
        (the file and its thumbnails), once; None when this crawl did not store it."""
        return self._stored.pop(path, None)

    def close_spider(self) -> None:
        self.faces.release()

    def _reason(self, verdict: Verdict) -> Reason:
        return Reason.FACES if verdict.faces or verdict.drop_item else Reason.UNCHECKED

    def _clause(self, reason: Reason) -> str:
        policy = self.runtime.policy
        return policy.clause("faces", "action") if reason is Reason.FACES else policy.clause("faces")

    def _must_drop_item(self, verdict: Verdict) -> bool:
        return verdict.drop_item or (self.runtime.policy.faces.action == "drop_item" and verdict.faces > 0)

    def _refused(self, verdict: Verdict) -> bool:
        """Whether the image must not be stored. A stage that stored an image with
        faces although the policy drops such images is overruled (fail closed)."""
        action = self.runtime.policy.faces.action
        if verdict.stored and verdict.faces and action in ("drop_image", "drop_item"):
            verdict.stored, verdict.reason = False, f"faces_{action}"
            verdict.drop_item = verdict.drop_item or action == "drop_item"
        return not verdict.stored

    def _refuse_image(self, target: str, verdict: Verdict, *, kind: str, **record: Any) -> FaceStageRefusal:
        """Count and audit an image the stage did not store; return the exception."""
        reason = self._reason(verdict)
        self.faces.count_dropped(verdict.reason or str(reason))
        note_refusal(self.crawler, target, reason, clause=self._clause(reason), detail=verdict.reason, kind=kind)
        rec = self.faces.record(verdict, **record)
        rec["stored"] = False
        rec.setdefault("reason", verdict.reason)
        return FaceStageRefusal(verdict.reason or str(reason), record=rec, drop_item=self._must_drop_item(verdict))

    def _note(self, item: Any, records: list[dict[str, Any]]) -> str | None:
        """Add ``records`` to the item's provenance notes; return the item's source URL."""
        provenance = provenance_of(self.crawler, item)
        if provenance is None:
            if records:
                logger.debug(
                    "Item has no provenance; face-stage records not kept: %(records)r",
                    {"records": records},
                    extra={"spider": self.crawler.spider},
                )
            return None
        if records:
            provenance.notes.setdefault(NOTES_KEY, []).extend(records)
        return provenance.url

    def _drop_item(self, url: str, detail: str) -> Exception:
        self.faces.count_item_dropped(Reason.FACES)
        return drop(self.crawler, url, Reason.FACES, clause=self._clause(Reason.FACES), detail=detail)


class _MediaFaceStageMixin(_FaceStageMixin):
    """What the two media pipelines share: setting up the face stage, and
    ``item_completed``: records, then drop or keep the item."""

    _checked: dict[str, dict[str, Any]]

    def __init__(self, store_uri: str | PathLike[str], download_func: None = None, *, crawler: Crawler) -> None:
        component_runtime(crawler)  # GDPR_ENABLED = False: NotConfigured before anything else
        super().__init__(store_uri, crawler=crawler)  # type: ignore[call-arg]  # the media pipeline
        self._setup_faces(crawler)
        self._checked = {}

    def media_failed(self, failure: Failure, request: Request, info: MediaPipeline.SpiderInfo) -> NoReturn:
        # Scrapy's version replaces every processing error by a bare FileException
        # and logs it as a download error; a refusal is already audited and must
        # reach item_completed as it is.
        if isinstance(failure.value, FaceStageRefusal):
            raise failure.value
        super().media_failed(failure, request, info)  # type: ignore[misc]
        raise AssertionError("unreachable")  # pragma: no cover

    def _records_and_drop(
        self, results: list[FileInfoOrError], item: Any, info: MediaPipeline.SpiderInfo
    ) -> tuple[list[dict[str, Any]], str | None]:
        urls = [r.url for r in self.get_media_requests(item, info)]  # type: ignore[attr-defined]
        if len(urls) != len(results):
            urls = [""] * len(results)
        records: list[dict[str, Any]] = []
        drop_detail: str | None = None
        for url, (ok, value) in zip(urls, results, strict=True):
            if ok:
                rec = self._checked.get(value["url"])
                if rec is None:
                    # "uptodate": stored by an earlier crawl through this pipeline, not downloaded again
                    rec = {"url": value["url"], "stored": True, "status": value["status"]}
                records.append({**rec, "path": value["path"]})
                continue
            exc = value.value
            if isinstance(exc, FaceStageRefusal):
                records.append(dict(exc.record))
                if exc.drop_item and drop_detail is None:
                    drop_detail = f"faces found in {exc.record.get('url') or url} and the policy drops the item"
            elif isinstance(exc, FileException) and isinstance(exc.__cause__, IgnoreRequest):
                # filtered, not downloaded (FilesPipeline.media_failed raises it from the IgnoreRequest);
                # a refusal by the request gate says why (an opt-out in the image's XMP)
                cause = exc.__cause__
                if isinstance(cause, PolicyViolation):
                    records.append({"url": url, "stored": False, "reason": cause.reason, "detail": str(cause)})
                else:
                    records.append({"url": url, "stored": False, "reason": "not_downloaded"})
            else:
                records.append({"url": url, "stored": False, "reason": "error", "error": type(exc).__name__})
        return records, drop_detail

    def _complete(self, results: list[FileInfoOrError], item: Any, info: MediaPipeline.SpiderInfo) -> None:
        records, drop_detail = self._records_and_drop(results, item, info)
        source = self._note(item, records)
        if drop_detail is not None:
            first = next((r.get("url") for r in records if r.get("url")), "")
            raise self._drop_item(source or first, drop_detail)


# --------------------------------------------------------------------------- ImagesPipeline


class GdprImagesPipeline(_MediaFaceStageMixin, ImagesPipeline):
    """``ImagesPipeline`` that stores only faces-checked, redacted, metadata-free images.

    The face stage runs in the face pool's worker threads; Pillow's conversion and
    the thumbnails are made there too, from the redacted pixels. An image the stage
    does not store raises :class:`FaceStageRefusal`, which Scrapy records as a
    failed result; :meth:`item_completed` then drops the item when the policy says
    ``drop_item``.
    """

    async def image_downloaded(
        self,
        response: Response,
        request: Request,
        info: MediaPipeline.SpiderInfo,
        *,
        item: Any = None,
    ) -> str:
        url = request.url
        async with self.faces.slot():
            # One worker hop: decode, detect and redact once, then encode each stored
            # rendition (the full image, every thumbnail) once, from the redacted pixels.
            verdict, renditions, problem = await self.faces.call(
                self._check_and_render, response, request, info, item
            )
        self.faces.count_checked(verdict)
        if not verdict.stored:
            raise self._refuse_image(url, verdict, kind="image", url=url)
        if problem is not None:
            raise problem  # Scrapy's own checks (IMAGES_MIN_WIDTH/HEIGHT): a failed result, as without the stage
        for rendition in renditions:
            await ensure_awaitable(
                self.store.persist_file(
                    rendition.path, BytesIO(rendition.data), info,
                    meta={"width": rendition.size[0], "height": rendition.size[1]},
                    headers={"Content-Type": "image/jpeg"},
                )
            )
        self.stored_renditions(renditions)
        self.faces.count_stored(verdict)
        self._checked[url] = self.faces.record(verdict, url=url)
        return hashlib.md5(renditions[0].data).hexdigest()  # noqa: S324 - Scrapy's checksum

    def _check_and_render(
        self, response: Response, request: Request, info: MediaPipeline.SpiderInfo, item: Any
    ) -> tuple[Verdict, list[Rendition], Exception | None]:
        """In a face-pool worker: the stage, then the renditions Scrapy's
        ``get_images`` would store, encoded from the stage's redacted pixels."""
        verdict = self.faces.run_stage(response.body, _header_mime(response), "pixels")
        pixels, verdict.pixels = verdict.pixels, None  # never kept beyond this call
        if self._refused(verdict):
            return verdict, [], None
        if pixels is None:  # a stage that gave no pixels to render: fail closed
            verdict.stored, verdict.reason = False, "stage_error"
            verdict.record = {**verdict.record, "stored": False, "error": "no output"}
            return verdict, [], None
        try:
            renditions = self._render(pixels, response, request, info, item)
        except ImageException as exc:
            return verdict, [], exc
        except Exception as exc:  # noqa: BLE001 - fail closed: not stored
            logger.exception("Writing the checked image failed; the image is not stored")
            verdict.stored, verdict.reason = False, "encode_failed"
            verdict.record = {**verdict.record, "stored": False, "error": type(exc).__name__}
            return verdict, [], None
        verdict.mime = "image/jpeg"
        verdict.record["stored_type"] = "image/jpeg"
        return verdict, renditions, None

    def _render(
        self, pixels: DecodedImage, response: Response, request: Request, info: MediaPipeline.SpiderInfo, item: Any
    ) -> list[Rendition]:
        """What ``ImagesPipeline.get_images`` does, on pixels already upright and
        metadata-free: the size check, the full image and the thumbnails, with the
        paths from this pipeline's own ``file_path`` and ``thumb_path``."""
        from scrapy_gdpr.faces.imageio import frame_image

        image = frame_image(pixels.frames[0])
        width, height = image.size
        if width < self.min_width or height < self.min_height:
            raise ImageException(f"Image too small ({width}x{height} < {self.min_width}x{self.min_height})")
        path = self.file_path(request, response=response, info=info, item=item)
        full, buf = self.convert_image(image, response_body=BytesIO())
        out = [Rendition("image", path, buf.getvalue(), full.size)]
        for thumb_id, size in self.thumbs.items():
            thumb_path = self.thumb_path(request, thumb_id, response=response, info=info, item=item)
            thumb, thumb_buf = self.convert_image(full, size, response_body=buf)
            out.append(Rendition("thumbnail", thumb_path, thumb_buf.getvalue(), thumb.size))
        return out

    def convert_image(
        self,
        image: Image.Image,
        size: tuple[int, int] | None = None,
        *,
        response_body: BytesIO,
    ) -> tuple[Image.Image, BytesIO]:
        """Always encode from pixels, without metadata.

        Scrapy's version returns the downloaded bytes unchanged for an unresized
        JPEG; here ``response_body`` is never returned, and the JPEG is written
        from a fresh image carrying no EXIF, XMP, ICC profile or comment.
        """
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = self._Image.new("RGBA", rgba.size, (255, 255, 255))
            background.paste(rgba, rgba)
            image = background.convert("RGB")
        elif image.mode != "RGB":
            image = image.convert("RGB")
        if size:
            image = image.copy()
            image.thumbnail(size, self._Image.Resampling.LANCZOS)
        clean = self._Image.frombytes("RGB", image.size, image.tobytes())
        buf = BytesIO()
        clean.save(buf, "JPEG", quality=90)
        return clean, buf

    def item_completed(self, results: list[FileInfoOrError], item: Any, info: MediaPipeline.SpiderInfo) -> Any:
        self._complete(results, item, info)
        return super().item_completed(results, item, info)


# --------------------------------------------------------------------------- FilesPipeline


class GdprFilesPipeline(_MediaFaceStageMixin, FilesPipeline):
    """``FilesPipeline`` that puts images through the face stage and refuses what
    it cannot check.

    Images are recognised by their bytes (and by an ``image/*`` Content-Type), are
    stored redacted and metadata-free, and keep Scrapy's file path. Any other type
    (video, PDF, unknown) is stored unchanged only when the policy lists its MIME
    type in ``faces.allow_unchecked_types``.
    """

    async def file_downloaded(
        self,
        response: Response,
        request: Request,
        info: MediaPipeline.SpiderInfo,
        *,
        item: Any = None,
    ) -> str:
        url = request.url
        # One decision for every type, in the stage (docs/image-formats.md): images
        # are checked; other types are stored unchanged only when the policy lists
        # them and neither the bytes nor the declared type say otherwise.
        verdict = await self.faces.check(response.body, mime=_header_mime(response))
        if verdict.reason == "unchecked_allowed":
            body, content_type = verdict.data, verdict.mime
            self.faces.count_unchecked_stored()
            record = {"url": url, "stored": True, "checked": False, "mime": verdict.mime,
                      "allowed_by": "faces.allow_unchecked_types"}
        elif _type_refusal(verdict):
            raise self._refuse_type(url, verdict)
        else:
            self.faces.count_checked(verdict)
            if self._refused(verdict):
                raise self._refuse_image(url, verdict, kind="file", url=url)
            body, content_type = verdict.data, verdict.mime
            self.faces.count_stored(verdict)
            record = self.faces.record(verdict, url=url)
        path = self.file_path(request, response=response, info=info, item=item)
        checksum = hashlib.md5(body).hexdigest()  # noqa: S324 - Scrapy's checksum
        await ensure_awaitable(self.store.persist_file(path, BytesIO(body), info, headers={"Content-Type": content_type}))
        self.stored_renditions([Rendition("file", path, body)])
        self._checked[url] = record
        return checksum

    def _refuse_type(self, url: str, verdict: Verdict) -> FaceStageRefusal:
        """Count and audit a file refused for its type (not an image, or not what it claims)."""
        reason = "unchecked_type" if verdict.reason == "unsupported_type" else verdict.reason
        mime = verdict.source_mime or "application/octet-stream"
        self.faces.count_dropped(reason)
        detail = (
            f"{mime} cannot be checked for faces and is not in faces.allow_unchecked_types"
            if reason == "unchecked_type" else verdict.detail
        )
        note_refusal(
            self.crawler, url, Reason.UNCHECKED,
            clause=self.runtime.policy.clause("faces", "allow_unchecked_types"), detail=detail, kind="file",
        )
        return FaceStageRefusal(reason, record={"url": url, "stored": False, "mime": mime, "reason": reason})

    def item_completed(self, results: list[FileInfoOrError], item: Any, info: MediaPipeline.SpiderInfo) -> Any:
        self._complete(results, item, info)
        return super().item_completed(results, item, info)


def _type_refusal(verdict: Verdict) -> bool:
    """A refusal for the file's type: not an image (so not a face-stage refusal of an image)."""
    if verdict.stored or verdict.checked:
        return False
    if verdict.reason in ("type_mismatch", "embedded_image"):
        return True
    mime = verdict.source_mime or ""
    return verdict.reason == "unsupported_type" and (mime == "image/svg+xml" or not mime.startswith("image/"))


# --------------------------------------------------------------------------- image bytes in items


class ImageBytesPipeline(_FaceStageMixin):
    """Runs the face stage on image bytes carried in item fields.

    The fields are named by the policy's ``faces.image_fields`` and by
    ``GDPR_IMAGE_BYTES_FIELDS`` (default ``image_bytes`` and ``screenshot``), which
    can only add to them; an image in any other field drops the item. A field may hold bytes or a list of bytes; each value is
    replaced by the stage's redacted, metadata-free output. The item is dropped
    when an image cannot be checked or the policy does not let it be stored.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self._setup_faces(crawler)
        # The policy's fields, then the ones the setting adds: a field can only be
        # added (an image in any field not listed drops the item).
        policy_fields = getattr(self.runtime.policy.faces, "image_fields", [])
        self.fields: tuple[str, ...] = tuple(dict.fromkeys([*policy_fields, *self.runtime.config.image_bytes_fields]))

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        await self._refuse_unlisted_images(item, adapter)
        records: list[dict[str, Any]] = []
        for name in self.fields:
            value = adapter.get(name)
            if value is None:
                continue
            if isinstance(value, (list, tuple)):
                new = [await self._check_value(item, name, v, records) for v in value]
                adapter[name] = type(value)(new)
            else:
                adapter[name] = await self._check_value(item, name, value, records)
        self._note(item, records)
        return item

    async def _check_value(self, item: Any, field: str, value: Any, records: list[dict[str, Any]]) -> bytes:
        source = self._source(item)
        if not isinstance(value, (bytes, bytearray, memoryview)):
            self.faces.count_dropped("not_bytes")
            detail = f"field {field!r} holds {type(value).__name__}, not image bytes"
            self.faces.count_item_dropped(Reason.UNCHECKED)
            raise drop(self.crawler, source, Reason.UNCHECKED, clause=self._clause(Reason.UNCHECKED), detail=detail)
        verdict = await self.faces.check(bytes(value))
        self.faces.count_checked(verdict)
        if self._refused(verdict):
            # One audit line, for the item: the image has no URL of its own.
            reason = self._reason(verdict)
            self.faces.count_dropped(verdict.reason or str(reason))
            record = self.faces.record(verdict, field=field)
            record["stored"] = False
            records.append(record)
            self._note(item, records)
            self.faces.count_item_dropped(reason)
            raise drop(
                self.crawler, source, reason, clause=self._clause(reason),
                detail=f"image in field {field!r} not stored: {verdict.reason}",
            )
        self.faces.count_stored(verdict)
        records.append(self.faces.record(verdict, field=field))
        return verdict.data

    async def _refuse_unlisted_images(self, item: Any, adapter: ItemAdapter) -> None:
        """Fail closed on an image in a field the stage was not told about.

        Image bytes (or a ``data:`` URL or base64 text of an image) in any other
        field, at any depth, would reach the feeds and stores unchecked: the item
        is dropped (reason ``unchecked``), since its shape says the field belongs
        to it. List the field in the policy's ``faces.image_fields`` (or in
        ``GDPR_IMAGE_BYTES_FIELDS``) to have it checked.
        """
        listed = set(self.fields)
        candidates: list[tuple[str, Any]] = []
        for name, value in adapter.items():
            if name not in listed and _walk(value, str(name), candidates):
                self._drop_unchecked(item, f"field {name!r} is too large or too deeply nested to be checked for images")
        if not candidates:
            return
        found = await self.faces.call(_first_image, candidates)
        if found is not None:
            where, mime = found
            self._drop_unchecked(
                item, f"field {where!r} holds an image ({mime}) that is not checked for faces: list the "
                      "field in the policy's faces.image_fields (or GDPR_IMAGE_BYTES_FIELDS) to have it checked",
                stat="unlisted_field",
            )

    def _drop_unchecked(self, item: Any, detail: str, stat: str = "unchecked") -> NoReturn:
        self.faces.count_dropped(stat)
        self.faces.count_item_dropped(Reason.UNCHECKED)
        raise drop(self.crawler, self._source(item), Reason.UNCHECKED, clause=self._clause(Reason.UNCHECKED),
                   detail=detail)

    def _source(self, item: Any) -> str:
        provenance = provenance_of(self.crawler, item)
        return provenance.url if provenance is not None else ""


#: How deep and how many values :class:`ImageBytesPipeline` looks through in the
#: other fields of an item; an item beyond that cannot be checked and is dropped.
_MAX_DEPTH = 32
_MAX_VALUES = 100_000


def _walk(value: Any, path: str, out: list[tuple[str, Any]], depth: int = 0) -> bool:
    """Collect the bytes and long strings under ``value``; True when too deep or too many."""
    if isinstance(value, (bytes, bytearray, memoryview)) or (isinstance(value, str) and len(value) >= 16):
        out.append((path, value))
        return len(out) > _MAX_VALUES
    if isinstance(value, dict):
        items: Any = ((f"{path}.{k}", v) for k, v in value.items())
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        try:
            adapted = ItemAdapter(value) if ItemAdapter.is_item(value) else None
        except Exception:  # noqa: BLE001 - not an item
            adapted = None
        if adapted is None:
            return False
        items = ((f"{path}.{k}", v) for k, v in adapted.items())
    if depth >= _MAX_DEPTH:
        return True
    return any(_walk(v, p, out, depth + 1) for p, v in items)


def _first_image(candidates: list[tuple[str, Any]]) -> tuple[str, str] | None:
    """(where, type) of the first value that is an image (in a face-pool worker)."""
    from scrapy_gdpr.faces.imageio import image_in_value

    for where, value in candidates:
        mime = image_in_value(value)
        if mime is not None:
            return where, mime
    return None

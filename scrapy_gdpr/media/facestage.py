"""The face stage as every media pipeline runs it: one image to a verdict on the worker pool,
the refusal Scrapy's media pipelines understand, the figures of the report.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from scrapy.exceptions import IgnoreRequest
from scrapy.pipelines.files import FilesPipeline, FSFilesStore
from scrapy.pipelines.images import ImageException
from scrapy.pipelines.media import FileException
from twisted.python.failure import Failure

from scrapy_gdpr._component import component_runtime
from scrapy_gdpr.audit import Reason, drop, note_refusal
from scrapy_gdpr.exceptions import PolicyViolation
from scrapy_gdpr.items.provenance import provenance_of
from scrapy_gdpr.media.facepool import acquire_pool

if TYPE_CHECKING:
    from os import PathLike

    from scrapy.crawler import Crawler
    from scrapy.http import Request, Response
    from scrapy.pipelines.media import FileInfoOrError, MediaPipeline

    from scrapy_gdpr.faces.stage import Verdict
    from scrapy_gdpr.media.facepool import FacePool
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
        """The audit reason of a refused image: the stage's one table (``Verdict.audit_reason``)."""
        return Reason(verdict.audit_reason)

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
        note_refusal(self.runtime, target, reason, clause=self._clause(reason), detail=verdict.reason, kind=kind)
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
        return drop(self.runtime, url, Reason.FACES, clause=self._clause(Reason.FACES), detail=detail)


class SharedFolderStore(FSFilesStore):
    """Scrapy's local file store, for a folder that several crawls write at once.

    Scrapy's store creates a folder when it does not see it (``exists()``, then
    ``mkdir()``): two workers of a shared crawl starting together in one project, or
    storing their first image on a shared file system, both see it missing, and the
    second ``mkdir`` fails (``FileExistsError``): at start-up the worker dies, later the
    image is not stored. Here a folder another process made meanwhile is taken as made.
    """

    def _mkdir(self, dirname: Any, domain: Any = None) -> None:
        seen: set[str] = self.created_directories[domain] if domain else set()
        if str(dirname) not in seen:
            dirname.mkdir(parents=True, exist_ok=True)
            seen.add(str(dirname))


class _MediaFaceStageMixin(_FaceStageMixin):
    """What the two media pipelines share: setting up the face stage, a local store
    several crawls may write at once, and ``item_completed``: records, then drop or
    keep the item."""

    STORE_SCHEMES: ClassVar[dict[str, Any]] = {
        **FilesPipeline.STORE_SCHEMES, "": SharedFolderStore, "file": SharedFolderStore,
    }
    _checked: dict[str, dict[str, Any]]

    def __init__(self, store_uri: str | PathLike[str], download_func: None = None, *, crawler: Crawler) -> None:
        component_runtime(crawler)  # GDPR_ENABLED = False: NotConfigured before anything else
        super().__init__(store_uri, crawler=crawler)  # type: ignore[call-arg]  # the media pipeline
        self._setup_faces(crawler)
        self._checked = {}

    async def process_item(self, item: Any, spider: Any = None) -> Any:
        # counted while its files download and go through the face stage: part of what a
        # worker of a shared crawl has in hand (see Scheduler._backlogged)
        self.faces.items += 1
        try:
            return await super().process_item(item)  # type: ignore[misc]  # the media pipeline
        finally:
            self.faces.items -= 1

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
                assert isinstance(value, dict)
                rec = self._checked.get(value["url"])
                if rec is None:
                    # "uptodate": stored by an earlier crawl through this pipeline, not downloaded again
                    rec = {"url": value["url"], "stored": True, "status": value["status"]}
                records.append({**rec, "path": value["path"]})
                continue
            assert isinstance(value, Failure)
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
            first = next((str(r["url"]) for r in records if r.get("url")), "")
            raise self._drop_item(source or first, drop_detail)


def _type_refusal(verdict: Verdict) -> bool:
    """A refusal for the file's type: not an image (so not a face-stage refusal of an image)."""
    if verdict.stored or verdict.checked:
        return False
    if verdict.reason in ("type_mismatch", "embedded_image"):
        return True
    mime = verdict.source_mime or ""
    return verdict.reason == "unsupported_type" and (mime == "image/svg+xml" or not mime.startswith("image/"))

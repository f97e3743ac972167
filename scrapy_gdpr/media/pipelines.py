"""The face stage inside Scrapy's media pipelines and for image bytes in items.

* :class:`GdprImagesPipeline` replaces Scrapy's ``ImagesPipeline``: every
  downloaded image goes through the face stage in a worker thread before any byte
  of it reaches ``IMAGES_STORE``; the full image and its thumbnails are made from
  the redacted, metadata-free pixels.
* :class:`GdprFilesPipeline` replaces ``FilesPipeline``: images (recognised by
  their bytes, not by their name) go through the same stage; other types are
  stored only when the policy lists them in ``faces.allow_unchecked_types``.
* :class:`~scrapy_gdpr.media.itembytes.ImageBytesPipeline` runs the stage on image bytes an item carries
  (``GDPR_IMAGE_BYTES_FIELDS``, e.g. browser screenshots).

What was done to each image is recorded, without coordinates or any biometric
data, in the item's provenance notes (``notes["faces"]``).
"""

from __future__ import annotations

import hashlib
from io import BytesIO
from typing import TYPE_CHECKING, Any

from scrapy.pipelines.files import FilesPipeline
from scrapy.pipelines.images import ImagesPipeline
from scrapy.utils.defer import ensure_awaitable

from scrapy_gdpr.audit import Reason, note_refusal
from scrapy_gdpr.media.facestage import FaceStageRefusal, _header_mime, _MediaFaceStageMixin, _type_refusal, sniff_mime
from scrapy_gdpr.media.itembytes import ImageBytesPipeline

if TYPE_CHECKING:

    from PIL import Image
    from scrapy.http import Request, Response
    from scrapy.pipelines.media import FileInfoOrError, MediaPipeline

    from scrapy_gdpr.faces.stage import Verdict


# --------------------------------------------------------------------------- content sniffing


# --------------------------------------------------------------------------- shared behaviour


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
            verdict = await self.faces.call(self.faces.run_stage, response.body, _header_mime(response))
            self.faces.count_checked(verdict)
            if self._refused(verdict):
                raise self._refuse_image(url, verdict, kind="image", url=url)
            redacted = response.replace(body=verdict.data)
            # Decoding, the full-size JPEG and the thumbnails: also off the reactor thread.
            images = await self.faces.call(self._convert_all, redacted, request, info, item)
        checksum: str | None = None
        for path, (width, height), buf in images:
            if checksum is None:
                checksum = hashlib.md5(buf.getbuffer()).hexdigest()  # noqa: S324 - Scrapy's checksum
            buf.seek(0)
            await ensure_awaitable(
                self.store.persist_file(
                    path, buf, info, meta={"width": width, "height": height}, headers={"Content-Type": "image/jpeg"}
                )
            )
        assert checksum is not None
        self.faces.count_stored(verdict)
        self._checked[url] = self.faces.record(verdict, url=url)
        return checksum

    def _convert_all(
        self, response: Response, request: Request, info: MediaPipeline.SpiderInfo, item: Any
    ) -> list[tuple[str, tuple[int, int], BytesIO]]:
        return [(path, image.size, buf) for path, image, buf in self.get_images(response, request, info, item=item)]

    def convert_image(
        self,
        image: Image.Image,
        size: tuple[int, int] | None = None,
        *,
        response_body: BytesIO,
    ) -> tuple[Image.Image, BytesIO]:
        """Always re-encode from pixels, without metadata.

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
        buf = BytesIO(body)
        checksum = hashlib.md5(body).hexdigest()  # noqa: S324 - Scrapy's checksum
        await ensure_awaitable(self.store.persist_file(path, buf, info, headers={"Content-Type": content_type}))
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
            self.runtime, url, Reason.UNCHECKED,
            clause=self.runtime.policy.clause("faces", "allow_unchecked_types"), detail=detail, kind="file",
        )
        return FaceStageRefusal(reason, record={"url": url, "stored": False, "mime": mime, "reason": reason})

    def item_completed(self, results: list[FileInfoOrError], item: Any, info: MediaPipeline.SpiderInfo) -> Any:
        self._complete(results, item, info)
        return super().item_completed(results, item, info)


# --------------------------------------------------------------------------- image bytes in items


__all__ = ["FaceStageRefusal", "GdprFilesPipeline", "GdprImagesPipeline", "ImageBytesPipeline", "sniff_mime"]

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
import logging
from io import BytesIO
from typing import TYPE_CHECKING, Any

from scrapy.pipelines.files import FilesPipeline
from scrapy.pipelines.images import ImageException, ImagesPipeline
from scrapy.utils.defer import ensure_awaitable

from scrapy_gdpr.audit import Reason, note_refusal
from scrapy_gdpr.media.facestage import (
    FaceStageRefusal,
    Rendition,
    _header_mime,
    _MediaFaceStageMixin,
    _type_refusal,
    sniff_mime,
)
from scrapy_gdpr.media.itembytes import ImageBytesPipeline

if TYPE_CHECKING:

    from PIL import Image
    from scrapy.http import Request, Response
    from scrapy.pipelines.media import FileInfoOrError, MediaPipeline

    from scrapy_gdpr.faces.imageio import DecodedImage
    from scrapy_gdpr.faces.stage import Verdict

logger = logging.getLogger(__name__)


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
        except Exception as exc:
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
            self.runtime, url, Reason.UNCHECKED,
            clause=self.runtime.policy.clause("faces", "allow_unchecked_types"), detail=detail, kind="file",
        )
        return FaceStageRefusal(reason, record={"url": url, "stored": False, "mime": mime, "reason": reason})

    def item_completed(self, results: list[FileInfoOrError], item: Any, info: MediaPipeline.SpiderInfo) -> Any:
        self._complete(results, item, info)
        return super().item_completed(results, item, info)


# --------------------------------------------------------------------------- image bytes in items


__all__ = [
    "FaceStageRefusal", "GdprFilesPipeline", "GdprImagesPipeline", "ImageBytesPipeline", "Rendition", "sniff_mime",
]

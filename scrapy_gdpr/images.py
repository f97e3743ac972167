"""Face stage for ImagesPipeline, FilesPipeline and items carrying image bytes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy_gdpr._component import component_runtime

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from typing_extensions import Self


class ImageBytesPipeline:
    """Placeholder: face stage for image bytes in items."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)


from scrapy.pipelines.files import FilesPipeline  # noqa: E402
from scrapy.pipelines.images import ImageException, ImagesPipeline  # noqa: E402


class GdprImagesPipeline(ImagesPipeline):
    """Placeholder that fails closed: no image is stored until the face stage exists."""

    async def image_downloaded(self, response, request, info, *, item=None):  # type: ignore[no-untyped-def]
        raise ImageException("face stage not available: image not stored")


class GdprFilesPipeline(FilesPipeline):
    """Placeholder that fails closed: no file is stored until the face stage exists."""

    async def file_downloaded(self, response, request, info, *, item=None):  # type: ignore[no-untyped-def]
        raise ImageException("face stage not available: file not stored")

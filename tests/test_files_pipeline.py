"""GdprFilesPipeline: images are redacted, other types refused unless the policy allows them."""

from __future__ import annotations

import pytest
from scrapy.utils.test import get_crawler

from scrapy_gdpr.images import sniff_mime
from tests.gallery import (
    FILES,
    HOST,
    SITE,
    GallerySpider,
    Outcome,
    assert_no_metadata,
    box_difference,
    decode,
    detect,
    leaked,
    settings,
    stored_files,
    write_policy,
)
from tests.utils import coroutine_test


def _items(*paths: str):
    def make(response):
        yield {"file_urls": [response.urljoin(p) for p in paths], "files": []}

    return make


async def _crawl(tmp_path, mockserver, *paths, **faces):
    policy = write_policy(tmp_path, **faces)
    crawler = get_crawler(GallerySpider, settings(tmp_path, pipelines=(FILES,), policy=policy))
    outcome = Outcome(crawler)
    await crawler.crawl_async(url=mockserver.url("/index.html", host=HOST), make_items=_items(*paths))
    (item,) = outcome.scraped
    return crawler, item, outcome.records(item), stored_files(tmp_path / "files")


@coroutine_test
async def test_image_is_redacted_and_pdf_refused(tmp_path, mockserver):
    original = (SITE / "astronaut-gps.jpg").read_bytes()
    (face_box,) = detect(original)
    crawler, item, records, files = await _crawl(tmp_path, mockserver, "/astronaut-gps.jpg", "/leaflet.pdf")
    assert [f["url"].rsplit("/", 1)[1] for f in item["files"]] == ["astronaut-gps.jpg"]
    (stored,) = files.values()
    assert stored != original
    assert detect(stored) == []
    assert leaked(original, stored) == []
    assert box_difference(decode(original), decode(stored), face_box) > 10
    assert_no_metadata(stored)
    image, pdf = records
    assert image["stored"] is True and image["faces"] >= 1
    assert pdf == {"url": pdf["url"], "stored": False, "mime": "application/pdf", "reason": "unchecked_type"}
    stats = crawler.stats.get_stats()
    assert stats["gdpr/blocked/unchecked"] == 1
    assert stats["gdpr/images/redacted"] == 1
    assert stats["gdpr/images/dropped/unchecked_type"] == 1


@coroutine_test
async def test_pdf_allowed_by_policy_is_stored_unchanged(tmp_path, mockserver):
    crawler, item, records, files = await _crawl(
        tmp_path, mockserver, "/leaflet.pdf", "/camera.png", allow_unchecked_types=["application/pdf"]
    )
    assert len(item["files"]) == 2
    pdf_path = next(f["path"] for f in item["files"] if f["url"].endswith(".pdf"))
    assert files[pdf_path] == (SITE / "leaflet.pdf").read_bytes()
    pdf, png = records
    assert pdf["stored"] is True and pdf["checked"] is False and pdf["mime"] == "application/pdf"
    assert png["stored"] is True and png["mime"].startswith("image/")
    png_path = next(f["path"] for f in item["files"] if f["url"].endswith(".png"))
    assert files[png_path] != (SITE / "camera.png").read_bytes()
    assert crawler.stats.get_value("gdpr/files/unchecked") == 1
    assert "gdpr/blocked/unchecked" not in crawler.stats.get_stats()


@coroutine_test
async def test_image_named_as_pdf_is_still_checked(tmp_path, mockserver):
    # /scan.pdf serves the portrait JPEG with Content-Type: application/pdf
    _crawler, _item, records, files = await _crawl(
        tmp_path, mockserver, "/scan.pdf", allow_unchecked_types=["application/pdf"]
    )
    (stored,) = files.values()
    assert detect(stored) == []
    assert leaked((SITE / "astronaut-gps.jpg").read_bytes(), stored) == []
    assert_no_metadata(stored)
    assert records[0]["faces"] >= 1


@coroutine_test
async def test_svg_is_refused_as_unchecked(tmp_path, mockserver):
    crawler, item, records, files = await _crawl(tmp_path, mockserver, "/drawing.svg", "/broken.jpg")
    assert item["files"] == []
    assert files == {}
    svg, broken = records
    assert svg["mime"] == "image/svg+xml" and svg["reason"] == "unchecked_type"
    assert broken["stored"] is False and broken["reason"]
    assert crawler.stats.get_value("gdpr/blocked/unchecked") == 2


@coroutine_test
async def test_drop_item_in_files_pipeline(tmp_path, mockserver):
    policy = write_policy(tmp_path, action="drop_item")
    crawler = get_crawler(GallerySpider, settings(tmp_path, pipelines=(FILES,), policy=policy))
    outcome = Outcome(crawler)
    await crawler.crawl_async(url=mockserver.url("/index.html", host=HOST), make_items=_items("/astronaut-gps.jpg"))
    assert outcome.scraped == []
    assert len(outcome.dropped) == 1
    assert stored_files(tmp_path / "files") == {}


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (b"\xff\xd8\xff\xe0rest", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\nrest", "image/png"),
        (b"GIF89a...", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"II*\x00rest", "image/tiff"),
        (b"\x00\x00\x00\x1cftypheic\x00\x00", "image/heic"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00", "image/avif"),
        (b"\x00\x00\x00\x1cftypisom\x00\x00", "video/mp4"),
        (b"\x1a\x45\xdf\xa3rest", "video/webm"),
        (b"%PDF-1.7", "application/pdf"),
        (b'\xef\xbb\xbf  <?xml version="1.0"?><svg xmlns="x"/>', "image/svg+xml"),
        (b"<svg/>", "image/svg+xml"),
        (b"<html><body>hi</body></html>", None),
        (b"", None),
    ],
)
def test_sniff_mime(data, mime):
    assert sniff_mime(data) == mime


# --------------------------------------------------------------------------- type confusion

HOSTILE = SITE / "hostile"
DOCUMENTED_ALLOW_LIST = ["application/pdf", "video/*"]  # the example in docs/faces.md


@coroutine_test
async def test_files_that_lie_about_their_type_are_not_stored_unchecked(tmp_path, mockserver):
    paths = ["svg-pdf-marker.pdf", "svg-photo.pdf", "page-photo.pdf", "portrait.mp4", "clip.mp4", "svg-photo.svg"]
    crawler, item, records, files = await _crawl(
        tmp_path, mockserver, *[f"/hostile/{p}" for p in paths], allow_unchecked_types=DOCUMENTED_ALLOW_LIST
    )
    by_name = {r["url"].rsplit("/", 1)[1]: r for r in records}
    # documents that are not what they are served as, with a photograph inside: refused
    for name in ("svg-pdf-marker.pdf", "svg-photo.pdf", "page-photo.pdf"):
        assert by_name[name]["stored"] is False and by_name[name]["reason"] == "type_mismatch", name
    assert by_name["svg-photo.svg"]["reason"] == "unchecked_type"  # SVG is not on the list
    # an AVIF photograph whose brand says mp42 is an image: checked and redacted
    portrait = by_name["portrait.mp4"]
    assert portrait["stored"] is True and portrait["faces"] >= 1 and portrait["action"] == "blur"
    assert portrait["mime"] == "image/jpeg"
    # a real video matches video/* here exactly as in the stage
    assert by_name["clip.mp4"] == {**by_name["clip.mp4"], "stored": True, "checked": False, "mime": "video/mp4"}
    stored = {f["url"].rsplit("/", 1)[1]: files[f["path"]] for f in item["files"]}
    assert sorted(stored) == ["clip.mp4", "portrait.mp4"]
    assert stored["clip.mp4"] == (HOSTILE / "clip.mp4").read_bytes()
    assert stored["portrait.mp4"] != (HOSTILE / "portrait.mp4").read_bytes()
    assert detect(stored["portrait.mp4"]) == []
    assert_no_metadata(stored["portrait.mp4"])
    for name in ("svg-pdf-marker.pdf", "svg-photo.pdf", "page-photo.pdf", "svg-photo.svg"):
        assert (HOSTILE / name).read_bytes() not in files.values()
    stats = crawler.stats.get_stats()
    assert stats["gdpr/images/dropped/type_mismatch"] == 3
    assert stats["gdpr/files/unchecked"] == 1
    assert stats["gdpr/blocked/unchecked"] == 4


@coroutine_test
async def test_svg_with_an_embedded_photo_is_refused_even_when_svg_is_allowed(tmp_path, mockserver):
    crawler, _item, records, files = await _crawl(
        tmp_path, mockserver, "/hostile/svg-photo.svg", "/drawing.svg", allow_unchecked_types=["image/svg+xml"]
    )
    photo, drawing = records
    assert photo == {"url": photo["url"], "stored": False, "mime": "image/svg+xml", "reason": "embedded_image"}
    assert drawing["stored"] is True and drawing["checked"] is False
    assert list(files.values()) == [(SITE / "drawing.svg").read_bytes()]
    assert crawler.stats.get_value("gdpr/images/dropped/embedded_image") == 1

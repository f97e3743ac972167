"""GdprImagesPipeline: real crawls of a gallery host with real photos.

The pipeline runs without the add-on (only it and ProvenanceMiddleware), so the
request gates tested elsewhere do not get in the way.
"""

from __future__ import annotations

import json
from io import BytesIO

from PIL import Image
from scrapy.utils.test import get_crawler

from scrapy_gdpr.exceptions import GdprDropItem
from scrapy_gdpr.images import GdprImagesPipeline
from scrapy_gdpr.runtime import get_runtime
from tests.gallery import (
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
from tests.utils import coroutine_test, install_face_pool

PORTRAIT = "/astronaut-gps.jpg"
COFFEE = "/coffee.jpg"


def _items(*paths: str):
    def make(response):
        yield {"title": "gallery", "image_urls": [response.urljoin(p) for p in paths], "images": []}

    return make


async def _crawl(tmp_path, mockserver, make_items, *, stage=None, **kw):
    crawler = get_crawler(GallerySpider, settings(tmp_path, **kw))
    if stage is not None:
        install_face_pool(crawler, stage=stage)
    outcome = Outcome(crawler)
    await crawler.crawl_async(url=mockserver.url("/index.html", host=HOST), make_items=make_items)
    return crawler, outcome


@coroutine_test
async def test_stored_images_and_thumbnails_are_redacted_and_metadata_free(tmp_path, mockserver):
    original = (SITE / "astronaut-gps.jpg").read_bytes()
    (face_box,) = detect(original)  # the detector finds the face in the original
    crawler, outcome = await _crawl(
        tmp_path, mockserver, _items(PORTRAIT, COFFEE), IMAGES_THUMBS={"small": (256, 256)}
    )
    (item,) = outcome.scraped
    assert [i["url"].rsplit("/", 1)[1] for i in item["images"]] == ["astronaut-gps.jpg", "coffee.jpg"]

    files = stored_files(tmp_path / "images")
    assert len(files) == 4  # two full images, two thumbnails
    assert original not in files.values()  # the original bytes never reach IMAGES_STORE
    for data in files.values():
        assert_no_metadata(data)

    portrait_path = next(i["path"] for i in item["images"] if i["url"].endswith(PORTRAIT))
    stored = files[portrait_path]
    assert detect(stored) == []
    assert leaked(original, stored) == []
    assert box_difference(decode(original), decode(stored), face_box) > 10

    # The thumbnail is made from the redacted image, not from the original.
    thumb = files[portrait_path.replace("full/", "thumbs/small/")]
    unredacted = Image.open(BytesIO(original)).convert("RGB")
    unredacted.thumbnail((256, 256), Image.Resampling.LANCZOS)
    buf = BytesIO()
    unredacted.save(buf, "JPEG", quality=90)
    half = tuple(v // 2 for v in face_box)
    assert box_difference(decode(buf.getvalue()), decode(thumb), half) > 10

    stats = crawler.stats.get_stats()
    assert stats["gdpr/faces/detected"] >= 1
    assert stats["gdpr/images/redacted"] == 1
    assert stats["gdpr/images/clean"] == 1
    assert "gdpr/images/dropped" not in stats

    records = outcome.records(item)
    assert [(r["url"].rsplit("/", 1)[1], r["stored"], r["faces"] > 0) for r in records] == [
        ("astronaut-gps.jpg", True, True),
        ("coffee.jpg", True, False),
    ]
    assert records[0]["action"] == "blur"
    for rec in records:  # counts and actions only: no coordinates, no biometric data
        assert all(isinstance(v, (str, int, float, bool)) for v in rec.values())
        assert not {"x", "y", "w", "h", "box", "boxes", "detections", "landmarks"} & set(rec)
    assert "faces" not in item  # no undeclared fields added to the item

    section = get_runtime(crawler).report_sections["faces"]
    assert section["images_redacted"] == 1 and section["images_clean"] == 1
    assert section["faces_detected"] == stats["gdpr/faces/detected"]
    json.dumps(section)


@coroutine_test
async def test_drop_image_keeps_item_without_the_image(tmp_path, mockserver):
    policy = write_policy(tmp_path, action="drop_image")
    crawler, outcome = await _crawl(tmp_path, mockserver, _items(PORTRAIT, COFFEE), policy=policy)
    (item,) = outcome.scraped
    assert [i["url"].rsplit("/", 1)[1] for i in item["images"]] == ["coffee.jpg"]
    files = stored_files(tmp_path / "images")
    assert len(files) == 1
    assert all(detect(data) == [] for data in files.values())
    portrait, coffee = outcome.records(item)
    assert portrait["stored"] is False and portrait["faces"] >= 1 and portrait["reason"]
    assert coffee["stored"] is True
    stats = crawler.stats.get_stats()
    assert stats["gdpr/images/dropped"] == 1
    assert stats[f"gdpr/images/dropped/{portrait['reason']}"] == 1
    assert stats["gdpr/blocked/faces"] == 1
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    refusal = next(a for a in audit if a.get("decision") == "refused")
    assert refusal["kind"] == "image" and refusal["reason"] == "faces" and refusal["url"].endswith(PORTRAIT)
    assert refusal["clause"].startswith("faces.action")


@coroutine_test
async def test_drop_item_drops_the_whole_item(tmp_path, mockserver):
    policy = write_policy(tmp_path, action="drop_item")
    crawler, outcome = await _crawl(tmp_path, mockserver, _items(PORTRAIT), policy=policy)
    assert outcome.scraped == []
    ((item, exc),) = outcome.dropped
    assert isinstance(exc, GdprDropItem) and exc.reason == "faces"
    assert stored_files(tmp_path / "images") == {}
    (record,) = outcome.records(item)
    assert record["stored"] is False and record["faces"] >= 1
    stats = crawler.stats.get_stats()
    assert stats["item_dropped_reasons_count/GdprDropItem"] == 1
    assert get_runtime(crawler).report_sections["faces"]["items_dropped"] == 1


@coroutine_test
async def test_drop_item_keeps_items_without_faces(tmp_path, mockserver):
    policy = write_policy(tmp_path, action="drop_item")
    _crawler, outcome = await _crawl(tmp_path, mockserver, _items(COFFEE), policy=policy)
    (item,) = outcome.scraped
    assert len(item["images"]) == 1
    assert outcome.records(item)[0]["faces"] == 0


@coroutine_test
async def test_undecodable_image_and_svg_are_not_stored(tmp_path, mockserver):
    crawler, outcome = await _crawl(tmp_path, mockserver, _items("/broken.jpg", "/drawing.svg", COFFEE))
    (item,) = outcome.scraped
    assert [i["url"].rsplit("/", 1)[1] for i in item["images"]] == ["coffee.jpg"]
    assert len(stored_files(tmp_path / "images")) == 1
    broken, svg, coffee = outcome.records(item)
    assert broken["stored"] is False and broken["reason"]
    assert svg["stored"] is False and svg["reason"]
    assert coffee["stored"] is True
    stats = crawler.stats.get_stats()
    assert stats["gdpr/blocked/unchecked"] == 2
    assert stats["gdpr/images/dropped"] == 2
    assert "log_count/ERROR" not in stats  # a refusal is a decision, not an error


@coroutine_test
async def test_uptodate_images_are_not_downloaded_twice(tmp_path, mockserver):
    await _crawl(tmp_path, mockserver, _items(COFFEE))
    _crawler, outcome = await _crawl(tmp_path, mockserver, _items(COFFEE))
    (item,) = outcome.scraped
    assert item["images"][0]["status"] == "uptodate"
    assert outcome.records(item)[0]["status"] == "uptodate"


def test_convert_image_never_returns_the_original_bytes(tmp_path):
    crawler = get_crawler(GallerySpider, settings(tmp_path))
    pipe = GdprImagesPipeline.from_crawler(crawler)
    original = (SITE / "astronaut-gps.jpg").read_bytes()
    image = Image.open(BytesIO(original))
    assert image.format == "JPEG"  # Scrapy's convert_image would return response_body
    converted, buf = pipe.convert_image(image, response_body=BytesIO(original))
    assert buf.getvalue() != original
    assert_no_metadata(buf.getvalue())
    assert converted.size == image.size
    pipe.close_spider()


def test_a_store_folder_another_crawl_makes_at_the_same_moment_is_not_an_error(tmp_path, monkeypatch):
    """Two workers starting together in one project (or storing their first image on a
    shared file system) both find the folder missing; the one that creates it second
    must not fail. Scrapy's own local store checks, then creates, and fails there."""
    from pathlib import Path

    import pytest
    from scrapy.pipelines.files import FSFilesStore

    from scrapy_gdpr.media.facestage import SharedFolderStore
    from scrapy_gdpr.media.pipelines import GdprFilesPipeline

    store_dir = tmp_path / "images"
    store_dir.mkdir()  # made by the other worker just after this one looked
    monkeypatch.setattr(Path, "exists", lambda self: False)
    with pytest.raises(FileExistsError):
        FSFilesStore(str(store_dir))
    store = SharedFolderStore(str(store_dir))
    store._mkdir(store_dir / "full", "spider-info")  # the first image's folder
    store._mkdir(store_dir / "full", "spider-info")
    monkeypatch.undo()
    assert (store_dir / "full").is_dir()
    # both media pipelines store local files through it
    for pipeline in (GdprImagesPipeline, GdprFilesPipeline):
        assert pipeline.STORE_SCHEMES[""] is SharedFolderStore and pipeline.STORE_SCHEMES["file"] is SharedFolderStore
    pipe = GdprImagesPipeline.from_crawler(get_crawler(GallerySpider, settings(tmp_path)))
    assert isinstance(pipe.store, SharedFolderStore)
    pipe.close_spider()


def test_disabled(tmp_path):
    import pytest
    from scrapy.exceptions import NotConfigured

    crawler = get_crawler(GallerySpider, settings(tmp_path, GDPR_ENABLED=False))
    with pytest.raises(NotConfigured):
        GdprImagesPipeline.from_crawler(crawler)


@coroutine_test
async def test_stage_that_keeps_faces_against_the_policy_is_overruled(tmp_path, mockserver):
    from scrapy_gdpr.faces.stage import Verdict

    def lenient_stage(data, **kwargs):
        return Verdict(True, data=data, mime="image/jpeg", faces=1, action="blur")

    policy = write_policy(tmp_path, action="drop_image")
    _crawler, outcome = await _crawl(tmp_path, mockserver, _items(PORTRAIT), policy=policy, stage=lenient_stage)
    (item,) = outcome.scraped
    assert item["images"] == []
    assert stored_files(tmp_path / "images") == {}
    assert outcome.records(item)[0]["reason"] == "faces_drop_image"


def test_addon_replaces_a_user_listed_stock_images_pipeline(tmp_path):
    from scrapy.pipelines.images import ImagesPipeline
    from scrapy.utils.misc import load_object

    from scrapy_gdpr.addon import Addon

    crawler = get_crawler(
        GallerySpider,
        {**settings(tmp_path), "ADDONS": {Addon: 0}, "ITEM_PIPELINES": {ImagesPipeline: 1}},
    )
    pipelines = {load_object(k) for k, v in crawler.settings.getdict("ITEM_PIPELINES").items() if v is not None}
    assert ImagesPipeline not in pipelines
    assert GdprImagesPipeline in pipelines


@coroutine_test
async def test_hostile_images_a_sideways_tiff_and_a_gif_hiding_frames(tmp_path, mockserver):
    """A portrait stored sideways in a TIFF is stored upright and redacted (Pillow's
    TIFF reader turns it once; the stage must not turn it again); a GIF hiding 100
    frames of 1000 x 1000 behind a stray byte is refused (before it is decoded:
    tests/test_imageio.py), and the crawl goes on."""
    from scrapy_gdpr.faces.imageio import decode as stage_decode

    tif = (SITE / "hostile" / "sideways.tif").read_bytes()
    upright = stage_decode(tif, max_pixels=10**7, max_frames=10).frames[0].pixels
    assert upright.shape == (400, 512, 3)
    buf = BytesIO()
    Image.fromarray(upright).save(buf, "PNG")
    _crawler, outcome = await _crawl(tmp_path, mockserver, _items("/hostile/sideways.tif", "/hostile/frames.gif"))
    (item,) = outcome.scraped
    assert [i["url"].rsplit("/", 1)[1] for i in item["images"]] == ["sideways.tif"]
    (stored,) = stored_files(tmp_path / "images").values()
    with Image.open(BytesIO(stored)) as im:
        assert im.size == (512, 400)  # upright
    assert leaked(buf.getvalue(), stored) == []
    tiff, gif = outcome.records(item)
    assert tiff["stored"] is True and tiff["faces"] >= 1
    assert gif["stored"] is False and gif["reason"] == "too_many_pixels"


@coroutine_test
async def test_image_whose_xmp_reserves_the_purpose_is_not_stored_and_the_item_says_why(tmp_path, mockserver):
    from scrapy_gdpr.optout import OptOutMiddleware

    other = "optout-xmp.test"
    policy = write_policy(tmp_path, hosts=(HOST, other))

    def make(response):
        yield {"title": "gallery", "images": [],
               "image_urls": [mockserver.url(f"/{n}", host=other) for n in ("prohibited.png", "plain.jpg")]}

    crawler = get_crawler(GallerySpider, settings(tmp_path, policy=policy,
                                                  DOWNLOADER_MIDDLEWARES={OptOutMiddleware: 120}))
    outcome = Outcome(crawler)
    await crawler.crawl_async(url=mockserver.url("/index.html", host=HOST), make_items=make)
    (item,) = outcome.scraped
    assert [i["url"].rsplit("/", 1)[1] for i in item["images"]] == ["plain.jpg"]
    assert len(stored_files(tmp_path / "images")) == 1
    reserved, plain = outcome.records(item)
    assert reserved["stored"] is False and reserved["reason"] == "optout"
    assert "search reserved by XMP plus:DataMining DMI-PROHIBITED" in reserved["detail"]
    assert plain["stored"] is True

"""ImageBytesPipeline: image bytes carried in items go through the face stage."""

from __future__ import annotations

import io

from PIL import Image
from scrapy.utils.test import get_crawler

from scrapy_gdpr.exceptions import GdprDropItem
from tests.gallery import BYTES, HOST, SITE, GallerySpider, Outcome, assert_no_metadata, detect, settings, write_policy
from tests.utils import coroutine_test

PORTRAIT = (SITE / "astronaut-gps.jpg").read_bytes()
COFFEE = (SITE / "coffee.jpg").read_bytes()
BROKEN = (SITE / "broken.jpg").read_bytes()


async def _crawl(tmp_path, mockserver, items, *, policy=None, **extra):
    crawler = get_crawler(GallerySpider, settings(tmp_path, pipelines=(BYTES,), policy=policy, **extra))
    outcome = Outcome(crawler)

    def make(response):
        yield from items

    await crawler.crawl_async(url=mockserver.url("/index.html", host=HOST), make_items=make)
    return crawler, outcome


@coroutine_test
async def test_bytes_are_replaced_by_redacted_metadata_free_images(tmp_path, mockserver):
    assert detect(PORTRAIT)
    items = [{"name": "a", "image_bytes": PORTRAIT, "screenshot": COFFEE}, {"name": "b", "other": b"not an image"}]
    crawler, outcome = await _crawl(tmp_path, mockserver, items)
    a, b = sorted(outcome.scraped, key=lambda i: i["name"])
    assert a["image_bytes"] != PORTRAIT and a["screenshot"] != COFFEE
    assert detect(a["image_bytes"]) == []
    assert_no_metadata(a["image_bytes"])
    assert_no_metadata(a["screenshot"])
    assert b["other"] == b"not an image"  # not a listed field, and no image: untouched
    portrait, coffee = outcome.records(a)
    assert portrait["field"] == "image_bytes" and portrait["faces"] >= 1 and portrait["stored"] is True
    assert coffee["field"] == "screenshot" and coffee["faces"] == 0
    assert outcome.records(b) == []
    stats = crawler.stats.get_stats()
    assert stats["gdpr/images/redacted"] == 1
    assert stats["gdpr/images/clean"] == 1


@coroutine_test
async def test_list_values_and_custom_fields(tmp_path, mockserver):
    items = [{"photos": [PORTRAIT, COFFEE]}]
    _crawler, outcome = await _crawl(tmp_path, mockserver, items, GDPR_IMAGE_BYTES_FIELDS=["photos"])
    (item,) = outcome.scraped
    assert isinstance(item["photos"], list) and len(item["photos"]) == 2
    assert detect(item["photos"][0]) == []
    assert [r["field"] for r in outcome.records(item)] == ["photos", "photos"]


@coroutine_test
async def test_undecodable_bytes_drop_the_item(tmp_path, mockserver):
    crawler, outcome = await _crawl(tmp_path, mockserver, [{"image_bytes": BROKEN}])
    assert outcome.scraped == []
    ((item, exc),) = outcome.dropped
    assert isinstance(exc, GdprDropItem) and exc.reason == "unchecked"
    (record,) = outcome.records(item)
    assert record["stored"] is False and record["reason"]
    assert crawler.stats.get_value("gdpr/blocked/unchecked") == 1
    assert crawler.stats.get_value("gdpr/images/dropped") == 1


@coroutine_test
async def test_not_bytes_drops_the_item(tmp_path, mockserver):
    _crawler, outcome = await _crawl(tmp_path, mockserver, [{"screenshot": "aGVsbG8="}])
    ((_, exc),) = outcome.dropped
    assert exc.reason == "unchecked"


@coroutine_test
async def test_drop_image_action_drops_items_with_faces(tmp_path, mockserver):
    policy = write_policy(tmp_path, action="drop_image")
    items = [{"n": 1, "image_bytes": PORTRAIT}, {"n": 2, "image_bytes": COFFEE}]
    crawler, outcome = await _crawl(tmp_path, mockserver, items, policy=policy)
    (kept,) = outcome.scraped
    assert kept["n"] == 2
    ((_, exc),) = outcome.dropped
    assert exc.reason == "faces"
    assert crawler.stats.get_value("gdpr/blocked/faces") == 1


@coroutine_test
async def test_max_pixels_from_the_policy(tmp_path, mockserver):
    policy = write_policy(tmp_path, max_pixels=100_000)  # the portrait has 512 x 512 = 262,144
    _crawler, outcome = await _crawl(tmp_path, mockserver, [{"image_bytes": PORTRAIT}], policy=policy)
    assert outcome.scraped == []
    ((item, exc),) = outcome.dropped
    assert exc.reason == "unchecked"
    assert outcome.records(item)[0]["stored"] is False


def _nested(depth: int) -> dict:
    value: dict = {"leaf": b"x"}
    for _ in range(depth):
        value = {"next": value}
    return value


@coroutine_test
async def test_an_image_in_a_field_the_stage_was_not_told_about_drops_the_item(tmp_path, mockserver):
    import base64

    b64 = base64.b64encode(PORTRAIT).decode("ascii")
    tga = io.BytesIO()
    Image.open(io.BytesIO(PORTRAIT)).save(tga, "TGA")  # no signature: only a decoder knows it
    items = [
        {"n": 1, "photo": PORTRAIT},
        {"n": 2, "meta": {"pages": [{"thumb": bytearray(COFFEE)}]}},
        {"n": 3, "avatar": "data:image/jpeg;base64," + b64},
        {"n": 4, "avatar": b64},
        {"n": 5, "avatar": "data:application/octet-stream;base64," + b64},
        {"n": 6, "raw": tga.getvalue()},
        {"n": 7, "image_bytes": PORTRAIT, "text": "a plain caption that is long enough", "digest": "0123456789abcdef" * 4},
        {"n": 8, "deep": _nested(40)},  # deeper than can be looked through: not checked, not kept
    ]
    crawler, outcome = await _crawl(tmp_path, mockserver, items)
    assert [i["n"] for i in outcome.scraped] == [7]
    assert sorted(i["n"] for i, _ in outcome.dropped) == [1, 2, 3, 4, 5, 6, 8]
    details = {i["n"]: exc for i, exc in outcome.dropped}
    assert all(exc.reason == "unchecked" for exc in details.values())
    assert "'meta.pages[0].thumb'" in str(details[2]) and "GDPR_IMAGE_BYTES_FIELDS" in str(details[2])
    stats = crawler.stats.get_stats()
    assert stats["gdpr/images/dropped/unlisted_field"] == 6
    assert "too deeply nested" in str(details[8])
    assert stats["gdpr/blocked/unchecked"] == 7


@coroutine_test
async def test_listing_the_field_has_it_checked_instead(tmp_path, mockserver):
    _crawler, outcome = await _crawl(tmp_path, mockserver, [{"photo": PORTRAIT}], GDPR_IMAGE_BYTES_FIELDS=["photo"])
    (item,) = outcome.scraped
    assert item["photo"] != PORTRAIT and detect(item["photo"]) == []


@coroutine_test
async def test_the_policy_names_image_fields_and_the_setting_only_adds(tmp_path, mockserver):
    policy = write_policy(tmp_path, image_fields=["photo"])
    items = [{"n": 1, "photo": PORTRAIT, "extra": COFFEE}, {"n": 2, "photo": PORTRAIT, "image_bytes": PORTRAIT}]
    # the setting cannot take the policy's field away; it adds "extra"
    _crawler, outcome = await _crawl(tmp_path, mockserver, items, policy=policy, GDPR_IMAGE_BYTES_FIELDS=["extra"])
    (kept,) = outcome.scraped
    assert kept["n"] == 1 and detect(kept["photo"]) == [] and kept["extra"] != COFFEE
    assert [r["field"] for r in outcome.records(kept)] == ["photo", "extra"]
    ((dropped, exc),) = outcome.dropped
    assert dropped["n"] == 2 and "'image_bytes'" in str(exc)  # no longer listed by the setting: fails closed

"""The item gate: provenance, objections, opt-out reservations, reserved images."""

from __future__ import annotations

from typing import Any

from scrapy import Request, Spider, signals
from scrapy.pipelines.images import ImagesPipeline
from scrapy.utils.test import get_crawler

from scrapy_gdpr.decisions import OPTOUT_META, OptOutDecision, PurposeDecision
from scrapy_gdpr.gate import ItemGatePipeline, PolicyGateMiddleware
from scrapy_gdpr.objections import append_objection
from scrapy_gdpr.provenance import ProvenanceMiddleware
from tests.test_gate import gate_settings, local, refusals, write_policy
from tests.utils import coroutine_test


class ItemSpider(Spider):
    """Fetches one page and yields one item per entry of ``items`` with the given meta."""

    name = "items"

    def __init__(self, url: str = "", items: list[dict[str, Any]] = (), meta: dict[str, Any] | None = None, from_start: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.url = url
        self.items = list(items)
        self.page_meta = meta or {}
        self.from_start = from_start

    async def start(self):
        if self.from_start:
            for item in self.items:
                yield dict(item)
            return
        yield Request(self.url)

    def parse(self, response):
        response.meta.update(self.page_meta)  # what the opt-out middleware would record
        for item in self.items:
            yield {k: [response.urljoin(u) for u in v] if k.endswith("_urls") else v for k, v in item.items()}


async def run(tmp_path, policy, *, gate: bool = False, images: bool = False, settings: dict[str, Any] | None = None, **kw: Any):
    extra: dict[str, Any] = {
        "SPIDER_MIDDLEWARES": {ProvenanceMiddleware: 950},
        "ITEM_PIPELINES": {ItemGatePipeline: 10},
        "DOWNLOADER_MIDDLEWARES": {PolicyGateMiddleware: 40} if gate else {},
        **(settings or {}),
    }
    if images:
        extra["ITEM_PIPELINES"][ImagesPipeline] = 20
        extra["IMAGES_STORE"] = str(tmp_path / "images")
    crawler = get_crawler(ItemSpider, gate_settings(tmp_path, policy, **extra))
    scraped: list[dict[str, Any]] = []
    crawler.signals.connect(lambda item, **_: scraped.append(item), signal=signals.item_scraped, weak=False)
    await crawler.crawl_async(**kw)
    return crawler, scraped


@coroutine_test
async def test_item_without_provenance_is_dropped(tmp_path, mockserver):
    policy = write_policy(tmp_path, [local("gate-img.test")])
    crawler, scraped = await run(tmp_path, policy, items=[{"title": "from start()"}], from_start=True)
    assert scraped == []
    assert crawler.stats.get_value("gdpr/blocked/undecided") == 1
    assert crawler.stats.get_value("item_dropped_reasons_count/GdprDropItem") == 1
    [line] = refusals(tmp_path)
    assert line["kind"] == "item" and line["reason"] == "undecided" and "no provenance" in line["detail"]


@coroutine_test
async def test_item_from_page_is_kept(tmp_path, mockserver):
    policy = write_policy(tmp_path, [local("gate-img.test")])
    url = mockserver.url("/index.html", host="gate-img.test")
    _crawler, scraped = await run(tmp_path, policy, url=url, items=[{"title": "Gallery"}])
    assert scraped == [{"title": "Gallery"}]
    assert refusals(tmp_path) == []


@coroutine_test
async def test_item_from_objected_page_is_dropped(tmp_path, mockserver):
    url = mockserver.url("/index.html", host="gate-img.test")
    policy = write_policy(tmp_path, [local("gate-img.test")])

    class ErasedMidCrawl(ItemSpider):
        def parse(self, response):
            # the page was fetched, then an erasure covered it before the item was stored
            append_objection(tmp_path / "objections.txt", "prefix", response.url.rsplit("/", 1)[0] + "/")
            yield {"title": "Jane"}

    crawler = get_crawler(ErasedMidCrawl, gate_settings(
        tmp_path, policy, SPIDER_MIDDLEWARES={ProvenanceMiddleware: 950}, ITEM_PIPELINES={ItemGatePipeline: 10}
    ))
    await crawler.crawl_async(url=url)
    assert crawler.stats.get_value("item_scraped_count") is None
    assert crawler.stats.get_value("gdpr/blocked/objection") == 1
    [line] = refusals(tmp_path)
    assert line["kind"] == "item" and line["url"] == url and "prefix" in line["detail"]


@coroutine_test
async def test_optout_reserving_a_purpose_drops_the_item(tmp_path, mockserver):
    policy = write_policy(tmp_path, [local("gate-img.test")])
    url = mockserver.url("/index.html", host="gate-img.test")
    meta = {OPTOUT_META: OptOutDecision(purposes={"search": PurposeDecision(False, ("X-Robots-Tag: noindex",))})}
    crawler, scraped = await run(tmp_path, policy, url=url, items=[{"title": "x"}], meta=meta)
    assert scraped == []
    assert crawler.stats.get_value("gdpr/blocked/optout") == 1
    [line] = refusals(tmp_path)
    assert line["reason"] == "optout" and "X-Robots-Tag: noindex" in line["detail"]
    assert line["clause"].startswith("purposes[0].signal_purposes (line ")


@coroutine_test
async def test_optout_of_another_purpose_keeps_the_item(tmp_path, mockserver):
    policy = write_policy(tmp_path, [local("gate-img.test")])  # purposes: search only
    url = mockserver.url("/index.html", host="gate-img.test")
    meta = {OPTOUT_META: OptOutDecision(purposes={"ai-train": PurposeDecision(False, ("Content-Usage: train-ai=n",)),
                                                  "search": PurposeDecision(True)})}
    _crawler, scraped = await run(tmp_path, policy, url=url, items=[{"title": "x"}], meta=meta)
    assert scraped == [{"title": "x"}]
    assert refusals(tmp_path) == []


@coroutine_test
async def test_reserved_images_are_stripped_and_never_fetched(tmp_path, logged_mockserver):
    policy = write_policy(tmp_path, [local("gate-img.test")])
    url = logged_mockserver.url("/index.html", host="gate-img.test")
    meta = {OPTOUT_META: OptOutDecision(images_reserved=True, images_signal="X-Robots-Tag: noimageindex")}
    items = [{"title": "Gallery", "image_urls": ["ok.png", "reserved.png"], "file_urls": ["objected.png"]}]
    crawler, scraped = await run(tmp_path, policy, url=url, items=items, meta=meta, images=True)
    [item] = scraped
    assert item["image_urls"] == [] and item["file_urls"] == [] and item["images"] == []
    assert [p for _, _, p in logged_mockserver.requests()] == ["/index.html"]
    assert crawler.stats.get_value("gdpr/blocked/optout") == 3
    lines = refusals(tmp_path)
    assert {r["kind"] for r in lines} == {"image"}
    assert sorted(r["url"].rsplit("/", 1)[1] for r in lines) == ["objected.png", "ok.png", "reserved.png"]
    assert all("noimageindex" in r["detail"] for r in lines)
    # the clause names the purpose that noimageindex reserves (search), never ""
    assert all(r["clause"].startswith("purposes[0].signal_purposes (line ") for r in lines)


@coroutine_test
async def test_objected_image_url_is_stripped(tmp_path, logged_mockserver):
    objected = logged_mockserver.url("/objected.png", host="gate-img.test")
    append_objection(tmp_path / "objections.txt", "url", objected)
    policy = write_policy(tmp_path, [local("gate-img.test")])
    url = logged_mockserver.url("/index.html", host="gate-img.test")
    items = [{"title": "Gallery", "image_urls": ["ok.png", "objected.png"]}]
    crawler, scraped = await run(tmp_path, policy, url=url, items=items, images=True, gate=True)
    [item] = scraped
    assert item["image_urls"] == [logged_mockserver.url("/ok.png", host="gate-img.test")]
    assert [i["url"] for i in item["images"]] == item["image_urls"]
    assert sorted(p for _, _, p in logged_mockserver.requests()) == ["/index.html", "/ok.png"]
    [line] = refusals(tmp_path)
    assert line == {**line, "kind": "image", "reason": "objection", "url": objected}
    # the entry is quoted as the file spells it (http://), not in its canonical https:// form
    assert line["detail"] == f"covered by the objection url {objected} ({tmp_path / 'objections.txt'}:2)"
    assert crawler.stats.get_value("gdpr/blocked/objection") == 1

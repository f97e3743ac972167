"""Hooks of components next to each other in Scrapy's order run as one hook (chain_hooks)."""

from __future__ import annotations

import pytest
from scrapy import Request, Spider
from scrapy.core.downloader.middleware import DownloaderMiddlewareManager
from scrapy.core.spidermw import SpiderMiddlewareManager
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Response
from scrapy.utils.test import get_crawler

from scrapy_gdpr._component import SpiderOutputMiddleware, chain_downloader_hooks, chain_spider_output, chainable
from tests.utils import coroutine_test

URL = "http://example.test/page.html"


class Recorder:
    """A downloader middleware that notes each hook it runs in ``log``."""

    def __init__(self, name: str, log: list[str], returns: object = None, raises: Exception | None = None,
                 answers: object = None):
        self.name, self.log, self.returns, self.raises, self.answers = name, log, returns, raises, answers

    async def process_request(self, request):
        self.log.append(f"{self.name}.request")
        if self.raises is not None:
            raise self.raises
        return self.returns

    async def process_response(self, request, response):
        self.log.append(f"{self.name}.response")
        if self.raises is not None:
            raise self.raises
        return self.answers if self.answers is not None else response


@chainable
class ChainedRecorder(Recorder):
    pass


class SyncChained:
    """Chainable, but with a hook that is no coroutine: never joined."""

    def __init__(self, log: list[str]):
        self.log = log

    def process_request(self, request):
        self.log.append("sync.request")


chainable(SyncChained)


def manager(*middlewares) -> DownloaderMiddlewareManager:
    return DownloaderMiddlewareManager(*middlewares, crawler=get_crawler(Spider))


def hook_names(mgr, name):
    return [getattr(m, "__qualname__", None) for m in mgr.methods[name]]


async def download(mgr, response=None):
    answer = response or Response(URL)

    async def fetch(request):
        mgr.fetched = True
        return answer

    mgr.fetched = False
    return await mgr.download_async(fetch, Request(URL))


def test_only_runs_of_chainable_coroutine_hooks_are_joined():
    log: list[str] = []
    mgr = manager(ChainedRecorder("a", log), ChainedRecorder("b", log), Recorder("c", log),
                  ChainedRecorder("d", log), SyncChained(log), ChainedRecorder("e", log), ChainedRecorder("f", log))
    before = list(mgr.methods["process_request"])
    chain_downloader_hooks(mgr)
    after = list(mgr.methods["process_request"])
    assert len(after) == 5
    assert "ChainedRecorder.process_request + ChainedRecorder.process_request" == after[0].__qualname__
    assert after[1:4] == before[2:5]  # c (not chainable), d (alone), the synchronous one
    assert after[4].__qualname__.count("+") == 1  # e and f
    # responses run in the reverse order: f+e+d (the synchronous one has no process_response), c, b+a
    assert [m.__qualname__.count("+") for m in mgr.methods["process_response"]] == [2, 0, 1]


@coroutine_test
async def test_joined_hooks_run_in_scrapys_order():
    log: list[str] = []
    mgr = manager(ChainedRecorder("a", log), ChainedRecorder("b", log), Recorder("c", log), ChainedRecorder("d", log),
                  ChainedRecorder("e", log))
    await download(mgr)
    unjoined = list(log)
    log.clear()
    chain_downloader_hooks(mgr)
    response = await download(mgr)
    assert log == unjoined == ["a.request", "b.request", "c.request", "d.request", "e.request",
                               "e.response", "d.response", "c.response", "b.response", "a.response"]
    assert mgr.fetched and response.url == URL


def joined_three(log: list[str], **middle) -> DownloaderMiddlewareManager:
    """Three chainable recorders, a, b (with ``middle``'s behaviour) and c, their hooks joined."""
    mgr = manager(ChainedRecorder("a", log), ChainedRecorder("b", log, **middle), ChainedRecorder("c", log))
    chain_downloader_hooks(mgr)
    return mgr


@coroutine_test
async def test_a_response_from_a_joined_request_hook_ends_the_chain():
    log: list[str] = []
    early = Response("http://example.test/early")
    mgr = joined_three(log, returns=early)
    assert len(mgr.methods["process_request"]) == 1
    response = await download(mgr)
    assert response is early and not mgr.fetched
    assert log == ["a.request", "b.request", "c.response", "b.response", "a.response"]


@coroutine_test
async def test_a_refusal_in_a_joined_hook_stops_the_rest():
    log: list[str] = []
    mgr = manager(ChainedRecorder("a", log, raises=IgnoreRequest("refused")), ChainedRecorder("b", log))
    chain_downloader_hooks(mgr)
    with pytest.raises(IgnoreRequest, match="refused"):
        await download(mgr)
    assert log == ["a.request"] and not mgr.fetched


@coroutine_test
async def test_a_request_from_a_joined_response_hook_ends_the_chain():
    log: list[str] = []
    retry = Request("http://example.test/again")
    mgr = joined_three(log, answers=retry)
    assert len(mgr.methods["process_response"]) == 1
    assert await download(mgr) is retry
    assert log == ["a.request", "b.request", "c.request", "c.response", "b.response"]


# -- spider output ---------------------------------------------------------------------


class Tagger(SpiderOutputMiddleware):
    """Adds its name to each item; drops requests whose URL ends with its name."""

    name = ""

    def get_processed_item(self, item, response):
        return [*item, self.name]

    def get_processed_request(self, request, response):
        return None if request.url.endswith(self.name) else request


@chainable
class First(Tagger):
    name = "first"


@chainable
class Second(Tagger):
    name = "second"


@chainable
class Handling(Tagger):
    """Has an exception handler: never joined (it keeps its place in that chain)."""

    name = "handling"

    def process_spider_exception(self, response, exception):
        return None


async def output_of(mgr, outputs):
    async def callback_output():
        for o in outputs:
            yield o

    chain = mgr._process_spider_output(Response(URL), callback_output())
    return [o async for o in chain]


def spider_manager(*middlewares) -> SpiderMiddlewareManager:
    return SpiderMiddlewareManager(*middlewares, crawler=get_crawler(Spider))


@coroutine_test
async def test_spider_outputs_are_joined_in_place():
    crawler = get_crawler(Spider)
    # Scrapy puts the highest priority (closest to the spider) first
    mgr = spider_manager(Handling(crawler), Second(crawler), First(crawler))
    outputs = [[], Request("http://example.test/x-first"), Request("http://example.test/x-second"),
               Request("http://example.test/x-handling"), Request("http://example.test/kept")]
    unjoined = await output_of(mgr, outputs)
    handlers = list(mgr.methods["process_spider_exception"])
    chain_spider_output(mgr)
    joined = list(mgr.methods["process_spider_output"])
    assert joined[0].__qualname__ == "First + Second" and joined[1] is None
    assert joined[2].__self__.name == "handling"
    assert list(mgr.methods["process_spider_exception"]) == handlers  # positions unchanged
    assert await output_of(mgr, outputs) == unjoined
    assert unjoined[0] == ["first", "second", "handling"]
    assert [r.url for r in unjoined[1:]] == ["http://example.test/kept"]


def test_components_let_start_requests_through_without_a_generator():
    crawler = get_crawler(Spider)
    mgr = spider_manager(First(crawler), Second(crawler))
    assert not mgr.methods["process_start"]

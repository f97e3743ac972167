"""What every scrapy-gdpr component does in ``from_crawler``."""

from __future__ import annotations

import inspect
from collections import deque
from typing import TYPE_CHECKING, Any, TypeVar

from scrapy import Request, signals
from scrapy.exceptions import NotConfigured
from scrapy.http import Response

from scrapy_gdpr.config import DEFAULTS
from scrapy_gdpr.runtime import GdprRuntime, get_runtime

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence
    from typing import Self

    from scrapy.crawler import Crawler

_C = TypeVar("_C", bound=type)


def component_runtime(crawler: Crawler) -> GdprRuntime:
    """The crawler's runtime; ``NotConfigured`` only when GDPR_ENABLED is False.

    Any other problem (a missing or invalid policy) raises, which stops the crawl.
    """
    if not crawler.settings.getbool("GDPR_ENABLED", DEFAULTS["GDPR_ENABLED"]):
        raise NotConfigured("GDPR_ENABLED is False")
    rt = get_runtime(crawler)
    if not rt.hooks_chained:
        rt.hooks_chained = True
        crawler.signals.connect(lambda: chain_hooks(crawler), signal=signals.spider_opened, weak=False)
    return rt


#: The component classes whose hooks may be chained (:func:`chain_hooks`).
CHAINABLE: set[type] = set()


def chainable(cls: _C) -> _C:
    """Class decorator: the hooks of ``cls`` (coroutines, or a :class:`SpiderOutputMiddleware`'s
    output) may run inside one hook with those of other chainable components next to them."""
    CHAINABLE.add(cls)
    return cls


def chain_hooks(crawler: Crawler) -> None:
    """Run the hooks of chainable components that are next to each other in Scrapy's
    middleware order as one hook each.

    Scrapy awaits every downloader middleware hook through several calls of its own
    (about as much work as a light hook itself); components next to each other (the
    terms, robots.txt, opt-out and licence middlewares at 60-125, say) gain nothing
    from running apart. Only runs of hooks with nothing else between them are joined,
    in their order: every hook sees what it saw before, and a component that is
    disabled, or a middleware a project puts between two of them, keeps them apart.
    """
    engine = crawler.engine
    downloader_mw = getattr(getattr(engine, "downloader", None), "middleware", None)
    if downloader_mw is not None:
        chain_downloader_hooks(downloader_mw)
    spider_mw = getattr(getattr(engine, "scraper", None), "spidermw", None)
    if spider_mw is not None:
        chain_spider_output(spider_mw)


def chain_downloader_hooks(manager: Any) -> None:
    """Join the ``process_request`` and the ``process_response`` hooks of a
    downloader middleware manager (see :func:`chain_hooks`)."""
    _chain_methods(manager, "process_request", _request_chain)
    _chain_methods(manager, "process_response", _response_chain)


def _chainable_method(manager: Any, method: Any) -> bool:
    owner = getattr(method, "__self__", None)
    return (
        owner is not None
        and type(owner) in CHAINABLE
        and inspect.iscoroutinefunction(method)
        and method not in getattr(manager, "_mw_methods_requiring_spider", ())
    )


def _chain_methods(manager: Any, name: str, make: Callable[[tuple[Any, ...]], Any]) -> None:
    methods = getattr(manager, "methods", {}).get(name)
    if not methods:
        return
    chained: list[Any] = []
    run: list[Any] = []
    for method in [*methods, None]:
        if method is not None and _chainable_method(manager, method):
            run.append(method)
            continue
        if len(run) > 1:
            chained.append(make(tuple(run)))
        else:
            chained.extend(run)
        run = []
        if method is not None:
            chained.append(method)
    if len(chained) != len(methods):
        # a new deque: a download awaiting a hook goes on through the old one
        manager.methods[name] = deque(chained)


def _request_chain(hooks: tuple[Callable[[Request], Any], ...]) -> Callable[..., Any]:
    async def process_request(request: Request) -> Any:
        for hook in hooks:
            if (result := await hook(request)) is not None:
                return result  # a response, or a request, ends the chain as it ends Scrapy's
        return None

    process_request.__qualname__ = _chain_name(hooks)
    return process_request


def _chain_name(hooks: Sequence[Any]) -> str:
    """The name of a chain in Scrapy's messages: its components' hooks, in order."""
    return " + ".join(f"{type(hook.__self__).__qualname__}.{hook.__name__}" for hook in hooks)


def _response_chain(hooks: tuple[Callable[[Request, Response], Any], ...]) -> Callable[..., Any]:
    async def process_response(request: Request, response: Response) -> Any:
        result: Any = response
        for hook in hooks:
            result = await hook(request, result)
            if not isinstance(result, Response):
                return result  # a request ends the chain (Scrapy refuses anything else)
        return result

    process_response.__qualname__ = _chain_name(hooks)
    return process_response


def chain_spider_output(manager: Any) -> None:
    """Join the outputs of next-to-each-other :class:`SpiderOutputMiddleware` components
    into one generator per response. The joined middlewares but the first leave a
    ``None`` in their place, as a middleware without the method does, so that the
    exception handlers keep their positions (these components have none)."""
    methods = getattr(manager, "methods", {})
    outputs = methods.get("process_spider_output")
    exceptions = methods.get("process_spider_exception")
    if not outputs or exceptions is None or len(exceptions) != len(outputs):
        return
    chained: list[Any] = list(outputs)
    i = 0
    while i < len(chained):
        j = i
        while j < len(chained) and _plain_output(manager, chained[j]) and exceptions[j] is None:
            j += 1
        if j - i > 1:
            chained[i:j] = [_output_chain([m.__self__ for m in chained[i:j]]), *([None] * (j - i - 1))]
        i = max(j, i + 1)
    if chained != list(outputs):
        methods["process_spider_output"] = deque(chained)


def _plain_output(manager: Any, method: Any) -> bool:
    owner = getattr(method, "__self__", None)
    return (
        owner is not None
        and type(owner) in CHAINABLE
        and isinstance(owner, SpiderOutputMiddleware)
        and getattr(method, "__func__", None) is SpiderOutputMiddleware.process_spider_output
        and method not in getattr(manager, "_mw_methods_requiring_spider", ())
    )


def _output_chain(middlewares: Sequence[SpiderOutputMiddleware]) -> Callable[..., Any]:
    steps = tuple(mw._get_processed for mw in middlewares)

    async def process_spider_output(response: Response | None, result: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for o in result:
            for step in steps:
                if (o := step(o, response)) is None:
                    break
            else:
                yield o

    process_spider_output.__qualname__ = " + ".join(type(mw).__qualname__ for mw in middlewares)
    return process_spider_output


class SpiderOutputMiddleware:
    """A spider middleware that looks at each request and item a callback yields, one
    at a time, as :class:`~scrapy.spidermiddlewares.base.BaseSpiderMiddleware` does
    (``get_processed_request``, ``get_processed_item``), with its
    ``process_spider_output`` as one asynchronous generator per response.

    It has no ``process_start``: the requests and items of the spider's ``start()``
    have no response, and these components let them through as they are, so Scrapy
    need not pass each of them through a generator of theirs.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler: Crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_spider_output(self, response: Response | None, result: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for o in result:
            if (o := self._get_processed(o, response)) is not None:
                yield o

    def _get_processed(self, o: Any, response: Response | None) -> Any:
        if isinstance(o, Request):
            return self.get_processed_request(o, response)
        return self.get_processed_item(o, response)

    def get_processed_request(self, request: Request, response: Response | None) -> Request | None:
        """The request to pass on (this one, or another), or None to drop it."""
        return request

    def get_processed_item(self, item: Any, response: Response | None) -> Any:
        """The item to pass on (this one, or another), or None to drop it."""
        return item

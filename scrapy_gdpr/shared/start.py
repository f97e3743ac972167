"""Start URLs from a Redis list, for spiders of a shared crawl (``GDPR_STATE_URL``).

scrapy-redis's ``RedisSpider`` feeds start URLs from a Redis key through
``start_requests()`` and the ``spider_idle`` signal; current Scrapy starts a crawl
with ``async def start()``. :class:`RedisStartUrls` is the same feature written for
``start()``: mix it into an ordinary spider::

    class Shop(RedisStartUrls, scrapy.Spider):
        name = "shop"
        redis_key = "shop:start_urls"  # default: "<name>:start_urls"

        def parse(self, response): ...

and push URLs with ``redis-cli RPUSH shop:start_urls https://example.com/``. Each
entry is a URL, or a JSON object ``{"url": ..., "meta": {...}}`` (plain values only,
like every queued request); anything else is logged and skipped. Every worker takes
entries from the same list (each entry goes to one worker); the requests go through
the shared queue and its duplicate filter like any other, so a URL pushed twice is
fetched once while its fingerprint is kept (``retention.caches``).

``start()`` keeps waiting for new entries (the crawl stays open, as with
``RedisSpider``) unless ``redis_idle_close`` says after how many seconds of an empty
list it ends (the crawl then finishes as usual once its queue is empty).
An entry is taken from the list (``LPOP``) right before its request is handed to the
shared queue; a worker killed between the two loses that one entry.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from scrapy import Request

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)


class RedisStartUrls:
    """Spider mix-in: ``async def start()`` yields requests for the URLs pushed to the
    Redis list ``redis_key`` (of the Redis at ``REDIS_URL``, which the add-on sets to
    ``GDPR_STATE_URL``)."""

    #: The list the start URLs are pushed to; ``%(name)s`` is the spider's name.
    redis_key: str = "%(name)s:start_urls"
    #: Seconds between two looks at an empty list.
    redis_poll_seconds: float = 1.0
    #: Seconds of an empty list after which ``start()`` ends; None: it never does.
    redis_idle_close: float | None = None

    name: str
    crawler: Crawler

    async def start(self) -> AsyncIterator[Any]:
        import redis
        from scrapy.utils.defer import maybe_deferred_to_future
        from scrapy_redis import connection
        from twisted.internet import reactor, task

        server = connection.from_settings(self.crawler.settings)
        key = self.redis_key % {"name": self.name}
        empty_since: float | None = None
        while True:
            try:
                data = server.lpop(key)
            except (OSError, redis.exceptions.RedisError) as exc:
                # the shared queue holds every request while Redis is away (fail closed)
                logger.info("Cannot read the start URLs at %(key)s: %(exc)s", {"key": key, "exc": exc},
                            extra={"spider": self})
                data = None
            if data is None:
                now = time.monotonic()
                empty_since = empty_since or now
                if self.redis_idle_close is not None and now - empty_since >= self.redis_idle_close:
                    return
                await maybe_deferred_to_future(task.deferLater(reactor, self.redis_poll_seconds, lambda: None))
                continue
            empty_since = None
            request = self.request_from_redis(data)
            if request is not None:
                yield request

    def request_from_redis(self, data: bytes | str) -> Request | None:
        """The request for one entry of the list (None: skipped, with an ERROR)."""
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        text = text.strip()
        meta: dict[str, Any] = {}
        if text.startswith("{"):
            try:
                doc = json.loads(text)
                url, meta = str(doc["url"]), dict(doc.get("meta") or {})
            except (ValueError, KeyError, TypeError) as exc:
                logger.error('Skipping a start entry that is not a URL nor {"url": ...}: %(exc)s', {"exc": exc},
                             extra={"spider": self})
                return None
        else:
            url = text
        try:
            return Request(url, meta=meta)
        except ValueError as exc:
            logger.error("Skipping the start entry %(url)r: %(exc)s", {"url": url[:200], "exc": exc},
                         extra={"spider": self})
            return None

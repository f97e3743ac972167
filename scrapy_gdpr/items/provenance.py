"""Where every item came from, recorded as the spider yields it.

:class:`ProvenanceMiddleware` (a spider middleware, closest to the spider) records,
for each item a callback yields, the response it came from: URL, time, and the
opt-out decision the request gate attached to that response
(:class:`~scrapy_gdpr.decisions.OptOutDecision`). Pipelines read it with :func:`provenance_of`.

Items are keyed by identity, not changed: a Scrapy ``Item`` with declared fields
cannot take new keys, and the spider's own fields stay the spider's. Entries are
removed when the item leaves the pipeline (scraped, dropped or failed). The
retention pipeline takes the entry over when it stamps an item: the stamped item
it returns (a :class:`ProvenancedDict`) carries its provenance itself, so
:func:`provenance_of` keeps working after it, and nothing has to listen to every
scraped item to clean up (a signal handler per item costs a crawl about as much
as the stamping).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from scrapy import signals

from scrapy_gdpr._component import SpiderOutputMiddleware, chainable, component_runtime
from scrapy_gdpr.decisions import OptOutDecision, optout_decision

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from scrapy_gdpr.runtime import GdprRuntime



@dataclass
class Provenance:
    """What is known about where one item came from."""

    url: str
    collected_at: datetime
    #: The opt-out decision for the source page; None when the opt-out middleware did not
    #: decide (it is off, or the response did not pass it).
    optout: OptOutDecision | None = None
    #: Free-form notes components add (the face stage records what it did here).
    notes: dict[str, Any] = field(default_factory=dict)


class ProvenancedDict(dict):  # type: ignore[type-arg]
    """A plain ``dict`` item that carries its own provenance (``.provenance``).

    The retention pipeline returns its stamped items as this type; to exporters,
    ``ItemAdapter`` and JSON it is a dict like any other.
    """

    __slots__ = ("provenance",)

    def __init__(self, data: Any = (), provenance: Provenance | None = None) -> None:
        super().__init__(data)
        self.provenance = provenance

    def __reduce__(self) -> Any:
        return (self.__class__, (dict(self), self.provenance))


class ProvenanceRegistry:
    """Provenance of the items currently in flight, keyed by item identity."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[Any, Provenance]] = {}
        self._lock = threading.Lock()
        #: Set by a pipeline that takes over the provenance of every item reaching it
        #: (the retention pipeline): then nothing needs removing when an item is scraped.
        self.taken_over = False

    def put(self, item: Any, provenance: Provenance) -> None:
        with self._lock:
            self._by_id[id(item)] = (item, provenance)

    def get(self, item: Any) -> Provenance | None:
        if type(item) is ProvenancedDict:
            return item.provenance
        with self._lock:
            entry = self._by_id.get(id(item))
        if entry is None or entry[0] is not item:
            return None
        return entry[1]

    def take(self, item: Any) -> Provenance | None:
        """Remove and return the provenance of ``item`` (None when unknown)."""
        if type(item) is ProvenancedDict:
            return item.provenance
        with self._lock:
            entry = self._by_id.pop(id(item), None)
            if entry is not None and entry[0] is not item:  # another object at a reused id
                self._by_id[id(item)] = entry
                return None
        return None if entry is None else entry[1]

    def discard(self, item: Any) -> None:
        with self._lock:
            entry = self._by_id.get(id(item))
            if entry is not None and entry[0] is item:
                del self._by_id[id(item)]

    def __len__(self) -> int:
        return len(self._by_id)


def registry(rt: GdprRuntime) -> ProvenanceRegistry:
    reg = rt.provenance
    if reg is None:
        reg = rt.provenance = ProvenanceRegistry()
    return reg


def provenance_of(crawler: Crawler, item: Any) -> Provenance | None:
    """The provenance recorded for ``item``, or None (then fail closed)."""
    from scrapy_gdpr.runtime import get_runtime

    return registry(get_runtime(crawler)).get(item)


@chainable
class ProvenanceMiddleware(SpiderOutputMiddleware):
    """Spider middleware recording the source of every item a callback yields."""

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        self.runtime = component_runtime(crawler)
        self.registry = registry(self.runtime)
        for sig in (signals.item_dropped, signals.item_error):
            crawler.signals.connect(self._forget, signal=sig)
        crawler.signals.connect(self._spider_opened, signal=signals.spider_opened)

    def _spider_opened(self) -> None:
        # Item pipelines are built by now: without one that takes provenance over,
        # entries are removed as items are scraped.
        if not self.registry.taken_over:
            self.crawler.signals.connect(self._forget, signal=signals.item_scraped)

    def _forget(self, item: Any, **kwargs: Any) -> None:
        self.registry.discard(item)

    def get_processed_item(self, item: Any, response: Response | None) -> Any:
        # Items yielded from start() have no response: their source is unknown, and
        # the pipelines refuse what has no provenance.
        if response is not None:
            self.registry.put(
                item,
                Provenance(url=response.url, collected_at=datetime.now(UTC), optout=optout_decision(response)),
            )
        return item

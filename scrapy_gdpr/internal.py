"""The requests scrapy-gdpr sends itself (robots.txt, terms pages, TDMRep files), marked
so that a spider cannot pass its own requests off as one.

The marker is an instance of a private class under one meta key: a spider that writes
``meta["gdpr_internal"] = "robots"`` makes an ordinary request, checked like any other.
Every component asks :func:`internal_kind`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Request, Response

#: The ``request.meta`` key of the marker.
META_KEY = "gdpr_internal"
#: The stat counting the responses to internal requests (Scrapy's ``response_received_count``
#: counts them too; the crawl's status subtracts them to count the spider's own).
RESPONSES_STAT = "gdpr/internal/responses"


class _Internal:
    """What kind of internal request this is ("robots", "terms", "tdmrep")."""

    __slots__ = ("kind",)

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Internal) and other.kind == self.kind

    def __hash__(self) -> int:
        return hash((_Internal, self.kind))

    def __repr__(self) -> str:
        return f"<internal {self.kind} request>"

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, for a persisted request queue
        return (_Internal, (self.kind,))


def internal_meta(kind: str) -> dict[str, Any]:
    """The meta entry that marks a request scrapy-gdpr sends itself."""
    return {META_KEY: _Internal(kind)}


def internal_kind(request: Request) -> str | None:
    """The kind of internal request ``request`` is, or None for any other request
    (whatever a spider put under the meta key)."""
    marker = request.meta.get(META_KEY)
    return marker.kind if isinstance(marker, _Internal) else None


async def download_internal(crawler: Crawler, request: Request) -> Response:
    """``crawler.engine.download_async(request)`` for an internal request, counted in
    :data:`RESPONSES_STAT` when a response comes back (every download of an internal
    request goes through here)."""
    response = await crawler.engine.download_async(request)
    if crawler.stats is not None and internal_kind(request) is not None:
        crawler.stats.inc_value(RESPONSES_STAT)
    return response

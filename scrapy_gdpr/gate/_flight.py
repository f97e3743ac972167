"""One piece of work at a time per site, however many requests ask for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet.defer import Deferred

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


class Flight:
    """Runs a site's check (its terms page, its TDMRep file) once while concurrent
    requests for the same site wait for that run instead of starting their own."""

    __slots__ = ("_waiters", "busy")

    def __init__(self) -> None:
        #: The work is running now (an attribute: every request of a site reads it).
        self.busy = False
        self._waiters: list[Deferred[None]] = []  # the requests waiting for the run in progress

    async def run(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work``; when it is already running, wait for that run to end instead."""
        if self.busy:
            d: Deferred[None] = Deferred()
            self._waiters.append(d)
            await maybe_deferred_to_future(d)
            return
        self.busy = True
        try:
            await work()
        finally:
            waiters, self._waiters = self._waiters, []
            self.busy = False
            for d in waiters:
                d.callback(None)

"""The time the gate reads: one object, passed to what depends on time.

Politeness pauses (``Retry-After``), the robots.txt, terms and TDMRep caches and
their back-offs read :class:`Clock`; the crawl's clock is
``runtime.clock``, the system's own unless something replaces it before the
components are built (an evaluation or a test that must not wait for real time
to pass).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    """The system clock: monotonic seconds for durations, UTC for dates, and a pause."""

    #: Seconds on a clock that never goes back: :func:`time.monotonic` itself, which the
    #: gate reads several times per request (a method around it would cost a call each).
    monotonic = staticmethod(time.monotonic)

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` without blocking the reactor."""
        from scrapy.utils.asyncio import sleep

        await sleep(seconds)


#: The clock every crawl uses unless another is given.
SYSTEM_CLOCK = Clock()

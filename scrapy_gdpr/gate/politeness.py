"""Retry-After, per-domain rate limits, per-slot delay floors and the User-Agent check.

:class:`PolitenessMiddleware` sits at 560, so it sees 429/503 responses before
Scrapy's RetryMiddleware (550) retries them. A ``Retry-After`` answer pauses the
whole download slot (the host): every later request to it waits, in this
middleware, until the not-before time, without blocking other hosts or the
reactor. A wait above ``politeness.retry_after_max`` gives the host up: its
requests are refused with reason ``retry_after``.

:class:`SlotFloors` keeps minimum delays per download slot (robots.txt
Crawl-delay/Request-rate, the policy's per-domain rate limits). A floor is written
to ``downloader.per_slot_settings`` (what ``DOWNLOAD_SLOTS`` fills), so it
survives Scrapy's slot garbage collection, and re-applied to the live slot after
every response, after AutoThrottle has adjusted it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
import weakref
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.utils.httpobj import urlparse_cached

from scrapy_gdpr._component import chainable, component_runtime
from scrapy_gdpr.audit import Reason, refuse
from scrapy_gdpr.shared.state import MARGIN_SECONDS, StateUnavailable, call_shared, gate_state, pending_hosts

if TYPE_CHECKING:
    from typing import Self

    from scrapy.core.downloader import Downloader, Slot
    from scrapy.crawler import Crawler
    from scrapy.http import Request, Response

    from scrapy_gdpr.policy import Policy

logger = logging.getLogger(__name__)

#: Responses whose ``Retry-After`` pauses the host.
RETRY_AFTER_STATUSES = frozenset({429, 503})

#: How many given-up hosts the compliance report lists (the count is always exact).
REPORT_LIMIT = 1000

#: delta-seconds longer than this many digits (more than 31,000 years) are not a
#: wait anyone means: treated as malformed and ignored, like any other bad value.
MAX_DELTA_DIGITS = 12

#: A booked request that reaches the downloader later than this after its booking
#: pushes the host's next time forward from when it really leaves (shared state).
ON_TIME_SECONDS = 0.01

#: How often a request held by ``Retry-After`` looks whether the crawl is closing.
SHUTDOWN_POLL = 0.5

_DELTA_SECONDS = re.compile(r"[0-9]+", re.ASCII)


class UserAgentError(ValueError):
    """The effective USER_AGENT does not identify the crawler (fail closed at start-up)."""


def effective_user_agent(crawler: Crawler) -> tuple[str, str | None]:
    """``(setting, value)`` of the User-Agent requests get: DEFAULT_REQUEST_HEADERS'
    (its middleware runs first) or else USER_AGENT."""
    for name, value in crawler.settings.getdict("DEFAULT_REQUEST_HEADERS").items():
        if str(name).lower() == "user-agent":
            return 'DEFAULT_REQUEST_HEADERS["User-Agent"]', str(value)
    ua: str | None = crawler.settings.get("USER_AGENT")
    return "USER_AGENT", ua


def check_user_agent(user_agent: str | None, policy: Policy, setting: str = "USER_AGENT") -> None:
    """Raise :class:`UserAgentError` unless ``user_agent`` carries the product token and a contact URL."""
    token = policy.crawler.product_token
    ua = user_agent or ""
    problems = []
    if not re.search(rf"(?<![A-Za-z0-9_-]){re.escape(token)}(?![A-Za-z0-9_-])", ua, re.IGNORECASE):
        problems.append(f"it does not contain the policy's product token {token!r}")
    if not re.search(r"https?://\S+", ua):
        problems.append("it carries no http(s) contact URL")
    if problems:
        raise UserAgentError(
            f"The {setting} setting {ua!r} does not identify this crawler: {' and '.join(problems)}. "
            f"Fix: set {setting} to the policy's crawler.user_agent "
            f"({policy.crawler.user_agent!r}), or remove your {setting} override so the "
            "scrapy-gdpr add-on sets USER_AGENT."
        )


def parse_retry_after(value: bytes | str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date); None if malformed.

    delta-seconds are ASCII digits only (``²`` or ``٣`` are not), of at most
    :data:`MAX_DELTA_DIGITS` digits; anything else that is not an HTTP-date is None.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.strip(" \t\r\n")
    if not value:
        return None
    if _DELTA_SECONDS.fullmatch(value):
        if len(value.lstrip("0")) > MAX_DELTA_DIGITS:
            return None
        return float(int(value))
    if len(value) > 64:  # an HTTP-date is 29 characters; do not parse megabytes
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:  # pragma: no cover - older Pythons
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def _floor_values(delay: float, jitter: float, floor: float) -> tuple[float, float]:
    """The (delay, jitter) pair closest to the given one whose shortest wait is ``floor``."""
    delay = max(delay, floor)
    if jitter and floor and delay * (1 - jitter) < floor:
        jitter = max(0.0, 1 - floor / delay)
    return delay, jitter


class SlotFloors:
    """Minimum delays per download slot, from several sources (one per crawler).

    ``set(key, source, seconds)`` raises the slot's delay to at least ``seconds``
    (and narrows its jitter so no wait is shorter); the effective floor is the
    largest of the slot's sources. Get the crawler's instance with
    :func:`slot_floors`.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self._floors: dict[str, dict[str, float]] = {}
        self._base: dict[str, dict[str, Any] | None] = {}
        #: Connected to ``response_downloaded`` when the first floor is set, so a crawl
        #: without floors does no work per response.
        self._connected = False
        #: With a shared state the reservation spaces requests, not the local slot.
        self.shared = gate_state(crawler).shared

    @property
    def _downloader(self) -> Downloader:
        return self.crawler.engine.downloader

    def floor(self, key: str) -> float:
        sources = self._floors.get(key)
        return max(sources.values()) if sources else 0.0

    def set(self, key: str, source: str, seconds: float) -> None:
        if not self._connected:
            # Connected after AutoThrottle (extensions are built before the downloader
            # and this runs later still), so it sees the delay AutoThrottle may lower.
            self.crawler.signals.connect(self._response_downloaded, signal=signals.response_downloaded)
            self._connected = True
        sources = self._floors.setdefault(key, {})
        if sources.get(source) != seconds:
            sources[source] = seconds
            self._write_settings(key)
        self.apply(key)

    def clear(self, key: str, source: str) -> None:
        sources = self._floors.get(key)
        if not sources or source not in sources:
            return
        del sources[source]
        if not sources:
            del self._floors[key]
        self._write_settings(key)

    def apply(self, key: str) -> None:
        """Re-apply the floor to the live slot, if there is one."""
        floor = self.floor(key)
        if not floor or self.shared:
            return
        slot: Slot | None = self._downloader.slots.get(key)
        if slot is not None and (slot.delay < floor or (slot.jitter and slot.delay * (1 - slot.jitter) < floor)):
            slot.delay, slot.jitter = _floor_values(slot.delay, slot.jitter, floor)

    def _write_settings(self, key: str) -> None:
        per_slot = self._downloader.per_slot_settings
        if key not in self._base:
            base = per_slot.get(key)
            self._base[key] = dict(base) if base is not None else None
        base = self._base[key]
        floor = self.floor(key)
        if not floor:
            if base is None:
                per_slot.pop(key, None)
            else:
                per_slot[key] = dict(base)
            self._base.pop(key, None)
            slot = self._downloader.slots.get(key)
            if slot is not None:
                settings = self.crawler.settings
                slot.delay = float((base or {}).get("delay", settings.getfloat("DOWNLOAD_DELAY")))
                slot.jitter = float((base or {}).get("jitter", settings.getfloat("DOWNLOAD_DELAY_JITTER")))
            return
        values = dict(base or {})
        delay = float(values.get("delay", self.crawler.settings.getfloat("DOWNLOAD_DELAY")))
        jitter = float(values.get("jitter", self.crawler.settings.getfloat("DOWNLOAD_DELAY_JITTER")))
        values["delay"], values["jitter"] = _floor_values(delay, jitter, floor)
        values.pop("randomize_delay", None)
        per_slot[key] = values

    def _response_downloaded(self, response: Response, request: Request) -> None:
        # Runs after AutoThrottle may have lowered the delay, before the next dispatch.
        key = request.meta.get("download_slot")
        if key is not None and key in self._floors:
            self.apply(key)


def slot_floors(crawler: Crawler) -> SlotFloors:
    """The crawler's :class:`SlotFloors` (``runtime.slot_floors``)."""
    rt = component_runtime(crawler)
    floors = rt.slot_floors
    if floors is None:
        floors = rt.slot_floors = SlotFloors(crawler)
    return floors


@chainable
class PolitenessMiddleware:
    """Honours ``Retry-After``, applies per-domain rate limits, checks the User-Agent."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)
        policy = self.runtime.policy
        setting, user_agent = effective_user_agent(crawler)
        check_user_agent(user_agent, policy, setting)
        self.max_wait = policy.duration(policy.politeness.retry_after_max).total_seconds()
        self.clock = self.runtime.clock
        self.floors = slot_floors(crawler)
        #: shared state (GDPR_STATE_URL): hosts are booked across every worker
        self.state = gate_state(crawler)
        #: slot key -> the interval of its last booking (re-asserted when a request leaves late)
        self._intervals: dict[str, float] = {}
        self._booked_at: weakref.WeakKeyDictionary[Request, float] = weakref.WeakKeyDictionary()
        if self.state.shared:
            crawler.signals.connect(self._reached_downloader, signal=signals.request_reached_downloader)
            from scrapy_gdpr.gate.objections import objection_list
            from scrapy_gdpr.gate.shared_objections import shared_objections

            shared_objections(crawler, objection_list(self.runtime), self.runtime.config.ledger)
        #: slot key -> monotonic time before which nothing is sent to it
        self.not_before: dict[str, float] = {}
        #: slot key -> why the host was given up
        self.given_up: dict[str, dict[str, Any]] = {}
        self._rated: set[str] = set()
        self._exact: dict[str, int] = {}
        self._subdomains: dict[str, int] = {}
        for i, rule in enumerate(policy.domains):
            if rule.rate_limit is None:
                continue
            self._exact[rule.domain] = i
            if rule.include_subdomains:
                self._subdomains[rule.domain] = i
        self._report: dict[str, Any] = {"retry_after_max_seconds": self.max_wait, "paused": 0, "given_up": {}, "given_up_count": 0}
        self.runtime.report_sections["politeness"] = self._report

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def _slot_key(self, request: Request) -> str:
        return self.crawler.engine.downloader.get_slot_key(request)

    async def process_request(self, request: Request) -> None:
        if self.state.shared:
            try:
                return await self._process_request(request)
            finally:
                # booked, refused or failed: the scheduler may hand out this host again
                pending_hosts(self.crawler).discard(request)
        if not (self._exact or self.not_before or self.given_up):
            return None  # no rate limits, no host paused or given up: nothing to hold
        return await self._process_request(request)

    async def _process_request(self, request: Request) -> None:
        key = self._slot_key(request)
        if self._exact and key not in self._rated:
            self._apply_rate_limit(key, request)
        held = False
        while True:
            if key in self.given_up:
                info = self.given_up[key]
                raise refuse(
                    self.runtime,
                    request.url,
                    Reason.RETRY_AFTER,
                    clause=self.runtime.policy.clause("politeness", "retry_after_max"),
                    detail=f"host {key} was given up: {info['detail']}",
                )
            not_before = self.not_before.get(key)
            wait = not_before - self.clock.monotonic() if not_before is not None else 0.0
            if wait <= 0:
                if self.state.shared:
                    wait = await self._book(key, request)
                    if wait <= 0:
                        self._check_objections(request)
                        return
                else:
                    return
            if self._closing():
                raise refuse(
                    self.runtime,
                    request.url,
                    Reason.RETRY_AFTER,
                    clause=self.runtime.policy.clause("politeness", "retry_after_max"),
                    detail=f"not sent: the crawl closed while host {key} was paused by Retry-After "
                    f"({wait:.0f} s left)",
                )
            if not held:
                held = True
                self.crawler.stats.inc_value("gdpr/politeness/waited")
                logger.debug(
                    "Holding %(request)s for %(wait).1f s (Retry-After from %(key)s)",
                    {"request": request, "wait": wait, "key": key},
                    extra={"spider": self.crawler.spider},
                )
            # in slices, so that a closing crawl (Ctrl-C, CLOSESPIDER_*, crawler.stop())
            # does not wait for the end of a long pause
            await self.clock.sleep(min(wait, SHUTDOWN_POLL))

    async def _book(self, key: str, request: Request) -> float:
        """Book ``key`` in the shared state; 0 when the request may go now, else the
        seconds until the host is free (another worker holds it, or a Retry-After)."""
        interval = self._interval(key)
        # the scheduler spaces set-aside requests by it, and hands out a host that asked
        # for no spacing (0) without holding its other requests back
        pending_hosts(self.crawler).intervals[key] = interval
        if interval:
            self._intervals[key] = interval
        # booked only when the host is free now: a request booked ahead and then held
        # up (a loaded machine oversleeps) would leave later than its booking, closer to
        # the next worker's request than the host asked
        booked, wait = await call_shared(self.crawler, self.state.reserve, key, interval, 0.0,
                                         closing=self._closing)
        if booked:
            self._booked_at[request] = time.monotonic()
            self.crawler.stats.inc_value("gdpr/politeness/shared_booked")
            return 0.0
        self.crawler.stats.inc_value("gdpr/politeness/shared_busy")
        return float(wait)

    def _check_objections(self, request: Request) -> None:
        """The last look before a request leaves: an erasure made on another machine
        while it waited (shared objection list, see scrapy_gdpr.gate.shared_objections)."""
        from scrapy_gdpr.gate.objections import ObjectionFileError, objection_list

        clause = self.runtime.policy.clause("objections", "path")
        try:
            entry = objection_list(self.runtime).match(request.url)
        except ObjectionFileError as exc:
            raise refuse(self.runtime, request.url, Reason.UNDECIDED, clause=clause,
                         detail=f"the objection list is unusable: {exc}") from None
        except (ValueError, UnicodeError):
            return  # the gate refused such URLs before
        if entry is not None:
            raise refuse(self.runtime, request.url, Reason.OBJECTION, clause=clause,
                         detail=f"covered by the objection {entry} (made while the request waited)")

    def _reached_downloader(self, request: Request, spider: Any = None) -> None:
        """The request leaves now, perhaps a little after its booked time (a connection
        to open, a busy slot): the host's next time counts from now."""
        booked_at = self._booked_at.pop(request, None)
        if booked_at is not None and time.monotonic() - booked_at < ON_TIME_SECONDS:
            return  # left when booked: the booking stands (one Redis round trip saved)
        key = request.meta.get("download_slot")
        interval = self._intervals.get(key) if key is not None else None
        if key is not None and interval:
            with contextlib.suppress(StateUnavailable):  # the next booking waits for Redis anyway
                self.state.sent(key, interval)

    def _interval(self, key: str) -> float:
        """The shortest time between two sends to slot ``key`` by any worker: its floor
        (robots.txt, the policy's rate limit) or delay (DOWNLOAD_DELAY, DOWNLOAD_SLOTS).
        The live slot's own delay is zeroed: the booking spaces the requests."""
        downloader = self.crawler.engine.downloader
        configured = downloader.per_slot_settings.get(key, {}).get("delay")
        if configured is None:
            configured = self.crawler.settings.getfloat("DOWNLOAD_DELAY")
        interval = max(self.floors.floor(key), float(configured))
        slot = downloader.slots.get(key)
        if slot is not None and slot.delay:
            slot.delay = 0.0
        return interval + MARGIN_SECONDS if interval else 0.0

    def _closing(self) -> bool:
        """Whether the engine is stopping or closing the spider (graceful shutdown)."""
        engine = self.crawler.engine
        if engine is None or not engine.running:
            return True
        slot = getattr(engine, "_slot", None)  # Scrapy sets slot.closing when close_spider starts
        return slot is None or getattr(slot, "closing", None) is not None

    # a coroutine: Scrapy awaits it as it is (a plain return value it wraps in one first)
    async def process_response(self, request: Request, response: Response) -> Response:
        if response.status not in RETRY_AFTER_STATUSES:
            return response
        raw = response.headers.get(b"Retry-After")
        seconds = parse_retry_after(raw, self.clock.now())
        if seconds is None:
            if raw is not None:
                logger.info(
                    "Ignoring a malformed Retry-After %(value)r from %(url)s",
                    {"value": raw, "url": response.url},
                    extra={"spider": self.crawler.spider},
                )
            return response
        key = request.meta.get("download_slot") or self._slot_key(request)
        stats = self.crawler.stats
        if seconds > self.max_wait:
            detail = (
                f"{response.status} with Retry-After {raw.decode('latin-1') if raw else ''!r} "
                f"({seconds:.0f} s) is above politeness.retry_after_max ({self.max_wait:.0f} s)"
            )
            if key not in self.given_up:
                self.given_up[key] = {"detail": detail, "url": response.url, "status": response.status}
                self._report["given_up_count"] += 1
                if len(self._report["given_up"]) < REPORT_LIMIT:
                    self._report["given_up"][key] = {
                        "url": response.url,
                        "status": response.status,
                        "retry_after": raw.decode("latin-1") if raw else "",
                        "seconds": seconds,
                        "at": self.clock.now().isoformat(timespec="seconds"),
                    }
                stats.inc_value("gdpr/politeness/given_up")
                logger.warning(
                    "Giving up host %(key)s: %(detail)s",
                    {"key": key, "detail": detail},
                    extra={"spider": self.crawler.spider},
                )
            raise refuse(
                self.runtime,
                request.url,
                Reason.RETRY_AFTER,
                clause=self.runtime.policy.clause("politeness", "retry_after_max"),
                detail=detail,
            )
        until = self.clock.monotonic() + seconds
        if until > self.not_before.get(key, 0.0):
            self.not_before[key] = until
        if self.state.shared:
            # this worker still holds the host; the others hold every request meanwhile
            with contextlib.suppress(StateUnavailable):
                self.state.block(key, seconds)
        self._report["paused"] += 1
        stats.inc_value("gdpr/politeness/retry_after")
        logger.info(
            "Host %(key)s answered %(status)s with Retry-After %(seconds).0f s: pausing it",
            {"key": key, "status": response.status, "seconds": seconds},
            extra={"spider": self.crawler.spider},
        )
        return response

    def _apply_rate_limit(self, key: str, request: Request) -> None:
        # only slots that get a limit are remembered: a set of every host would grow
        # without bound on crawls of millions of hosts
        host = (urlparse_cached(request).hostname or "").lower().rstrip(".")
        index = self._exact.get(host)
        if index is None:
            parts = host.split(".")
            for i in range(1, len(parts)):
                index = self._subdomains.get(".".join(parts[i:]))
                if index is not None:
                    break
        if index is None:
            return
        self._rated.add(key)
        policy = self.runtime.policy
        rate = policy.domains[index].rate_limit
        assert rate is not None
        downloader = self.crawler.engine.downloader
        slot_settings = downloader.per_slot_settings.setdefault(key, {})
        slot_settings.setdefault("concurrency", rate.concurrency)
        slot = downloader.slots.get(key)
        if slot is not None:
            slot.concurrency = min(slot.concurrency, int(slot_settings["concurrency"]))
        if rate.delay:
            self.floors.set(key, f"domains[{index}].rate_limit", rate.delay)

"""The gate's shared state: one small interface, an in-process and a Redis back end.

What the gate remembers between requests and that several crawl machines must
agree on lives behind :class:`GateState`:

* per-host politeness: :meth:`~GateState.reserve` books the next send time of a
  host (its interval is the largest of robots.txt ``Crawl-delay``/``Request-rate``,
  the policy's per-domain rate and ``DOWNLOAD_DELAY``), :meth:`~GateState.block`
  records a ``Retry-After``;
* fetch-once caches (robots.txt, tdmrep.json, terms pages): :meth:`~GateState.get`
  / :meth:`~GateState.put` with a TTL, and a short :meth:`~GateState.lease` so that
  one worker fetches while the others wait (a lease not renewed expires, so another
  worker takes over when the holder dies);
* version counters (:meth:`~GateState.version` / :meth:`~GateState.bump`): the
  objection list's, bumped by ``scrapy gdpr-erase``.

``GDPR_STATE_URL`` unset (the default) gives :class:`LocalState`: everything in
the process, which is what a single crawl has always done (Scrapy's download slot
delays, the middlewares' own caches). ``GDPR_STATE_URL = "redis://host:6379/0"``
gives :class:`RedisState`: every worker of the crawl, on any machine, shares it.

Times in Redis are Redis server time (``TIME`` inside a Lua script), never the
workers' clocks, so machines whose clocks disagree still space requests correctly.

Fail closed: when Redis cannot be reached, :class:`StateUnavailable` is raised;
the politeness middleware holds every request (nothing is fetched, the reason is
logged at INFO with its fix) and lets them go when Redis answers again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy.http import Headers
from scrapy.responsetypes import responsetypes
from scrapy.utils.asyncio import sleep

from scrapy_gdpr.internal import download_internal

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from scrapy.crawler import Crawler
    from scrapy.http import Request, Response
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)

#: The setting that selects the back end.
SETTING = "GDPR_STATE_URL"
#: Key prefix of everything this module writes (``GDPR_STATE_PREFIX`` overrides it).
DEFAULT_PREFIX = "gdpr"
#: Runtime service name of the crawler's :class:`GateState`.
#: How long a fetch lease lasts unless renewed (seconds). A holder that dies lets
#: another worker take the fetch over after at most this long.
LEASE_SECONDS = 30.0
#: How long an answer read along with another's (:meth:`GateState.read_along`) may be used:
#: it is asked for right after, by the same request's next middleware.
READ_ALONG_SECONDS = 5.0
#: How many answers read along a worker keeps before it drops those too old to use.
ALONG_LIMIT = 256
#: How often a worker waiting for another's fetch, or for Redis to come back, looks again.
POLL_SECONDS = 0.25
#: A safety margin added to every shared interval (seconds). A request is booked when
#: its host is free and reaches the site a little later (the rest of the middleware
#: chain, a connection, a loaded machine's scheduling); measured on a loaded 2-core
#: machine, 50 ms was not always enough.
MARGIN_SECONDS = 0.1
#: How far ahead a worker books a host's next send time. A host booked further
#: than this is left to other workers and retried later; the worker goes on with
#: other hosts meanwhile.
MAX_ADVANCE_SECONDS = 1.0

FIX = (
    "start Redis or correct GDPR_STATE_URL ({url}); the crawl holds its requests and goes on "
    "by itself when Redis answers"
)


class StateUnavailable(RuntimeError):
    """The shared state cannot be reached: nothing may be fetched until it can."""


class GateState:
    """The interface. ``shared`` tells whether other processes see the same state."""

    shared = False
    url = ""

    def __init__(self) -> None:
        #: Functions of a page URL giving the ``(ns, key)`` of a per-site answer the crawl asks
        #: for before that page (its site's robots.txt, ``tdmrep.json``), registered by the
        #: components that ask for them: the first of them asked for a site reads the others
        #: along (:meth:`along_with`, :meth:`get_or_lease`).
        self.along_providers: list[Callable[[str], tuple[str, str] | None]] = []

    # -- politeness -----------------------------------------------------------------
    def reserve(self, host: str, interval: float, max_advance: float = MAX_ADVANCE_SECONDS) -> tuple[bool, float]:
        """Book the next send to ``host``: ``(booked, wait)``. Booked: send after
        ``wait`` seconds, and nobody else may send to ``host`` until ``interval``
        seconds after that. Not booked (the host is busy for more than
        ``max_advance`` seconds): ``wait`` is how long until it is free."""
        raise NotImplementedError

    def block(self, host: str, seconds: float) -> None:
        """Nothing is sent to ``host`` for ``seconds`` (a ``Retry-After``)."""
        raise NotImplementedError

    def sent(self, host: str, interval: float) -> None:
        """A request to ``host`` is leaving now: nothing else goes there for ``interval``
        seconds, however late it left after its booking."""
        raise NotImplementedError

    def known_busy(self, host: str) -> float:
        """Seconds this worker already knows ``host`` is busy for, without asking (0: not known)."""
        return 0.0

    def blocked_for(self, host: str, known: float = float("inf")) -> float:
        """Seconds until ``host`` may be sent to (0 when it may be now). A back end
        may answer from what it already knows when that is more than ``known``
        seconds (the true answer can only be later)."""
        raise NotImplementedError

    def host_keys(self) -> tuple[str, str] | None:
        """The names, but for the host, of the Redis keys holding a host's next free time
        and its ``Retry-After`` time (a script elsewhere may read them for a host it
        learns only as it runs); None when the state is not in Redis."""
        return None

    def told_blocked_for(self, host: str, wait: float, asked_at: float) -> float:
        """Redis has said ``host`` is free in ``wait`` seconds, in the answer of another
        script (the shared queue's pop), sent at ``asked_at`` (``time.monotonic()``):
        remembered as :meth:`blocked_for` remembers its answer. Returns ``wait``."""
        return wait

    # -- caches and leases ------------------------------------------------------------
    def get(self, ns: str, key: str) -> bytes | None:
        raise NotImplementedError

    def put(self, ns: str, key: str, value: bytes, ttl: float) -> None:
        raise NotImplementedError

    def lease(self, ns: str, key: str, seconds: float = LEASE_SECONDS) -> bool:
        """Take the lease on ``(ns, key)`` (True) unless another holder has it."""
        raise NotImplementedError

    def release(self, ns: str, key: str) -> None:
        raise NotImplementedError

    def get_or_lease(
        self, ns: str, key: str, seconds: float = LEASE_SECONDS, also: Sequence[tuple[str, str]] = ()
    ) -> tuple[bytes | None, bool]:
        """``(value, False)`` when ``(ns, key)`` is cached, else ``(None, taken)``:
        whether the lease on it was taken (:meth:`get` then :meth:`lease`, in one step).
        ``also``: other ``(ns, key)`` whose cached answers a back end may read in the same
        step, for :meth:`read_along` (a worker that reads a site's terms page or robots.txt
        answer reads the site's other answers with it)."""
        value = self.get(ns, key)
        if value is not None:
            return value, False
        return None, self.lease(ns, key, seconds)

    def read_along(self, ns: str, key: str) -> bytes | None:
        """The cached answer of ``(ns, key)`` read along with another's (``also``) within
        the last READ_ALONG_SECONDS, taken (asked once), or None."""
        return None

    def along_with(self, url: str, but: tuple[str, str] | None = None) -> list[tuple[str, str]]:
        """The ``(ns, key)`` of the answers about page ``url``'s site that the crawl asks for
        (see :attr:`along_providers`), but ``but``: read along with whichever is asked first."""
        return [found for provider in self.along_providers if (found := provider(url)) is not None and found != but]

    def put_and_release(self, ns: str, key: str, value: bytes, ttl: float) -> None:
        """:meth:`put` then :meth:`release`, in one step."""
        self.put(ns, key, value, ttl)
        self.release(ns, key)

    # -- versions -------------------------------------------------------------------
    def version(self, name: str) -> int:
        raise NotImplementedError

    def bump(self, name: str) -> int:
        raise NotImplementedError

    def watch(self, name: str) -> None:
        """Read version ``name`` along with other calls when the back end can (see
        :meth:`version_seen`)."""

    def version_seen(self, name: str) -> tuple[int, float] | None:
        """``(value, when)``: the last value of version ``name`` read, and the
        ``time.monotonic()`` before that read (None: not read yet)."""
        return None

    def close(self) -> None:
        pass


class LocalState(GateState):
    """In-process state (one crawl process): today's behaviour.

    The politeness methods are not used in this mode (Scrapy's download slots
    space requests, and :class:`~scrapy_gdpr.gate.politeness.PolitenessMiddleware`
    keeps its own Retry-After times); they are implemented so that the interface
    means the same with either back end.
    """

    def __init__(self) -> None:
        super().__init__()
        self._next: dict[str, float] = {}
        self._blocked: dict[str, float] = {}
        self._values: dict[tuple[str, str], tuple[bytes, float]] = {}
        self._leases: dict[tuple[str, str], float] = {}
        self._versions: dict[str, int] = {}

    def reserve(self, host: str, interval: float, max_advance: float = MAX_ADVANCE_SECONDS) -> tuple[bool, float]:
        now = time.monotonic()
        start = max(now, self._next.get(host, 0.0), self._blocked.get(host, 0.0))
        if start - now > max_advance:
            return False, start - now
        self._next[host] = start + interval
        return True, start - now

    def block(self, host: str, seconds: float) -> None:
        until = time.monotonic() + seconds
        if until > self._blocked.get(host, 0.0):
            self._blocked[host] = until

    def sent(self, host: str, interval: float) -> None:
        until = time.monotonic() + interval
        if until > self._next.get(host, 0.0):
            self._next[host] = until

    def blocked_for(self, host: str, known: float = float("inf")) -> float:
        now = time.monotonic()
        return max(0.0, self._next.get(host, 0.0) - now, self._blocked.get(host, 0.0) - now)

    def get(self, ns: str, key: str) -> bytes | None:
        found = self._values.get((ns, key))
        if found is None or found[1] <= time.monotonic():
            self._values.pop((ns, key), None)
            return None
        return found[0]

    def put(self, ns: str, key: str, value: bytes, ttl: float) -> None:
        self._values[(ns, key)] = (value, time.monotonic() + ttl)

    def lease(self, ns: str, key: str, seconds: float = LEASE_SECONDS) -> bool:
        now = time.monotonic()
        if self._leases.get((ns, key), 0.0) > now:
            return False
        self._leases[(ns, key)] = now + seconds
        return True

    def release(self, ns: str, key: str) -> None:
        self._leases.pop((ns, key), None)

    def version(self, name: str) -> int:
        return self._versions.get(name, 0)

    def bump(self, name: str) -> int:
        self._versions[name] = self._versions.get(name, 0) + 1
        return self._versions[name]


# KEYS[1] the host's next-allowed time, KEYS[2] its Retry-After time (ms, Redis time),
# KEYS[3..] version counters read on the way (see RedisState.watch)
# ARGV[1] interval ms, ARGV[2] max advance ms, ARGV[3] 1 = book, 0 = only look
# Returns {booked, wait ms, version...}.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nxt = tonumber(redis.call('GET', KEYS[1]) or '0')
local ra = tonumber(redis.call('GET', KEYS[2]) or '0')
local start = math.max(now, nxt, ra)
local out = {0, start - now}
for i = 3, #KEYS do out[i] = tonumber(redis.call('GET', KEYS[i]) or '0') end
if tonumber(ARGV[3]) == 0 or start - now > tonumber(ARGV[2]) then
  return out
end
local interval = tonumber(ARGV[1])
if interval > 0 then
  redis.call('SET', KEYS[1], start + interval, 'PX', start - now + interval + 1000)
end
out[1] = 1
return out
"""

# KEYS[1] the host's Retry-After time; ARGV[1] seconds to block (ms)
_BLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local untl = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > cur then
  redis.call('SET', KEYS[1], untl, 'PX', tonumber(ARGV[1]) + 1000)
end
return untl
"""

# KEYS[1] the lease; ARGV[1] holder id, ARGV[2] ms. Taken when free or already ours.
_LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] the cached value, KEYS[2] its lease, KEYS[3..] values read along; ARGV[1] holder id,
# ARGV[2] lease ms. Returns {value or false, leased (1: taken; 0: cached, or another holds it),
# then each value read along or false}.
_GET_OR_LEASE = """
local v = redis.call('GET', KEYS[1])
local out
if v then
  out = {v, 0}
else
  local cur = redis.call('GET', KEYS[2])
  if cur == false or cur == ARGV[1] then
    redis.call('SET', KEYS[2], ARGV[1], 'PX', tonumber(ARGV[2]))
    out = {false, 1}
  else
    out = {false, 0}
  end
end
for i = 3, #KEYS do out[#out + 1] = redis.call('GET', KEYS[i]) end
return out
"""

# KEYS[1] the cached value, KEYS[2] its lease; ARGV[1] value, ARGV[2] ttl ms, ARGV[3] holder id
_PUT_AND_RELEASE = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""


class RedisState(GateState):
    """State shared by every worker through one Redis server (``redis://`` URL)."""

    shared = True

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, *, timeout: float = 1.0) -> None:
        super().__init__()
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - the extra is missing
            raise ValueError(
                f"{SETTING} is set but the redis package is missing: pip install 'scrapy-gdpr[redis]'"
            ) from exc
        self.url = url
        self.prefix = prefix
        self._errors = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout, health_check_interval=10
        )
        self._reserve = self.client.register_script(_RESERVE)
        self._block = self.client.register_script(_BLOCK)
        self._lease = self.client.register_script(_LEASE)
        self._release = self.client.register_script(_RELEASE)
        self._get_or_lease = self.client.register_script(_GET_OR_LEASE)
        self._put_and_release = self.client.register_script(_PUT_AND_RELEASE)
        #: host -> monotonic time before which this worker knows the host is not free
        #: (its own bookings, Retry-After pauses and busy answers it got): the shared
        #: next-allowed and Retry-After times only ever move later, so asking Redis
        #: before then can only answer "busy"
        self._busy_until: dict[str, float] = {}
        #: version counters read along with every reservation (see :meth:`watch`)
        self._watched: list[str] = []
        #: name -> (value, monotonic time of the read) of the last version read
        self.seen_versions: dict[str, tuple[int, float]] = {}
        self.holder = f"{os.uname().nodename}:{os.getpid()}:{id(self):x}"
        #: Round trips made, by what they were for (the benchmark reports them per page).
        self.trips: Counter[str] = Counter()
        #: (ns, key) -> (value, monotonic time read): answers read along with another's
        self._along: dict[tuple[str, str], tuple[bytes, float]] = {}

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    @property
    def round_trips(self) -> int:
        return sum(self.trips.values())

    def _call(self, kind: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.trips[kind] += 1
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            raise StateUnavailable(
                f"the shared state at {redact(self.url)} cannot be reached ({type(exc).__name__}: {exc})"
            ) from exc

    def ping(self) -> None:
        self._call("ping", self.client.ping)

    def watch(self, name: str) -> None:
        """Read version ``name`` along with every reservation (no round trip of its own)."""
        if name not in self._watched:
            self._watched.append(name)

    def version_seen(self, name: str) -> tuple[int, float] | None:
        return self.seen_versions.get(name)

    def _known_busy(self, host: str, now: float) -> float:
        until = self._busy_until.get(host)
        if until is None:
            return 0.0
        if until <= now:
            del self._busy_until[host]
            return 0.0
        return until - now

    def known_busy(self, host: str) -> float:
        return self._known_busy(host, time.monotonic())

    def _busy(self, host: str, until: float) -> None:
        if until > self._busy_until.get(host, 0.0):
            if len(self._busy_until) > 10_000:  # forget the hosts already free
                now = time.monotonic()
                self._busy_until = {h: t for h, t in self._busy_until.items() if t > now}
            self._busy_until[host] = until

    def _look(self, kind: str, host: str, args: list[int]) -> tuple[bool, float, float]:
        """Run the reservation script; ``(booked, wait, t0)`` with ``t0`` the local
        time before the call (the script ran after it, so ``t0 + wait`` is never
        later than when the host is free)."""
        keys = [self.key("next", host), self.key("retry-after", host)]
        keys += [self.key("version", name) for name in self._watched]
        t0 = time.monotonic()
        found = self._call(kind, self._reserve, keys=keys, args=args)
        for name, value in zip(self._watched, found[2:], strict=False):
            self.seen_versions[name] = (int(value), t0)
        booked, wait = bool(found[0]), int(found[1]) / 1000
        if not booked and wait > 0:
            self._busy(host, t0 + wait)
        return booked, wait, t0

    def reserve(self, host: str, interval: float, max_advance: float = MAX_ADVANCE_SECONDS) -> tuple[bool, float]:
        known = self._known_busy(host, time.monotonic())
        if known > max_advance:
            return False, known  # Redis could only say the same or later
        booked, wait, t0 = self._look("reserve", host, [int(interval * 1000), int(max_advance * 1000), 1])
        if booked and interval > 0:
            self._busy(host, t0 + wait + interval)
        return booked, wait

    def blocked_for(self, host: str, known: float = float("inf")) -> float:
        already = self._known_busy(host, time.monotonic())
        if already > known:
            return already
        return self._look("blocked_for", host, [0, 0, 0])[1]

    def host_keys(self) -> tuple[str, str] | None:
        return self.key("next", ""), self.key("retry-after", "")

    def told_blocked_for(self, host: str, wait: float, asked_at: float) -> float:
        if wait > 0:
            self._busy(host, asked_at + wait)
        return wait

    def block(self, host: str, seconds: float) -> None:
        t0 = time.monotonic()
        self._call("block", self._block, keys=[self.key("retry-after", host)], args=[int(seconds * 1000)])
        self._busy(host, t0 + seconds)

    def sent(self, host: str, interval: float) -> None:
        # the same "later of the two" update as a Retry-After, on the next-allowed key
        t0 = time.monotonic()
        self._call("sent", self._block, keys=[self.key("next", host)], args=[int(interval * 1000)])
        self._busy(host, t0 + interval)

    def get(self, ns: str, key: str) -> bytes | None:
        value: bytes | None = self._call(f"cache_get/{ns}", self.client.get, self.key("cache", ns, key))
        return value

    def put(self, ns: str, key: str, value: bytes, ttl: float) -> None:
        self._call(f"cache_put/{ns}", self.client.set, self.key("cache", ns, key), value, px=max(1, int(ttl * 1000)))

    def lease(self, ns: str, key: str, seconds: float = LEASE_SECONDS) -> bool:
        got = self._call(f"lease/{ns}", self._lease, keys=[self.key("lease", ns, key)], args=[self.holder, int(seconds * 1000)])
        return bool(got)

    def release(self, ns: str, key: str) -> None:
        self._call(f"release/{ns}", self._release, keys=[self.key("lease", ns, key)], args=[self.holder])

    def get_or_lease(
        self, ns: str, key: str, seconds: float = LEASE_SECONDS, also: Sequence[tuple[str, str]] = ()
    ) -> tuple[bytes | None, bool]:
        found = self._call(f"get_or_lease/{ns}", self._get_or_lease,
                           keys=[self.key("cache", ns, key), self.key("lease", ns, key),
                                 *(self.key("cache", other_ns, other) for other_ns, other in also)],
                           args=[self.holder, int(seconds * 1000)])
        now = time.monotonic()
        if also and len(self._along) >= ALONG_LIMIT:  # answers read along and never asked for
            self._along = {k: v for k, v in self._along.items() if now - v[1] <= READ_ALONG_SECONDS}
        for (other_ns, other), value in zip(also, found[2:], strict=False):
            if value:
                self._along[other_ns, other] = (value, now)
        if found[0]:
            return found[0], False
        return None, bool(found[1])

    def read_along(self, ns: str, key: str) -> bytes | None:
        found = self._along.pop((ns, key), None)
        if found is None or time.monotonic() - found[1] > READ_ALONG_SECONDS:
            return None
        return found[0]

    def put_and_release(self, ns: str, key: str, value: bytes, ttl: float) -> None:
        self._call(f"put_and_release/{ns}", self._put_and_release,
                    keys=[self.key("cache", ns, key), self.key("lease", ns, key)],
                    args=[value, max(1, int(ttl * 1000)), self.holder])

    def version(self, name: str) -> int:
        t0 = time.monotonic()
        value = int(self._call(f"version/{name}", self.client.get, self.key("version", name)) or 0)
        self.seen_versions[name] = (value, t0)
        return value

    def bump(self, name: str) -> int:
        return int(self._call(f"bump/{name}", self.client.incr, self.key("version", name)))

    def close(self) -> None:
        self.client.close()


def redact(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def state_url(settings: BaseSettings) -> str:
    return str(settings.get(SETTING) or "")


def open_state(url: str, prefix: str = DEFAULT_PREFIX) -> GateState:
    """The back end ``url`` names: "" gives :class:`LocalState`; ``redis://``,
    ``rediss://`` and ``unix://`` give :class:`RedisState`."""
    if not url:
        return LocalState()
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"{SETTING} must be a redis://, rediss:// or unix:// URL, not {redact(url)!r}")
    return RedisState(url, prefix)


def gate_state(crawler: Crawler) -> GateState:
    """The crawler's :class:`GateState` (``runtime.state``), opened on first use."""
    from scrapy_gdpr._component import component_runtime

    rt = component_runtime(crawler)
    state = rt.state
    if state is None:
        prefix = str(crawler.settings.get("GDPR_STATE_PREFIX") or DEFAULT_PREFIX)
        state = rt.state = open_state(state_url(crawler.settings), prefix)
    return state


class PendingHosts:
    """Requests handed out by the scheduler and not yet booked by the politeness
    middleware, per host: a worker holds at most one waiting request per host, and
    leaves the others in the shared queue for workers that are free. A request
    refused before politeness, or finished, is discarded (or forgotten when collected)."""

    def __init__(self) -> None:
        import weakref

        self._keys: weakref.WeakKeyDictionary[Request, str] = weakref.WeakKeyDictionary()
        #: host -> the interval of its last booking (the scheduler spaces set-aside requests by
        #: it; 0: the host asked for no spacing, so its requests are not held back one at a time)
        self.intervals: dict[str, float] = {}

    def add(self, request: Request, key: str) -> None:
        self._keys[request] = key

    def discard(self, request: Request) -> None:
        self._keys.pop(request, None)

    def get(self, key: str) -> int:
        # at most CONCURRENT_REQUESTS entries: counting them is cheaper than keeping counts right
        return sum(1 for k in self._keys.values() if k == key)


def pending_hosts(crawler: Crawler) -> PendingHosts:
    from scrapy_gdpr._component import component_runtime

    rt = component_runtime(crawler)
    found = rt.pending_hosts
    if found is None:
        found = rt.pending_hosts = PendingHosts()
    return found


# --------------------------------------------------------------------------- fail closed


class Outage:
    """Logs an outage of the shared state once, at INFO with its fix, and its end."""

    def __init__(self, crawler: Crawler, state: GateState) -> None:
        self.crawler = crawler
        self.state = state
        self.since: float | None = None
        #: why nothing was fetched, with its fix, for the crawl's summary ("" while Redis answers)
        self.reason = ""

    def down(self, exc: StateUnavailable) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.reason = f"not fetching anything: {exc}. Fix: {FIX.format(url=redact(self.state.url))}"
            stats = self.crawler.stats
            if stats is not None:
                stats.inc_value("gdpr/state/unavailable")
            logger.info(
                "Not fetching anything: %(error)s. Fix: %(fix)s",
                {"error": exc, "fix": FIX.format(url=redact(self.state.url))},
                extra={"spider": self.crawler.spider},
            )

    def up(self) -> None:
        if self.since is not None:
            down_for = time.monotonic() - self.since
            self.since = None
            self.reason = ""
            stats = self.crawler.stats
            if stats is not None:
                stats.inc_value("gdpr/state/unavailable_seconds", round(down_for, 3))  # type: ignore[arg-type]
            logger.info(
                "The shared state at %(url)s answers again after %(s).1f s: fetching resumes",
                {"url": redact(self.state.url), "s": down_for},
                extra={"spider": self.crawler.spider},
            )


def outage(crawler: Crawler) -> Outage:
    from scrapy_gdpr._component import component_runtime

    rt = component_runtime(crawler)
    found = rt.state_outage
    if found is None:
        found = rt.state_outage = Outage(crawler, gate_state(crawler))
    return found


async def call_shared(crawler: Crawler, fn: Any, *args: Any, closing: Any = None) -> Any:
    """``fn(*args)`` on the shared state, waiting (without blocking the reactor) while
    it is unreachable. ``closing()`` true stops the wait with :class:`StateUnavailable`."""
    watch = outage(crawler)
    while True:
        try:
            result = fn(*args)
        except StateUnavailable as exc:
            watch.down(exc)
            if closing is not None and closing():
                raise
            await sleep(POLL_SECONDS)
            continue
        watch.up()
        return result


# --------------------------------------------------------------------------- fetch once


def _encode_response(response: Response) -> bytes:
    headers = {
        k.decode("latin-1"): [v.decode("latin-1") for v in vs]
        for k, vs in response.headers.items()
    }
    import base64

    return json.dumps({
        "url": response.url,
        "status": response.status,
        "headers": headers,
        "body": base64.b64encode(response.body).decode("ascii"),
    }).encode()


def _decode_response(data: bytes, request: Request) -> Response:
    import base64

    doc = json.loads(data)
    headers = Headers(dict(doc["headers"].items()))
    body = base64.b64decode(doc["body"])
    cls = responsetypes.from_args(headers=headers, url=doc["url"], body=body)
    return cls(url=doc["url"], status=int(doc["status"]), headers=headers, body=body, request=request)


#: Answers not shared: each worker meets a server error or a rate limit itself.
UNSHARED_STATUSES = frozenset({429}) | frozenset(range(500, 600))


async def download_once(crawler: Crawler, request: Request, ns: str, ttl: float,
                        ttl_of: Callable[[Response], float] | None = None,
                        also: Sequence[tuple[str, str]] = ()) -> Response:
    """``download_internal(crawler, request)``, once per ``ttl`` across every
    worker sharing the state: the first worker takes a lease and fetches, the others
    wait for its answer (an answer of any HTTP status is shared; a failed download
    is not, so each worker finds out for itself; nor is a 429 or 5xx answer).
    ``ttl_of(response)`` may shorten the TTL (``Cache-Control: max-age``). Without a shared state this is
    just the download. ``also``: the ``(ns, key)`` of other answers to read in the same
    round trip (:meth:`GateState.read_along`); an answer read so is used without asking."""
    state = gate_state(crawler)
    if not state.shared or ttl <= 0:
        return await download_internal(crawler, request)
    key = request.url
    along = state.read_along(ns, key)
    if along is not None and (shared := _shared_answer(crawler, ns, along, request)) is not None:
        return shared
    closing = _closing(crawler)
    # an answer read along that cannot be read is what the key holds: it is fetched again
    # at once (and stored over), not asked for and found unreadable a second time
    if along is None:
        while True:
            # one round trip: the cached answer, or else the lease when nobody holds it
            cached, leased = await call_shared(crawler, state.get_or_lease, ns, key, LEASE_SECONDS, also,
                                               closing=closing)
            if cached is not None:
                shared = _shared_answer(crawler, ns, cached, request)
                if shared is not None:
                    return shared
                break  # unreadable: fetched again, and the answer stored over it
            if leased:
                break
            await sleep(POLL_SECONDS)
    released = False
    try:
        response = await download_internal(crawler, request)
        if response.status not in UNSHARED_STATUSES:
            keep = min(ttl, ttl_of(response)) if ttl_of is not None else ttl
            await call_shared(crawler, state.put_and_release, ns, key, _encode_response(response), keep,
                              closing=closing)
            released = True
        return response
    finally:
        if not released:
            with contextlib.suppress(StateUnavailable):  # the lease expires by itself
                state.release(ns, key)


def _shared_answer(crawler: Crawler, ns: str, data: bytes, request: Request) -> Response | None:
    """The shared answer ``data`` as a response to ``request``, or None when it cannot be
    read (a damaged or foreign value under the key): then the worker fetches the page
    itself rather than take a failed download for the site's answer."""
    try:
        response = _decode_response(data, request)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # JSON, UTF-8, base64, its shape
        crawler.stats.inc_value(f"gdpr/state/{ns}/unreadable")
        logger.warning("The shared answer for %(url)s cannot be read (%(exc)s): fetching it again",
                       {"url": request.url, "exc": f"{type(exc).__name__}: {exc}"}, extra={"spider": crawler.spider})
        return None
    crawler.stats.inc_value(f"gdpr/state/{ns}/shared_hits")
    return response


def _closing(crawler: Crawler) -> Any:
    def closing() -> bool:
        engine = crawler.engine
        if engine is None or not engine.running:
            return True
        slot = getattr(engine, "_slot", None)
        return slot is None or getattr(slot, "closing", None) is not None

    return closing

"""scrapy-redis fitted to the gate: a JSON queue, expiring fingerprints, fail closed.

scrapy-redis shares a crawl's request queue and duplicate filter between workers
through Redis. This module keeps its scheduler and changes what the gate needs:

* **JSON, never pickle.** :mod:`scrapy_redis.picklecompat` would let anyone who can
  write to Redis run code on every worker. :func:`dumps` / :func:`loads` write a
  request as JSON: URL, method, headers, body, callback and errback names,
  priority, flags, ``cb_kwargs`` and ``meta`` (and its download slot, for the pop
  script to say when its host is free). Only plain values (str, int, float,
  bool, None, lists and str-keyed dicts of them) may be queued; a request whose
  meta holds anything else is refused loudly (an ERROR naming the key) instead of
  being pickled or silently stripped.
* **Retention.** A queued request and a seen-request fingerprint are personal-data
  caches: both expire after the policy's ``retention.caches``. Fingerprints are kept
  in a sorted set scored by when they were seen (older ones are trimmed); a queued
  request older than that is discarded when popped, and the keys themselves expire
  once nothing writes to them. ``scrapy gdpr-purge`` clears them
  (:func:`purge_keys`).
* **Busy hosts.** A request whose host is booked by another worker (politeness,
  ``Retry-After``) is set aside in a delayed set in Redis, scored by when the host is
  free, and the worker takes the next request instead of waiting. Each set-aside
  request is one live worker's turn (a counter, so consecutive ones go to different
  workers); when it falls due, the pop script hands it out only to that worker until
  it is overdue by :data:`TURN_GRACE_SECONDS`, then to anyone.
* **Idle workers woken.** A worker whose pop found the queue empty looks again a
  second later (:data:`QUIET_SECONDS`), unless a push wakes it first: the push that
  puts the first entry in an empty queue (and a pop that puts a stopped worker's
  requests back) publishes on the queue's wake-up channel (``<queue key>:wake``),
  in the same round trip; every worker listens on it and reads it, without a round
  trip, at most :data:`WAKE_SECONDS` later. At the start of a crawl, when the first
  workers take the start URLs and the others would otherwise sit out a second
  before the first links are queued, and whenever a narrow crawl runs dry.
* **A busy face stage.** A worker whose face pool has images waiting for a slot takes
  no more requests until one is free: they stay in Redis for workers with room.
* **Killed workers.** A popped request is also written to an in-flight set with a
  deadline (Redis's clock), renewed while its worker lives. It is removed
  (acknowledged) only when the request is done *and stored*: its callback's output
  consumed, every item it yielded through the item pipelines, written to the local
  feed files and flushed to the operating system, and the items' ledger rows
  written (or its download failed, or it was refused). A worker killed with SIGKILL
  leaves its in-flight requests behind, and any worker puts them back in the queue
  once their deadline (``GDPR_STATE_REQUEUE_AFTER``) has passed: a request is
  fetched at least once to the end, never lost. A request whose items were partly
  written when its worker died is fetched again: those items are then in two feed
  files, each line stamped and in the ledger (purge and erasure reach both).
* **Fail closed.** When Redis cannot be reached, nothing is popped (so nothing is
  fetched), new requests are held in memory, the crawl stays open and says why at
  INFO; it goes on when Redis answers again, or closes as ``gdpr_blocked`` (exit
  status 4) after ``GDPR_STATE_WAIT`` seconds.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from scrapy import signals
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import load_object

from scrapy_gdpr.shared.state import (
    MAX_ADVANCE_SECONDS,
    StateUnavailable,
    gate_state,
    open_state,
    outage,
    pending_hosts,
    redact,
    state_url,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from scrapy.crawler import Crawler
    from scrapy.http import Request, Response
    from scrapy.settings import BaseSettings
    from scrapy.spiders import Spider
    from twisted.internet.defer import Deferred

logger = logging.getLogger(__name__)

FORMAT = "scrapy-gdpr/request-json-1"
#: meta key holding the in-flight id of a request popped from the shared queue
INFLIGHT_META = "gdpr_queue_id"
#: Default seconds after which a popped request not finished is put back (a dead worker's).
REQUEUE_AFTER = 300.0
#: Default seconds the crawl waits for an unreachable Redis before it closes as gdpr_blocked.
STATE_WAIT = 600.0

SCHEDULER = "scrapy_gdpr.shared.queue.Scheduler"
QUEUE_CLASS = "scrapy_gdpr.shared.queue.JsonPriorityQueue"
DUPEFILTER = "scrapy_gdpr.shared.queue.ExpiringDupeFilter"
SERIALIZER = "scrapy_gdpr.shared.queue"
ACK_MIDDLEWARE = "scrapy_gdpr.shared.queue.QueueAckMiddleware"

PICKLE_SERIALIZERS = ("scrapy_redis.picklecompat", "pickle")


#: How often an idle worker may ask the shared queue again (seconds).
WAKE_SECONDS = 0.2
#: The longest an idle worker waits before asking again when nothing is set aside.
QUIET_SECONDS = 1.0
#: The longest an idle worker waits for the next set-aside request it may take (its own
#: turn, or another's overdue by the grace) when the queue had nothing else for it: under
#: LIVE_SECONDS, so that it stays a live worker with turns of its own.
TURN_WAIT_MAX_SECONDS = 2.0
#: How often a worker that does not listen for wake-ups tries to listen again (seconds).
LISTEN_AGAIN_SECONDS = 5.0
#: The shortest time a request is set aside for a busy host.
SET_ASIDE_SECONDS = 0.25
#: How long done requests are collected before they are stored and acknowledged together.
ACK_SECONDS = 0.1
#: How many of the first set-aside requests a pop looks at to tell a worker when its next turn is.
TURNS = 16
#: A worker that has not popped for this long is not given turns.
LIVE_SECONDS = 3.0
#: How long a set-aside request that has fallen due waits for the worker whose turn it is,
#: before any worker may take it (that worker has stopped, or is busy).
TURN_GRACE_SECONDS = 1.0


def look_again_in(turn_wait: int) -> float:
    """Seconds until an idle worker pops again, from its last pop's ``turn_wait`` (ms until
    the next set-aside request it may take; -1: nothing set aside): that time, at most
    TURN_WAIT_MAX_SECONDS; QUIET_SECONDS when nothing is set aside."""
    if turn_wait < 0:
        return QUIET_SECONDS
    return min(turn_wait / 1000, TURN_WAIT_MAX_SECONDS)


class NotPlain(TypeError):
    """A request holds a value JSON cannot carry as it is (it is not queued)."""


# --------------------------------------------------------------------------- JSON


def _check_plain(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise NotPlain(f"{where} has a key {k!r} that is not a string")
            _check_plain(v, f"{where}[{k!r}]")
        return
    raise NotPlain(f"{where} is a {type(value).__name__}, not a plain JSON value")


def dumps(obj: dict[str, Any], slot: str = "") -> bytes:
    """A ``Request.to_dict()`` as JSON (the scrapy-redis serializer interface); with
    ``slot``, the request's download slot (its host), which the pop script reads to say
    when that host is free."""
    meta = {k: v for k, v in (obj.get("meta") or {}).items() if k != INFLIGHT_META}
    _check_plain(meta, "meta")
    _check_plain(obj.get("cb_kwargs") or {}, "cb_kwargs")
    if obj.get("cookies"):
        _check_plain(obj["cookies"], "cookies")
    headers = [
        [k.decode("latin-1") if isinstance(k, bytes) else str(k),
         [v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in vs]]
        for k, vs in (obj.get("headers") or {}).items()
    ]
    body = obj.get("body") or b""
    if isinstance(body, str):
        body = body.encode(obj.get("encoding") or "utf-8")
    doc = {
        "format": FORMAT,
        "queued_at": time.time(),
        "url": obj["url"],
        "method": obj.get("method", "GET"),
        "headers": headers,
        "body": base64.b64encode(body).decode("ascii"),
        "encoding": obj.get("encoding", "utf-8"),
        "callback": obj.get("callback"),
        "errback": obj.get("errback"),
        "priority": obj.get("priority", 0),
        "dont_filter": bool(obj.get("dont_filter")),
        "flags": list(obj.get("flags") or []),
        "cb_kwargs": obj.get("cb_kwargs") or {},
        "cookies": obj.get("cookies") or {},
        "meta": meta,
    }
    for name in ("callback", "errback"):
        if doc[name] is not None and not isinstance(doc[name], str):
            raise NotPlain(f"{name} must be a spider method, not {doc[name]!r}")
    if obj.get("_class"):
        doc["_class"] = obj["_class"]
    if slot:
        doc["slot"] = slot
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def loads(data: bytes | str) -> dict[str, Any]:
    """The ``Request.to_dict()`` form of what :func:`dumps` wrote (anything else is refused)."""
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError("not a scrapy-gdpr JSON request (pickled or foreign entries are never loaded)")
    out: dict[str, Any] = {
        "url": doc["url"],
        "method": doc["method"],
        "headers": {k: [v.encode("latin-1") for v in vs] for k, vs in doc["headers"]},
        "body": base64.b64decode(doc["body"]),
        "encoding": doc["encoding"],
        "callback": doc["callback"],
        "errback": doc["errback"],
        "priority": doc["priority"],
        "dont_filter": doc["dont_filter"],
        "flags": doc["flags"],
        "cb_kwargs": doc["cb_kwargs"],
        "cookies": doc["cookies"],
        "meta": doc["meta"],
    }
    if "_class" in doc:
        out["_class"] = doc["_class"]
    out["meta"]["gdpr_queued_at"] = doc["queued_at"]
    return out


def queued_at(data: bytes) -> float:
    try:
        return float(json.loads(data).get("queued_at", 0.0))
    except (ValueError, AttributeError):
        return 0.0


# --------------------------------------------------------------------------- queue


# A set-aside entry is "score|turn|data" (an entry without a turn, "score|data", is turn 0). Its turn is a
# number from a counter the set-aside scripts increment: consecutive set-aside requests are consecutive turns,
# whatever their due times. It is the turn of the live worker whose place among them is the turn modulo their
# number.
_TURN = """
local function parse(m)
  local sep = string.find(m, '|', 1, true)
  local score = tonumber(string.sub(m, 1, sep - 1))
  if string.sub(m, sep + 1, sep + 1) == '{' then return score, 0, string.sub(m, sep + 1) end
  local sep2 = string.find(m, '|', sep + 1, true)
  return score, tonumber(string.sub(m, sep + 1, sep2 - 1)) or 0, string.sub(m, sep2 + 1)
end
local function turn_of(m)
  local sep = string.find(m, '|', 1, true)
  if string.sub(m, sep + 1, sep + 1) == '{' then return 0 end
  return tonumber(string.sub(m, sep + 1, string.find(m, '|', sep + 1, true) - 1)) or 0
end
"""

# KEYS[1] queue, KEYS[2] delayed, KEYS[3] inflight deadlines, KEYS[4] inflight data, KEYS[5] the live
# workers (holder -> last pop); ARGV[1] requeue-after ms, ARGV[2] key lifetime ms (0: none), ARGV[3] this
# worker's holder id, ARGV[4] how many set-aside entries to look at for this worker's next turn, ARGV[5] how
# long a worker counts as live (ms), ARGV[6] the grace (ms) a due set-aside entry waits for the worker whose
# turn it is.
# Puts back in the queue the set-aside entries that have fallen due and are this worker's turn, those
# overdue by the grace (anyone's), and expired in-flight entries; then pops the best entry and records it
# as in flight, and says how many entries are left in the queue and when the first set-aside entry falls
# due. When the queue is empty it returns when the first set-aside entry falls due and how many entries are
# set aside or in flight. Both answers end with the number of live workers, this worker's place among them,
# Redis's time and the ms until this worker may next take a set-aside entry (its own turn when it falls
# due, another's when the grace has passed; -1: nothing set aside). ARGV[7] and ARGV[8] (when not empty):
# the names, but for the host, of the shared state's keys of a host's next free time and Retry-After time;
# the answer with an entry then also ends with the entry's download slot (its "slot", when it has one) and
# the ms until that host is free, as the state's reservation script answers "blocked for" (these keys are
# known only once the entry is popped: the queue and the state must be in one Redis, not a cluster).
_POP = _TURN + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- the workers that popped in the last few seconds, and this one's place among them
redis.call('HSET', KEYS[5], ARGV[3], now)
local live = {}
local seen = redis.call('HGETALL', KEYS[5])
for i = 1, #seen, 2 do
  if tonumber(seen[i + 1]) >= now - tonumber(ARGV[5]) then
    table.insert(live, seen[i])
  else
    redis.call('HDEL', KEYS[5], seen[i])
  end
end
table.sort(live)
local rank = 0
for i, h in ipairs(live) do if h == ARGV[3] then rank = i - 1 end end
redis.call('PEXPIRE', KEYS[5], 2 * tonumber(ARGV[5]))
local grace = tonumber(ARGV[6])
local function mine(turn) return turn % #live == rank end
local function turns(out)
  table.insert(out, #live)
  table.insert(out, rank)
  table.insert(out, now)
  local at = -1
  local next = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[4]) - 1, 'WITHSCORES')
  for i = 1, #next, 2 do
    local when = tonumber(next[i + 1])
    if not mine(turn_of(next[i])) then when = when + grace end
    if at < 0 or when < at then at = when end
  end
  table.insert(out, at < 0 and -1 or math.max(at - now, 0))
  return out
end
local function move(m)
  local score, _, data = parse(m)
  redis.call('ZADD', KEYS[1], score, data)
  redis.call('ZREM', KEYS[2], m)
end
-- overdue by the grace: anyone's; due and not yet overdue: only this worker's turns
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - grace, 'LIMIT', 0, 50)) do move(m) end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. (now - grace), now, 'LIMIT', 0, 200)) do
  if mine(turn_of(m)) then move(m) end
end
local lost = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 50)
for _, id in ipairs(lost) do
  local m = redis.call('HGET', KEYS[4], id)
  if m then
    local sep = string.find(m, '|', 1, true)
    redis.call('ZADD', KEYS[1], tonumber(string.sub(m, 1, sep - 1)), string.sub(m, sep + 1))
  end
  redis.call('ZREM', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
end
-- a stopped worker's requests back in the queue: the idle workers may take them
if #lost > 0 then redis.pcall('PUBLISH', KEYS[1] .. ':wake', '1') end
local top = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #top == 0 then
  local left = redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3])
  local soon = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #soon == 0 then return turns({false, #lost, -1, left}) end
  return turns({false, #lost, tonumber(soon[2]) - now, left})
end
redis.call('ZREM', KEYS[1], top[1])
local id = redis.sha1hex(top[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[1]), id)
redis.call('HSET', KEYS[4], id, top[2] .. '|' .. top[1])
if tonumber(ARGV[2]) > 0 then
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2])) end
end
local rest = redis.call('ZCARD', KEYS[1])
local soon = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local out = turns({top[1], #lost, top[2], id, rest, #soon == 0 and -1 or tonumber(soon[2]) - now})
local slot, wait = false, -1
if ARGV[7] ~= '' then
  local ok, doc = pcall(cjson.decode, top[1])
  if ok and type(doc) == 'table' and type(doc.slot) == 'string' then
    slot = doc.slot
    local nxt = tonumber(redis.call('GET', ARGV[7] .. slot) or '0') or 0
    local ra = tonumber(redis.call('GET', ARGV[8] .. slot) or '0') or 0
    wait = math.max(now, nxt, ra) - now
  end
end
table.insert(out, slot)
table.insert(out, wait)
return out
"""

# KEYS[1] in-flight deadlines; ARGV[1] requeue-after ms, ARGV[2..] ids still held
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
return #ARGV - 1
"""

# KEYS[1] delayed, KEYS[2] the host's set-aside horizon, KEYS[3] the turn counter; ARGV[1] wait ms,
# ARGV[2] score, ARGV[3] data, ARGV[4] key lifetime ms (0: none), ARGV[5] the host's interval ms.
# Requests set aside for one host fall due one interval apart, when each can go; each is the next turn.
# Returns {ms until it falls due, its turn}.
# Sets ``data`` (with its ``score``) aside in ``delayed`` for ``wait`` ms, and after the host's
# ``horizon``, which it moves one ``step`` later (requests of one host fall due one interval apart); numbers
# it with the next turn from ``counter``. Returns {ms until it falls due, its turn}.
_SET_ASIDE = """
local function set_aside(delayed, horizon, counter, now, wait, step, score, data, lifetime)
  local due = math.max(now + wait, tonumber(redis.call('GET', horizon) or '0'))
  if step > 0 then
    redis.call('SET', horizon, due + step, 'PX', due + step - now + 1000)
  end
  local turn = redis.call('INCR', counter)
  redis.call('ZADD', delayed, due, score .. '|' .. turn .. '|' .. data)
  if lifetime > 0 then
    redis.call('PEXPIRE', delayed, lifetime)
    redis.call('PEXPIRE', counter, lifetime)
  end
  return {due - now, turn}
end
"""

_DELAY = _SET_ASIDE + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return set_aside(KEYS[1], KEYS[2], KEYS[3], now, tonumber(ARGV[1]), tonumber(ARGV[5]), ARGV[2], ARGV[3],
                 tonumber(ARGV[4]))
"""


# ARGV[1] the queue's wake-up channel: a push made without _SEEN_PUSH wakes the idle workers (see there)
_WAKE = """
redis.pcall('PUBLISH', ARGV[1], '1')
return 0
"""


# KEYS[1] seen fingerprints (see _SEEN), KEYS[2..5] the queue's keys, KEYS[6] the host's set-aside
# horizon and KEYS[7] the turn counter (see _DELAY); ARGV[1] fingerprint, ARGV[2] fingerprint ttl ms
# (0: forever), ARGV[3] entry, ARGV[4] its score, ARGV[5] key lifetime ms (0: none), ARGV[6] 0 = queue
# it, else set it aside for that many ms (after the host's horizon), ARGV[7] the host's interval ms. The
# duplicate filter and the push in one round trip: {-1, 0} = seen (not queued), else {the ms until it
# can be popped, its turn (0 when queued)}. The first entry of an empty queue wakes the idle workers
# (a message on the queue's wake-up channel, "<KEYS[2]>:wake"). Every PUBLISH is a redis.pcall: a Redis
# user whose ACL does not let it publish there still queues (its workers then look once a second).
_SEEN_PUSH = _SET_ASIDE + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if old and (ttl == 0 or tonumber(old) > now - ttl) then return {-1, 0} end
redis.call('ZADD', KEYS[1], now, ARGV[1])
if ttl > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
  redis.call('PEXPIRE', KEYS[1], ttl)
end
local wait = tonumber(ARGV[6])
if wait > 0 then
  return set_aside(KEYS[3], KEYS[6], KEYS[7], now, wait, tonumber(ARGV[7]), ARGV[4], ARGV[3], tonumber(ARGV[5]))
end
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[3])
if tonumber(ARGV[5]) > 0 then
  for i = 2, 5 do redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[5])) end
end
if redis.call('ZCARD', KEYS[2]) == 1 then redis.pcall('PUBLISH', KEYS[2] .. ':wake', '1') end
return {0, 0}
"""


class JsonPriorityQueue:
    """scrapy-redis's priority queue with JSON entries, a delayed set and in-flight records."""

    def __init__(self, server: Any, spider: Spider, key: str, serializer: Any = None, *,
                 ttl: float = 0.0, requeue_after: float = REQUEUE_AFTER, grace: float = TURN_GRACE_SECONDS,
                 host_keys: tuple[str, str] | None = None) -> None:
        from scrapy.utils.request import request_from_dict

        self._from_dict = request_from_dict
        self.server = server
        self.spider = spider
        self.key = key % {"spider": spider.name}
        self.delayed_key = self.key + ":delayed"
        self.inflight_key = self.key + ":inflight"
        self.inflight_data = self.key + ":inflight-data"
        self.workers_key = self.key + ":workers"
        self.turn_key = self.key + ":turn"
        #: the channel a push into an empty queue publishes on (see :meth:`listen`)
        self.wake_channel = self.key + ":wake"
        self._wakeups: Any = None
        self.ttl = ttl
        #: seconds a set-aside request that has fallen due waits for the worker whose turn it is
        self.grace = grace
        #: the shared state's key names of a host's next free and Retry-After times, but for the host
        #: (see :meth:`GateState.host_keys`): the pop then says when the popped request's host is free
        self.host_keys = host_keys or ("", "")
        #: from the last pop that handed out a request: its download slot, the seconds until that
        #: host is free, and the time.monotonic() before the pop was sent (None: not known)
        self.host_wait: tuple[str, float, float] | None = None
        self.requeue_after = requeue_after
        self._pop = server.register_script(_POP)
        self._delay = server.register_script(_DELAY)
        self._renew = server.register_script(_RENEW)
        self._seen_push = server.register_script(_SEEN_PUSH)
        self._wake = server.register_script(_WAKE)
        #: in-flight ids this worker holds (their deadlines are renewed while it lives)
        self.held: set[str] = set()
        #: in-flight ids done and not yet removed from Redis (sent with the next pop)
        self.done: list[str] = []
        self.holder = f"{os.uname().nodename}:{os.getpid()}:{id(self):x}"
        #: from the last pop: live workers, this one's place, Redis time (ms), and the ms until this worker
        #: may take a set-aside request (its own turn falls due, or another's is overdue; -1: none set aside)
        self.live, self.rank, self.redis_now = 1, 0, 0
        self.turn_wait = -1
        #: whether the request last set aside is this worker's turn (as the last pop saw the live workers)
        self.my_turn = True
        #: entries set aside or in flight, as the last pop that found the queue empty saw them
        self.left = 0
        #: round trips made, by what they were for
        self.trips: Counter[str] = Counter()
        self.next_due = 0
        self.emptied = False
        self.expired = 0
        self.requeued = 0

    def keys(self) -> list[str]:
        return [self.key, self.delayed_key, self.inflight_key, self.inflight_data]

    def __len__(self) -> int:
        self.trips["len"] += 1
        pipe = self.server.pipeline(transaction=False)
        for key in (self.key, self.delayed_key, self.inflight_key):
            pipe.zcard(key)
        return int(sum(pipe.execute()))

    def encode(self, request: Request, slot: str = "") -> bytes:
        return dumps(request.to_dict(spider=self.spider), slot)

    def push(self, request: Request, data: bytes | None = None) -> None:
        if data is None:
            data = self.encode(request)
        self.trips["push"] += 1
        pipe = self.server.pipeline(transaction=False)
        pipe.zadd(self.key, {data: -request.priority})
        if self.ttl:
            for key in self.keys():
                pipe.pexpire(key, int(self.ttl * 1000))
        self._wake(args=[self.wake_channel], client=pipe)  # idle workers may take it (same round trip)
        pipe.execute()

    def push_unseen(self, request: Request, data: bytes, df: ExpiringDupeFilter,
                    wait: float = 0.0, host: str = "", interval: float = 0.0) -> float | None:
        """Queue ``request`` unless ``df`` has seen it (then None), in one round trip; with
        ``wait``, set it aside as :meth:`delay` does instead. Returns the seconds until it
        can be popped."""
        fp = df.fingerprinter.fingerprint(request).hex()
        self.trips["seen_set_aside" if wait > 0 else "seen_push"] += 1
        due, turn = self._seen_push(
            keys=[df.key, *self.keys(), f"{self.key}:horizon:{host}", self.turn_key],
            args=[fp, int(df.ttl * 1000), data, -request.priority, int(self.ttl * 1000),
                  max(0, int(wait * 1000)), int(interval * 1000) if host else 0])
        self.my_turn = self.is_mine(int(turn))
        return None if int(due) < 0 else int(due) / 1000

    def listen(self) -> None:
        """Listen on the wake-up channel (one connection of its own, opened here), on
        which a push into the empty queue publishes: :meth:`woken` then says so."""
        if self._wakeups is None:
            from redis.exceptions import ResponseError

            wakeups = self.server.pubsub(ignore_subscribe_messages=True)
            try:
                wakeups.subscribe(self.wake_channel)
                # Redis's answer (at once): a refusal (an ACL without the channel) is an error here
                wakeups.get_message(timeout=1.0)
            except ResponseError as exc:
                wakeups.close()
                self._not_listening(exc)
            except BaseException:
                wakeups.close()  # Redis unreachable: the caller says so; listen again later
                raise
            else:
                self._wakeups = wakeups

    @property
    def listening(self) -> bool | None:
        """Whether this worker listens for wake-ups (None: not yet; False: Redis refused)."""
        return None if self._wakeups is None else bool(self._wakeups)

    def woken(self) -> bool:
        """Whether a wake-up was published since the last call (the messages that have
        arrived are read from this worker's socket: no round trip, never waits)."""
        if not self._wakeups:
            return False
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import ResponseError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        woken = False
        try:
            while self._wakeups.get_message(timeout=0.0) is not None:
                woken = True
        except ResponseError as exc:
            self._not_listening(exc)
        except (RedisConnectionError, RedisTimeoutError):
            # the subscription's connection is gone (Redis restarted, a proxy's idle
            # timeout): closed, not tried again on every call; the scheduler listens
            # again after its next pop (and the one-second look goes on meanwhile)
            self.stop_listening()
        return woken

    def _not_listening(self, exc: Exception) -> None:
        """Redis refused the subscription (e.g. NOPERM): no wake-ups, said once, with the fix."""
        with contextlib.suppress(Exception):
            self.stop_listening()
        self._wakeups = False  # not None: not asked again
        logger.info(
            "Idle workers are not woken when requests are queued: Redis refused to subscribe to %(channel)s "
            "(%(exc)s); they look again once a second. Fix: allow the Redis user the channel "
            "(ACL SETUSER <user> &%(channel)s)", {"channel": self.wake_channel, "exc": exc},
            extra={"spider": self.spider})

    def stop_listening(self) -> None:
        wakeups, self._wakeups = self._wakeups, None
        if wakeups:
            wakeups.close()

    def is_mine(self, turn: int) -> bool:
        """Whether a set-aside request's ``turn`` is this worker's, as its last pop saw the live workers."""
        return self.live <= 1 or turn % self.live == self.rank

    def delay(self, request: Request, wait: float, host: str = "", interval: float = 0.0,
              done: str | bytes | None = None) -> float:
        """Set ``request`` aside for ``wait`` seconds, and after the requests already set
        aside for ``host``, one ``interval`` apart; returns the seconds until it falls due.
        ``done``: an in-flight id acknowledged in the same round trip (the popped entry
        ``request`` came from)."""
        data = self.encode(request, host)
        self.trips["set_aside"] += 1
        pipe = self.server.pipeline(transaction=False) if done is not None else None
        found = self._delay(keys=[self.delayed_key, f"{self.key}:horizon:{host}", self.turn_key],
                            args=[int(wait * 1000), -request.priority, data, int(self.ttl * 1000),
                                  int(interval * 1000) if host else 0], client=pipe)
        if pipe is not None and done is not None:
            self.held.discard(done.decode() if isinstance(done, bytes) else done)
            pipe.zrem(self.inflight_key, done)
            pipe.hdel(self.inflight_data, done)
            found = pipe.execute()[0]
        due, turn = found
        self.my_turn = self.is_mine(int(turn))
        return int(due) / 1000

    def pop(self, timeout: int = 0) -> Request | None:
        # the wake-ups read so far were published before this pop: it sees what they
        # announced, so they are spent (else a worker busy meanwhile would pop again for
        # each of them, finding nothing, as soon as it next goes quiet)
        self.woken()
        while True:
            self.trips["pop"] += 1
            args = [int(self.requeue_after * 1000), int(self.ttl * 1000), self.holder, TURNS, int(LIVE_SECONDS * 1000),
                    int(self.grace * 1000), *self.host_keys]
            keys = [*self.keys(), self.workers_key]
            self.host_wait = None
            sent_at = time.monotonic()
            if self.done:
                # the requests done since the last pop leave the in-flight records in the same round trip
                done = list(self.done)
                pipe = self.server.pipeline(transaction=False)
                pipe.zrem(self.inflight_key, *done)
                pipe.hdel(self.inflight_data, *done)
                self._pop(keys=keys, args=args, client=pipe)
                found = pipe.execute()[-1]
                del self.done[:len(done)]
            else:
                found = self._pop(keys=keys, args=args)
            data, lost = found[0], int(found[1])
            turns = found[4:] if not data else found[6:]
            self.live, self.rank, self.redis_now, self.turn_wait = (int(n) for n in turns[:4])
            #: ms until the first set-aside request falls due (-1: none), when nothing was popped
            #: or when the popped entry was the last one in the queue
            self.next_due = int(found[2]) if not data else 0
            #: whether the queue was empty after this pop (the next pop would find nothing before next_due)
            self.emptied = not data or int(found[4]) == 0
            if data and self.emptied:
                self.next_due = int(found[5])
            if not data:
                self.left = int(found[3])
            if lost:
                self.requeued += lost
                logger.info("Put %(n)d request(s) of a stopped worker back in the shared queue",
                            {"n": lost}, extra={"spider": self.spider})
            if not data:
                self.trips["pop"] -= 1
                self.trips["pop_empty"] += 1
                return None
            if self.ttl and time.time() - queued_at(data) > self.ttl:
                self.expired += 1
                self.ack(found[3])
                continue  # older than retention.caches: discarded, never fetched
            try:
                request = self._from_dict(loads(data), spider=self.spider)
            except (ValueError, KeyError, TypeError) as exc:
                logger.error("Discarding a queue entry that is not a scrapy-gdpr JSON request: %(exc)s",
                             {"exc": exc}, extra={"spider": self.spider})
                self.ack(found[3])
                continue
            queue_id = found[3].decode() if isinstance(found[3], bytes) else found[3]
            if len(found) > 11 and found[10] is not None and int(found[11]) >= 0:
                slot = found[10].decode() if isinstance(found[10], bytes) else str(found[10])
                self.host_wait = (slot, int(found[11]) / 1000, sent_at)
            request.meta[INFLIGHT_META] = queue_id
            self.held.add(queue_id)
            return request

    def renew(self) -> None:
        """Push back the deadlines of the requests this worker still holds."""
        if self.held:
            self.trips["renew"] += 1
            self._renew(keys=[self.inflight_key], args=[int(self.requeue_after * 1000), *self.held])

    def ack_later(self, queue_id: str | bytes) -> None:
        """``queue_id`` is done: its in-flight record goes with the next pop (or
        :meth:`flush_done`), not in a round trip of its own. A worker killed before
        then has it put back in the queue after its deadline: fetched again, never lost."""
        queue_id = queue_id.decode() if isinstance(queue_id, bytes) else queue_id
        self.held.discard(queue_id)
        self.done.append(queue_id)

    def flush_done(self) -> None:
        if self.done:
            done = list(self.done)
            self.trips["ack"] += 1
            pipe = self.server.pipeline(transaction=False)
            pipe.zrem(self.inflight_key, *done)
            pipe.hdel(self.inflight_data, *done)
            pipe.execute()
            del self.done[:len(done)]

    def ack(self, queue_id: str | bytes) -> None:
        self.ack_many([queue_id])

    def ack_many(self, queue_ids: list[str | bytes]) -> None:
        """The requests are done: remove their in-flight records now (one round trip)."""
        if not queue_ids:
            return
        self.forget(queue_ids)
        self.trips["ack"] += 1
        pipe = self.server.pipeline(transaction=False)
        pipe.zrem(self.inflight_key, *queue_ids)
        pipe.hdel(self.inflight_data, *queue_ids)
        pipe.execute()

    def forget(self, queue_ids: list[str | bytes]) -> None:
        """Stop renewing the requests' deadlines: they go back to the queue when they pass."""
        for queue_id in queue_ids:
            self.held.discard(queue_id.decode() if isinstance(queue_id, bytes) else queue_id)

    def clear(self) -> None:
        self.server.delete(*self.keys(), self.workers_key, self.turn_key)


# --------------------------------------------------------------------------- dupefilter


# KEYS[1] seen zset; ARGV[1] fingerprint, ARGV[2] ttl ms (0: forever)
_SEEN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if old and (ttl == 0 or tonumber(old) > now - ttl) then return 1 end
redis.call('ZADD', KEYS[1], now, ARGV[1])
if ttl > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 0
"""


class ExpiringDupeFilter:
    """Seen-request fingerprints in a Redis sorted set, forgotten after ``retention.caches``."""

    def __init__(self, server: Any, key: str, ttl: float, fingerprinter: Any, debug: bool = False) -> None:
        self.server = server
        self.key = key
        self.ttl = ttl
        self.fingerprinter = fingerprinter
        self.debug = debug
        self.logdupes = True
        self._seen = server.register_script(_SEEN)
        self.trips: Counter[str] = Counter()

    def request_seen(self, request: Request) -> bool:
        fp = self.fingerprinter.fingerprint(request).hex()
        self.trips["seen"] += 1
        return bool(self._seen(keys=[self.key], args=[fp, int(self.ttl * 1000)]))

    def clear(self) -> None:
        self.server.delete(self.key)

    def close(self, reason: str = "") -> None:
        pass

    def log(self, request: Request, spider: Spider) -> None:
        if self.debug:
            logger.debug("Filtered duplicate request %(request)s", {"request": request}, extra={"spider": spider})
        elif self.logdupes:
            logger.debug("Filtered duplicate request %(request)s - no more duplicates will be shown",
                         {"request": request}, extra={"spider": spider})
            self.logdupes = False


# --------------------------------------------------------------------------- scheduler


def _scrapy_redis_scheduler() -> type:
    from scrapy_redis.scheduler import Scheduler as Base

    return Base  # type: ignore[no-any-return]


class Scheduler(_scrapy_redis_scheduler()):  # type: ignore[misc]
    """scrapy-redis's scheduler with the JSON queue, the expiring duplicate filter,
    busy-host set-aside and fail-closed Redis errors."""

    def __init__(self, crawler: Crawler, server: Any, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self.crawler = crawler
        self.stats = crawler.stats
        settings = crawler.settings
        self.ttl = _cache_ttl(crawler)
        self.requeue_after = settings.getfloat("GDPR_STATE_REQUEUE_AFTER", REQUEUE_AFTER)
        self.wait_limit = settings.getfloat("GDPR_STATE_WAIT", STATE_WAIT)
        self.state = gate_state(crawler)
        self._held: list[Request] = []  # enqueued while Redis was unreachable
        self._errors = _redis_errors()
        self._errors_or_down: tuple[type[BaseException], ...] = (*self._errors, StateUnavailable)
        self._down_since: float | None = None
        self._renewer: Any = None
        self._waker: Any = None
        #: requests popped by the wake loop and handed to the engine (``engine.crawl``)
        self._ready: list[Request] = []
        #: in-flight ids of requests done, acknowledged once their items are stored
        self._to_ack: list[str] = []
        self._ack_call: Any = None
        self._storing: Deferred[None] | None = None
        self._close_asked = False
        self._length = 0
        self._length_at = float("-inf")
        self._quiet_until = float("-inf")
        self._wake_call: Any = None
        self._listen_again_at = float("-inf")
        #: a wake-up read and not yet acted on (see :meth:`_woken`); a pop spends it
        self._wake_pending = False
        #: requests handed to the engine and not yet booked, per host (see politeness)
        self.pending = pending_hosts(crawler)
        crawler.signals.connect(self._ack_failed, signal=signals.request_dropped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Scheduler:
        from scrapy_redis import connection

        settings = crawler.settings
        server = connection.from_settings(settings)
        spider_name = getattr(crawler.spidercls, "name", "spider")
        ttl = _cache_ttl(crawler)
        df_key = str(settings.get("SCHEDULER_DUPEFILTER_KEY") or "%(spider)s:dupefilter") % {"spider": spider_name}
        dupefilter = ExpiringDupeFilter(server, df_key, ttl, crawler.request_fingerprinter,
                                        debug=settings.getbool("DUPEFILTER_DEBUG"))
        return cls(
            crawler, server,
            persist=settings.getbool("SCHEDULER_PERSIST", True),
            flush_on_start=settings.getbool("SCHEDULER_FLUSH_ON_START"),
            idle_before_close=settings.getint("SCHEDULER_IDLE_BEFORE_CLOSE"),
            queue_key=settings.get("SCHEDULER_QUEUE_KEY") or "%(spider)s:requests",
            queue_cls=QUEUE_CLASS,
            dupefilter=dupefilter,
            dupefilter_key=df_key,
        )

    def open(self, spider: Spider) -> None:
        from scrapy_gdpr._component import component_runtime

        self.spider = spider
        component_runtime(self.crawler).shared_queue = self
        self.queue = JsonPriorityQueue(self.server, spider, self.queue_key, ttl=self.ttl,
                                       requeue_after=self.requeue_after,
                                       host_keys=self.state.host_keys() if self._state_here() else None)
        try:
            if self.flush_on_start:
                self.flush()
            n = len(self.queue)
            self.queue.listen()
        except self._errors as exc:
            self._down(exc)
            return
        from twisted.internet.task import LoopingCall

        self._renewer = LoopingCall(self._renew)
        self._renewer.start(max(0.5, self.requeue_after / 3), now=False)
        # set-aside requests fall due, and other workers queue requests, while this
        # worker's engine would otherwise wait for its 5 s heartbeat to ask again
        self._waker = LoopingCall(self._wake)
        self._waker.start(WAKE_SECONDS, now=False)
        if n:
            logger.info("Resuming the shared crawl (%(n)d request(s) queued or in flight)", {"n": n},
                        extra={"spider": spider})

    def _state_here(self) -> bool:
        """Whether the shared state is in the queue's Redis (the pop script can then read
        a host's next free time: no ``blocked_for`` round trip after a pop)."""
        client = getattr(self.state, "client", None)
        if client is None or not self.state.shared:
            return False
        ours = self.server.connection_pool.connection_kwargs
        theirs = client.connection_pool.connection_kwargs
        return all(ours.get(k) == theirs.get(k) for k in ("host", "port", "db", "path"))

    def _slot(self, request: Request) -> str:
        engine = self.crawler.engine
        return str(engine.downloader.get_slot_key(request)) if engine is not None else ""

    def _wake(self) -> None:
        """Between the engine's own calls (after each download, and every 5 s), take a
        request that has become ready (set aside and now due, or queued by another
        worker) and hand it to the engine with ``engine.crawl()``, which then asks for
        more (:meth:`enqueue_request` keeps it here, it is not queued again)."""
        if self._ready or (time.monotonic() < self._quiet_until and not self._woken()):
            return  # the queue was empty and nothing set aside falls due before then
        engine = self.crawler.engine
        if engine is None or engine.spider is None or not engine.running or self._close_asked:
            return
        if engine.needs_backout():
            return  # the downloader or the scraper is full: the engine asks when it is not
        request = self.next_request()
        if request is not None:
            self._ready.append(request)
            engine.crawl(request)

    def _known_wait(self, request: Request) -> tuple[float, str, float]:
        """``(wait, host, interval)`` to set ``request`` aside at once, when this worker
        knows (without asking Redis) that its host is busy beyond MAX_ADVANCE_SECONDS."""
        engine = self.crawler.engine
        if not self.state.shared or engine is None:
            return 0.0, "", 0.0
        key = str(engine.downloader.get_slot_key(request))
        wait = self.state.known_busy(key)
        if wait <= MAX_ADVANCE_SECONDS:
            return 0.0, "", 0.0
        return wait, key, self.pending.intervals.get(key, SET_ASIDE_SECONDS)

    def _look_by(self, seconds: float) -> None:
        """Something can be popped in ``seconds``: look then at the latest."""
        from scrapy.utils.asyncio import call_later

        now = time.monotonic()
        if seconds <= 0:
            self._quiet_until = float("-inf")
        elif now + seconds < self._quiet_until:
            self._quiet_until = now + seconds
            if self._wake_call is not None:
                self._wake_call.cancel()
            self._wake_call = call_later(seconds, self._wake_due)

    def _woken(self) -> bool:
        """Whether another worker has queued a request since this worker's last pop (a
        wake-up message; read without a round trip) and this worker is idle: nothing of
        its own downloading, its face stage not full. It then looks at once. A worker
        with downloads in flight is asked by its engine when they end, and looks then at
        the end of its quiet time, or at once if it is idle by then and the wake-up is
        still the news (no pop of its own since)."""
        if self._down_since is not None:
            return False  # the pops notice when Redis answers again
        try:
            if self.queue.woken():
                self._wake_pending = True
        except self._errors:
            return False  # the next pop notices, and says so
        if not self._wake_pending:
            return False
        engine = self.crawler.engine
        if engine is not None and (engine.downloader.active or engine.needs_backout()):
            return False
        if self._backlogged(count=False):
            return False
        self._wake_pending = False
        self._quiet_until = float("-inf")
        self.stats.inc_value("gdpr/queue/woken")
        return True

    def _wake_due(self) -> None:
        self._wake_call = None
        self._quiet_until = float("-inf")
        self._wake()

    def _quiet(self) -> None:
        """When the queue has nothing to pop: look again when the next set-aside request
        this worker may take falls due (its own turn, or another's once the grace has
        passed: a timer at that time, at most TURN_WAIT_MAX_SECONDS away), and when
        nothing is set aside, once a second for what other workers queue. Each set-aside
        request is one live worker's turn, and the pop script hands it out, until the
        grace has passed, only to that worker (see the pop script), so the work is shared
        whichever worker pops first. While requests are set aside, the workers whose turns
        fall due pop the queue in turn, and each pop takes the best entry, a new one that
        another worker queued included: an idle worker need not look in between."""
        from scrapy.utils.asyncio import call_later

        now = time.monotonic()
        wait = look_again_in(self.queue.turn_wait)
        self._quiet_until = now + wait
        if self._wake_call is not None:
            self._wake_call.cancel()
        self._wake_call = call_later(wait, self._wake_due)

    def _renew(self) -> None:
        try:
            self.queue.flush_done()
            self.queue.renew()
        except self._errors:
            pass  # Redis is away: the next pop notices; the deadlines may pass meanwhile

    def close(self, reason: str) -> Deferred[None]:
        from scrapy.utils.defer import deferred_from_coro

        for loop in (self._renewer, self._waker):
            if loop is not None and loop.running:
                loop.stop()
        if self._wake_call is not None:
            self._wake_call.cancel()
            self._wake_call = None
        self._listen_again_at = float("inf")  # closing: not listening again
        with contextlib.suppress(*self._errors):
            self.queue.stop_listening()
        return deferred_from_coro(self._close())

    async def _close(self) -> None:
        from scrapy.utils.defer import maybe_deferred_to_future

        # the done requests: their items stored, then acknowledged
        if self._ack_call is not None and self._ack_call.active():
            self._ack_call.cancel()
        self._ack_call = None
        while self._storing is not None or self._to_ack:
            if self._storing is not None:
                await maybe_deferred_to_future(self._storing)
            else:
                self._store_and_ack()
        try:
            # popped by the wake loop but never sent (the crawl was closing): back in the queue
            while self._ready:
                request = self._ready.pop()
                self.queue.push(request)
                self.ack(request)
            self.queue.flush_done()
            self._flush_held()
            if not self.persist:
                self.flush()
        except self._errors:
            if self._held:
                logger.warning("%(n)d request(s) were never queued: Redis was unreachable when the crawl closed",
                               {"n": len(self._held)}, extra={"spider": self.spider})
        trips: Counter[str] = Counter()
        for counted in (self.queue.trips, self.df.trips, getattr(self.state, "trips", {})):
            trips.update(counted)
        self.stats.set_value("gdpr/state/round_trips", sum(trips.values()))
        for kind, n in sorted(trips.items()):
            self.stats.set_value(f"gdpr/state/round_trips/{kind}", n)

    # -- fail closed -------------------------------------------------------------------
    def _down(self, exc: BaseException) -> None:
        outage(self.crawler).down(StateUnavailable(
            f"the shared queue at {redact(str(self.server.connection_pool.connection_kwargs.get('host', '')))} "
            f"cannot be reached ({type(exc).__name__}: {exc})"))
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        elif now - self._down_since > self.wait_limit:
            from scrapy.utils.defer import deferred_from_coro

            engine = self.crawler.engine
            if engine is not None and engine.spider is not None and not self._close_asked:
                self._close_asked = True
                logger.info("Redis stayed unreachable for %(s).0f s (GDPR_STATE_WAIT): closing the crawl as "
                            "gdpr_blocked", {"s": now - self._down_since}, extra={"spider": self.spider})
                deferred_from_coro(engine.close_spider_async(reason="gdpr_blocked"))

    def _up(self) -> None:
        if self._down_since is not None:
            self._down_since = None
            outage(self.crawler).up()
        if self.queue.listening is None:
            # not listening (Redis was unreachable when the spider opened, or the
            # subscription's connection broke): listen again now that Redis answers,
            # trying at most every LISTEN_AGAIN_SECONDS
            now = time.monotonic()
            if now >= self._listen_again_at:
                self._listen_again_at = now + LISTEN_AGAIN_SECONDS
                with contextlib.suppress(*self._errors):
                    self.queue.listen()

    def _flush_held(self) -> None:
        while self._held:
            self.queue.push(self._held[0])
            self._held.pop(0)

    # -- the scheduler interface ---------------------------------------------------------
    def enqueue_request(self, request: Request) -> bool:
        if any(r is request for r in self._ready):
            return True  # popped by the wake loop and handed to engine.crawl(): sent from here
        try:
            data = self.queue.encode(request, self._slot(request))
        except (NotPlain, ValueError) as exc:
            self.stats.inc_value("gdpr/queue/refused_not_plain")
            logger.error(
                "Not queueing %(request)s: %(exc)s. Queued requests are JSON (never pickled); fix: keep only "
                "strings, numbers, booleans, None, lists and dicts in meta and cb_kwargs, and use spider "
                "methods as callbacks", {"request": request, "exc": exc}, extra={"spider": self.spider})
            return False
        try:
            self._flush_held()
            if request.dont_filter:
                self.queue.push(request, data)
                self._quiet_until = float("-inf")  # there is something to pop now
            else:
                # a host this worker knows to be busy beyond MAX_ADVANCE_SECONDS: set aside
                # at once (a pop would only set it aside, in two more round trips)
                due = self.queue.push_unseen(request, data, self.df, *self._known_wait(request))
                if due is None:
                    self.df.log(request, self.spider)
                    return False
                if due <= 0 or self.queue.my_turn:
                    self._look_by(due)  # set aside: its turn is one live worker's (see _quiet)
            if INFLIGHT_META in request.meta:
                # a retry or redirect of a popped request: the new entry replaces it
                self.ack(request)
        except self._errors as exc:
            self._down(exc)
            self._held.append(request)  # queued when Redis answers again
            return True
        self._up()
        self.stats.inc_value("scheduler/enqueued/redis")
        return True

    def next_request(self) -> Request | None:
        if self._ready:
            return self._ready.pop(0)
        if self._backlogged():
            return None
        if time.monotonic() < self._quiet_until and not self._held and not self._woken():
            # the queue was empty and nothing set aside falls due before then, and no
            # other worker has queued anything since: the engine asks after every event,
            # the waker asks again when it is time
            return None
        try:
            self._flush_held()
            self._wake_pending = False  # this pop sees what any wake-up read so far announced
            for _ in range(16):
                request = self.queue.pop()
                if request is None:
                    # nothing ready: ask again when a request this worker set aside falls
                    # due, and at least once a second for the rest
                    self._quiet()
                    # the queue's length as this pop saw it: no look of its own for a while
                    self._length, self._length_at = self.queue.left, time.monotonic()
                    break
                key, wait = self._host_wait(request)
                logger.debug("Shared queue: %(request)s, host %(key)s free in %(wait).2f s, %(n)d waiting here",
                             {"request": request, "key": key, "wait": wait, "n": self.pending.get(key)},
                             extra={"spider": self.spider})
                # one request per host waits here at a time, unless the host asked for no
                # spacing (its download slot's concurrency is then the only limit)
                spaced = self.pending.intervals.get(key) != 0.0
                if wait <= MAX_ADVANCE_SECONDS and not (spaced and self.pending.get(key)):
                    self._up()
                    self.stats.inc_value("scheduler/dequeued/redis")
                    if self.state.shared:
                        self.pending.add(request, key)
                    if self.queue.emptied:
                        self._quiet()  # the last one: the next pop would find nothing
                    return request
                # the host is booked by another worker or paused, or this worker already
                # has a request waiting for it (a host with a delay): set it aside, take another
                self.queue.delay(request, max(wait, SET_ASIDE_SECONDS), key,
                                 self.pending.intervals.get(key, SET_ASIDE_SECONDS),
                                 done=request.meta.pop(INFLIGHT_META))
                self.stats.inc_value("gdpr/queue/set_aside")
            self._up()
        except self._errors_or_down as exc:
            self._down(exc)
        return None

    def _backlogged(self, *, count: bool = True) -> bool:
        """Whether this worker's face stage has its hands full: images wait for a slot,
        or, while it works on an image, the work in hand (items in the media pipelines,
        downloads) is as much as its face pool holds plus one per thread. It then takes
        no more requests, and leaves them in the shared queue for workers whose face
        stage has room, instead of taking in a CPU-bound crawl's pages as fast as they
        download each time a face slot frees, and leaving the others idle at the end.
        A worker whose face stage is idle (no photos, or photos still downloading) is
        not held back."""
        from scrapy_gdpr._component import component_runtime

        pool = component_runtime(self.crawler).face_pool
        if pool is None:
            return False
        full = pool.waiting > 0
        if not full and pool.in_flight > 0:
            engine = self.crawler.engine
            downloads = len(engine.downloader.active) if engine is not None else 0
            full = pool.items + downloads >= pool.queue + pool.workers
        if full and count:
            self.stats.inc_value("gdpr/queue/backlogged")
        return full

    def _host_wait(self, request: Request) -> tuple[str, float]:
        engine = self.crawler.engine
        key = str(engine.downloader.get_slot_key(request) if engine is not None else urlparse_cached(request).hostname)
        if not self.state.shared:
            return key, 0.0
        told = self.queue.host_wait
        if told is not None and told[0] == key:
            # the pop's own answer (the request was queued with its download slot)
            return key, self.state.told_blocked_for(key, told[1], told[2])
        # a host this worker already knows to be busy beyond MAX_ADVANCE_SECONDS is
        # set aside without asking Redis (which could only answer later still)
        return key, self.state.blocked_for(key, MAX_ADVANCE_SECONDS)

    def has_pending_requests(self) -> bool:
        if self._held or self._ready or self.queue.held:
            return True  # this worker's own in-flight requests count in the queue's length
        now = time.monotonic()
        if now - self._length_at < WAKE_SECONDS:
            return self._length > 0  # the engine asks after every event: one look per wake-up
        # requests were left a moment ago: only the answer "none" needs a fresh look (a
        # stale "some" keeps the spider open at most QUIET_SECONDS longer, or, while
        # requests are set aside, until this worker's next look: TURN_WAIT_MAX_SECONDS)
        fresh_for = TURN_WAIT_MAX_SECONDS if self.queue.turn_wait >= 0 else QUIET_SECONDS
        if self._length > 0 and now - self._length_at < fresh_for:
            return True
        try:
            self._length = len(self.queue)
        except self._errors as exc:
            self._down(exc)
            return True  # unknown: stay open until Redis answers (or GDPR_STATE_WAIT passes)
        self._length_at = now
        return self._length > 0

    def __len__(self) -> int:
        try:
            return len(self.queue) + len(self._held)
        except self._errors:
            return len(self._held)

    # -- in-flight records -----------------------------------------------------------------
    def ack(self, request: Request) -> None:
        self.pending.discard(request)
        queue_id = request.meta.pop(INFLIGHT_META, None)
        if queue_id is None:
            return
        self.queue.ack_later(queue_id)

    def _ack_failed(self, request: Request, spider: Spider) -> None:
        self.ack(request)

    def ack_when_stored(self, request: Request) -> None:
        """``request`` is done: acknowledge it once the items it yielded are stored
        (the local feed files flushed, the ledger rows written). Done requests are
        collected for :data:`ACK_SECONDS` and stored and acknowledged together."""
        self.pending.discard(request)
        queue_id = request.meta.pop(INFLIGHT_META, None)
        if queue_id is None:
            return
        self._to_ack.append(queue_id)
        if self._ack_call is None and self._storing is None:
            self._ack_call = _later(ACK_SECONDS, self._store_and_ack)

    def _store_and_ack(self) -> None:
        from twisted.internet import defer

        from scrapy_gdpr._component import component_runtime

        self._ack_call = None
        ids, self._to_ack = self._to_ack, []
        if not ids:
            return
        retention = component_runtime(self.crawler).retention
        stored = retention.when_stored() if retention is not None else defer.succeed(None)
        self._storing = stored

        def acknowledge(_: object) -> None:
            # stored: the in-flight records go with the next pop, the renewal loop or the
            # close (no round trip of their own); a worker killed before then has them put
            # back in the queue after their deadline: fetched again, never lost
            for queue_id in ids:
                self.queue.ack_later(queue_id)

        def not_stored(failure: Any) -> None:
            self.queue.forget(list(ids))
            self.stats.inc_value("gdpr/queue/not_stored", len(ids))
            logger.error("%(n)d request(s) done but their items could not be written (%(exc)s): they go back in "
                         "the shared queue after GDPR_STATE_REQUEUE_AFTER and are fetched again",
                         {"n": len(ids), "exc": failure.value}, extra={"spider": self.spider})

        def finished(_: object) -> None:
            self._storing = None
            if self._to_ack and self._ack_call is None:
                self._ack_call = _later(ACK_SECONDS, self._store_and_ack)

        stored.addCallbacks(acknowledge, not_stored)
        stored.addBoth(finished)


def _later(seconds: float, fn: Any) -> Any:
    from twisted.internet import reactor

    clock: Any = reactor
    return clock.callLater(seconds, fn)


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def _cache_ttl(crawler: Crawler) -> float:
    from scrapy_gdpr._component import component_runtime

    policy = component_runtime(crawler).policy
    return float(policy.duration(policy.retention.caches).total_seconds())


def _scheduler(crawler: Crawler) -> Scheduler | None:
    from scrapy_gdpr._component import component_runtime

    scheduler = component_runtime(crawler).shared_queue
    return scheduler if isinstance(scheduler, Scheduler) else None


class _Output:
    """What one response of a popped request has yielded and not yet seen stored."""

    __slots__ = ("exhausted", "items", "response")

    def __init__(self, response: Response) -> None:
        self.response = response  # kept alive while tracked: its id() is the key
        self.items = 0
        self.exhausted = False


class QueueAckMiddleware:
    """Spider and downloader middleware: a request popped from the shared queue is done
    (its in-flight record removed) when its callback's output has been consumed and
    every item it yielded has left the item pipelines (``item_scraped``,
    ``item_dropped`` or ``item_error``) and is stored (see
    :meth:`Scheduler.ack_when_stored`); or when its download failed.

    As a spider middleware it sits closest to the engine, so that it counts the items
    the engine receives."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self._outputs: dict[int, _Output] = {}
        self._connected = False

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> QueueAckMiddleware:
        return cls(crawler)

    def _ack(self, request: Request | None) -> None:
        if request is None or INFLIGHT_META not in request.meta:
            return
        scheduler = _scheduler(self.crawler)
        if scheduler is not None:
            scheduler.ack(request)

    def _track(self, response: Response) -> _Output | None:
        request = response.request
        if request is None or INFLIGHT_META not in request.meta:
            return None
        if not self._connected:
            self._connected = True
            for signal in (signals.item_scraped, signals.item_dropped, signals.item_error):
                self.crawler.signals.connect(self._item_done, signal=signal)
        out = self._outputs.get(id(response))
        if out is None:
            out = self._outputs[id(response)] = _Output(response)
        return out

    def _item_done(self, item: Any, response: Any = None, **kwargs: Any) -> None:
        out = self._outputs.get(id(response)) if response is not None else None
        if out is not None and out.response is response:
            out.items -= 1
            self._maybe_done(out)

    def _maybe_done(self, out: _Output) -> None:
        if not out.exhausted or out.items > 0:
            return
        self._outputs.pop(id(out.response), None)
        request = out.response.request
        scheduler = _scheduler(self.crawler)
        if request is not None and scheduler is not None:
            scheduler.ack_when_stored(request)

    @staticmethod
    def _is_item(obj: Any) -> bool:
        # what the scraper sends to the item pipelines
        from scrapy import Request

        return obj is not None and not isinstance(obj, Request)

    # spider middleware
    async def process_spider_output_async(self, response: Response, result: AsyncIterator[Any]) -> AsyncIterator[Any]:
        out = self._track(response)
        if out is None:
            async for obj in result:
                yield obj
            return
        try:
            async for obj in result:
                if self._is_item(obj):
                    out.items += 1
                yield obj
        finally:
            out.exhausted = True
            self._maybe_done(out)

    def process_spider_output(self, response: Response, result: Iterable[Any]) -> Iterable[Any]:
        out = self._track(response)
        if out is None:
            yield from result
            return
        try:
            for obj in result:
                if self._is_item(obj):
                    out.items += 1
                yield obj
        finally:
            out.exhausted = True
            self._maybe_done(out)

    def process_spider_exception(self, response: Response, exception: BaseException) -> None:
        if id(response) not in self._outputs:
            self._ack(response.request)  # failed before any output (e.g. an HTTP error without errback)

    # downloader middleware
    def process_exception(self, request: Request, exception: BaseException) -> None:
        self._ack(request)


# --------------------------------------------------------------------------- add-on


def configure(settings: BaseSettings, crawler: Crawler, url: str) -> None:
    """Use this module's scheduler when ``GDPR_STATE_URL`` is set or the project chose
    scrapy-redis; refuse a pickle serializer."""
    serializer = settings.get("SCHEDULER_SERIALIZER")
    if serializer and (serializer in PICKLE_SERIALIZERS or getattr(serializer, "__name__", "") in PICKLE_SERIALIZERS):
        raise ValueError(
            f"SCHEDULER_SERIALIZER = {serializer!r} pickles queued requests: anyone who can write to Redis "
            "could run code on the workers. Fix: remove the setting; the scrapy-gdpr add-on queues requests as JSON"
        )
    try:
        load_object("scrapy_redis.scheduler.Scheduler")
    except ImportError as exc:
        raise ValueError("GDPR_STATE_URL needs scrapy-redis: pip install 'scrapy-gdpr[redis]'") from exc
    if url:
        settings.set("REDIS_URL", settings.get("REDIS_URL") or url, "addon")
    _warn_overwritten_feeds(settings)
    settings.set("SCHEDULER", SCHEDULER, "addon")
    settings.set("SCHEDULER_SERIALIZER", SERIALIZER, "addon")
    settings.set("SCHEDULER_QUEUE_CLASS", QUEUE_CLASS, "addon")
    # closest to the engine: it counts the items the engine receives
    settings.setdefault_in_component_priority_dict("SPIDER_MIDDLEWARES", QueueAckMiddleware, 1)
    settings.setdefault_in_component_priority_dict("DOWNLOADER_MIDDLEWARES", QueueAckMiddleware, 10)


def _warn_overwritten_feeds(settings: BaseSettings) -> None:
    """A local feed overwritten at start (``-O``) would lose, when its worker is started
    again after a crash, the lines its killed run wrote: the shared queue counts their
    requests as done."""
    from urllib.parse import urlsplit

    for uri, options in settings.getdict("FEEDS").items():
        scheme = urlsplit(str(uri)).scheme
        local = scheme in ("", "file") or len(scheme) == 1  # a path (or a Windows drive letter)
        if (options or {}).get("overwrite") and local and "%(" not in str(uri):
            logger.warning(
                "The feed %(uri)s is overwritten when the crawl starts (-O or overwrite: true): a worker started "
                "again after a crash would overwrite the items its killed run wrote, which the shared queue "
                "counts as done. Fix: -o (append; a torn last line is repaired) or a file name per run "
                "(e.g. items-%%(time)s.jsonl)", {"uri": uri})


def purge_shared(settings: BaseSettings, spider_name: str, *, dry_run: bool = False) -> str:
    """``gdpr-purge --shared-queue``: delete a spider's queue, fingerprints and the shared
    fetch caches (robots.txt, terms, tdmrep.json answers)."""
    from scrapy.exceptions import UsageError

    from scrapy_gdpr.shared.state import DEFAULT_PREFIX

    url = state_url(settings)
    if not url:
        raise UsageError("--shared-queue needs GDPR_STATE_URL (the Redis the workers share)")
    if not spider_name:
        raise UsageError("--shared-queue needs --spider NAME")
    state = open_state(url, str(settings.get("GDPR_STATE_PREFIX") or DEFAULT_PREFIX))
    server = state.client  # type: ignore[attr-defined]
    try:
        base = str(settings.get("SCHEDULER_QUEUE_KEY") or "%(spider)s:requests") % {"spider": spider_name}
        keys = [base, base + ":delayed", base + ":inflight", base + ":inflight-data", base + ":workers", base + ":turn",
                str(settings.get("SCHEDULER_DUPEFILTER_KEY") or "%(spider)s:dupefilter") % {"spider": spider_name}]
        keys = [k for k in keys if server.exists(k)]
        caches = list(server.scan_iter(match=state.key("cache", "*")))  # type: ignore[attr-defined]
        if not dry_run and (keys or caches):
            server.delete(*keys, *caches)
    finally:
        state.close()
    verb = "Would delete" if dry_run else "Deleted"
    return f"{verb} {len(keys)} shared queue key(s) of spider {spider_name!r} and {len(caches)} shared fetch cache entries."


# --------------------------------------------------------------------------- add-on hook

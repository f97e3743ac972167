"""The shared state (scrapy_gdpr.shared.state) and the JSON queue (scrapy_gdpr.shared.queue),
against a real Redis server (GDPR_TEST_REDIS_URL, default redis://127.0.0.1:6379/15).
Every test writes under its own key prefix and deletes only its own keys."""

from __future__ import annotations

import pickle
import time

import pytest
from scrapy import Request, Spider

from scrapy_gdpr.shared import queue as redisqueue
from scrapy_gdpr.shared.state import LocalState, RedisState, StateUnavailable, open_state
from tests.utils import (
    REDIS_URL,
    free_port,
    redis_client,
    redis_prefix,  # noqa: F401 - the fixture `prefix` of these tests
)


@pytest.fixture
def shared(prefix):
    state = RedisState(REDIS_URL, prefix)
    yield state
    state.close()


pytestmark = pytest.mark.requires_redis


def test_open_state_picks_the_back_end():
    assert isinstance(open_state(""), LocalState)
    assert not open_state("").shared
    with pytest.raises(ValueError, match="redis://"):
        open_state("http://127.0.0.1:6379/0")


def test_reservations_space_a_host_across_clients(shared, prefix):
    other = RedisState(REDIS_URL, prefix)  # another worker
    booked, wait = shared.reserve("a.test", 2.0)
    assert booked and wait == 0
    booked, wait = other.reserve("a.test", 2.0, max_advance=1.0)
    assert not booked and 1.0 < wait <= 2.0  # busy beyond the advance: go on with other hosts
    booked, wait = other.reserve("a.test", 2.0, max_advance=5.0)
    assert booked and 1.0 < wait <= 2.0  # booked for the next free time
    # the time after that is now 4 s away for everyone
    assert 3.0 < shared.blocked_for("a.test") <= 4.0
    # other hosts are free
    assert shared.reserve("b.test", 2.0) == (True, 0.0)
    other.close()


def test_retry_after_blocks_every_worker(shared, prefix):
    other = RedisState(REDIS_URL, prefix)
    shared.block("c.test", 3.0)
    booked, wait = other.reserve("c.test", 0.0)
    assert not booked and 2.0 < wait <= 3.0
    shared.block("c.test", 1.0)  # a shorter block never shortens a longer one
    assert other.blocked_for("c.test") > 2.0
    other.close()


def test_lease_is_exclusive_and_expires_when_the_holder_dies(shared, prefix):
    other = RedisState(REDIS_URL, prefix)
    assert shared.lease("robots", "http://a.test/robots.txt", 0.3)
    assert not other.lease("robots", "http://a.test/robots.txt", 0.3)
    other.release("robots", "http://a.test/robots.txt")  # not the holder: no effect
    assert not other.lease("robots", "http://a.test/robots.txt", 0.3)
    time.sleep(0.4)  # the holder never released it (killed)
    assert other.lease("robots", "http://a.test/robots.txt", 0.3)
    other.release("robots", "http://a.test/robots.txt")
    assert shared.lease("robots", "http://a.test/robots.txt", 0.3)
    other.close()


def test_cache_ttl_and_versions(shared):
    shared.put("tdmrep", "http://a.test/.well-known/tdmrep.json", b"[]", 0.2)
    assert shared.get("tdmrep", "http://a.test/.well-known/tdmrep.json") == b"[]"
    time.sleep(0.3)
    assert shared.get("tdmrep", "http://a.test/.well-known/tdmrep.json") is None
    assert shared.version("objections") == 0
    assert shared.bump("objections") == 1
    assert shared.version("objections") == 1


def test_round_trips_are_counted_by_what_they_are_for(shared):
    shared.reserve("a.test", 0.0)
    shared.blocked_for("a.test")
    shared.get("robots", "http://a.test/robots.txt")
    assert shared.trips == {"reserve": 1, "blocked_for": 1, "cache_get/robots": 1}
    assert shared.round_trips == 3


def test_a_host_known_busy_is_not_asked_again_until_it_may_be_free(shared, prefix):
    # intervals of seconds, so that a loaded machine's pauses between calls (tenths of
    # a second) cannot move a wait across the bounds checked here
    other = RedisState(REDIS_URL, prefix)  # another worker
    assert shared.reserve("a.test", 3.0, 0.0) == (True, 0.0)
    # this worker booked it: it knows the host is busy for the interval, without asking
    trips = shared.round_trips
    booked, wait = shared.reserve("a.test", 3.0, 0.0)
    assert not booked and 2.0 < wait <= 3.0
    assert shared.blocked_for("a.test", 1.5) == pytest.approx(wait, abs=0.25)
    assert shared.round_trips == trips
    # asked with a larger threshold than what it knows, it asks Redis
    assert 2.0 < shared.blocked_for("a.test", 5.0) <= 3.0
    assert shared.round_trips == trips + 1
    # another worker learns the same from one busy answer, then waits without asking
    booked, wait = other.reserve("a.test", 3.0, 0.0)
    assert not booked and 1.5 < wait <= 3.0
    assert not other.reserve("a.test", 3.0, 0.0)[0]
    assert other.trips["reserve"] == 1
    # a Retry-After from elsewhere is learned the same way, and outlasts the booking
    other.block("a.test", 7.5)
    time.sleep(3.5)
    booked, wait = shared.reserve("a.test", 3.0, 0.0)
    assert not booked and 2.5 < wait <= 4.5  # asked again once the booking was over
    assert not shared.reserve("a.test", 3.0, 0.0)[0]
    assert shared.trips["reserve"] == 2
    time.sleep(wait + 0.05)
    assert shared.reserve("a.test", 3.0, 0.0) == (True, 0.0)
    other.close()


def test_get_or_lease_and_put_and_release_take_one_round_trip_each(shared, prefix):
    other = RedisState(REDIS_URL, prefix)
    url = "http://a.test/robots.txt"
    assert shared.get_or_lease("robots", url, 0.5) == (None, True)
    assert other.get_or_lease("robots", url, 0.5) == (None, False)  # the first worker fetches
    shared.put_and_release("robots", url, b"answer", 0.4)
    assert other.get_or_lease("robots", url, 0.5) == (b"answer", False)
    assert other.lease("robots", url, 0.5)  # released with the put
    assert shared.trips == {"get_or_lease/robots": 1, "put_and_release/robots": 1}
    time.sleep(0.45)
    assert shared.get_or_lease("robots", url, 0.5) == (None, False)  # expired; the other holds the lease
    other.close()


def test_answers_read_along_in_the_same_round_trip(shared, prefix, monkeypatch):
    """A worker that finds a site's robots.txt answer cached reads the site's TDMRep
    answer in the same script; the next ask for it then costs no round trip (once)."""
    other = RedisState(REDIS_URL, prefix)
    robots, tdmrep = "http://a.test/robots.txt", "http://a.test/.well-known/tdmrep.json"
    missing = "http://b.test/.well-known/tdmrep.json"
    shared.put_and_release("robots", robots, b"robots answer", 5.0)
    shared.put_and_release("tdmrep", tdmrep, b"tdmrep answer", 5.0)
    found = other.get_or_lease("robots", robots, 0.5, also=[("tdmrep", tdmrep), ("tdmrep", missing)])
    assert found == (b"robots answer", False)
    assert other.trips == {"get_or_lease/robots": 1}
    assert other.read_along("tdmrep", tdmrep) == b"tdmrep answer"
    assert other.read_along("tdmrep", tdmrep) is None  # taken: asked once
    assert other.read_along("tdmrep", missing) is None  # not cached: asked as before
    # read along with a robots.txt answer that is not cached: the lease, and the answer
    other.get_or_lease("robots", "http://c.test/robots.txt", 0.5, also=[("tdmrep", tdmrep)])
    monkeypatch.setattr("scrapy_gdpr.shared.state.READ_ALONG_SECONDS", 0.0)
    time.sleep(0.01)
    assert other.read_along("tdmrep", tdmrep) is None  # too old to use
    assert other.trips == {"get_or_lease/robots": 2}
    # the in-process back end reads nothing along
    local = LocalState()
    local.put("tdmrep", tdmrep, b"x", 5.0)
    assert local.get_or_lease("robots", robots, 0.5, also=[("tdmrep", tdmrep)]) == (None, True)
    assert local.read_along("tdmrep", tdmrep) is None
    other.close()


def test_a_watched_version_is_read_along_with_reservations(shared, prefix):
    other = RedisState(REDIS_URL, prefix)
    assert shared.version_seen("objections") is None
    shared.watch("objections")
    before = time.monotonic()
    shared.reserve("a.test", 0.0)
    value, at = shared.version_seen("objections")
    assert value == 0 and before <= at <= time.monotonic()
    other.bump("objections")
    shared.blocked_for("b.test")
    assert shared.version_seen("objections")[0] == 1
    assert "version/objections" not in shared.trips
    other.close()


def test_unreachable_redis_raises_state_unavailable():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = RedisState(f"redis://127.0.0.1:{port}/0", "x", timeout=0.2)
    with pytest.raises(StateUnavailable, match="cannot be reached"):
        state.reserve("a.test", 1.0)


# --------------------------------------------------------------------------- JSON queue


class Sp(Spider):
    name = "sp"

    def parse(self, response):
        pass

    def parse_item(self, response):
        pass


def test_json_round_trip_keeps_the_request():
    spider = Sp()
    request = Request("https://a.test/p?q=1", method="POST", body=b"\x00\xffdata", headers={"X-A": "1"},
                      callback=spider.parse_item, priority=7, meta={"depth": 2, "tags": ["a", {"b": None}]},
                      cb_kwargs={"n": 1}, dont_filter=True)
    data = redisqueue.dumps(request.to_dict(spider=spider))
    assert b"pickle" not in data and data.startswith(b"{")
    from scrapy.utils.request import request_from_dict

    back = request_from_dict(redisqueue.loads(data), spider=spider)
    assert back.url == request.url and back.method == "POST" and back.body == b"\x00\xffdata"
    assert back.headers.get("X-A") == b"1"
    assert back.callback == spider.parse_item and back.priority == 7 and back.dont_filter
    assert back.meta["tags"] == ["a", {"b": None}] and back.cb_kwargs == {"n": 1}


@pytest.mark.parametrize("meta", [{"obj": object()}, {"b": b"bytes"}, {"nested": {1: "int key"}}])
def test_json_refuses_meta_that_is_not_plain(meta):
    spider = Sp()
    with pytest.raises(redisqueue.NotPlain):
        redisqueue.dumps(Request("https://a.test/", meta=meta).to_dict(spider=spider))


def test_loads_never_unpickles():
    spider = Sp()
    pickled = pickle.dumps(Request("https://a.test/").to_dict(spider=spider))
    with pytest.raises(ValueError, match="decode"):  # read as JSON text only, never unpickled
        redisqueue.loads(pickled)


def test_queue_expiry_in_flight_and_set_aside(prefix):
    client = redis_client()
    spider = Sp()
    queue = redisqueue.JsonPriorityQueue(client, spider, prefix + ":%(spider)s:requests", ttl=0.5, requeue_after=0.3)
    queue.push(Request("https://a.test/1", callback=spider.parse))
    queue.push(Request("https://a.test/2", callback=spider.parse, priority=5))
    first = queue.pop()
    assert first.url == "https://a.test/2" and redisqueue.INFLIGHT_META in first.meta
    # popped but never finished (the worker was killed): back in the queue after its deadline
    time.sleep(0.35)
    second = queue.pop()
    assert second.url == "https://a.test/2"
    queue.ack(second.meta[redisqueue.INFLIGHT_META])
    # set aside while its host is busy: not poppable until then
    other = queue.pop()
    assert other.url == "https://a.test/1"
    queue.delay(other, 0.2)
    queue.ack(other.meta[redisqueue.INFLIGHT_META])
    assert queue.pop() is None
    time.sleep(0.25)
    again = queue.pop()
    assert again.url == "https://a.test/1"
    queue.ack(again.meta[redisqueue.INFLIGHT_META])
    # older than retention.caches: discarded when popped
    queue.push(Request("https://a.test/old", callback=spider.parse, priority=9))
    time.sleep(0.3)
    queue.push(Request("https://a.test/new", callback=spider.parse))
    time.sleep(0.3)
    assert queue.pop().url == "https://a.test/new" and queue.expired == 1
    # and once nothing writes to them, the keys themselves expire
    time.sleep(0.6)
    assert not client.exists(*queue.keys())


def test_push_unseen_filters_and_queues_in_one_round_trip(prefix):
    from scrapy.utils.request import RequestFingerprinter

    client = redis_client()
    spider = Sp()
    df = redisqueue.ExpiringDupeFilter(client, prefix + ":seen", 0.3, RequestFingerprinter())
    queue = redisqueue.JsonPriorityQueue(client, spider, prefix + ":%(spider)s:requests", ttl=0.5)
    request = Request("https://a.test/1", callback=spider.parse)
    assert queue.push_unseen(request, queue.encode(request), df) == 0
    assert queue.push_unseen(request, queue.encode(request), df) is None  # a duplicate: not queued
    assert df.request_seen(request)
    assert queue.trips == {"seen_push": 2}
    assert 0 < client.pttl(queue.key) <= 500 and 0 < client.pttl(prefix + ":seen") <= 300
    popped = queue.pop()
    assert popped.url == "https://a.test/1" and queue.emptied and queue.next_due == -1  # the last one
    assert queue.pop() is None
    # set aside and acknowledged in one round trip: not in flight any more
    queue.delay(popped, 0.2, "a.test", 0.0, done=popped.meta[redisqueue.INFLIGHT_META])
    assert queue.trips["set_aside"] == 1 and "ack" not in queue.trips
    assert not queue.held and client.zcard(queue.inflight_key) == 0 and client.hlen(queue.inflight_data) == 0
    assert queue.pop() is None and 0 < queue.next_due <= 200 and queue.left == 1
    time.sleep(0.25)
    queue.push(Request("https://a.test/3", callback=spider.parse, priority=-1))
    again = queue.pop()
    assert again.url == "https://a.test/1" and not queue.emptied
    queue.ack(queue.pop().meta[redisqueue.INFLIGHT_META])
    # done: the in-flight record goes with the next pop, in its round trip
    queue.ack_later(again.meta[redisqueue.INFLIGHT_META])
    assert not queue.held and client.zcard(queue.inflight_key) == 1
    trips = sum(queue.trips.values())
    assert queue.pop() is None
    assert sum(queue.trips.values()) == trips + 1 and queue.trips["ack"] == 1  # a.test/3's, above
    assert client.zcard(queue.inflight_key) == 0 and client.hlen(queue.inflight_data) == 0
    assert queue.left == 0 and not queue.done
    # or with flush_done (the renewal loop, closing)
    queue.push(Request("https://a.test/2", callback=spider.parse))
    last = queue.pop()
    queue.ack_later(last.meta[redisqueue.INFLIGHT_META])
    queue.flush_done()
    assert client.zcard(queue.inflight_key) == 0 and queue.trips["ack"] == 2
    # set aside when pushed (its host known busy): not poppable before then, one interval apart
    for n in (4, 5):
        late = Request(f"https://b.test/{n}", callback=spider.parse)
        due = queue.push_unseen(late, queue.encode(late), df, 0.2, "b.test", 0.2)
        assert (0.15 < due <= 0.2) if n == 4 else (0.35 < due <= 0.4)
    assert queue.trips["seen_set_aside"] == 2
    assert queue.pop() is None and queue.left == 2 and 0 < queue.next_due <= 200
    time.sleep(0.25)
    assert queue.pop().url == "https://b.test/4" and queue.pop() is None


def _woken_within(queue: redisqueue.JsonPriorityQueue, seconds: float = 2.0) -> bool:
    """Whether ``queue`` is woken within ``seconds`` (a message crosses the network)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if queue.woken():
            return True
        time.sleep(0.01)
    return False


def test_a_push_into_the_empty_queue_wakes_the_idle_workers(prefix):
    """The push that puts the first entry in an empty queue publishes on the queue's
    wake-up channel in its own round trip, and every listening worker reads it without
    one; a push into a queue that has entries publishes nothing (no message per request),
    and a pop that puts a stopped worker's requests back wakes the others too."""
    from scrapy.utils.request import RequestFingerprinter

    client = redis_client()
    spider = Sp()
    key = prefix + ":%(spider)s:requests"
    df = redisqueue.ExpiringDupeFilter(client, prefix + ":seen", 5.0, RequestFingerprinter())
    idle = redisqueue.JsonPriorityQueue(client, spider, key, ttl=5.0)
    other = redisqueue.JsonPriorityQueue(client, spider, key, ttl=5.0, requeue_after=0.2)  # another worker
    assert not idle.woken()  # not listening yet: never woken
    idle.listen()
    try:
        assert idle.pop() is None and not idle.woken()
        first, second = (Request(f"https://a.test/{n}", callback=spider.parse) for n in (1, 2))
        assert other.push_unseen(first, other.encode(first), df) == 0
        assert other.trips == {"seen_push": 1}  # the wake-up went in the push's round trip
        assert _woken_within(idle)
        assert not idle.woken()  # read once
        other.push_unseen(second, other.encode(second), df)
        assert not _woken_within(idle, 0.3)  # the queue was not empty: no message
        assert idle.pop().url == "https://a.test/1"
        assert not _woken_within(idle, 0.3)  # a pop that puts nothing back: no message
        # a worker stops holding a request: the next pop, after its deadline, puts it back
        held = other.pop()
        assert held.url == "https://a.test/2" and idle.pop() is None
        other.forget([held.meta[redisqueue.INFLIGHT_META]])
        time.sleep(0.25)
        assert other.pop().url == "https://a.test/2" and other.requeued == 1
        assert _woken_within(idle)
        # a request queued as it is (dont_filter, or put back when a worker closes)
        other.push(Request("https://a.test/3", callback=spider.parse))
        assert _woken_within(idle)
    finally:
        idle.stop_listening()
    assert not idle.woken()


def test_listening_while_redis_is_unreachable_is_tried_again(prefix):
    """A worker that opens while Redis is unreachable is not left listening on a dead
    subscription: ``listen`` raises (the scheduler counts Redis as down) and leaves the
    queue not listening, so that it listens when Redis answers again."""
    import redis
    from scrapy.settings import Settings
    from scrapy_redis import connection

    spider = Sp()
    key = prefix + ":%(spider)s:requests"
    # a worker's client, as scrapy-redis makes it (no back-off between retries)
    down = connection.from_settings(Settings({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}))
    queue = redisqueue.JsonPriorityQueue(down, spider, key, ttl=5.0)
    assert queue.listening is None
    with pytest.raises(redis.exceptions.ConnectionError):
        queue.listen()
    assert queue.listening is None and not queue.woken()
    queue.server = redis_client()  # Redis answers again
    queue.listen()
    assert queue.listening
    other = redisqueue.JsonPriorityQueue(redis_client(), spider, key, ttl=5.0)
    other.push(Request("https://a.test/1", callback=spider.parse))
    assert _woken_within(queue)
    queue.stop_listening()
    assert queue.listening is None


def test_a_subscription_whose_connection_is_killed_still_wakes(prefix):
    """The subscription's own connection closed by Redis (``CLIENT KILL``, a restart, a
    proxy's idle timeout): the worker is still woken by the next push."""
    from scrapy.settings import Settings
    from scrapy_redis import connection

    spider = Sp()
    key = prefix + ":%(spider)s:requests"
    idle = redisqueue.JsonPriorityQueue(connection.from_settings(Settings({"REDIS_URL": REDIS_URL})), spider, key,
                                        ttl=5.0)
    idle.listen()
    host, port = idle._wakeups.connection._sock.getsockname()[:2]
    admin = redis_client()
    assert admin.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}") == 1
    assert not _woken_within(idle, 0.2)
    redisqueue.JsonPriorityQueue(admin, spider, key, ttl=5.0).push(Request("https://a.test/1", callback=spider.parse))
    assert _woken_within(idle)
    idle.stop_listening()


def test_a_redis_user_without_channels_still_queues_and_is_told_why_it_is_not_woken(prefix, caplog):
    """Redis 7 gives a new ACL user no pub/sub channels: the pushes still queue (the
    wake-up is published with ``redis.pcall``, its refusal ignored), and a worker that
    cannot subscribe says so with the fix, and looks again once a second instead."""
    import logging
    import uuid

    import redis
    from scrapy.utils.request import RequestFingerprinter

    admin = redis_client()
    user = f"gdpr-test-{uuid.uuid4().hex[:8]}"
    admin.acl_setuser(user, enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all"], reset_channels=True)
    try:
        kwargs = admin.connection_pool.connection_kwargs
        client = redis.Redis(host=kwargs["host"], port=kwargs["port"], db=kwargs.get("db", 0), username=user,
                             password="pw")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.publish(prefix + ":probe", "1")  # the user may indeed not publish
        spider = Sp()
        key = prefix + ":%(spider)s:requests"
        df = redisqueue.ExpiringDupeFilter(client, prefix + ":seen", 5.0, RequestFingerprinter())
        idle = redisqueue.JsonPriorityQueue(client, spider, key, ttl=5.0)
        other = redisqueue.JsonPriorityQueue(client, spider, key, ttl=5.0)
        with caplog.at_level(logging.INFO, logger="scrapy_gdpr.shared.queue"):
            idle.listen()
        assert "Idle workers are not woken when requests are queued" in caplog.text
        assert f"ACL SETUSER <user> &{idle.wake_channel}" in caplog.text
        assert idle.pop() is None
        first = Request("https://a.test/1", callback=spider.parse)
        assert other.push_unseen(first, other.encode(first), df) == 0  # queued all the same
        other.push(Request("https://a.test/2", callback=spider.parse, dont_filter=True))
        assert not idle.woken()
        assert {idle.pop().url, idle.pop().url} == {"https://a.test/1", "https://a.test/2"}
        idle.stop_listening()
        client.close()
    finally:
        admin.acl_deluser(user)


def test_seen_fingerprints_expire(prefix):
    from scrapy.utils.request import RequestFingerprinter

    client = redis_client()
    df = redisqueue.ExpiringDupeFilter(client, prefix + ":seen", 0.3, RequestFingerprinter())
    assert not df.request_seen(Request("https://a.test/x"))
    assert df.request_seen(Request("https://a.test/x"))
    assert 0 < client.pttl(prefix + ":seen") <= 300
    time.sleep(0.35)
    assert not df.request_seen(Request("https://a.test/x"))


# --------------------------------------------------------------------------- add-on wiring


def test_addon_wires_scrapy_redis_with_json_and_refuses_pickle():
    from scrapy.settings import Settings

    from scrapy_gdpr.shared.wiring import update_settings

    settings = Settings({"SCHEDULER_PERSIST": True})
    update_settings(settings, None)  # no GDPR_STATE_URL: nothing changes
    assert settings.get("SCHEDULER") == "scrapy.core.scheduler.Scheduler"
    settings = Settings({"GDPR_STATE_URL": "redis://127.0.0.1:6379/3"})
    update_settings(settings, None)
    assert settings.get("SCHEDULER") == redisqueue.SCHEDULER
    assert settings.get("SCHEDULER_SERIALIZER") == "scrapy_gdpr.shared.queue"
    assert settings.get("REDIS_URL") == "redis://127.0.0.1:6379/3"
    assert redisqueue.QueueAckMiddleware in settings.getdict("SPIDER_MIDDLEWARES")
    pickled = Settings({"GDPR_STATE_URL": "redis://127.0.0.1:6379/3",
                        "SCHEDULER_SERIALIZER": "scrapy_redis.picklecompat"})
    with pytest.raises(ValueError, match="pickles queued requests"):
        update_settings(pickled, None)


def test_a_feed_overwritten_at_start_is_warned_about(caplog):
    """A worker started again after a crash must not overwrite the lines its killed run
    wrote: the shared queue counts their requests as done."""
    from scrapy.settings import Settings

    from scrapy_gdpr.shared.wiring import update_settings

    with caplog.at_level("WARNING", logger="scrapy_gdpr.shared.queue"):
        update_settings(Settings({"GDPR_STATE_URL": "redis://127.0.0.1:6379/3", "FEEDS": {
            "out/items.jsonl": {"format": "jsonl", "overwrite": True},
            "out/appended.jsonl": {"format": "jsonl"},
            "out/items-%(time)s.jsonl": {"format": "jsonl", "overwrite": True},
            "s3://bucket/items.jsonl": {"format": "jsonl", "overwrite": True},
        }}), None)
    warned = [r.getMessage() for r in caplog.records if "overwritten when the crawl starts" in r.getMessage()]
    assert len(warned) == 1 and "out/items.jsonl" in warned[0] and "Fix: -o (append" in warned[0], warned


def test_scrapy_redis_without_shared_state_is_refused():
    from scrapy.settings import Settings

    from scrapy_gdpr.shared.wiring import update_settings

    with pytest.raises(ValueError, match="GDPR_STATE_URL is unset"):
        update_settings(Settings({"SCHEDULER": "scrapy_redis.scheduler.Scheduler",
                                  "REDIS_URL": "redis://127.0.0.1:6379/0"}), None)
    with pytest.raises(ValueError, match="redis://"):
        update_settings(Settings({"GDPR_STATE_URL": "127.0.0.1:6379"}), None)


_WITHOUT_REDIS = """
import sys


class NoRedis:
    # the optional extra (scrapy-gdpr[redis]) not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("redis", "scrapy_redis"):
            raise ImportError(f"No module named {name!r}")


sys.meta_path.insert(0, NoRedis())
from scrapy.settings import Settings

from scrapy_gdpr.addon import Addon  # imports every component the add-on wires
from scrapy_gdpr.shared.wiring import update_settings

update_settings(Settings(), None)  # one machine: nothing to wire, nothing imported
print("one machine: ok", "redis" in sys.modules, "scrapy_redis" in sys.modules)
try:
    update_settings(Settings({"GDPR_STATE_URL": "redis://127.0.0.1:6379/0"}), None)
except ValueError as exc:
    print("several machines:", exc)
"""


def test_the_addon_works_without_the_redis_extra():
    """scrapy-redis and redis are an optional extra: without them the add-on imports
    and wires a crawl on one machine; GDPR_STATE_URL then stops the crawl saying what
    to install."""
    import subprocess
    import sys

    from tests.utils import ROOT

    result = subprocess.run([sys.executable, "-c", _WITHOUT_REDIS], capture_output=True, text=True,
                            cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "one machine: ok False False", result.stdout
    assert lines[1].startswith("several machines: ") and "pip install 'scrapy-gdpr[redis]'" in lines[1], result.stdout


def test_each_set_aside_request_is_one_live_workers_turn(prefix):
    client = redis_client()
    spider = Sp()
    key = prefix + ":%(spider)s:requests"
    one = redisqueue.JsonPriorityQueue(client, spider, key, ttl=5.0)
    two = redisqueue.JsonPriorityQueue(client, spider, key, ttl=5.0)  # another worker
    for n in range(4):
        request = Request(f"https://a.test/{n}", callback=spider.parse)
        one.delay(request, 0.5 + n / 10)
    assert one.pop() is None and one.live == 1 and one.rank == 0
    assert 0 < one.turn_wait <= 500  # the only live worker: every turn is its own
    assert two.pop() is None and two.live == 2
    assert one.pop() is None and {one.rank, two.rank} == {0, 1}
    entries = client.zrange(one.delayed_key, 0, -1, withscores=True)
    turns = [int(member.split(b"|")[1]) for member, _ in entries]
    assert len(turns) == 4 and turns == sorted(turns)  # consecutive turns, in the order they were set aside
    # every set-aside request is the turn of exactly one of them, and they alternate
    assert all(sum(q.is_mine(turn) for q in (one, two)) == 1 for turn in turns)
    assert [one.is_mine(turn) for turn in turns] in ([True, False] * 2, [False, True] * 2)
    # each one's next turn: the first two set-aside requests, one each
    assert {q.redis_now + q.turn_wait for q in (one, two)} == {int(due) for _, due in entries[:2]}
    assert 0 < client.pttl(one.key + ":workers") <= 2 * redisqueue.LIVE_SECONDS * 1000


def test_an_idle_worker_looks_again_at_its_next_turn_and_stays_live():
    """After a pop that found nothing for it, a worker pops again when the next set-aside
    request it may take falls due (no look in between: the workers whose turns fall due
    pop the queue meanwhile), at most TURN_WAIT_MAX_SECONDS later, which is less than the
    time a worker stays live without popping (else its turns would go to the others);
    when nothing is set aside, within QUIET_SECONDS, for what other workers queue."""
    assert redisqueue.look_again_in(0) == 0.0
    assert redisqueue.look_again_in(1500) == 1.5
    assert redisqueue.look_again_in(60_000) == redisqueue.TURN_WAIT_MAX_SECONDS
    assert redisqueue.TURN_WAIT_MAX_SECONDS < redisqueue.LIVE_SECONDS
    assert redisqueue.look_again_in(-1) == redisqueue.QUIET_SECONDS == 1.0


def _drain(queue: redisqueue.JsonPriorityQueue) -> list[str]:
    """Pop until nothing is handed out, as a worker that pops without stopping."""
    got = []
    while (request := queue.pop()) is not None:
        got.append(request.url)
        queue.ack(request.meta[redisqueue.INFLIGHT_META])
    return got


def test_a_worker_that_pops_without_stopping_takes_only_its_own_turns(prefix):
    """Three workers; one of them sets aside six requests for one host, 30 ms apart (a
    multiple of the number of workers, as Crawl-delay 2 plus the 0.1 s margin is of 3
    workers), and then pops without stopping once they are due. It takes only its own
    turns: the others' wait for them (here: a grace longer than the test), whoever pops
    first, so each worker gets two."""
    client = redis_client()
    spider = Sp()
    key = prefix + ":%(spider)s:requests"
    workers = [redisqueue.JsonPriorityQueue(client, spider, key, ttl=30.0) for _ in range(3)]
    for queue in workers:
        queue.grace = 30.0  # no turn is taken over in this test
        assert queue.pop() is None  # each one live
    first = workers[0]
    for n in range(6):
        first.delay(Request(f"https://h.test/{n}", callback=spider.parse), 0.05, "h.test", 0.03)
    time.sleep(0.3)  # all due
    got = [_drain(first)]
    got += [_drain(queue) for queue in workers[1:]]
    assert [len(urls) for urls in got] == [2, 2, 2], got
    assert sorted(url for urls in got for url in urls) == [f"https://h.test/{n}" for n in range(6)]
    assert client.zcard(first.delayed_key) == 0 and client.zcard(first.inflight_key) == 0


def test_a_due_turn_not_taken_is_anyones_after_the_grace(prefix):
    """The worker whose turn it is did not pop (it stopped, or is busy): once the
    request is overdue by the grace, another worker takes it."""
    client = redis_client()
    spider = Sp()
    key = prefix + ":%(spider)s:requests"
    one, two = (redisqueue.JsonPriorityQueue(client, spider, key, ttl=30.0, grace=1.0) for _ in range(2))
    assert one.pop() is None and two.pop() is None and one.pop() is None
    for n in range(2):
        one.delay(Request(f"https://h.test/{n}", callback=spider.parse), 0.05)
    assert one.pop() is None and 0 <= one.turn_wait <= 50
    time.sleep(0.1)  # both due, neither overdue
    mine = _drain(one)
    assert len(mine) == 1 and one.pop() is None
    # the other's turn: this worker looks again when the grace has passed
    assert 500 < one.turn_wait <= 1000
    time.sleep(one.turn_wait / 1000 + 0.05)
    theirs = _drain(one)
    assert sorted(mine + theirs) == ["https://h.test/0", "https://h.test/1"]
    assert one.pop() is None and one.turn_wait == -1 and one.left == 0


def test_the_pop_says_when_the_popped_requests_host_is_free(prefix):
    """A request queued with its download slot: the pop answers "blocked for" for that
    host as the state's reservation script does, in the same round trip."""
    client = redis_client()
    spider = Sp()
    state = RedisState(REDIS_URL, prefix)
    queue = redisqueue.JsonPriorityQueue(client, spider, prefix + ":%(spider)s:requests", ttl=30.0,
                                         host_keys=state.host_keys())
    assert state.reserve("busy.test", 1.5) == (True, 0.0)  # booked now: free again in 1.5 s
    state.block("paused.test", 3.0)  # a Retry-After
    for n, host in enumerate(("busy.test", "paused.test", "free.test")):
        request = Request(f"https://{host}/{n}", callback=spider.parse, priority=-n)
        queue.push(request, queue.encode(request, host))
    queue.push(Request("https://old.test/", callback=spider.parse, priority=-9))  # queued without its slot
    trips = sum(queue.trips.values())
    answers = []
    for _ in range(4):
        request = queue.pop()
        answers.append((request.url, queue.host_wait))
        queue.ack_later(request.meta[redisqueue.INFLIGHT_META])
    assert sum(queue.trips.values()) == trips + 4 and state.trips.get("blocked_for", 0) == 0
    (busy, busy_told), (paused, paused_told), (free, free_told), (old, old_told) = answers
    assert busy == "https://busy.test/0" and busy_told[0] == "busy.test" and 1.3 < busy_told[1] <= 1.5
    assert paused == "https://paused.test/1" and paused_told[0] == "paused.test" and 2.8 < paused_told[1] <= 3.0
    assert free == "https://free.test/2" and free_told[0] == "free.test" and free_told[1] == 0
    assert old == "https://old.test/" and old_told is None
    # the same as the state's own answer, and remembered as its answer is
    assert abs(state.blocked_for("busy.test") - busy_told[1]) < 0.2
    assert state.told_blocked_for("paused.test", paused_told[1], paused_told[2]) == paused_told[1]
    assert 2.5 < state.known_busy("paused.test") <= 3.0
    assert redisqueue.loads(redisqueue.dumps(Request("https://a.test/").to_dict(), "a.test"))["url"] == "https://a.test/"
    state.close()

"""Objections that reach every crawl machine: a table beside the PostgreSQL ledger,
and a version counter in the shared state.

``scrapy gdpr-erase`` on any machine appends its objections to the policy's list
file as before, and, when ``GDPR_STATE_URL`` is set and the ledger is PostgreSQL,
also writes them to the table ``gdpr_shared_objections`` (in the ledger's schema)
and bumps the ``objections`` version in Redis.

Every worker's objection list (:class:`~scrapy_gdpr.gate.objections.ObjectionList`)
reads the version at most every :data:`SYNC_SECONDS` when it is consulted, and on a
change adds the rows it has not seen. The list is the one every objection check
uses: the request gate (before robots.txt and any contact), the item gate and the
politeness middleware's last look right before a request leaves. Between requests
the crawl also looks every :data:`SYNC_SECONDS` by itself, so an idle worker holds
the erasure too before its next request. A request sent more than ``SYNC_SECONDS``
after ``gdpr-erase`` finished (plus one query, well under a second) is checked
against the erasure: **the stated bound is 2 seconds**. When nothing changed, a
lookup costs one clock comparison (the version is read at most every
``SYNC_SECONDS``).

Fail closed: when PostgreSQL cannot be read, the list raises
:class:`~scrapy_gdpr.gate.objections.ObjectionFileError` and the gate refuses the request
as undecided; when Redis cannot be reached, the politeness middleware holds every
request until it can, and checks the objections again before sending.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from scrapy_gdpr.gate.objections import ObjectionFileError
from scrapy_gdpr.shared.state import StateUnavailable

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from scrapy_gdpr.gate.objections import ObjectionList
    from scrapy_gdpr.shared.state import GateState

logger = logging.getLogger(__name__)

TABLE = "gdpr_shared_objections"
VERSION = "objections"
#: How often a worker looks at the version counter (seconds).
SYNC_SECONDS = 1.0
#: The bound the documentation and the tests state (seconds).
BOUND_SECONDS = 2.0


def is_postgres(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgresql://", "postgres://"))


class ObjectionTable:
    """The shared objection rows (``id``, ``line``: ``"kind value"``, ``added_at``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None

    def _connect(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=3)
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (id BIGSERIAL PRIMARY KEY, line TEXT NOT NULL, "
                "added_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
        return self._conn

    def add(self, lines: list[str]) -> None:
        conn = self._connect()
        with conn.transaction():
            for line in lines:
                conn.execute(f"INSERT INTO {TABLE} (line) VALUES (%s)", (line,))  # noqa: S608 - TABLE is a constant

    def since(self, last_id: int) -> list[tuple[int, str]]:
        rows = self._connect().execute(
            f"SELECT id, line FROM {TABLE} WHERE id > %s ORDER BY id",  # noqa: S608 - TABLE is a constant
            (last_id,),
        )
        return [(int(i), str(line)) for i, line in rows.fetchall()]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class ObjectionSync:
    """Keeps one worker's objection list up to date with the shared table."""

    def __init__(self, state: GateState, table: ObjectionTable) -> None:
        self.state = state
        self.table = table
        self.version: int | None = None
        self.last_id = 0
        self.checked = float("-inf")

    def __call__(self, objections: ObjectionList) -> None:
        now = time.monotonic()
        seen = self.state.version_seen(VERSION)
        if seen is not None and seen[1] > self.checked and (seen[0] != self.version or now - seen[1] < SYNC_SECONDS):
            # read along with a reservation since the last look: no round trip of its own;
            # the next look is due SYNC_SECONDS after that read, so no lookup uses a
            # version older than SYNC_SECONDS, and a change is taken up at once
            version, self.checked = seen
        elif now - self.checked < SYNC_SECONDS:
            return
        else:
            try:
                version = self.state.version(VERSION)
            except StateUnavailable:
                return  # nothing is sent while Redis is away; checked again before sending
            self.checked = now
        if version == self.version:
            return
        try:
            rows = self.table.since(self.last_id)
        except Exception as exc:
            self.checked = float("-inf")
            raise ObjectionFileError(
                f"the shared objection list ({TABLE}) cannot be read: {type(exc).__name__}: {exc}. Fix: check "
                "that the PostgreSQL ledger is reachable"
            ) from exc
        for row_id, line in rows:
            kind, _, value = line.partition(" ")
            try:
                objections.add(kind, value)
            except ValueError as exc:
                logger.warning("Skipping shared objection %(id)d %(line)r: %(exc)s",
                               {"id": row_id, "line": line, "exc": exc})
            self.last_id = max(self.last_id, row_id)
        if rows:
            logger.info("Shared objection list: %(n)d new entr(ies) (version %(v)d)", {"n": len(rows), "v": version})
        self.version = version


def attach(objections: ObjectionList, state: GateState, ledger_url: str | None,
           crawler: Crawler | None = None) -> ObjectionSync | None:
    """Make ``objections`` follow the shared table, when the state is shared and the
    ledger is PostgreSQL. Attaching twice keeps the first sync. With ``crawler``, the
    list is also refreshed while the spider is open, between requests."""
    if not state.shared or not is_postgres(ledger_url):
        return None
    for source in objections.sources:
        if isinstance(source, ObjectionSync):
            return source
    sync = ObjectionSync(state, ObjectionTable(str(ledger_url)))
    state.watch(VERSION)
    objections.sources.append(sync)
    if crawler is not None:
        _poll(crawler, objections)
    return sync


def _poll(crawler: Crawler, objections: ObjectionList) -> None:
    """Refresh ``objections`` between spider_opened and spider_closed, so the shared
    table reaches a worker that has no request to check."""
    from scrapy import signals
    from twisted.internet import task

    def refresh() -> None:
        try:
            objections.refresh()
        except ObjectionFileError as exc:
            # every lookup raises it too, and the gate refuses as undecided meanwhile
            logger.debug("Shared objection list not refreshed: %(exc)s", {"exc": exc})

    loop = task.LoopingCall(refresh)

    def opened() -> None:
        if not loop.running:
            # twice per SYNC_SECONDS: the sync itself reads the version at most once per
            # SYNC_SECONDS, so a change is seen at most ~1.5 * SYNC_SECONDS after it
            loop.start(SYNC_SECONDS / 2, now=False)

    def closed() -> None:
        if loop.running:
            loop.stop()

    crawler.signals.connect(opened, signal=signals.spider_opened, weak=False)
    crawler.signals.connect(closed, signal=signals.spider_closed, weak=False)


def shared_objections(crawler: Crawler, objections: ObjectionList, ledger_url: str | None) -> ObjectionSync | None:
    """Attach the shared table to the crawl's objection list when ``GDPR_STATE_URL``
    is set (whichever gate component is built first)."""
    from scrapy_gdpr.shared.state import gate_state, state_url

    if not state_url(crawler.settings) or not is_postgres(ledger_url):
        return None
    return attach(objections, gate_state(crawler), ledger_url, crawler)


def publish(settings: Any, lines: list[str]) -> str:
    """After an erasure: write ``lines`` to the shared table and bump the version.
    Returns what was done, for the command's output ("" when not configured)."""
    from scrapy_gdpr.shared.state import open_state, state_url

    url = state_url(settings)
    if not url or not lines:
        return ""
    ledger = settings.get("GDPR_LEDGER")
    if not is_postgres(ledger):
        return ("warning: GDPR_STATE_URL is set but the ledger is not PostgreSQL: the objections reach the other "
                "machines only through their objection list files")
    table = ObjectionTable(str(ledger))
    try:
        table.add(lines)
    finally:
        table.close()
    state = open_state(url, str(settings.get("GDPR_STATE_PREFIX") or "gdpr"))
    try:
        version = state.bump(VERSION)
    finally:
        state.close()
    return f"shared objections: {len(lines)} added, version {version} (every worker refuses them within {BOUND_SECONDS:g} s)"

"""The retention ledger: every stored item and file, where it is and when it expires.

One row per stored thing (``kind``): ``item`` (an exported item, recorded at
``item_scraped``), ``feed_line`` (that item inside one feed file, recorded at
``feed_slot_closed``), ``feed_file`` (the feed file as a whole), ``image``,
``thumbnail``, ``file`` and ``screenshot`` (objects under IMAGES_STORE/FILES_STORE).

Back ends, chosen by URL (``GDPR_LEDGER``):

* ``sqlite:///relative/path.sqlite3`` or ``sqlite:////absolute/path`` (default
  ``sqlite:///gdpr-ledger.sqlite3``): one file, WAL mode, no set-up.
* ``postgresql://user@host:5432/db`` (psycopg 3): for several crawl machines. Add
  ``?options=-csearch_path%3Dgdpr`` to keep the tables in their own schema.

Both share this interface and the same schema, versioned in ``schema_version``
and created by the ordered steps in :data:`MIGRATIONS`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import unquote

from scrapy_gdpr.urls import host_of, mask_password

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

logger = logging.getLogger(__name__)

KINDS = ("item", "feed_line", "feed_file", "image", "thumbnail", "file", "screenshot")
#: Kinds that are objects on disk (deleted by unlinking the path in ``location``).
OBJECT_KINDS = ("image", "thumbnail", "file", "screenshot")

_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


@lru_cache(maxsize=4096)
def format_ts(moment: datetime) -> str:
    """The fixed-width UTC form used in the SQLite ledger (sorts as text)."""
    # cached: rows written together mostly share their times (strftime is slow)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime(_TS_FORMAT)


def parse_ts(value: str | datetime) -> datetime:
    """Parse an ISO 8601 time (``Z`` or offset); naive times are taken as UTC."""
    if isinstance(value, datetime):
        moment = value
    else:
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@lru_cache(maxsize=4096)
def domain_key(domain: str) -> str:
    """``www.example.org`` -> ``org.example.www.``: a domain and its subdomains share a prefix."""
    labels = [p for p in domain.lower().rstrip(".").split(".") if p]
    return ".".join(reversed(labels)) + "."


#: ``scheme://host[:port]`` followed by the path, query, fragment or the end: the
@dataclass
class Record:
    """One stored thing."""

    kind: str
    location: str
    url: str
    expires_at: datetime
    item_id: str = ""
    object_url: str = ""
    domain: str = ""
    spider: str = ""
    purpose: str = ""
    lawful_basis: str = ""
    policy_fingerprint: str = ""
    collected_at: datetime | None = None
    content_hash: str = ""
    id: int | None = None
    recorded_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ledger record kind must be one of {KINDS}, not {self.kind!r}")
        if not self.domain:
            self.domain = host_of(self.url)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("extra")
        for key in ("expires_at", "collected_at", "recorded_at"):
            if out[key] is not None:
                out[key] = parse_ts(out[key]).isoformat()
        return out


@dataclass(frozen=True)
class Selector:
    """What a data-subject request matches: ``url``, ``prefix``, ``domain`` or ``contains``."""

    kind: str
    value: str

    KINDS = ("url", "prefix", "domain", "contains")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"selector kind must be one of {self.KINDS}, not {self.kind!r}")
        if not self.value.strip():
            raise ValueError("a selector needs a value")

    def matches_url(self, url: str) -> bool:
        """Whether a source or object URL is covered (used on feed lines and files)."""
        if not url:
            return False
        if self.kind == "url":
            return url == self.value
        if self.kind == "prefix":
            return url.startswith(self.value)
        if self.kind == "domain":
            host = host_of(url)
            target = self.value.lower().rstrip(".")
            return host == target or host.endswith("." + target)
        return self.value in url

    def __str__(self) -> str:
        return f"{self.kind} {self.value}"


# --------------------------------------------------------------------------- migrations

#: Ordered schema steps. Step N brings the schema from version N-1 to N; a ledger
#: newer than this code knows is refused (fail closed) rather than written to.
#: ``{id}`` is the auto-increment primary key type and ``{ts}`` the timestamp type
#: of the back end.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE ledger_records (
            id {id},
            kind TEXT NOT NULL,
            location TEXT NOT NULL,
            item_id TEXT NOT NULL DEFAULT '',
            url TEXT NOT NULL,
            object_url TEXT NOT NULL DEFAULT '',
            domain TEXT NOT NULL DEFAULT '',
            domain_key TEXT NOT NULL DEFAULT '',
            spider TEXT NOT NULL DEFAULT '',
            purpose TEXT NOT NULL DEFAULT '',
            lawful_basis TEXT NOT NULL DEFAULT '',
            policy_fingerprint TEXT NOT NULL DEFAULT '',
            collected_at {ts},
            expires_at {ts} NOT NULL,
            content_hash TEXT NOT NULL DEFAULT '',
            recorded_at {ts} NOT NULL
        )""",
        # erase by URL / prefix (range scan) and by image URL
        "CREATE INDEX ledger_records_url ON ledger_records (url)",
        "CREATE INDEX ledger_records_object_url ON ledger_records (object_url)",
        # erase by domain: a domain and its subdomains are one key range
        "CREATE INDEX ledger_records_domain_key ON ledger_records (domain_key)",
        # purge by expiry
        "CREATE INDEX ledger_records_expires ON ledger_records (expires_at)",
        # which rows live in a file; an item's rows
        "CREATE INDEX ledger_records_location ON ledger_records (location)",
        "CREATE INDEX ledger_records_item ON ledger_records (item_id)",
    ],
    [
        # Most rows have no object URL. After ANALYZE (PRAGMA optimize) a full index
        # on object_url looks useless to SQLite's planner (one value for nearly every
        # row), so the OR in an erasure by URL fell back to a full table scan. A
        # partial index holds only rows with an object URL and stays cheap to use;
        # queries name ``object_url <> ''`` so that it applies.
        "DROP INDEX ledger_records_object_url",
        "CREATE INDEX ledger_records_object_url ON ledger_records (object_url) WHERE object_url <> ''",
        # the one feed_file row of a feed file is found without reading the file's lines
        "DROP INDEX ledger_records_location",
        "CREATE INDEX ledger_records_location ON ledger_records (location, kind)",
    ],
]

_COLUMNS = (
    "kind", "location", "item_id", "url", "object_url", "domain", "domain_key", "spider", "purpose",
    "lawful_basis", "policy_fingerprint", "collected_at", "expires_at", "content_hash", "recorded_at",
)


#: Rows per SQLite INSERT: within the bound-variable limit of SQLite before 3.32 (999).
_SQLITE_ROWS_PER_INSERT = 999 // len(_COLUMNS)


@lru_cache(maxsize=8)
def _sqlite_insert(rows: int) -> str:
    values = "(" + ", ".join("?" for _ in _COLUMNS) + ")"
    return f"INSERT INTO ledger_records ({', '.join(_COLUMNS)}) VALUES " + ", ".join([values] * rows)


class LedgerError(RuntimeError):
    """The ledger cannot be opened or used, or is of an unknown (newer) schema. The
    message names the file or database, what is wrong and the fix."""


class LedgerMissing(LedgerError):
    """The ledger does not exist (and was not to be created)."""


def explain_error(target: str, exc: BaseException, *, folder: Path | None = None,
                  reading: bool = False) -> LedgerError:
    """A :class:`LedgerError` for a database error: the file or database, what is
    wrong and the fix (never a bare driver message). ``reading``: the command only
    reads the ledger."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = text.lower()
    where = f" (folder {folder})" if folder is not None else ""
    if reading and ("permission denied" in low or type(exc).__name__ == "InsufficientPrivilege"):
        fix = (f"give the user running the command read access to the file and its folder{where}"
               if folder is not None else "grant the role USAGE on the ledger's schema and SELECT on its tables")
        return LedgerError(f"the ledger {target} cannot be read: {text}. Fix: {fix}")
    if "readonly" in low or "read-only" in low or "permission denied" in low or "insufficient" in low \
            or type(exc).__name__ in ("InsufficientPrivilege", "ReadOnlySqlTransaction"):
        fix = (f"give the user running the command write access to the file and its folder{where}"
               if folder is not None else "grant the role INSERT, UPDATE and DELETE on ledger_records "
               "(and CREATE on its schema for upgrades), or run the command as a role that has them")
        return LedgerError(f"the ledger {target} cannot be written: {text}. Fix: {fix}")
    if "unable to open" in low or "cannot open" in low:
        return LedgerError(f"cannot open the ledger {target}{where}: {text}. Fix: check that the folder exists "
                           "and that the user running the command may read and write it")
    if "locked" in low or "busy" in low:
        return LedgerError(f"the ledger {target} is locked by another process: {text}. Fix: run again when "
                           "the other crawl or purge has finished")
    return LedgerError(f"the ledger {target} failed: {text}")


class Ledger:
    """Common logic; subclasses provide the connection and the SQL dialect."""

    placeholder = "?"
    explain = "EXPLAIN QUERY PLAN"
    id_type = "INTEGER PRIMARY KEY AUTOINCREMENT"
    ts_type = "TEXT"
    url: str

    #: opened for reading only (no migration, no writes)
    readonly = False

    def __init__(self, migrations: Sequence[Sequence[str]] | None = None) -> None:
        self.migrations = list(MIGRATIONS if migrations is None else migrations)
        self._lock = threading.RLock()

    # -- back-end specifics -----------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[Any]:
        """A cursor in one transaction, under the ledger's lock: committed when the
        block ends, rolled back on any error."""
        with self._lock:
            conn = self._conn()
            cur = conn.cursor()
            try:
                yield cur
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

    def _conn(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _begin_migration(self, cur: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _to_db_ts(self, moment: datetime | None) -> Any:
        return None if moment is None else format_ts(moment)

    def _from_db_ts(self, value: Any) -> datetime | None:
        return None if value is None else parse_ts(value)

    def close(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def optimize(self) -> None:
        """Keep query plans good (called before a purge)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema -----------------------------------------------------------------
    def _sql(self, text: str) -> str:
        return text.replace("?", self.placeholder) if self.placeholder != "?" else text

    def schema_version(self) -> int:
        with self._lock:
            cur = self._conn().cursor()
            try:
                cur.execute("SELECT MAX(version) FROM schema_version")
            except Exception as exc:
                self._conn().rollback()
                if "no such table" in str(exc) or type(exc).__name__ == "UndefinedTable":
                    return 0
                raise
            row = cur.fetchone()
            self._conn().commit()
            return int(row[0] or 0) if row else 0

    def open_schema(self, *, create: bool = True, readonly: bool = False) -> None:
        """Check the schema and migrate it only when it is behind: a ledger whose schema
        is current is opened without a single write, so read-only commands need only
        read rights. A ledger without tables is :class:`LedgerMissing` unless
        ``create``; one that needs migrating cannot be opened ``readonly``."""
        current = self.schema_version()
        if current == len(self.migrations):
            return
        if current > len(self.migrations):
            raise LedgerError(
                f"the ledger {self.display} has schema version {current}, newer than this scrapy-gdpr "
                f"knows ({len(self.migrations)}); upgrade scrapy-gdpr"
            )
        if current == 0 and not create:
            raise LedgerMissing(f"the ledger {self.display} has no ledger tables: no crawl has written to it. "
                                "Fix: point GDPR_LEDGER (or --ledger) at the ledger your crawls use")
        if readonly:
            raise LedgerError(f"the ledger {self.display} has schema version {current}, older than this scrapy-gdpr "
                              f"uses ({len(self.migrations)}). Fix: run a crawl or `scrapy gdpr-purge` once with "
                              "write rights to upgrade it")
        self.migrate()

    @property
    def display(self) -> str:
        return mask_password(self.url)

    def check_writable(self) -> None:
        """Raise (a database error) unless rows can be written and deleted, before a
        command changes anything anywhere."""
        with self._lock:
            conn = self._conn()
            self._probe_write(conn)

    def _probe_write(self, conn: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def migrate(self) -> int:
        """Apply every pending migration step in order; return the schema version."""
        with self._lock:
            conn = self._conn()
            cur = conn.cursor()
            self._begin_migration(cur)
            try:
                cur.execute(f"CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at {self.ts_type} NOT NULL)")
                cur.execute("SELECT MAX(version) FROM schema_version")
                row = cur.fetchone()
                current = int(row[0] or 0) if row else 0
                if current > len(self.migrations):
                    raise LedgerError(
                        f"the ledger {self.url} has schema version {current}, newer than this scrapy-gdpr "
                        f"knows ({len(self.migrations)}); upgrade scrapy-gdpr"
                    )
                for version in range(current + 1, len(self.migrations) + 1):
                    for statement in self.migrations[version - 1]:
                        cur.execute(statement.format(id=self.id_type, ts=self.ts_type))
                    cur.execute(
                        self._sql("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)"),
                        (version, self._to_db_ts(datetime.now(UTC))),
                    )
                    logger.info("GDPR ledger %(url)s migrated to schema version %(v)d", {"url": self.url, "v": version})
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            return len(self.migrations)

    # -- writing ----------------------------------------------------------------
    def add(self, records: Iterable[Record]) -> int:
        now = datetime.now(UTC)
        rows = [
            (
                r.kind, r.location, r.item_id, r.url, r.object_url, r.domain, domain_key(r.domain), r.spider,
                r.purpose, r.lawful_basis, r.policy_fingerprint, self._to_db_ts(r.collected_at),
                self._to_db_ts(r.expires_at), r.content_hash, self._to_db_ts(r.recorded_at or now),
            )
            for r in records
        ]
        if not rows:
            return 0
        with self._lock:
            conn = self._conn()
            try:
                self._insert_rows(conn.cursor(), rows)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        return len(rows)

    def _insert_rows(self, cur: Any, rows: list[tuple[Any, ...]]) -> None:
        cur.executemany(self._sql(
            f"INSERT INTO ledger_records ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
        ), rows)

    def delete_ids(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        deleted = 0
        with self._write() as cur:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                cur.execute(
                    self._sql(f"DELETE FROM ledger_records WHERE id IN ({', '.join('?' for _ in chunk)})"), chunk
                )
                deleted += max(cur.rowcount, 0)
        return deleted

    def delete_expired(self, now: datetime, kinds: Sequence[str] | None = None, location: str | None = None) -> int:
        """Delete rows expired at ``now`` (optionally only some kinds, or one location)."""
        where, params = self._expired_where(now, kinds, location)
        with self._write() as cur:
            cur.execute(self._sql(f"DELETE FROM ledger_records WHERE {where}"), params)
            count: int = max(cur.rowcount, 0)
        return count

    def delete_at(self, locations: Sequence[str], *, expired: datetime | None = None,
                  kinds: Sequence[str] | None = None) -> int:
        """Delete the rows at any of ``locations`` (only those expired at ``expired`` and of
        ``kinds`` when given), set-based in one transaction.

        The rows are picked by id first and deleted in id order, so a large delete goes
        through the table once instead of once per location (the rows of several feed
        files written at the same time are interleaved).
        """
        where, params = ("1 = 1", []) if expired is None else self._expired_where(expired, None, None)
        if kinds:
            where += f" AND kind IN ({', '.join('?' for _ in kinds)})"
            params += list(kinds)
        locations = sorted(set(locations))
        count = 0
        with self._write() as cur:
            for start in range(0, len(locations), 500):
                chunk = locations[start : start + 500]
                cur.execute(self._sql(
                    f"DELETE FROM ledger_records WHERE id IN (SELECT id FROM ledger_records WHERE {where} "
                    f"AND location IN ({', '.join('?' for _ in chunk)}))"
                ), [*params, *chunk])
                count += max(cur.rowcount, 0)
        return count

    def delete_location(self, location: str, kinds: Sequence[str] | None = None) -> int:
        where = "location = ?"
        params: list[Any] = [location]
        if kinds:
            where += f" AND kind IN ({', '.join('?' for _ in kinds)})"
            params += list(kinds)
        with self._write() as cur:
            cur.execute(self._sql(f"DELETE FROM ledger_records WHERE {where}"), params)
            count: int = max(cur.rowcount, 0)
        return count

    def set_feed_file(self, record: Record) -> None:
        """Record (or replace) the one ``feed_file`` row of a feed file."""
        with self._lock:
            self.delete_location(record.location, kinds=["feed_file"])
            self.add([record])

    # -- reading ----------------------------------------------------------------
    @staticmethod
    def _select_sql(where: str, order: str = "id", limit: int | None = None) -> str:
        sql = f"SELECT id, {', '.join(_COLUMNS)} FROM ledger_records WHERE {where} ORDER BY {order}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return sql

    def _select(self, where: str, params: Sequence[Any], order: str = "id", limit: int | None = None) -> Iterator[Record]:
        sql = self._select_sql(where, order, limit)
        with self._lock:
            conn = self._conn()
            cur = conn.cursor()
            cur.execute(self._sql(sql), list(params))
            rows = cur.fetchall()
            conn.commit()
        for row in rows:
            yield self._record(row)

    def _record(self, row: Sequence[Any]) -> Record:
        values = dict(zip(("id", *_COLUMNS), row, strict=True))
        values.pop("domain_key")
        for key in ("collected_at", "expires_at", "recorded_at"):
            values[key] = self._from_db_ts(values[key])
        return Record(**values)

    def _expired_where(self, now: datetime, kinds: Sequence[str] | None, location: str | None) -> tuple[str, list[Any]]:
        where = "expires_at <= ?"
        params: list[Any] = [self._to_db_ts(now)]
        if kinds:
            where += f" AND kind IN ({', '.join('?' for _ in kinds)})"
            params += list(kinds)
        if location is not None:
            where += " AND location = ?"
            params.append(location)
        return where, params

    def expired(self, now: datetime, kinds: Sequence[str] | None = None, limit: int | None = None) -> list[Record]:
        where, params = self._expired_where(now, kinds, None)
        return list(self._select(where, params, order="expires_at, id", limit=limit))

    def expired_locations(self, now: datetime, kinds: Sequence[str]) -> list[str]:
        where, params = self._expired_where(now, kinds, None)
        with self._lock:
            conn = self._conn()
            cur = conn.cursor()
            cur.execute(self._sql(f"SELECT DISTINCT location FROM ledger_records WHERE {where}"), params)
            rows = cur.fetchall()
            conn.commit()
        return sorted(r[0] for r in rows)

    def locations(self, kinds: Sequence[str]) -> list[str]:
        """Distinct locations of rows of these kinds (e.g. every known feed file)."""
        with self._lock:
            conn = self._conn()
            cur = conn.cursor()
            cur.execute(self._sql(f"SELECT DISTINCT location FROM ledger_records WHERE kind IN "
                                  f"({', '.join('?' for _ in kinds)})"), list(kinds))
            rows = cur.fetchall()
            conn.commit()
        return sorted(r[0] for r in rows)

    def count_expired(self, now: datetime, kinds: Sequence[str] | None = None) -> int:
        where, params = self._expired_where(now, kinds, None)
        return self._scalar(f"SELECT COUNT(*) FROM ledger_records WHERE {where}", params)

    def _scalar(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._lock:
            conn = self._conn()
            cur = conn.cursor()
            cur.execute(self._sql(sql), list(params))
            row = cur.fetchone()
            conn.commit()
        return int(row[0] or 0)

    def _selector_where(self, selector: Selector) -> tuple[str, list[Any]]:
        value = selector.value
        if selector.kind == "url":
            return "(url = ? OR (object_url = ? AND object_url <> ''))", [value, value]
        if selector.kind == "prefix":
            # a key range, so the index is used by both back ends (LIKE would not be)
            upper = value[:-1] + chr(ord(value[-1]) + 1)
            return ("((url >= ? AND url < ?) OR (object_url >= ? AND object_url < ? AND object_url <> ''))",
                    [value, upper, value, upper])
        if selector.kind == "domain":
            key = domain_key(value)
            upper = key[:-1] + "/"  # "." + 1
            return "(domain_key >= ? AND domain_key < ?)", [key, upper]
        escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        return "(url LIKE ? ESCAPE '\\' OR object_url LIKE ? ESCAPE '\\')", [pattern, pattern]

    def find(self, selector: Selector) -> list[Record]:
        """Every row whose source URL or object URL the selector covers (no time window)."""
        where, params = self._selector_where(selector)
        return list(self._select(where, params))

    def find_plan(self, selector: Selector) -> list[str]:
        """The query plan of :meth:`find` for ``selector``, one line per step (for checks)."""
        where, params = self._selector_where(selector)
        with self._lock:
            conn = self._conn()
            cur = conn.cursor()
            cur.execute(self._sql(f"{self.explain} {self._select_sql(where)}"), params)
            rows = cur.fetchall()
            conn.commit()
        return [str(row[-1]) for row in rows]

    def find_items(self, item_ids: Sequence[str]) -> list[Record]:
        out: list[Record] = []
        ids = list(item_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            out += self._select(f"item_id IN ({', '.join('?' for _ in chunk)})", chunk)
        return out

    def at_location(self, location: str) -> list[Record]:
        return list(self._select("location = ?", [location]))

    def feed_file(self, location: str) -> Record | None:
        """The ``feed_file`` row of a feed file, if recorded."""
        return next(iter(self._select("kind = ? AND location = ?", ["feed_file", location])), None)

    def has_unexpired(self, location: str, now: datetime) -> bool:
        """Whether any row at ``location`` expires after ``now``."""
        return bool(self._scalar(
            "SELECT COUNT(*) FROM ledger_records WHERE location = ? AND expires_at > ?",
            [location, self._to_db_ts(now)],
        ))

    def feed_files(self) -> list[Record]:
        return list(self._select("kind = ?", ["feed_file"]))

    def all(self, kinds: Sequence[str] | None = None) -> list[Record]:
        if kinds:
            return list(self._select(f"kind IN ({', '.join('?' for _ in kinds)})", list(kinds)))
        return list(self._select("1 = 1", []))

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return self._scalar("SELECT COUNT(*) FROM ledger_records")
        return self._scalar("SELECT COUNT(*) FROM ledger_records WHERE kind = ?", [kind])

    def summary(self, since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
        """Rows recorded in a period, grouped by kind, purpose and expiry month."""
        where = "1 = 1"
        params: list[Any] = []
        if since is not None:
            where += " AND recorded_at >= ?"
            params.append(self._to_db_ts(since))
        if until is not None:
            where += " AND recorded_at < ?"
            params.append(self._to_db_ts(until))
        with self._lock:
            conn = self._conn()
            cur = conn.cursor()
            cur.execute(
                self._sql(f"SELECT kind, purpose, lawful_basis, expires_at FROM ledger_records WHERE {where}"), params
            )
            rows = cur.fetchall()
            conn.commit()
        groups: dict[tuple[str, str, str, str], int] = {}
        for kind, purpose, basis, expires in rows:
            month = self._from_db_ts(expires).strftime("%Y-%m")  # type: ignore[union-attr]
            key = (kind, purpose, basis, month)
            groups[key] = groups.get(key, 0) + 1
        return [
            {"kind": k, "purpose": p, "lawful_basis": b, "expires_month": m, "count": c}
            for (k, p, b, m), c in sorted(groups.items())
        ]


def _set_wal(conn: sqlite3.Connection, timeout: float = 60.0) -> None:
    """Put the file in WAL mode. Switching needs the file to itself, and SQLite answers
    "database is locked" at once, without its busy handler, while another connection
    holds it (two processes opening a new ledger together): wait for it as the busy
    timeout would."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SQLiteLedger(Ledger):
    """One SQLite file in WAL mode; safe to share between a crawl and a purge."""

    def __init__(self, path: str | Path, migrations: Sequence[Sequence[str]] | None = None, *,
                 create: bool = True, readonly: bool = False) -> None:
        super().__init__(migrations)
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.readonly = readonly
        self._immutable = False
        memory = str(path) == ":memory:"
        if not memory and not self.path.exists():
            if not create:
                raise LedgerMissing(f"the ledger {self.path} does not exist. Fix: point GDPR_LEDGER (or --ledger) "
                                    "at the ledger file your crawls write (a crawl creates it)")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise explain_error(str(self.path), exc, folder=self.path.parent) from None
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        try:
            self.open_schema(create=create, readonly=readonly)
        except sqlite3.Error as exc:
            self.close()
            raise explain_error(str(self.path), exc, folder=self.path.parent, reading=readonly) from None
        except BaseException:
            self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        if not self.readonly:
            return sqlite3.connect(self.path, timeout=60, isolation_level="DEFERRED", check_same_thread=False)
        uri = f"{self.path.resolve().as_uri()}?{'immutable=1' if self._immutable else 'mode=ro'}"
        return sqlite3.connect(uri, uri=True, timeout=60, isolation_level="DEFERRED", check_same_thread=False)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            try:
                if not self.readonly:
                    _set_wal(conn)
                    conn.execute("PRAGMA synchronous=NORMAL")
                else:
                    conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.OperationalError:
                conn.close()
                if not self.readonly or self._immutable:
                    raise
                # A WAL ledger in a folder this user cannot write: SQLite cannot create
                # the shared-memory file a reader needs, so the file is read as it is
                # on disk (nothing can write it meanwhile without write rights either).
                self._immutable = True
                conn = self._connect()
            conn.execute("PRAGMA busy_timeout=60000")
            # a larger page cache: erasure and purge touch seven indexes of a large table
            conn.execute("PRAGMA cache_size=-65536")
            self._local.conn = conn
            self._connections.append(conn)
        return conn

    def _begin_migration(self, cur: Any) -> None:
        cur.execute("BEGIN IMMEDIATE")

    def _probe_write(self, conn: Any) -> None:
        if self.readonly:
            raise sqlite3.OperationalError("attempt to write a readonly database (opened read-only)")
        if conn.in_transaction:
            conn.commit()
        # a write that changes nothing: fails on a read-only file or folder
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM ledger_records WHERE id < 0")
        finally:
            conn.rollback()

    def _insert_rows(self, cur: Any, rows: list[tuple[Any, ...]]) -> None:
        # Many rows per INSERT statement: the sqlite3 module releases the GIL around
        # every statement step, and with executemany that is once per row. Under a
        # busy reactor each release hands the GIL over and back, which cost far more
        # than the inserts (about 0.2 s of CPU per 1,000 rows written during a crawl).
        per = _SQLITE_ROWS_PER_INSERT
        for start in range(0, len(rows), per):
            chunk = rows[start:start + per]
            cur.execute(_sqlite_insert(len(chunk)), [value for row in chunk for value in row])

    def optimize(self) -> None:
        # ANALYZE reads, then writes sqlite_stat1: in its own implicit transaction that
        # upgrade fails at once ("database is locked", busy_timeout is not consulted)
        # when a crawl committed meanwhile, so the write lock is taken first. A bounded
        # analysis keeps this cheap on a large ledger.
        with self._lock:
            conn = self._conn()
            if conn.in_transaction:
                conn.commit()
            conn.execute("PRAGMA analysis_limit=1000")
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("PRAGMA optimize")
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

    def close(self) -> None:
        for conn in self._connections:
            with contextlib.suppress(sqlite3.ProgrammingError):  # closed in another thread
                conn.close()
        self._connections.clear()
        self._local = threading.local()


class PostgresLedger(Ledger):
    """PostgreSQL through psycopg 3 (``pip install scrapy-gdpr[postgres]``)."""

    placeholder = "%s"
    explain = "EXPLAIN"
    id_type = "BIGSERIAL PRIMARY KEY"
    ts_type = "TIMESTAMPTZ"

    def __init__(self, url: str, migrations: Sequence[Sequence[str]] | None = None, *,
                 create: bool = True, readonly: bool = False) -> None:
        super().__init__(migrations)
        self.readonly = readonly
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise LedgerError("a postgresql:// ledger needs psycopg 3: pip install 'scrapy-gdpr[postgres]'") from exc
        self.url = url
        try:
            self._connection = psycopg.connect(url, autocommit=False)
        except psycopg.Error as exc:
            raise LedgerError(f"cannot connect to the ledger {mask_password(url)}: {exc}") from exc
        try:
            self.open_schema(create=create, readonly=readonly)
        except psycopg.Error as exc:
            self.close()
            raise explain_error(f"database {mask_password(url)}", exc, reading=readonly) from None
        except BaseException:
            self.close()
            raise

    def _conn(self) -> Any:
        return self._connection

    def optimize(self) -> None:
        # fresh planner statistics after bulk inserts (autovacuum may not have run yet)
        with self._lock:
            self._connection.execute("ANALYZE ledger_records")
            self._connection.commit()

    def _insert_rows(self, cur: Any, rows: list[tuple[Any, ...]]) -> None:
        # COPY: several times faster than INSERTs for the thousands of rows of a feed file
        with cur.copy(f"COPY ledger_records ({', '.join(_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def _probe_write(self, conn: Any) -> None:
        # a delete that changes nothing, rolled back: fails without DELETE rights or
        # on a read-only server or transaction
        try:
            conn.execute("DELETE FROM ledger_records WHERE id < 0")
            conn.execute("UPDATE ledger_records SET kind = kind WHERE id < 0")
            conn.execute("INSERT INTO ledger_records (kind, location, url, expires_at, recorded_at) "
                         "SELECT kind, location, url, expires_at, recorded_at FROM ledger_records WHERE id < 0")
        finally:
            conn.rollback()

    def _begin_migration(self, cur: Any) -> None:
        # one migrating process at a time, across machines
        cur.execute("SELECT pg_advisory_xact_lock(7146339101)")

    def _to_db_ts(self, moment: datetime | None) -> Any:
        if moment is None:
            return None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)

    def _from_db_ts(self, value: Any) -> datetime | None:
        return None if value is None else parse_ts(value)

    def close(self) -> None:
        self._connection.close()


def project_folder() -> Path:
    """The folder a relative ``sqlite:///`` ledger is in: the Scrapy project's (where
    ``scrapy.cfg`` is, found from the current folder upwards), else the current one.
    So a crawl or a command run from a sub-folder of the project uses the same file."""
    from scrapy.utils.conf import closest_scrapy_cfg

    cfg = closest_scrapy_cfg()
    return Path(cfg).parent if cfg else Path.cwd()


def open_ledger(url: str, *, base: Path | None = None, create: bool = True, readonly: bool = False) -> Ledger:
    """Open the ledger at ``url``, creating it (``create``) and migrating its schema
    when it is behind.

    ``sqlite:///name`` is relative to ``base`` (default: :func:`project_folder`),
    ``sqlite:////abs/path`` absolute. Without ``create`` a ledger that does not
    exist raises :class:`LedgerMissing` (nothing is created); ``readonly`` opens it
    without any write (SQLite read-only; no migration), for commands that only read.
    """
    if url.startswith("sqlite:///"):
        raw = unquote(url[len("sqlite:///") :])
        path = Path(raw)
        if not path.is_absolute():
            path = (base or project_folder()) / path
        return SQLiteLedger(path, create=create, readonly=readonly)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresLedger(url, create=create, readonly=readonly)
    raise LedgerError(f"unsupported ledger URL {mask_password(url)!r}: use sqlite:///FILE or postgresql://...")

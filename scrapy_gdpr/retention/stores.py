"""Item stores beyond feed files: the interface purge, access and erasure call, and a
PostgreSQL item store.

Most crawls keep their items in a database written by an item pipeline. Such a store
is reached by purge, access and erasure when it is registered in ``GDPR_ITEM_STORES``
(a list of import paths). Each entry is an :class:`ItemStore`, built with
``from_settings(settings)`` (the commands have no crawler), ``from_crawler(crawler)``
when only that exists and a crawler is at hand, or with no arguments.

:class:`PostgresItemStore` is both: an item pipeline writing every stamped item to a
table, and the store that finds, exports, deletes and expires them.

Feeds and media stores that no purge can reach (``s3://``, ``gs://``, ``ftp://``
feeds, an ``s3://`` or ``gs://`` ``IMAGES_STORE``) are refused at start-up by
:func:`check_settings` (an add-on hook), never left silently out of purge and erasure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy import signals
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.misc import load_object
from twisted.internet.threads import deferToThread

from scrapy_gdpr.retention.feedfiles import FORMATS, STAMP_FIELD, normalise_format
from scrapy_gdpr.retention.ledger import Selector, parse_ts
from scrapy_gdpr.retention.textmatch import normalise_text, text_values
from scrapy_gdpr.urls import host_of, mask_password

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Iterator, Sequence
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

    from scrapy_gdpr.audit import AuditLog

logger = logging.getLogger(__name__)

#: Defaults of the settings read here (documented in docs/settings.md).
DEFAULTS: dict[str, Any] = {
    "GDPR_ITEM_STORES": [],
    "GDPR_POSTGRES_STORE": None,  # the database URL of PostgresItemStore
    "GDPR_POSTGRES_STORE_TABLE": "gdpr_items",
}


class StoreError(ValueError):
    """An item store cannot be built or reached; the message names it and the fix."""


# --------------------------------------------------------------------------- text matching


#: Separates values in :func:`search_text`, so a request never matches across two values.
VALUE_SEPARATOR = "\x1f"


def search_text(data: Any) -> str:
    """The normalised values of an item, each on its own, as one string (no NUL)."""
    return VALUE_SEPARATOR.join(
        normalise_text(v).replace("\x00", "").replace(VALUE_SEPARATOR, " ") for v in text_values(data)
    )


def item_matches(data: Any, source_url: str, selectors: Sequence[Selector]) -> bool:
    """Whether a stored item matches: its source URL by ``url``/``prefix``/``domain``, its
    URL or decoded values (normalised, values only) by ``contains``."""
    text: str | None = None
    for sel in selectors:
        if sel.matches_url(source_url):
            return True
        if sel.kind == "contains":
            if text is None:
                text = search_text(data)
            if normalise_text(sel.value) in text:
                return True
    return False


@dataclass
class FoundItem:
    """One item a data subject's request found, wherever it is held."""

    item_id: str
    source_url: str
    data: Any
    locations: list[str] = field(default_factory=list)
    stamp: dict[str, Any] = field(default_factory=dict)
    #: the format ``data`` was read from; JSON formats keep types, so they are preferred
    source_format: str = ""



# --------------------------------------------------------------------------- the interface


@dataclass
class StoredItem:
    """One item held in a store."""

    item_id: str
    source_url: str
    expires_at: str
    #: the item as stored, with its stamp under ``gdpr`` (None when not read, e.g. in purge)
    data: dict[str, Any] | None = None


class ItemStore:
    """A place outside feed files where a crawl keeps stamped items.

    Purge, access and erasure call every store listed in ``GDPR_ITEM_STORES``:

    * :meth:`find` for access and erasure (the items matching any selector, or any of
      the given item ids), each with its full content for the access archive;
    * :meth:`delete` for erasure;
    * :meth:`purge` for ``gdpr-purge`` and purge at spider open.

    A store must find an item by its stamp's ``item_id``, its stamp's ``source_url``
    (``url`` exactly, ``prefix``, ``domain`` with subdomains) and by text
    (``contains``: :func:`normalise_text` of the needle within the normalised decoded
    values, keys and stamp fields excluded; :func:`item_matches` does exactly that).
    """

    #: How receipts and purge results name the store (e.g. ``postgresql:gdpr_items``).
    name: str = ""

    def find(self, selectors: Sequence[Selector], item_ids: Collection[str] = ()) -> list[StoredItem]:
        raise NotImplementedError

    def delete(self, item_ids: Collection[str]) -> int:
        """Delete these items; return how many were held."""
        raise NotImplementedError

    def purge(self, now: datetime, *, dry_run: bool = False) -> list[StoredItem]:
        """Delete (or, with ``dry_run``, list) every item whose stamp expired at ``now``."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


def configured_store_paths(settings: BaseSettings) -> list[str]:
    return [str(p) for p in settings.getlist("GDPR_ITEM_STORES", DEFAULTS["GDPR_ITEM_STORES"])]


def build_store(path: Any, settings: BaseSettings, crawler: Crawler | None = None) -> ItemStore:
    """Build one store from its import path (``from_settings``, else ``from_crawler``, else no arguments)."""
    try:
        cls = load_object(path)
    except (ImportError, ValueError, NameError, AttributeError) as exc:
        raise StoreError(f"GDPR_ITEM_STORES: cannot import {path!r}: {exc}") from exc
    try:
        if hasattr(cls, "from_settings"):
            store = cls.from_settings(settings)
        elif hasattr(cls, "from_crawler"):
            if crawler is None:
                raise StoreError(
                    f"GDPR_ITEM_STORES: {path!r} has only from_crawler(); gdpr-purge, gdpr-access and "
                    "gdpr-erase have no crawler: give it a from_settings(settings) class method"
                )
            store = cls.from_crawler(crawler)
        else:
            store = cls()
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"GDPR_ITEM_STORES: cannot open {path!r}: {exc}") from exc
    for method in ("find", "delete", "purge"):
        if not callable(getattr(store, method, None)):
            raise StoreError(f"GDPR_ITEM_STORES: {path!r} has no {method}() method (see scrapy_gdpr.retention.stores.ItemStore)")
    if not getattr(store, "name", ""):
        store.name = str(path)
    return store  # type: ignore[no-any-return]


def load_item_stores(settings: BaseSettings, crawler: Crawler | None = None) -> list[ItemStore]:
    """Every store of ``GDPR_ITEM_STORES``, opened. Raises :class:`StoreError` (and closes
    those already opened) when one cannot be built: a store that purge and erasure
    cannot reach must stop them, not be skipped."""
    stores: list[ItemStore] = []
    try:
        stores.extend(build_store(path, settings, crawler) for path in configured_store_paths(settings))
    except BaseException:
        close_stores(stores)
        raise
    return stores


def close_stores(stores: Iterable[ItemStore]) -> None:
    for store in stores:
        try:
            store.close()
        except Exception:
            logger.warning("GDPR: closing item store %(name)s failed", {"name": store.name}, exc_info=True)


@contextlib.contextmanager
def open_item_stores(settings: BaseSettings) -> Iterator[list[ItemStore]]:
    stores = load_item_stores(settings)
    try:
        yield stores
    finally:
        close_stores(stores)


# --------------------------------------------------------------------------- what purge, access and erasure call


def add_store_holdings(holdings: Any, stores: Sequence[ItemStore], selectors: Sequence[Selector]) -> None:
    """Access and erasure: add the items every store holds for ``selectors`` (and for the
    item ids already found in feeds) to a :class:`~scrapy_gdpr.retention.rights.Holdings`."""
    searched = getattr(holdings, "stores_searched", None)
    for store in stores:
        if isinstance(searched, list):
            searched.append(store.name)
        try:
            matches = store.find(selectors, list(holdings.items))
        except Exception as exc:  # noqa: BLE001 - a failing store is reported, never skipped silently
            logger.error("GDPR: item store %(name)s cannot be searched: %(exc)s", {"name": store.name, "exc": exc})
            holdings.store_errors.append(f"{store.name}: {exc}")
            continue
        for found in matches:
            item = holdings.items.get(found.item_id)
            if item is None:
                data = found.data or {}
                raw_stamp = data.get(STAMP_FIELD)
                stamp: dict[str, Any] = raw_stamp if isinstance(raw_stamp, dict) else {}
                item = holdings.items[found.item_id] = FoundItem(
                    item_id=found.item_id, source_url=found.source_url, data=data, stamp=dict(stamp),
                    source_format=store.name,
                )
            elif item.data is None and found.data is not None:
                item.data = found.data
            item.locations.append(store.name)


def erase_from_stores(stores: Sequence[ItemStore], item_ids: Collection[str]) -> tuple[dict[str, int], list[str]]:
    """Erasure: delete these items from every store. Returns the items deleted per store
    and the stores that failed (with why); one failing store does not stop the others."""
    ids = list(item_ids)
    counts: dict[str, int] = {}
    errors: list[str] = []
    for store in stores:
        try:
            counts[store.name] = store.delete(ids) if ids else 0
        except Exception as exc:  # noqa: BLE001 - a failing store is reported, never skipped silently
            logger.error("GDPR: cannot erase from item store %(name)s: %(exc)s", {"name": store.name, "exc": exc})
            errors.append(f"{store.name}: {exc}")
    return counts, errors


@dataclass
class StorePurge:
    items: int = 0
    by_store: dict[str, int] = field(default_factory=dict)
    deleted: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def purge_stores(stores: Sequence[ItemStore], now: datetime, *, dry_run: bool = False,
                 audit: AuditLog | None = None, spider: str = "") -> StorePurge:
    """Purge: delete every expired item of every store, each one in the audit log."""
    result = StorePurge()
    for store in stores:
        try:
            gone = store.purge(now, dry_run=dry_run)
        except Exception as exc:  # noqa: BLE001 - a failing store is reported, never skipped silently
            logger.error("GDPR purge: item store %(name)s failed: %(exc)s", {"name": store.name, "exc": exc})
            result.errors.append(f"{store.name}: {exc}")
            continue
        result.by_store[store.name] = len(gone)
        result.items += len(gone)
        entries = [{"kind": "store_item", "location": store.name, "item_id": g.item_id, "url": g.source_url,
                    "expires_at": g.expires_at} for g in gone]
        result.deleted += entries
        if audit is not None and not dry_run and entries:
            audit.write_many([{"spider": spider, "url": e["url"], "decision": "purged", **e} for e in entries])
    return result


# --------------------------------------------------------------------------- start-up checks

#: Feed URI schemes whose files purge and erasure can rewrite.
LOCAL_FEED_SCHEMES = ("", "file")


def _scheme(uri: str) -> str:
    try:
        scheme = urlsplit(uri).scheme.lower()
    except ValueError:
        return "?"
    return "" if len(scheme) == 1 else scheme  # a Windows drive letter


def unreachable_stores(settings: BaseSettings) -> list[str]:
    """Feeds and media stores that purge and erasure cannot reach, each with why."""
    problems: list[str] = []
    for uri, given in settings.getdict("FEEDS").items():
        options = given or {}
        scheme = _scheme(str(uri))
        fmt = normalise_format(str(options.get("format", "")))
        if fmt not in FORMATS:
            problems.append(f"feed {uri}: the {fmt or 'unnamed'} format cannot be read back, so its items cannot be "
                            f"purged or erased (use one of {', '.join(FORMATS)})")
        if options.get("postprocessing"):
            problems.append(f"feed {uri}: postprocessing (compression) makes the file unreadable to gdpr-purge and "
                            "gdpr-erase (compress copies in a job that also deletes what they delete)")
        if scheme == "stdout":
            problems.append(f"feed {uri}: items printed to standard output are kept wherever it is redirected, "
                            "out of reach of gdpr-purge and gdpr-erase")
        elif scheme not in LOCAL_FEED_SCHEMES:
            problems.append(
                f"feed {uri}: {scheme}:// feeds are written where gdpr-purge and gdpr-erase cannot rewrite them"
            )
    for setting in ("IMAGES_STORE", "FILES_STORE"):
        value = settings.get(setting)
        if value and _scheme(str(value)) not in LOCAL_FEED_SCHEMES:
            problems.append(
                f"{setting} = {value}: images and files kept there cannot be deleted by gdpr-purge and gdpr-erase"
            )
    return problems


def check_settings(settings: BaseSettings, crawler: Crawler) -> None:
    """Add-on hook: refuse stores purge and erasure cannot reach; the store extension."""
    problems = unreachable_stores(settings)
    if problems:
        from scrapy.settings import SETTINGS_PRIORITIES

        from scrapy_gdpr.scheduling import under_scrapyd

        if under_scrapyd() and settings.getpriority("FEEDS") == SETTINGS_PRIORITIES["cmdline"]:
            problems.append(
                "the feed was set by the Scrapyd job: Scrapyd's items_dir (scrapyd.conf) or schedule.json "
                "setting=FEEDS; set items_dir to a local folder (its files are stamped and recorded like any "
                "feed), or leave it empty and set FEEDS in the project's settings.py"
            )
        raise StoreError(
            "scrapy-gdpr cannot enforce retention and erasure where this crawl would store data:\n  - "
            + "\n  - ".join(problems)
            + "\nWrite feeds (jsonlines, json, csv or xml, uncompressed) and media to a local folder (purge, "
            "access and erasure reach those), and copy "
            "them elsewhere only with a job that deletes what gdpr-purge and gdpr-erase delete; or store "
            "items in a database through an item store registered in GDPR_ITEM_STORES (for example "
            "scrapy_gdpr.retention.stores.PostgresItemStore). See the 'Item stores' section of docs/retention.md."
        )
    for path in configured_store_paths(settings):
        try:
            load_object(path)
        except (ImportError, ValueError, NameError, AttributeError) as exc:
            raise StoreError(f"GDPR_ITEM_STORES: cannot import {path!r}: {exc}") from exc
    settings.setdefault_in_component_priority_dict("EXTENSIONS", ItemStoresExtension, 0)


class ItemStoresExtension:
    """Purges the registered item stores when the spider opens (``GDPR_PURGE_ON_OPEN``),
    as the retention extension purges feeds and media."""

    def __init__(self, crawler: Crawler) -> None:
        from scrapy_gdpr._component import component_runtime

        self.crawler = crawler
        self.runtime = component_runtime(crawler)
        self.paths = configured_store_paths(crawler.settings)
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def spider_opened(self) -> None:
        if not self.paths or not self.runtime.config.purge_on_open:
            return
        try:
            result = await maybe_deferred_to_future(deferToThread(self._purge, datetime.now(UTC)))
        except Exception as exc:  # noqa: BLE001 - a failing store is reported, never skipped silently
            result = StorePurge(errors=[str(exc)])
        for error in result.errors:
            logger.error("GDPR purge of item stores failed: %(e)s; run scrapy gdpr-purge once it is fixed",
                         {"e": error}, extra={"spider": self.crawler.spider})
        if result.errors:
            self.crawler.stats.inc_value("gdpr/retention/purge_errors", len(result.errors))
        self.crawler.stats.inc_value("gdpr/retention/purged/store_items", result.items)
        logger.info("GDPR purge: %(n)d expired items deleted from item stores %(stores)s",
                    {"n": result.items, "stores": result.by_store}, extra={"spider": self.crawler.spider})

    def _purge(self, now: datetime) -> StorePurge:
        stores = load_item_stores(self.crawler.settings, self.crawler)
        try:
            return purge_stores(stores, now, audit=self.runtime.audit, spider=self.runtime.spider_name)
        finally:
            close_stores(stores)


# --------------------------------------------------------------------------- PostgreSQL

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
_ENCODE = json.JSONEncoder(ensure_ascii=False, default=str).encode


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class PostgresItemStore(ItemStore):
    """Item pipeline and item store: every stamped item goes to one PostgreSQL table.

    Enable it after the retention stamp (``ITEM_PIPELINES = {"scrapy_gdpr.retention.stores.
    PostgresItemStore": 950}``) and register it (``GDPR_ITEM_STORES =
    ["scrapy_gdpr.retention.stores.PostgresItemStore"]``); ``GDPR_POSTGRES_STORE`` is the
    database URL and ``GDPR_POSTGRES_STORE_TABLE`` the table (created if missing).

    Each row keeps the item as JSON, its stamp, and the normalised text of its values
    (for ``contains``). An unstamped item is dropped: it could never be expired.
    """

    def __init__(self, url: str, table: str = DEFAULTS["GDPR_POSTGRES_STORE_TABLE"], *,
                 crawler: Crawler | None = None) -> None:
        if not url:
            raise StoreError("GDPR_POSTGRES_STORE is not set: give the PostgreSQL URL of the item store "
                             "(e.g. postgresql://user@host/db)")
        if not _TABLE_NAME.match(table):
            raise StoreError(f"GDPR_POSTGRES_STORE_TABLE {table!r} is not a plain table name ([schema.]name)")
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise StoreError("PostgresItemStore needs psycopg 3: pip install 'scrapy-gdpr[postgres]'") from exc
        self.url = url
        self.table = table
        self.name = f"postgresql:{table}"
        self.crawler = crawler
        self._lock = threading.Lock()
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the item store {mask_password(url)}: {exc}".strip()) from exc
        try:
            self._create()
        except psycopg.Error as exc:
            self._conn.close()
            raise StoreError(f"cannot create the item store table {table} in {mask_password(url)}: {exc}".strip()) from exc
        self.stored = 0

    # -- building -------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: BaseSettings) -> Self:
        return cls(settings.get("GDPR_POSTGRES_STORE") or "",
                   settings.get("GDPR_POSTGRES_STORE_TABLE") or DEFAULTS["GDPR_POSTGRES_STORE_TABLE"])

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        """As an item pipeline: refuse to store what purge and erasure would not reach."""
        settings = crawler.settings
        if not any(_is_subclass(p, cls) for p in configured_store_paths(settings)):
            raise StoreError(
                f"{cls.__module__}.{cls.__name__} is an item pipeline of this crawl but not in GDPR_ITEM_STORES: "
                "gdpr-purge, gdpr-access and gdpr-erase would not reach the items it stores. Add "
                f"'{cls.__module__}.{cls.__name__}' to GDPR_ITEM_STORES."
            )
        store = cls(settings.get("GDPR_POSTGRES_STORE") or "",
                    settings.get("GDPR_POSTGRES_STORE_TABLE") or DEFAULTS["GDPR_POSTGRES_STORE_TABLE"], crawler=crawler)
        crawler.signals.connect(store._closed, signal=signals.spider_closed)
        return store

    def _create(self) -> None:
        t = self.table
        index = t.replace(".", "_")
        # a role with read rights only (gdpr-access) needs no CREATE when the table exists
        row = self._conn.execute("SELECT to_regclass(%s)", [t]).fetchone()
        if row is not None and row[0] is not None:
            return
        with self._lock, self._conn.transaction():
            # one creating process at a time (CREATE ... IF NOT EXISTS races on the catalogue)
            self._conn.execute("SELECT pg_advisory_xact_lock(7146339102)")
            self._conn.execute(f"""CREATE TABLE IF NOT EXISTS {t} (
                item_id TEXT PRIMARY KEY,
                source_url TEXT NOT NULL,
                host TEXT NOT NULL,
                spider TEXT NOT NULL DEFAULT '',
                purpose TEXT NOT NULL DEFAULT '',
                collected_at TIMESTAMPTZ,
                expires_at TIMESTAMPTZ NOT NULL,
                expires_text TEXT NOT NULL,
                item TEXT NOT NULL,
                search_text TEXT NOT NULL)""")
            self._conn.execute(f"CREATE INDEX IF NOT EXISTS {index}_expires ON {t} (expires_at)")
            self._conn.execute(f"CREATE INDEX IF NOT EXISTS {index}_host ON {t} (host)")
            self._conn.execute(f"CREATE INDEX IF NOT EXISTS {index}_url ON {t} (source_url)")

    # -- the pipeline ---------------------------------------------------------------
    async def process_item(self, item: Any) -> Any:
        from scrapy_gdpr._component import component_runtime
        from scrapy_gdpr.audit import Reason, drop
        from scrapy_gdpr.retention.stamp import get_stamp

        stamp = get_stamp(item)
        expires: datetime | None = None
        if stamp is not None:
            try:
                expires = parse_ts(str(stamp["expires_at"]))
            except ValueError:
                expires = None
        if stamp is None or expires is None:
            assert self.crawler is not None
            raise drop(component_runtime(self.crawler), str((stamp or {}).get("source_url", "")), Reason.RETENTION,
                       detail="an item without a valid retention stamp is not stored in the item store (is "
                              "PostgresItemStore after scrapy_gdpr.retention.stamp.RetentionPipeline (900)?)")
        collected = None
        with contextlib.suppress(KeyError, ValueError, TypeError):
            collected = parse_ts(str(stamp["collected_at"]))
        url = str(stamp.get("source_url", ""))
        row = (str(stamp["item_id"]), url, host_of(url), str(stamp.get("spider", "")), str(stamp.get("purpose", "")),
               collected, expires, str(stamp["expires_at"]), _ENCODE(dict(item)), search_text(item))
        await maybe_deferred_to_future(deferToThread(self._insert, row))
        self.stored += 1
        return item

    def _insert(self, row: tuple[Any, ...]) -> None:
        with self._lock:
            self._conn.execute(
                f"INSERT INTO {self.table} (item_id, source_url, host, spider, purpose, collected_at, expires_at, "
                "expires_text, item, search_text) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (item_id) DO UPDATE SET item = EXCLUDED.item, search_text = EXCLUDED.search_text, "
                "expires_at = EXCLUDED.expires_at, expires_text = EXCLUDED.expires_text",
                row,
            )

    def _closed(self) -> None:
        if self.crawler is not None and self.crawler.stats is not None:
            self.crawler.stats.set_value("gdpr/stores/postgresql/stored", self.stored)
        self.close()

    # -- the store ------------------------------------------------------------------
    def _where(self, selectors: Sequence[Selector], item_ids: Collection[str]) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for sel in selectors:
            if sel.kind == "url":
                clauses.append("source_url = %s")
                params.append(sel.value)
            elif sel.kind == "prefix":
                clauses.append("left(source_url, %s) = %s")
                params += [len(sel.value), sel.value]
            elif sel.kind == "domain":
                host = sel.value.lower().rstrip(".")
                clauses.append("(host = %s OR host LIKE %s ESCAPE '\\')")
                params += [host, "%." + _like_escape(host)]
            else:
                clauses.append("(search_text LIKE %s ESCAPE '\\' OR source_url LIKE %s ESCAPE '\\')")
                params += ["%" + _like_escape(normalise_text(sel.value)) + "%", "%" + _like_escape(sel.value) + "%"]
        if item_ids:
            clauses.append("item_id = ANY(%s)")
            params.append(list(item_ids))
        return " OR ".join(clauses) or "FALSE", params

    def find(self, selectors: Sequence[Selector], item_ids: Collection[str] = ()) -> list[StoredItem]:
        where, params = self._where(selectors, item_ids)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT item_id, source_url, expires_text, item FROM {self.table} WHERE {where} ORDER BY item_id",
                params,
            ).fetchall()
        return [StoredItem(item_id=r[0], source_url=r[1], expires_at=r[2], data=json.loads(r[3])) for r in rows]

    def delete(self, item_ids: Collection[str]) -> int:
        if not item_ids:
            return 0
        with self._lock:
            cur = self._conn.execute(f"DELETE FROM {self.table} WHERE item_id = ANY(%s)", [list(item_ids)])
            return int(cur.rowcount or 0)

    def purge(self, now: datetime, *, dry_run: bool = False) -> list[StoredItem]:
        verb = "SELECT item_id, source_url, expires_text FROM" if dry_run else "DELETE FROM"
        returning = "" if dry_run else " RETURNING item_id, source_url, expires_text"
        with self._lock:
            rows = self._conn.execute(
                f"{verb} {self.table} WHERE expires_at <= %s{returning}", [now.astimezone(UTC)]
            ).fetchall()
        return [StoredItem(item_id=r[0], source_url=r[1], expires_at=r[2]) for r in rows]

    def close(self) -> None:
        with self._lock:
            if not self._conn.closed:
                self._conn.close()


def _is_subclass(path: str, cls: type) -> bool:
    try:
        obj = load_object(path)
    except (ImportError, ValueError, NameError, AttributeError):
        return False
    return isinstance(obj, type) and issubclass(obj, cls)


__all__ = [
    "ItemStore",
    "PostgresItemStore",
    "StoreError",
    "StoredItem",
    "add_store_holdings",
    "erase_from_stores",
    "item_matches",
    "load_item_stores",
    "normalise_text",
    "open_item_stores",
    "purge_stores",
    "text_values",
]

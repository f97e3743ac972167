"""Retention stamps, the ledger, manifests, and purge at spider open.

* :class:`RetentionPipeline` (item pipeline, 900) turns every item into a dict with a
  retention stamp under the ``gdpr`` key (field names in :data:`STAMP_FIELDS`).
* :class:`RetentionItemFilter` (set on every feed by :func:`configure_feeds`) keeps
  unstamped items out of feed files.
* :class:`RetentionExtension` records every stored item, feed line, feed file and
  media object in the ledger, writes a ``<file>.gdpr.json`` manifest next to every
  feed file, and purges expired data when the spider opens.
* :func:`purge` is what ``scrapy gdpr-purge`` and the extension run.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import queue
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from itemadapter import ItemAdapter
from scrapy import Request, signals
from scrapy.exporters import CsvItemExporter, XmlItemExporter
from scrapy.extensions.feedexport import FileFeedStorage
from scrapy.http.request import NO_CALLBACK
from scrapy.utils.misc import load_object
from w3lib.url import file_uri_to_path
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet.threads import deferToThread

from scrapy_gdpr import feedfiles
from scrapy_gdpr._component import component_runtime
from scrapy_gdpr.audit import Reason, drop
from scrapy_gdpr.durations import Duration
from scrapy_gdpr.feedfiles import CSV_PREFIX, STAMP_FIELD
from scrapy_gdpr.ledger import OBJECT_KINDS, Ledger, Record, open_ledger, parse_ts
from scrapy_gdpr.provenance import ProvenancedDict, registry

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings
    from typing_extensions import Self

    from scrapy_gdpr.audit import AuditLog
    from scrapy_gdpr.stores import ItemStore

logger = logging.getLogger(__name__)

#: Version of the stamp layout; bumped only when a field changes meaning.
STAMP_VERSION = 1
#: The stamp's fields, in the order they are written. These names are stable.
STAMP_FIELDS = (
    "stamp_version",
    "item_id",
    "item_type",
    "spider",
    "source_url",
    "collected_at",
    "expires_at",
    "retention",
    "purpose",
    "lawful_basis",
    "policy_id",
    "policy_fingerprint",
    "content_sha256",
    "faces",
)
#: Manifest files sit next to feed files: ``items.jsonl`` -> ``items.jsonl.gdpr.json``.
MANIFEST_SUFFIX = ".gdpr.json"
#: Item fields holding media results (``[{url, path, checksum, status}]``), the
#: setting naming the field, the store setting and the ledger kind.
MEDIA_FIELDS = (
    ("IMAGES_RESULT_FIELD", "images", "IMAGES_STORE", "image"),
    ("FILES_RESULT_FIELD", "files", "FILES_STORE", "file"),
    (None, "screenshots", "FILES_STORE", "screenshot"),
)


def stamp_time(moment: datetime) -> str:
    """``2026-11-23T16:17:00Z``: the fixed-width UTC form used in stamps (sorts as text)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: Canonical JSON (sorted keys, no spaces, UTF-8), the input of :func:`content_hash`.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content_hash(data: Any) -> str:
    return "sha256:" + hashlib.sha256(_CANONICAL.encode(data).encode("utf-8")).hexdigest()


def is_expired(expires_at: str, now: datetime) -> bool:
    """Whether a stamp's ``expires_at`` is at or before ``now`` (unparsable: expired)."""
    try:
        return parse_ts(expires_at) <= now
    except ValueError:
        return True


_STAMP_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def expiry_check(now: datetime) -> Callable[[str], bool]:
    """:func:`is_expired` at a fixed ``now``, fast for the stamps' own form.

    A stamp time (``2026-11-23T16:17:00Z``, whole seconds, fixed width) is at or
    before ``now`` exactly when it sorts at or before ``now`` truncated to the
    second, so it is compared as text; any other form is parsed.
    """
    bound = stamp_time(now)
    match = _STAMP_TIME.fullmatch

    def expired(expires_at: str) -> bool:
        if match(expires_at):
            return expires_at <= bound
        return is_expired(expires_at, now)

    return expired


# --------------------------------------------------------------------------- stamping


#: Runtime service: the crawl's :class:`RetentionExtension`.
EXTENSION_SERVICE = "retention.extension"


class RetentionPipeline:
    """Item pipeline (900): returns the item as a dict with a ``gdpr`` retention stamp.

    An item without provenance is dropped (fail closed): its source, and so its
    purpose and expiry, are unknown. The stamped item (a
    :class:`~scrapy_gdpr.provenance.ProvenancedDict`) carries its provenance. When
    it is the last pipeline, it hands each stamped item to the
    :class:`RetentionExtension` for the ledger itself (``recorder``); a handler of
    ``item_scraped``, called for every item, would cost the crawl about as much
    again as the stamp.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)
        self.policy = self.runtime.policy
        self.registry = registry(self.runtime)
        self.registry.taken_over = True
        #: set by the RetentionExtension when no pipeline comes after this one
        self.recorder: RetentionExtension | None = None
        spider_purpose = getattr(crawler.spider, "gdpr_purpose", None)
        purpose = self.policy.purpose(spider_purpose) if spider_purpose else self.policy.primary_purpose
        if purpose is None:
            raise ValueError(
                f"the spider's gdpr_purpose {spider_purpose!r} is not a purpose of policy {self.policy.policy_id}"
            )
        self.purpose = purpose
        # ids: a random per-process prefix and a counter (os.urandom per item is slow on
        # some machines); unique across processes, never reused
        self._id_prefix = uuid.uuid4().hex[:16]
        self._id_counter = itertools.count()
        self.stamped = 0
        self._periods: dict[str, tuple[Duration, timedelta | None, bool]] = {}
        # (item type, whole second collected) -> (collected_at, expires_at) as stamp text
        self._times: tuple[tuple[str, int], tuple[str, str]] | None = None
        self._constant = {
            "purpose": purpose.id,
            "lawful_basis": purpose.lawful_basis,
            "policy_id": self.policy.policy_id,
            "policy_fingerprint": self.policy.fingerprint,
        }

    def _period(self, item_type: str) -> tuple[Duration, timedelta | None, bool]:
        cached = self._periods.get(item_type)
        if cached is None:
            period = self.policy.retention_for_item(item_type)
            # without years or months a duration is a fixed length of time
            fixed = None if (period.years or period.months) else period.approx_timedelta()
            # a period of whole seconds moves every moment of one second into one
            # second, so the stamp times of a second's items are formatted once
            whole = float(period.seconds).is_integer()
            cached = self._periods[item_type] = (period, fixed, whole)
        return cached

    def _stamp_times(self, item_type: str, collected_at: datetime) -> tuple[str, str]:
        period, fixed, whole = self._period(item_type)
        key = (item_type, int(collected_at.timestamp() // 1))
        if whole and self._times is not None and self._times[0] == key:
            return self._times[1]
        collected = collected_at.astimezone(UTC)
        expires = collected + fixed if fixed is not None else period.add_to(collected)
        times = (stamp_time(collected), stamp_time(expires))
        if whole:
            self._times = (key, times)
        return times

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    def process_item(self, item: Any) -> dict[str, Any]:
        prov = self.registry.take(item)
        if prov is None:
            raise drop(
                self.crawler, "", Reason.RETENTION, clause=self.policy.clause("retention"),
                detail=f"{type(item).__name__} has no provenance: its source and expiry are unknown",
            )
        # a plain dict is copied as is (no adapter round-trip); other items through ItemAdapter
        data = ProvenancedDict(item if type(item) is dict else ItemAdapter(item).items(), prov)
        if STAMP_FIELD in data:
            raise drop(
                self.crawler, prov.url, Reason.RETENTION, clause=self.policy.clause("retention"),
                detail=f"the item already has a {STAMP_FIELD!r} field, which is reserved for the retention stamp",
            )
        item_type = type(item).__name__
        collected_at, expires_at = self._stamp_times(item_type, prov.collected_at)
        stamp = {
            "stamp_version": STAMP_VERSION,
            "item_id": f"{self._id_prefix}{next(self._id_counter):016x}",
            "item_type": item_type,
            "spider": self.runtime.spider_name,
            "source_url": prov.url,
            "collected_at": collected_at,
            "expires_at": expires_at,
            "retention": self._periods[item_type][0].text,
            **self._constant,
            "content_sha256": content_hash(data),
            "faces": prov.notes.get("faces"),
        }
        data[STAMP_FIELD] = stamp
        self.stamped += 1
        if self.recorder is not None:
            self.recorder.record_item(data, stamp)
        return data

    def close_spider(self) -> None:
        self.crawler.stats.set_value("gdpr/retention/stamped", self.stamped)


def get_stamp(item: Any) -> dict[str, Any] | None:
    if isinstance(item, dict):
        stamp = item.get(STAMP_FIELD)
        if isinstance(stamp, dict) and stamp.get("item_id") and stamp.get("expires_at"):
            return stamp
    return None


def flat_stamp(stamp: dict[str, Any]) -> dict[str, str]:
    """The stamp with text values, for CSV columns and XML elements."""
    out: dict[str, str] = {}
    for key, value in stamp.items():
        if value is None:
            out[key] = ""
        elif isinstance(value, (dict, list)):
            out[key] = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
        else:
            out[key] = str(value)
    return out


class RetentionItemFilter:
    """Feed ``item_filter``: only stamped items reach feed files.

    Honours ``item_classes`` by the stamp's ``item_type`` (stamped items are dicts)
    and the custom feed option ``gdpr_purpose`` (only items of that purpose).
    """

    def __init__(self, feed_options: dict[str, Any] | None) -> None:
        self.feed_options = feed_options or {}
        self.item_types = {
            load_object(c).__name__ if not isinstance(c, type) else c.__name__
            for c in self.feed_options.get("item_classes") or ()
        }
        self.purpose = self.feed_options.get("gdpr_purpose")
        self._warned = False

    def accepts(self, item: Any) -> bool:
        stamp = get_stamp(item)
        if stamp is None:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "A %(type)s without a retention stamp was kept out of a feed: is "
                    "scrapy_gdpr.retention.RetentionPipeline enabled?", {"type": type(item).__name__},
                )
            return False
        if self.item_types and stamp.get("item_type") not in self.item_types:
            return False
        return not (self.purpose and stamp.get("purpose") != self.purpose)


class GdprCsvItemExporter(CsvItemExporter):
    """CSV exporter writing the stamp as ``gdpr.<field>`` columns."""

    def __init__(self, file: Any, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        fields = self.fields_to_export
        if isinstance(fields, list | tuple) and STAMP_FIELD in fields:
            expanded: list[str] = []
            for name in fields:
                expanded += [CSV_PREFIX + f for f in STAMP_FIELDS] if name == STAMP_FIELD else [name]
            self.fields_to_export = expanded

    def export_item(self, item: Any) -> None:
        stamp = get_stamp(item)
        if stamp is not None:
            item = {k: v for k, v in item.items() if k != STAMP_FIELD}
            item.update({CSV_PREFIX + k: v for k, v in flat_stamp(stamp).items()})
        super().export_item(item)


class GdprXmlItemExporter(XmlItemExporter):
    """XML exporter writing the stamp as ``<gdpr><field>text</field>...</gdpr>``."""

    def export_item(self, item: Any) -> None:
        stamp = get_stamp(item)
        if stamp is not None:
            item = {**item, STAMP_FIELD: flat_stamp(stamp)}
        super().export_item(item)


class LockingFileFeedStorage(FileFeedStorage):
    """Local feed storage holding a shared lock while the crawl writes, so a purge or
    an erasure never replaces a file under an open exporter.

    When the file is opened it is also registered in the ledger (through the
    :class:`RetentionExtension`), so that a crawl that dies before its feed is
    closed still leaves a file that purge and erasure know about.
    """

    def __init__(self, uri: str, *, feed_options: dict[str, Any] | None = None, crawler: Crawler | None = None) -> None:
        super().__init__(uri, feed_options=feed_options)
        self.feed_options = feed_options or {}
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler, uri: str, *, feed_options: dict[str, Any] | None = None) -> Self:
        return cls(uri, feed_options=feed_options, crawler=crawler)

    def open(self, spider: Any) -> Any:
        if self.write_mode == "ab":
            self._repair_before_append()
        fh = super().open(spider)
        locked = feedfiles.lock_shared(fh, Path(self.path))
        extension = _retention_extension(self.crawler)
        if extension is not None:
            extension.feed_opened(Path(self.path), self.feed_options)
        return locked


    def _repair_before_append(self) -> None:
        """Never append to a torn file (a crawl killed while writing it): the
        complete records are kept, the torn part is removed and logged, and the file
        is closed as its exporter closes it, so the new lines follow a whole file."""
        path = Path(self.path)
        fmt = feedfiles.normalise_format(str(self.feed_options.get("format", ""))) or feedfiles.guess_format(path)
        if fmt not in feedfiles.FORMATS or not path.exists() or feedfiles.is_complete(path, fmt):
            return
        try:
            damage = feedfiles.repair(path, fmt)
        except feedfiles.FileBusy:
            return  # another crawl is writing it: its end is not torn, only not written yet
        for d in damage:
            logger.warning(
                "GDPR: %(path)s was left torn by a crawl that did not finish (%(detail)s); repaired before "
                "appending%(lost)s", {"path": path, "detail": d.detail,
                                      "lost": f", {len(d.fragment)} characters of the torn record removed"
                                      if d.lost_data else ""})
        if damage and self.crawler is not None and self.crawler.stats is not None:
            self.crawler.stats.inc_value("gdpr/retention/feeds_repaired")


def _retention_extension(crawler: Crawler | None) -> RetentionExtension | None:
    if crawler is None:
        return None
    from scrapy_gdpr.runtime import find_runtime

    rt = find_runtime(crawler)
    return None if rt is None else rt.services.get(EXTENSION_SERVICE)


def configure_feeds(settings: BaseSettings, crawler: Crawler) -> None:
    """Add-on hook: a retention filter on every feed, the stamp in every feed's fields,
    flattening CSV/XML exporters and locking local storage."""
    feeds = settings.getdict("FEEDS")
    if feeds:
        new: dict[Any, Any] = {}
        for uri, options in feeds.items():
            options = dict(options or {})
            options.setdefault("item_filter", RetentionItemFilter)
            fields = options.get("fields")
            if isinstance(fields, list | tuple) and STAMP_FIELD not in fields:
                options["fields"] = [*fields, STAMP_FIELD]
            new[uri] = options
        settings.set("FEEDS", new, settings.getpriority("FEEDS") or 0)
    for name, defaults in (
        ("FEED_EXPORTERS", {"csv": GdprCsvItemExporter, "xml": GdprXmlItemExporter}),
        ("FEED_STORAGES", {"": LockingFileFeedStorage, "file": LockingFileFeedStorage}),
    ):
        current = settings.getdict(name)
        for key, value in defaults.items():
            current.setdefault(key, value)
        settings.set(name, current, settings.getpriority(name) or 0)


# --------------------------------------------------------------------------- manifests


def manifest_path(feed: Path) -> Path:
    return feed.with_name(feed.name + MANIFEST_SUFFIX)


def write_manifest(feed: Path, fmt: str, summary: feedfiles.RewriteResult, *,
                   on_step: feedfiles.OnStep | None = None, **fields: Any) -> dict[str, Any]:
    st = feed.stat()
    data = {
        "manifest_version": 1,
        "file": feed.name,
        "format": feedfiles.normalise_format(fmt),
        "item_count": summary.kept,
        "earliest_expiry": summary.earliest or None,
        "latest_expiry": summary.latest or None,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "updated": stamp_time(datetime.now(UTC)),
        **fields,
    }
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    feedfiles.atomic_write(manifest_path(feed), lambda fh: fh.write(text.encode("utf-8")), on_step=on_step)
    return data


def read_manifest(feed: Path) -> dict[str, Any] | None:
    try:
        return json.loads(manifest_path(feed).read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except (FileNotFoundError, ValueError):
        return None


def local_feed_path(uri: str) -> Path | None:
    """The local path of a feed URI, or None for remote storage."""
    scheme = urlsplit(uri).scheme
    if uri.startswith("file:"):
        return Path(file_uri_to_path(uri))
    if scheme and len(scheme) > 1:  # not a Windows drive letter
        return None
    return Path(uri)


# --------------------------------------------------------------------------- purge


@dataclass
class PurgeResult:
    now: str
    dry_run: bool = False
    feed_lines: int = 0
    feed_files_rewritten: int = 0
    feed_files_removed: int = 0
    objects: int = 0
    objects_kept_shared: int = 0
    ledger_rows: int = 0
    busy: list[str] = field(default_factory=list)
    missing_format: list[str] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)
    #: expired items deleted per item store (scrapy_gdpr.stores)
    store_items: dict[str, int] = field(default_factory=dict)
    store_errors: list[str] = field(default_factory=list)
    #: torn or damaged parts of feed files (removed when the file was rewritten)
    damaged: list[dict[str, Any]] = field(default_factory=list)
    #: files that could not be purged (unreadable, not writable), with the reason
    errors: list[dict[str, str]] = field(default_factory=list)
    deleted: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "deleted"}
        out["deleted_count"] = len(self.deleted)
        return out


def _feed_format(path: Path, manifest: dict[str, Any] | None) -> str | None:
    if manifest and manifest.get("format") in feedfiles.FORMATS:
        return str(manifest["format"])
    return feedfiles.guess_format(path)


def _describe_exc(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc} ({exc.filename})"
    return str(exc) or type(exc).__name__


def _note_damage(result: PurgeResult, damage: list[feedfiles.Damage], *, removed: bool) -> None:
    for d in damage:
        result.damaged.append({**d.as_dict(), "removed": removed})
        logger.warning("GDPR purge: %(path)s: %(detail)s%(what)s",
                       {"path": d.path, "detail": d.detail,
                        "what": "; the torn part was removed" if removed else "; left as it is"})


def _purge_feed_file(location: str, ledger: Ledger, result: PurgeResult, dry_run: bool,
                     is_expired_at: Callable[[str], bool], lock_timeout: float,
                     record: Callable[[dict[str, Any]], None], record_many: Callable[[list[dict[str, Any]]], None],
                     audit: AuditLog | None, keep_deleted: int, rewritten: list[str], removed: list[str],
                     on_step: feedfiles.OnStep | None = None) -> None:
    """Purge one feed file (see :func:`purge`)."""
    path = Path(location)
    manifest = read_manifest(path)
    fmt = _feed_format(path, manifest)
    if fmt is None:
        result.missing_format.append(location)
        logger.warning("GDPR purge: unknown feed format of %(path)s, not purged", {"path": location})
        return
    if not path.exists():
        if not dry_run:
            ledger.delete_location(location)
            with contextlib.suppress(FileNotFoundError):
                manifest_path(path).unlink()
        return

    def expired(rec: feedfiles.FeedRecord) -> bool:
        return is_expired_at(rec.expires_at)

    if dry_run:
        damage: list[feedfiles.Damage] = []
        for rec in feedfiles.read_records(path, fmt, damage):
            if rec.stamp and expired(rec):
                result.feed_lines += 1
                record({"kind": "feed_line", "location": location, "item_id": rec.item_id,
                        "url": rec.source_url, "expires_at": rec.expires_at})
        _note_damage(result, damage, removed=False)
        return
    feedfiles.clean_temp_files(path.parent)
    try:
        outcome = feedfiles.rewrite(path, fmt, expired, lock_timeout=lock_timeout, repair=True, on_step=on_step)
    except feedfiles.FileBusy:
        result.busy.append(location)
        logger.warning("GDPR purge: %(path)s is being written by a crawl; purged on the next run",
                       {"path": location})
        return
    _note_damage(result, outcome.damage, removed=outcome.changed)
    if outcome.removed:
        result.feed_lines += outcome.removed
        if audit is not None or len(result.deleted) < keep_deleted:
            record_many([{"kind": "feed_line", "location": location, "item_id": item_id, "url": url,
                          "expires_at": expires_at} for item_id, url, expires_at in outcome.removed_records or []])
    if path.exists():
        if outcome.changed:
            result.feed_files_rewritten += 1
        feedfiles.notify_step(on_step, "before manifest")
        summary = outcome
        kept_manifest = {k: v for k, v in (manifest or {}).items() if k in ("purpose", "policy_fingerprint", "spider", "created")}
        write_manifest(path, fmt, summary, on_step=on_step, **kept_manifest)
        rewritten.append(location)
        file_row = ledger.feed_file(location)
        if file_row is not None and summary.earliest:
            file_row.expires_at = parse_ts(summary.earliest)
            ledger.set_feed_file(file_row)
        elif file_row is not None:  # only unstamped lines are left: nothing to expire
            ledger.delete_location(location, kinds=["feed_file"])
    else:
        result.feed_files_removed += 1
        feedfiles.notify_step(on_step, "before manifest removal")
        with contextlib.suppress(FileNotFoundError):
            manifest_path(path).unlink()
        removed.append(location)
        record({"kind": "feed_file", "location": location})
    feedfiles.notify_step(on_step, "feed file done")


def purge(
    ledger: Ledger,
    now: datetime,
    *,
    dry_run: bool = False,
    audit: AuditLog | None = None,
    spider: str = "",
    lock_timeout: float = 0.0,
    keep_deleted: int = 10_000,
    stores: Sequence[ItemStore] = (),
    on_step: feedfiles.OnStep | None = None,
) -> PurgeResult:
    """Delete everything expired at ``now``: feed lines, media objects, ledger rows.

    Order (so a purge killed at any point loses nothing unexpired, and a re-run
    finishes the job): each feed file is rewritten atomically first, then its
    manifest and ledger rows are updated; media objects are unlinked before their
    rows are deleted; rows without storage go last. Feed lines are judged by the
    ``expires_at`` in their own stamp, so a re-run needs nothing else.

    ``on_step`` (see :data:`scrapy_gdpr.feedfiles.OnStep`) is called with the name
    of each step as it is made durable.
    """
    now = now.astimezone(UTC)
    result = PurgeResult(now=now.isoformat(), dry_run=dry_run)
    if not dry_run:  # a dry run writes nothing, not even planner statistics
        ledger.optimize()

    def record_many(entries: list[dict[str, Any]]) -> None:
        room = keep_deleted - len(result.deleted)
        if room > 0:
            result.deleted += entries[:room]
        if audit is not None and not dry_run:
            audit.write_many([{"spider": spider, "url": entry.get("url", ""), "decision": "purged", **entry}
                              for entry in entries])

    def record(entry: dict[str, Any]) -> None:
        record_many([entry])

    is_expired_at = expiry_check(now)
    # The ledger rows of feed files are deleted together once every file is done: one
    # set-based delete instead of one per file. A kill before it leaves rows whose lines
    # or files are already gone; a re-run finds nothing left to drop and deletes them.
    rewritten: list[str] = []  # files rewritten: their expired line rows go
    removed: list[str] = []  # files deleted (nothing left in them): all their rows go

    # 1. feed files with expired lines. One file that cannot be read or written is
    #    reported and never stops the work on the others.
    for location in ledger.expired_locations(now, ["feed_line", "feed_file"]):
        try:
            _purge_feed_file(location, ledger, result, dry_run, is_expired_at, lock_timeout, record, record_many,
                             audit, keep_deleted, rewritten, removed, on_step)
        except Exception as exc:  # noqa: BLE001 - one file never stops the others; reported
            result.errors.append({"location": location, "error": _describe_exc(exc)})
            logger.warning("GDPR purge: %(path)s could not be purged: %(error)s; the other files were",
                           {"path": location, "error": _describe_exc(exc)})
    if rewritten:
        ledger.delete_at(rewritten, expired=now, kinds=["feed_line"])
    if removed:
        ledger.delete_at(removed)

    # 2. media objects: unlink, then delete the rows. A file another unexpired row
    #    still points to (the same image on two pages) is kept.
    objects = ledger.expired(now, kinds=list(OBJECT_KINDS))
    by_location: dict[str, list[Record]] = {}
    for rec in objects:
        by_location.setdefault(rec.location, []).append(rec)
    for location, recs in sorted(by_location.items()):
        if local_feed_path(location) is None:
            result.remote.append(location)
            continue
        still_needed = ledger.has_unexpired(location, now)
        if dry_run:
            if not still_needed:
                result.objects += 1
            for r in recs:
                record({"kind": r.kind, "location": location, "item_id": r.item_id, "url": r.url,
                        "object_url": r.object_url, "expires_at": r.expires_at.isoformat()})
            continue
        if still_needed:
            result.objects_kept_shared += 1
        else:
            try:
                gone = feedfiles.remove_durably(Path(location))
            except OSError as exc:
                result.errors.append({"location": location, "error": _describe_exc(exc)})
                logger.warning("GDPR purge: %(path)s could not be deleted: %(error)s",
                               {"path": location, "error": _describe_exc(exc)})
                continue
            if gone:
                result.objects += 1
            feedfiles.notify_step(on_step, "object removed")
            for r in recs:
                record({"kind": r.kind, "location": location, "item_id": r.item_id, "url": r.url,
                        "object_url": r.object_url})
        result.ledger_rows += ledger.delete_ids([r.id for r in recs if r.id is not None])

    # 3. items in the registered item stores (scrapy_gdpr.stores), before their ledger rows
    if stores:
        from scrapy_gdpr.stores import purge_stores

        in_stores = purge_stores(stores, now, dry_run=dry_run, audit=audit, spider=spider)
        result.store_items, result.store_errors = in_stores.by_store, in_stores.errors
        result.deleted += in_stores.deleted[: max(0, keep_deleted - len(result.deleted))]

    # 4. rows of items (no storage of their own) and anything else that expired
    if dry_run:
        result.ledger_rows = ledger.count_expired(now)
    else:
        result.ledger_rows += ledger.delete_expired(now, kinds=["item"])
    if audit is not None and not dry_run:
        audit.write({"spider": spider, "url": "", "decision": "purge_finished", **result.as_dict()})
    return result


# --------------------------------------------------------------------------- the extension


def _month(stamp_value: str) -> str:
    return stamp_value[:7]


class _LedgerWriter(threading.Thread):
    """Writes ledger rows off the reactor thread.

    Jobs are collected on the calling thread and handed over a batch at a time: a
    thread woken for every item would take the GIL from the reactor thousands of
    times a second and slow the crawl far more than the writes themselves.
    """

    #: Items per hand-over to the thread.
    batch_size = 1000

    def __init__(self, ledger: Ledger, batch: int | None = None) -> None:
        super().__init__(name="gdpr-ledger-writer", daemon=True)
        self.ledger = ledger
        self.batch = batch or self.batch_size
        self.queue: queue.Queue[list[Callable[[], list[Record]]] | None] = queue.Queue()
        self._pending: list[Callable[[], list[Record]]] = []
        self.errors: list[BaseException] = []
        self.written = 0

    def put(self, job: Callable[[], list[Record]]) -> None:
        self._pending.append(job)
        if len(self._pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.queue.put(self._pending)
            self._pending = []

    def run(self) -> None:
        while True:
            jobs = self.queue.get()
            if jobs is None:
                return
            rows: list[Record] = []
            for job in jobs:
                try:
                    rows += job()
                except Exception as exc:  # noqa: BLE001 - reported at close
                    self.errors.append(exc)
                    logger.error("GDPR ledger: cannot record a stored item: %(exc)s", {"exc": exc}, exc_info=True)
            if rows:
                try:
                    self.written += self.ledger.add(rows)
                except Exception as exc:  # noqa: BLE001 - reported at close
                    self.errors.append(exc)
                    logger.error("GDPR ledger: write failed: %(exc)s", {"exc": exc}, exc_info=True)

    def close(self) -> None:
        self.flush()
        self.queue.put(None)
        self.join()


class RetentionExtension:
    """Ledger recording, feed manifests, purge at spider open, report section."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)
        self.policy = self.runtime.policy
        self.config = self.runtime.config
        url = self.config.ledger
        if not url:
            raise ValueError("GDPR_LEDGER is empty: retention cannot be enforced without a ledger")
        self.ledger = open_ledger(url)
        self.writer = _LedgerWriter(self.ledger)
        self.writer.start()
        self._closed = False
        #: Told each step the purge at spider open makes durable (see :func:`purge`).
        self.on_step: feedfiles.OnStep | None = None
        settings = crawler.settings
        self.media = [
            (settings.get(setting) if setting else None) or default for setting, default, _, _ in MEDIA_FIELDS
        ]
        self.stores = {store: settings.get(store) for _, _, store, _ in MEDIA_FIELDS}
        self.thumbs = list((settings.getdict("IMAGES_THUMBS") or {}).keys())
        #: result field -> the media pipeline filling it (see _wire_recording)
        self._media_pipelines: dict[str, Any] = {}
        self.section: dict[str, Any] = {
            "ledger": _display_url(self.ledger.url),
            "items_stored": 0,
            "files_stored": Counter(),
            "feed_files": [],
            "expiry_by_month": Counter(),
            "purges": [],
        }
        self.runtime.report_sections["retention"] = self.section
        self.runtime.services[EXTENSION_SERVICE] = self
        #: the item filters of the local feeds recorded line by line when they close
        self._recorded_feeds = self._local_feed_filters(settings)
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.feed_slot_closed, signal=signals.feed_slot_closed)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(self.engine_stopped, signal=signals.engine_stopped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    # -- purge at open ----------------------------------------------------------
    async def spider_opened(self) -> None:
        self._wire_recording()
        if not self.config.purge_on_open:
            return
        now = datetime.now(UTC)
        result = await maybe_deferred_to_future(deferToThread(
            purge, self.ledger, now, audit=self.runtime.audit, spider=self.runtime.spider_name, on_step=self.on_step
        ))
        self._note_purge(result)

    def _note_purge(self, result: PurgeResult) -> None:
        stats = self.crawler.stats
        stats.inc_value("gdpr/retention/purged/feed_lines", result.feed_lines)
        stats.inc_value("gdpr/retention/purged/objects", result.objects)
        stats.inc_value("gdpr/retention/purged/ledger_rows", result.ledger_rows)
        if result.busy:
            stats.inc_value("gdpr/retention/purge_busy", len(result.busy))
        self.section["purges"].append(result.as_dict())
        logger.info(
            "GDPR purge: %(lines)d feed lines, %(objects)d files, %(rows)d ledger rows expired and deleted",
            {"lines": result.feed_lines, "objects": result.objects, "rows": result.ledger_rows},
            extra={"spider": self.crawler.spider},
        )

    # -- recording --------------------------------------------------------------
    def _wire_recording(self) -> None:
        """Record stored items from the retention pipeline when it is the last
        pipeline (then every item it returns is stored), else on ``item_scraped``
        (a later pipeline may still drop the item)."""
        scraper = getattr(self.crawler.engine, "scraper", None)
        pipelines = list(getattr(getattr(scraper, "itemproc", None), "middlewares", ()))
        # the media pipelines by result field: they say what they stored and its hash
        for pipeline in pipelines:
            for attr in ("images_result_field", "files_result_field"):
                result_field = getattr(pipeline, attr, None)
                if result_field:
                    self._media_pipelines.setdefault(str(result_field), pipeline)
                    break
        if pipelines and isinstance(pipelines[-1], RetentionPipeline):
            pipelines[-1].recorder = self
        else:
            self.crawler.signals.connect(self.item_scraped, signal=signals.item_scraped)

    @staticmethod
    def _local_feed_filters(settings: Any) -> list[RetentionItemFilter]:
        """The feeds whose every line is recorded in the ledger when they close:
        local files in a format the ledger reads, written through
        :class:`LockingFileFeedStorage` (registered when opened) and filtered by
        :class:`RetentionItemFilter` (so which items they take is known)."""
        storages = settings.getdict("FEED_STORAGES")
        out = []
        for uri, options in settings.getdict("FEEDS").items():
            options = options or {}
            uri = str(uri)
            if local_feed_path(uri) is None or options.get("postprocessing"):
                continue
            if feedfiles.normalise_format(str(options.get("format", ""))) not in feedfiles.FORMATS:
                continue
            scheme = urlsplit(uri).scheme if "://" in uri else ""
            storage = storages.get(scheme) or storages.get("file")
            item_filter = options.get("item_filter")
            try:
                storage_cls = load_object(storage) if storage else None
                filter_cls = load_object(item_filter) if item_filter else None
            except (ImportError, ValueError, NameError):
                continue
            if not (isinstance(storage_cls, type) and issubclass(storage_cls, LockingFileFeedStorage)):
                continue
            if not (isinstance(filter_cls, type) and issubclass(filter_cls, RetentionItemFilter)):
                continue
            out.append(filter_cls(options))
        return out

    def _feed_purpose(self, feed_purpose: str | None) -> str:
        return feed_purpose or self.policy.primary_purpose.id

    def feed_opened(self, path: Path, feed_options: dict[str, Any]) -> None:
        """A local feed file was opened for writing: register it in the ledger now,
        expiring no later than its first line can, so that purge and erasure reach
        it even if the crawl dies before the feed is closed and recorded."""
        now = datetime.now(UTC).replace(microsecond=0)  # stamps hold whole seconds
        items = self.policy.retention.items
        expires = min(self.policy.duration(period).add_to(now) for period in items.values()) if items else now
        row = Record(kind="feed_file", location=str(path.resolve()), url="", expires_at=expires,
                     spider=self.runtime.spider_name,
                     purpose=self._feed_purpose(feed_options.get("gdpr_purpose")),
                     policy_fingerprint=self.policy.fingerprint)

        # Written before the first line (once per file: a few milliseconds on the
        # reactor thread), so that it is in the ledger whatever happens next.
        current = self.ledger.feed_file(row.location)
        if current is None or current.expires_at > row.expires_at:
            self.ledger.set_feed_file(row)

    def item_scraped(self, item: Any) -> None:
        stamp = get_stamp(item)
        if stamp is not None:
            self.record_item(item, stamp)

    def record_item(self, item: dict[str, Any], stamp: dict[str, Any]) -> None:
        """Record a stored item and its files (the media pipelines have stored them)."""
        self.section["items_stored"] += 1
        self.section["expiry_by_month"][_month(stamp["expires_at"])] += 1
        media = []
        for (_, _, store_setting, kind), field_name in zip(MEDIA_FIELDS, self.media, strict=True):
            results = item.get(field_name)
            if isinstance(results, list):
                pipeline = self._media_pipelines.get(field_name)
                for entry in results:
                    if isinstance(entry, dict) and entry.get("path"):
                        media.append((kind, self.stores.get(store_setting), dict(entry),
                                      self._stored_files(pipeline, kind, entry)))
                        self.section["files_stored"][kind] += 1
        # An item that a recorded local feed takes is recorded as that feed's line
        # when the feed closes; a row of its own would only repeat it.
        item_row = not any(feed_filter.accepts(item) for feed_filter in self._recorded_feeds)
        if item_row or media:
            self.writer.put(lambda: self._records_for(stamp, media, item_row))

    def _stored_files(self, pipeline: Any, kind: str, entry: dict[str, Any]) -> list[tuple[str, str, str]]:
        """``(kind, path, content hash)`` of the files stored for one media entry.

        What the pipeline stored in this crawl it tells, with the hashes of the bytes
        it wrote. A file stored by an earlier crawl (Scrapy's "uptodate") or by a
        pipeline that does not tell is hashed from the store later (empty hash
        here), its thumbnails named by the pipeline's own ``thumb_path``.
        """
        path = str(entry["path"])
        told = pipeline.renditions_of(path) if hasattr(pipeline, "renditions_of") else None
        if told:
            return [(kind if row_kind in ("image", "file") else row_kind, p, sha) for row_kind, p, sha in told]
        files = [(kind, path, "")]
        if kind == "image":
            thumb_path = getattr(pipeline, "thumb_path", None)
            thumbs = getattr(pipeline, "thumbs", None)
            url = str(entry.get("url", ""))
            if callable(thumb_path) and isinstance(thumbs, dict) and url:
                request = Request(url, callback=NO_CALLBACK)
                files += [("thumbnail", str(thumb_path(request, thumb_id)), "") for thumb_id in thumbs]
            else:  # Scrapy's default layout
                stem = Path(path).stem
                files += [("thumbnail", f"thumbs/{size}/{stem}.jpg", "") for size in self.thumbs]
        return files

    def _records_for(self, stamp: dict[str, Any], media: list[tuple[str, Any, dict[str, Any], list[tuple[str, str, str]]]],
                     item_row: bool = True) -> list[Record]:
        collected = parse_ts(stamp["collected_at"])
        common = {
            "item_id": stamp["item_id"],
            "url": stamp["source_url"],
            "spider": stamp["spider"],
            "purpose": stamp["purpose"],
            "lawful_basis": stamp["lawful_basis"],
            "policy_fingerprint": stamp["policy_fingerprint"],
            "collected_at": collected,
        }
        rows = [Record(kind="item", location="", expires_at=parse_ts(stamp["expires_at"]),
                       content_hash=stamp["content_sha256"], **common)] if item_row else []
        for kind, store, entry, files in media:
            period = self.policy.retention.images if kind == "image" else self.policy.retention.files
            expires = self.policy.duration(period).add_to(collected)
            base = _store_path(store)
            for row_kind, path, content_hash in files:
                if base is None:
                    if row_kind == "thumbnail" and not content_hash:
                        continue  # a remote store: only thumbnails stored in this crawl are known to exist
                    location = f"{store}/{path}"
                else:
                    location = str((base / path).resolve())
                    if not content_hash:  # not stored in this crawl: hashed from the store, if it is there
                        content_hash = _file_hash(location)
                        if row_kind == "thumbnail" and not content_hash:
                            continue
                rows.append(Record(kind=row_kind, location=location, object_url=str(entry.get("url", "")),
                                   expires_at=expires, content_hash=content_hash, **common))
        return rows

    async def feed_slot_closed(self, slot: Any) -> None:
        path = local_feed_path(slot.uri)
        if path is None:
            logger.warning("GDPR: feed %(uri)s is not a local file; purge and erasure cannot reach it",
                           {"uri": slot.uri}, extra={"spider": self.crawler.spider})
            self.crawler.stats.inc_value("gdpr/retention/remote_feeds")
            return
        fmt = feedfiles.normalise_format(slot.format)
        if fmt not in feedfiles.FORMATS:
            logger.warning("GDPR: feed format %(fmt)s of %(uri)s cannot be purged", {"fmt": slot.format, "uri": slot.uri})
            return
        await maybe_deferred_to_future(deferToThread(self._record_feed, path, fmt, slot.feed_options.get("gdpr_purpose")))

    def _record_feed(self, path: Path, fmt: str, feed_purpose: str | None) -> None:
        summary = record_feed(
            self.ledger, path, fmt,
            purpose=self._feed_purpose(feed_purpose),
            policy_fingerprint=self.policy.fingerprint,
            spider=self.runtime.spider_name,
        )
        if summary is None:
            return
        self.section["feed_files"].append({
            "file": str(path), "items": summary.kept, "earliest_expiry": summary.earliest,
            "latest_expiry": summary.latest,
        })
        self.crawler.stats.inc_value("gdpr/retention/feed_files")

    async def spider_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.writer.flush()
        await maybe_deferred_to_future(deferToThread(self.writer.close))
        self.crawler.stats.set_value("gdpr/retention/ledger_rows", self.writer.written)
        self.section["files_stored"] = dict(self.section["files_stored"])
        self.section["expiry_by_month"] = dict(sorted(self.section["expiry_by_month"].items()))
        if self.writer.errors:
            self.crawler.stats.set_value("gdpr/retention/ledger_errors", len(self.writer.errors))

    async def engine_stopped(self) -> None:
        if not self._closed:
            await self.spider_closed()
        self.ledger.close()


def line_record(path: Path, rec: feedfiles.FeedRecord) -> Record:
    """The ledger row of one stamped feed record."""
    stamp = rec.stamp
    return Record(
        kind="feed_line", location=str(path), item_id=rec.item_id, url=rec.source_url,
        expires_at=parse_ts(rec.expires_at), spider=str(stamp.get("spider", "")),
        purpose=str(stamp.get("purpose", "")), lawful_basis=str(stamp.get("lawful_basis", "")),
        policy_fingerprint=str(stamp.get("policy_fingerprint", "")),
        collected_at=parse_ts(stamp["collected_at"]) if stamp.get("collected_at") else None,
        content_hash=str(stamp.get("content_sha256", "")),
    )


def record_feed(ledger: Ledger, path: Path, fmt: str, *, purpose: str, policy_fingerprint: str,
                spider: str) -> feedfiles.RewriteResult | None:
    """Write the manifest of a feed file and record its lines and the file in the ledger."""
    fmt = feedfiles.normalise_format(fmt)
    if not path.exists():
        return None
    path = path.resolve()
    rows: list[Record] = []
    summary = feedfiles.RewriteResult()
    with feedfiles.exclusive(path, timeout=60) as fd:
        if fd is None:
            return None
        for rec in feedfiles.read_records(path, fmt):
            if not rec.stamp or not rec.expires_at:
                continue
            summary.kept += 1
            summary.earliest = min(summary.earliest or rec.expires_at, rec.expires_at)
            summary.latest = max(summary.latest, rec.expires_at)
            rows.append(line_record(path, rec))
        write_manifest(
            path, fmt, summary, purpose=purpose, policy_fingerprint=policy_fingerprint, spider=spider,
            created=(read_manifest(path) or {}).get("created") or stamp_time(datetime.now(UTC)),
        )
    # the file's lines are recorded afresh (a file may be appended to by later crawls)
    ledger.delete_location(str(path), kinds=["feed_line", "feed_file"])
    ledger.add(rows)
    if summary.earliest:
        ledger.set_feed_file(Record(
            kind="feed_file", location=str(path), url="", expires_at=parse_ts(summary.earliest),
            spider=spider, purpose=purpose, policy_fingerprint=policy_fingerprint, content_hash=_file_hash(str(path)),
        ))
    return summary


def _store_path(store: Any) -> Path | None:
    if not store:
        return None
    store = str(store)
    if store.startswith("file://"):
        return Path(file_uri_to_path(store))
    if "://" in store:
        return None
    return Path(store)


def _file_hash(location: str) -> str:
    try:
        with open(location, "rb") as fh:
            return "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return ""


def _display_url(url: str) -> str:
    parts = urlsplit(url)
    return url.replace(f":{parts.password}@", ":***@") if parts.password else url


def iter_local_feeds(ledger: Ledger) -> Iterable[Path]:
    for rec in ledger.feed_files():
        yield Path(rec.location)


__all__ = [
    "GdprCsvItemExporter",
    "GdprXmlItemExporter",
    "LockingFileFeedStorage",
    "RetentionExtension",
    "RetentionItemFilter",
    "RetentionPipeline",
    "STAMP_FIELDS",
    "configure_feeds",
    "purge",
]


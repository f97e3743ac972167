"""The retention extension: records what a crawl stored in the ledger, writes feed
manifests, purges at spider open and adds the retention section of the report.

Ledger rows are written by one thread off the reactor (:class:`_LedgerWriter`).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy import Request, signals
from scrapy.http.request import NO_CALLBACK
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.misc import load_object
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from w3lib.url import file_uri_to_path

from scrapy_gdpr._component import component_runtime
from scrapy_gdpr.retention import feedfiles
from scrapy_gdpr.retention.expiry import PurgeResult, purge
from scrapy_gdpr.retention.feeds import LockingFileFeedStorage, local_feed_path, read_manifest, write_manifest
from scrapy_gdpr.retention.ledger import Ledger, Record, open_ledger, parse_ts
from scrapy_gdpr.retention.stamp import MEDIA_FIELDS, RetentionItemFilter, RetentionPipeline, get_stamp, stamp_time
from scrapy_gdpr.urls import mask_password

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Self

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)




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
        #: batches of jobs, markers (called once every batch before them is written) and None (stop)
        self.queue: queue.Queue[list[Callable[[], list[Record]]] | Callable[[], None] | None] = queue.Queue()
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

    def then(self, marker: Callable[[], None]) -> None:
        """Hand over the jobs collected so far, and call ``marker`` (in the writer
        thread) once they are written, or their writing failed (see ``errors``)."""
        self.flush()
        self.queue.put(marker)

    def run(self) -> None:
        while True:
            jobs = self.queue.get()
            if jobs is None:
                return
            if not isinstance(jobs, list):
                try:
                    jobs()
                except Exception:
                    logger.exception("GDPR ledger: a marker failed")
                continue
            rows: list[Record] = []
            for job in jobs:
                try:
                    rows += job()
                except Exception as exc:
                    self.errors.append(exc)
                    logger.exception("GDPR ledger: cannot record a stored item")
            if rows:
                try:
                    self.written += self.ledger.add(rows)
                except Exception as exc:
                    self.errors.append(exc)
                    logger.exception("GDPR ledger: write failed")

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
            "ledger": mask_password(self.ledger.url),
            "items_stored": 0,
            "files_stored": Counter(),
            "feed_files": [],
            "expiry_by_month": Counter(),
            "purges": [],
        }
        self.runtime.report_sections["retention"] = self.section
        self.runtime.retention = self
        #: the item filters of the local feeds recorded line by line when they close
        self._recorded_feeds = self._local_feed_filters(settings)
        #: the local feed files open for writing (flushed by :meth:`when_stored`)
        self._feed_files: list[IO[bytes]] = []
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
        for key, given in settings.getdict("FEEDS").items():
            options = given or {}
            uri = str(key)
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

    def track_feed_file(self, fh: IO[bytes]) -> None:
        """A local feed file the crawl writes: :meth:`when_stored` flushes it."""
        self._feed_files.append(fh)

    def when_stored(self) -> Deferred[None]:
        """Fires once every item handed on so far is in the files of the local feeds
        (flushed to the operating system: a worker killed after this loses none of
        those lines) and its ledger rows are written. Fails if a feed file cannot be
        written; a ledger row that cannot be written is logged as an ERROR by the
        writer (stat ``gdpr/retention/ledger_errors``) and does not stop it.

        The shared queue acknowledges a request only then (see
        :mod:`scrapy_gdpr.shared.queue`)."""
        from twisted.internet import defer, reactor

        self._feed_files = [fh for fh in self._feed_files if not fh.closed]
        try:
            for fh in self._feed_files:
                fh.flush()
        except (OSError, ValueError) as exc:
            return defer.fail(exc)
        if self._closed or not self.writer.is_alive():
            return defer.succeed(None)
        done: Deferred[None] = Deferred()
        self.writer.then(lambda: reactor.callFromThread(done.callback, None))
        return done

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
            for row_kind, path, hash_in_hand in files:
                content_hash = hash_in_hand
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
        with Path(location).open("rb") as fh:
            return "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return ""


def iter_local_feeds(ledger: Ledger) -> Iterable[Path]:
    for rec in ledger.feed_files():
        yield Path(rec.location)

"""Purge: delete every item and file whose retention period is over, everywhere it is held.

Run by ``scrapy gdpr-purge`` and, unless switched off, by the retention extension when a
spider opens.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy_gdpr.retention import feedfiles
from scrapy_gdpr.retention.feeds import local_feed_path, manifest_path, read_manifest, write_manifest
from scrapy_gdpr.retention.ledger import OBJECT_KINDS, Ledger, Record, parse_ts
from scrapy_gdpr.retention.stamp import expiry_check

if TYPE_CHECKING:

    from collections.abc import Callable, Sequence

    from scrapy_gdpr.audit import AuditLog
    from scrapy_gdpr.retention.stores import ItemStore
logger = logging.getLogger(__name__)


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
    #: expired items deleted per item store (scrapy_gdpr.retention.stores)
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

    ``on_step`` (see :data:`scrapy_gdpr.retention.feedfiles.OnStep`) is called with the
    name of each step as it is made durable.
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
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the purge of the others
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

    # 3. items in the registered item stores (scrapy_gdpr.retention.stores), before their ledger rows
    if stores:
        from scrapy_gdpr.retention.stores import purge_stores

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

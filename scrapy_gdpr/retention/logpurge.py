"""Logs and caches expire: ``retention.logs`` and ``retention.caches`` of the policy.

What is expired, by :func:`expire_logs_and_caches` (``scrapy gdpr-purge`` and, for
the spider's own files, :class:`LogRetention` when a spider opens):

* audit logs (``GDPR_AUDIT_LOG``, JSON Lines): lines whose ``time`` is older than
  ``retention.logs``;
* compliance reports (``GDPR_REPORT_DIR``): files last written longer ago than
  ``retention.logs``;
* the crawl log Scrapy writes (``LOG_FILE``): records (a line starting with a
  ``LOG_DATEFORMAT`` time, with the lines after it that do not) older than
  ``retention.logs``; a log whose lines carry no time (``LOG_FORMAT`` not starting
  with ``%(asctime)s``) is deleted whole once it was last written that long ago;
* Scrapy's HTTP cache (``HTTPCACHE_ENABLED``; whole pages): entries stored longer ago
  than ``retention.caches``. :func:`update_settings` (an add-on hook) refuses an
  HTTP cache when the policy does not set ``retention.caches`` or the storage is one
  this module cannot purge, and caps ``HTTPCACHE_EXPIRATION_SECS`` at the period.

The robots.txt, terms and TDMRep caches are kept in memory only, for one crawl.

Log files are rewritten in place (same file, so a crawl appending to it keeps
writing to it); a purge killed half-way leaves every unexpired line and at worst
some expired lines that the next run removes.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dateutil.relativedelta import relativedelta
from scrapy import signals
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.misc import load_object
from scrapy.utils.project import data_path
from twisted.internet.threads import deferToThread

from scrapy_gdpr.retention.ledger import parse_ts

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

    from scrapy_gdpr.policy import Policy
    from scrapy_gdpr.policy.durations import Duration

logger = logging.getLogger(__name__)

FILESYSTEM_CACHE = "scrapy.extensions.httpcache.FilesystemCacheStorage"
DBM_CACHE = "scrapy.extensions.httpcache.DbmCacheStorage"


class CacheRetentionError(ValueError):
    """An HTTP cache this crawl could not expire: refused at start-up."""


def cutoff(period: Duration, now: datetime) -> datetime:
    """The moment before which (inclusive) data kept for ``period`` has expired at ``now``."""
    moment: datetime = now - relativedelta(years=period.years, months=period.months, weeks=period.weeks,
                                           days=period.days, hours=period.hours, minutes=period.minutes,
                                           seconds=period.seconds)
    return moment


@dataclass
class LogPurgeResult:
    audit_lines: int = 0
    log_lines: int = 0
    log_files_removed: int = 0
    reports: int = 0
    cache_entries: int = 0
    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: what was not attempted, and why (not a failure: e.g. no policy was given)
    notes: list[str] = field(default_factory=list)

    def add(self, other: LogPurgeResult) -> None:
        for name in ("audit_lines", "log_lines", "log_files_removed", "reports", "cache_entries"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.files += other.files
        self.problems += other.problems

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --------------------------------------------------------------------------- in-place rewrite

#: Kept lines are gathered here (next to the file) before being copied back over it.
TEMP_SUFFIX = ".gdpr-purge.tmp"
_CHUNK = 1 << 20


def rewrite_in_place(path: Path, keep: Callable[[bytes], bool], *, dry_run: bool = False, lock: Any = None) -> int:
    """Drop the complete lines of ``path`` for which ``keep(line)`` is false (called on
    each line in order), writing the result into the same file: its inode stays, so a
    process appending to it goes on appending. A torn last line and anything appended
    meanwhile are kept. Returns how many lines were (or, with ``dry_run``, would be)
    dropped. ``lock`` (a ``threading.Lock``) is held by in-process writers.

    The file is read as a stream; kept lines go to a temporary file first and are then
    copied over the start of the file. Each kept line lies at or after the place it is
    copied to, so a kill during the copy loses no kept line (the file then holds some
    lines twice, and a later run drops the expired copies)."""
    temp = path.with_name(path.name + TEMP_SUFFIX)
    try:
        fh = path.open("r+b")
    except FileNotFoundError:
        return 0
    with fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)  # one purge at a time
        temp.unlink(missing_ok=True)  # left by a killed run: the file itself holds every kept line
        removed = 0
        consumed = 0  # bytes of complete lines read
        out = None if dry_run else temp.open("wb")
        try:
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # a torn last line: kept as it is
                consumed += len(line)
                if keep(line):
                    if out is not None:
                        out.write(line)
                else:
                    removed += 1
            if out is None or not removed:
                return removed
            with lock or contextlib.nullcontext():
                fh.seek(consumed)
                while chunk := fh.read(_CHUNK):  # the torn line, and lines appended meanwhile
                    out.write(chunk)
                read_to = fh.tell()
                out.flush()
                size = out.tell()
                out.close()
                with temp.open("rb") as src:
                    fh.seek(0)
                    while chunk := src.read(_CHUNK):
                        fh.write(chunk)
                # another process may have appended during the copy: move that too
                while True:
                    end = os.fstat(fh.fileno()).st_size
                    if end <= read_to:
                        break
                    fh.seek(read_to)
                    extra = fh.read(end - read_to)
                    read_to += len(extra)
                    fh.seek(size)
                    fh.write(extra)
                    size += len(extra)
                fh.truncate(size)
                fh.flush()
                os.fsync(fh.fileno())
        finally:
            if out is not None:
                out.close()
                temp.unlink(missing_ok=True)
    return removed


_AUDIT_TIME = re.compile(rb'^\{"time": "([^"]+)"')


def _keep_json_lines(before: datetime) -> Callable[[bytes], bool]:
    def keep(line: bytes) -> bool:
        try:
            m = _AUDIT_TIME.match(line)
            moment = parse_ts(m.group(1).decode() if m else json.loads(line)["time"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return True  # not dated: kept (never delete what cannot be judged)
        return moment > before

    return keep


def expire_audit_log(path: Path, before: datetime, *, dry_run: bool = False, lock: Any = None) -> int:
    """Delete the lines of a JSON Lines audit log whose ``time`` is at or before ``before``."""
    return rewrite_in_place(path, _keep_json_lines(before), dry_run=dry_run, lock=lock)


def _keep_log_records(before: datetime, date_format: str) -> Callable[[bytes], bool]:
    width = len(datetime.now().strftime(date_format))
    state = {"expired": False}  # continuation lines follow their record

    def keep(line: bytes) -> bool:
        try:
            moment = datetime.strptime(line[:width].decode("utf-8", "replace"), date_format).astimezone(UTC)
        except ValueError:
            return not state["expired"]
        state["expired"] = moment <= before
        return not state["expired"]

    return keep


def expire_crawl_log(path: Path, before: datetime, settings: BaseSettings, *, dry_run: bool = False,
                     result: LogPurgeResult) -> None:
    """Expire the records of Scrapy's ``LOG_FILE`` written at or before ``before``."""
    if not path.exists():
        return
    log_format = str(settings.get("LOG_FORMAT") or "")
    date_format = str(settings.get("LOG_DATEFORMAT") or "%Y-%m-%d %H:%M:%S")
    if log_format.startswith("%(asctime)s"):
        removed = rewrite_in_place(path, _keep_log_records(before, date_format), dry_run=dry_run)
        result.log_lines += removed
        if removed:
            result.files.append(str(path))
        return
    # lines without a time: the whole file goes once it was last written before the cut-off
    if datetime.fromtimestamp(path.stat().st_mtime, UTC) <= before:
        if not dry_run:
            path.unlink()
        result.log_files_removed += 1
        result.files.append(str(path))


def expire_reports(folder: Path, before: datetime, *, prefix: str = "", dry_run: bool = False,
                   exclude: Collection[str] = ()) -> list[Path]:
    """Delete the compliance reports (``.json``, ``.html``, ``.md``) in ``folder`` last
    written at or before ``before`` (only those named ``<prefix>...`` when given)."""
    gone: list[Path] = []
    if not folder.is_dir():
        return gone
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix not in (".json", ".html", ".md") or not path.name.startswith(prefix):
            continue
        if any(path.name.startswith(other) for other in exclude):
            continue
        if datetime.fromtimestamp(path.stat().st_mtime, UTC) <= before:
            if not dry_run:
                path.unlink(missing_ok=True)
            gone.append(path)
    return gone


# --------------------------------------------------------------------------- the HTTP cache


def http_cache_dir(settings: BaseSettings) -> Path:
    return Path(data_path(settings.get("HTTPCACHE_DIR") or "httpcache"))


def _storage_path(settings: BaseSettings) -> str:
    storage = settings.get("HTTPCACHE_STORAGE") or FILESYSTEM_CACHE
    try:
        cls = load_object(storage)
    except (ImportError, ValueError, NameError, AttributeError):
        return str(storage)
    return f"{cls.__module__}.{cls.__qualname__}"


def expire_filesystem_cache(folder: Path, before: datetime, *, dry_run: bool = False,
                            exclude: Collection[str] = ()) -> int:
    """Delete the entries of a ``FilesystemCacheStorage`` folder (``<spider>/<xx>/<key>/``)
    stored at or before ``before``; ``folder`` is the cache or one spider's sub-folder."""
    removed = 0
    if not folder.is_dir():
        return 0
    for meta in sorted(folder.glob("**/pickled_meta")):
        entry = meta.parent
        if exclude and entry.relative_to(folder).parts[0] in exclude:
            continue
        moment = _entry_time(entry)
        if moment is not None and moment > before:
            continue
        removed += 1
        if not dry_run:
            shutil.rmtree(entry, ignore_errors=True)
            with contextlib.suppress(OSError):
                entry.parent.rmdir()  # the <xx> folder, when empty
    return removed


def _entry_time(entry: Path) -> datetime | None:
    """When an entry was stored: ``meta``'s timestamp (plain text), else the newest file."""
    meta = entry / "meta"
    with contextlib.suppress(OSError, ValueError, SyntaxError, KeyError, TypeError):
        raw = meta.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # HTTPCACHE_GZIP
            import gzip

            raw = gzip.decompress(raw)
        return datetime.fromtimestamp(float(ast.literal_eval(raw.decode("utf-8"))["timestamp"]), UTC)
    with contextlib.suppress(OSError, ValueError):
        return datetime.fromtimestamp(max(p.stat().st_mtime for p in entry.iterdir()), UTC)
    return None


def expire_dbm_cache(db_path: Path, before: datetime, dbm_module: str, *, dry_run: bool = False) -> int:
    """Expire a ``DbmCacheStorage`` database (``<spider>.db``). The database is written
    afresh when anything expired, so deleted pages do not stay in its free space."""
    if not any(db_path.parent.glob(db_path.name + "*")):
        return 0
    module = import_module(dbm_module)
    limit = before.timestamp()
    with contextlib.closing(module.open(str(db_path), "r")) as db:
        keep: dict[bytes, bytes] = {}
        expired = 0
        for raw_key in list(db.keys()):
            key = raw_key if isinstance(raw_key, bytes) else raw_key.encode()
            if not key.endswith(b"_time"):
                continue
            stem = key[:-5]
            try:
                moment = float(db[key])
            except ValueError:
                moment = 0.0
            if moment <= limit:
                expired += 1
            else:
                keep[key] = db[key]
                data_key = stem + b"_data"
                with contextlib.suppress(KeyError):
                    keep[data_key] = db[data_key]
    if expired and not dry_run:
        with contextlib.closing(module.open(str(db_path), "n")) as db:
            for key, value in keep.items():
                db[key] = value
    return expired


def expire_http_cache(settings: BaseSettings, before: datetime, *, spider: str | None = None,
                      dry_run: bool = False, exclude: Collection[str] = ()) -> int:
    """Expire Scrapy's HTTP cache (one spider's part, or all of it)."""
    folder = http_cache_dir(settings)
    storage = _storage_path(settings)
    if storage == FILESYSTEM_CACHE:
        if spider:
            return expire_filesystem_cache(folder / spider, before, dry_run=dry_run)
        return expire_filesystem_cache(folder, before, dry_run=dry_run, exclude=exclude)
    if storage == DBM_CACHE:
        module = str(settings.get("HTTPCACHE_DBM_MODULE") or "dbm")
        names = [spider] if spider else sorted({p.name.split(".db")[0] for p in folder.glob("*.db*")} - set(exclude))
        return sum(expire_dbm_cache(folder / f"{name}.db", before, module, dry_run=dry_run) for name in names)
    raise CacheRetentionError(f"HTTPCACHE_STORAGE {storage} cannot be purged by scrapy-gdpr")


# --------------------------------------------------------------------------- one policy's files


def expire_logs_and_caches(
    settings: BaseSettings,
    policy: Policy,
    now: datetime,
    *,
    spider: str | None,
    audit_logs: Iterable[Path] = (),
    dry_run: bool = False,
    audit_lock: Any = None,
    other_spiders: Collection[str] = (),
    logs: bool = True,
    cache: bool = True,
) -> LogPurgeResult:
    """Expire, per ``policy``: the audit logs given, the compliance reports of ``spider``
    (all reports when None), ``LOG_FILE`` and the HTTP cache of ``spider`` (all when None).
    With ``spider`` None, the reports and cache of ``other_spiders`` are left to their
    own policies. ``logs`` and ``cache`` say which of the two to do.

    A file that cannot be read or written is reported in ``problems`` and the others
    are still done.
    """
    result = LogPurgeResult()
    logs_before = cutoff(policy.duration(policy.retention.logs), now)
    caches_before = cutoff(policy.duration(policy.retention.caches), now)
    for path in audit_logs if logs else ():
        try:
            removed = expire_audit_log(Path(path), logs_before, dry_run=dry_run, lock=audit_lock)
        except OSError as exc:
            result.problems.append(f"{path}: {exc}")
            continue
        result.audit_lines += removed
        if removed:
            result.files.append(str(path))
    report_dir = settings.get("GDPR_REPORT_DIR", "gdpr-reports")
    if report_dir and logs:
        try:
            gone = expire_reports(Path(report_dir), logs_before, prefix=f"{spider}-" if spider else "",
                                  dry_run=dry_run, exclude=[f"{o}-" for o in other_spiders])
        except OSError as exc:
            result.problems.append(f"{report_dir}: {exc}")
        else:
            result.reports += len(gone)
            result.files += [str(p) for p in gone]
    log_file = settings.get("LOG_FILE")
    if log_file and logs:
        try:
            expire_crawl_log(Path(log_file), logs_before, settings, dry_run=dry_run, result=result)
        except OSError as exc:
            result.problems.append(f"{log_file}: {exc}")
    if cache and (settings.getbool("HTTPCACHE_ENABLED") or http_cache_dir(settings).exists()):
        try:
            result.cache_entries += expire_http_cache(settings, caches_before, spider=spider, dry_run=dry_run,
                                                      exclude=other_spiders)
        except (OSError, CacheRetentionError) as exc:
            result.problems.append(f"HTTP cache {http_cache_dir(settings)}: {exc}")
    return result


# --------------------------------------------------------------------------- start-up and spider open


def update_settings(settings: BaseSettings, crawler: Crawler) -> None:
    """Add-on hook: refuse an HTTP cache the policy gives no period for, or that cannot be
    purged; keep cached pages no longer than ``retention.caches``; purge at spider open."""
    from scrapy_gdpr.runtime import get_runtime

    if settings.getbool("HTTPCACHE_ENABLED"):
        policy = get_runtime(crawler).policy
        where = f" ({policy.path})" if policy.path else ""
        if "caches" not in policy.retention.model_fields_set:
            raise CacheRetentionError(
                f"HTTPCACHE_ENABLED stores whole pages, but the policy{where} sets no retention.caches: "
                "add how long cached pages may be kept (for example 'retention: {caches: P7D}') and have it "
                "reviewed, or switch the HTTP cache off (HTTPCACHE_ENABLED = False)."
            )
        storage = _storage_path(settings)
        if storage not in (FILESYSTEM_CACHE, DBM_CACHE):
            raise CacheRetentionError(
                f"HTTPCACHE_STORAGE {storage} cannot be purged by scrapy-gdpr, so retention.caches cannot be "
                f"enforced: use {FILESYSTEM_CACHE} or {DBM_CACHE}, or switch the HTTP cache off."
            )
        period = int(policy.duration(policy.retention.caches).total_seconds())
        current = settings.getint("HTTPCACHE_EXPIRATION_SECS")
        if current <= 0 or current > period:
            # not served once expired, even before the next purge deletes it
            settings.set("HTTPCACHE_EXPIRATION_SECS", max(1, period),
                         max(settings.getpriority("HTTPCACHE_EXPIRATION_SECS") or 0, 15))
    settings.setdefault_in_component_priority_dict("EXTENSIONS", LogRetention, 0)


class LogRetention:
    """Expires the spider's audit log, its compliance reports, ``LOG_FILE`` and its part of
    the HTTP cache when the spider opens (``GDPR_PURGE_ON_OPEN``)."""

    def __init__(self, crawler: Crawler) -> None:
        from scrapy_gdpr._component import component_runtime

        self.crawler = crawler
        self.runtime = component_runtime(crawler)
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def spider_opened(self) -> None:
        if not self.runtime.config.purge_on_open:
            return
        now = datetime.now(UTC)
        # The HTTP cache first, on this thread: this handler runs before the cache
        # middleware opens its storage (a DBM database is written afresh here) and
        # before any response can be stored, so no entry is deleted while in use.
        result = self.purge(now, logs=False)
        result.add(await maybe_deferred_to_future(deferToThread(self.purge, now, cache=False)))
        stats = self.crawler.stats
        stats.inc_value("gdpr/retention/purged/audit_lines", result.audit_lines)
        stats.inc_value("gdpr/retention/purged/log_lines", result.log_lines + result.log_files_removed)
        stats.inc_value("gdpr/retention/purged/reports", result.reports)
        stats.inc_value("gdpr/retention/purged/cache_entries", result.cache_entries)
        for problem in result.problems:
            logger.warning("GDPR purge of logs and caches: %(p)s", {"p": problem}, extra={"spider": self.crawler.spider})
        logger.info(
            "GDPR purge: %(audit)d audit log lines, %(log)d crawl log lines, %(reports)d reports, %(cache)d HTTP "
            "cache entries expired and deleted",
            {"audit": result.audit_lines, "log": result.log_lines, "reports": result.reports,
             "cache": result.cache_entries},
            extra={"spider": self.crawler.spider},
        )

    def purge(self, now: datetime, *, logs: bool = True, cache: bool = True) -> LogPurgeResult:
        audit = self.runtime.audit
        paths = [audit.path] if audit.path is not None else []
        return expire_logs_and_caches(self.crawler.settings, self.runtime.policy, now,
                                      spider=self.runtime.spider_name, audit_logs=paths,
                                      audit_lock=audit._lock, logs=logs, cache=cache)


__all__ = [
    "CacheRetentionError",
    "LogPurgeResult",
    "LogRetention",
    "expire_audit_log",
    "expire_http_cache",
    "expire_logs_and_caches",
    "update_settings",
]


# --------------------------------------------------------------------------- gdpr-purge


def _policy_targets(settings: BaseSettings, policy_file: str | None, spider: str | None,
                    problems: list[str]) -> list[tuple[Policy, str | None]]:
    """(policy, spider) pairs to purge for: the given policy or spider, else every spider
    of the project with its policy."""
    from scrapy_gdpr.config import DEFAULTS, expand
    from scrapy_gdpr.policy import PolicyError, load_policy

    template = str(settings.get("GDPR_POLICY") or DEFAULTS["GDPR_POLICY"])
    wanted: list[tuple[str, str | None]] = []
    if policy_file:
        wanted.append((policy_file, spider))
    elif spider:
        wanted.append((expand(template, _Named(spider)), spider))  # type: ignore[arg-type]
    elif settings.getlist("SPIDER_MODULES"):
        from scrapy.spiderloader import get_spider_loader

        loader = get_spider_loader(settings)
        for name in sorted(loader.list()):
            spidercls = loader.load(name)
            enabled = (getattr(spidercls, "custom_settings", None) or {}).get("GDPR_ENABLED")
            if enabled is None:
                enabled = settings.getbool("GDPR_ENABLED", True)
            if not enabled or str(enabled).lower() in ("false", "0"):
                continue  # not gated: it writes no audit log of ours
            own = getattr(spidercls, "gdpr_policy", None)
            wanted.append((expand(str(own or template), _Named(name)), name))  # type: ignore[arg-type]
    targets: list[tuple[Policy, str | None]] = []
    for policy_path, spider_name in wanted:
        try:
            targets.append((load_policy(policy_path), spider_name))
        except PolicyError as exc:
            problems.append(f"logs and caches of spider {spider_name or '?'} not purged: {exc}")
    return targets


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name


def purge_logs_and_caches(settings: BaseSettings, now: datetime, *, policy_file: str | None = None,
                          spider: str | None = None, dry_run: bool = False) -> LogPurgeResult:
    """What ``scrapy gdpr-purge`` runs: each spider's audit log, reports and HTTP cache
    per its own policy; the files of no single spider (``LOG_FILE``, the commands'
    audit logs, other reports) per the shortest period of the policies involved."""
    from scrapy_gdpr.config import DEFAULTS, expand
    from scrapy_gdpr.retention.rights import audit_paths_for

    result = LogPurgeResult()
    targets = _policy_targets(settings, policy_file, spider, result.problems)
    if not targets:
        if not result.problems:
            result.notes.append("logs and caches not purged: no policy (give --policy FILE or --spider NAME, "
                                   "or run gdpr-purge in the project)")
        return result
    template = settings.get("GDPR_AUDIT_LOG", DEFAULTS["GDPR_AUDIT_LOG"])
    own: set[Path] = set()
    for policy, name in targets:
        logs = [Path(expand(str(template), _Named(name)))] if template and name else []  # type: ignore[arg-type]
        own.update(p.resolve() for p in logs)
        result.add(expire_logs_and_caches(settings, policy, now, spider=name, audit_logs=logs, dry_run=dry_run))
    # the rest, per the shortest periods: a shared file is kept no longer than any policy allows
    names = [name for _, name in targets if name]
    if names:
        shortest = max(targets, key=lambda t: cutoff(t[0].duration(t[0].retention.logs), now))[0]
        others = [p for p in audit_paths_for(str(template) if template else None) if p.resolve() not in own]
        result.add(expire_logs_and_caches(settings, shortest, now, spider=None, audit_logs=others, dry_run=dry_run,
                                          other_spiders=names))
    return result

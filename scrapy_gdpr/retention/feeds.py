"""Feed files as the crawl writes them: stamped exporters, locking local storage, manifests.

:func:`configure_feeds` (an add-on hook) puts the retention filter and the stamp on every
feed, flattening exporters for CSV and XML and :class:`LockingFileFeedStorage` for local files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy.exporters import CsvItemExporter, XmlItemExporter
from scrapy.extensions.feedexport import FileFeedStorage
from w3lib.url import file_uri_to_path

from scrapy_gdpr.retention import feedfiles
from scrapy_gdpr.retention.feedfiles import CSV_PREFIX, STAMP_FIELD
from scrapy_gdpr.retention.stamp import STAMP_FIELDS, RetentionItemFilter, flat_stamp, get_stamp, stamp_time

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

    from scrapy_gdpr.retention.recorder import RetentionExtension

logger = logging.getLogger(__name__)


#: Manifest files sit next to feed files: ``items.jsonl`` -> ``items.jsonl.gdpr.json``.
MANIFEST_SUFFIX = ".gdpr.json"


class GdprCsvItemExporter(CsvItemExporter):
    """CSV exporter writing the stamp as ``gdpr.<field>`` columns."""

    def __init__(self, file: Any, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        fields = self.fields_to_export
        if isinstance(fields, Mapping) and STAMP_FIELD in fields:
            columns: dict[str, str] = {}
            for name, column in fields.items():
                if name == STAMP_FIELD:
                    columns.update({CSV_PREFIX + f: CSV_PREFIX + f for f in STAMP_FIELDS})
                else:
                    columns[name] = column
            self.fields_to_export = columns
        elif isinstance(fields, list | tuple) and STAMP_FIELD in fields:
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
            extension.track_feed_file(locked)
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
    return None if rt is None else rt.retention


def _with_stamp(fields: Any) -> Any:
    """A feed's ``fields`` (a list, or a dict of field -> column name) with the stamp
    exported under its own name (a dict that renamed the stamp, or gave another
    field its name, would hide it from purge and erasure)."""
    if isinstance(fields, Mapping):
        out = {k: v for k, v in fields.items() if STAMP_FIELD not in (k, v)}
        out[STAMP_FIELD] = STAMP_FIELD
        return out
    if isinstance(fields, str):
        fields = [f.strip() for f in fields.split(",") if f.strip()]
    fields = list(fields)
    return fields if STAMP_FIELD in fields else [*fields, STAMP_FIELD]


def configure_feeds(settings: BaseSettings, crawler: Crawler) -> None:
    """Add-on hook: a retention filter on every feed, the stamp in every feed's fields,
    flattening CSV/XML exporters and locking local storage."""
    # FEED_EXPORT_FIELDS is every feed's default ``fields``: a list or a dict
    # (field -> column name) without the stamp would export items unstamped
    default_fields = settings.getdictorlist("FEED_EXPORT_FIELDS") or None
    if default_fields is not None:
        settings.set("FEED_EXPORT_FIELDS", _with_stamp(default_fields),
                     settings.getpriority("FEED_EXPORT_FIELDS") or 0)
    feeds = settings.getdict("FEEDS")
    if feeds:
        new: dict[Any, Any] = {}
        for uri, given in feeds.items():
            options = dict(given or {})
            options.setdefault("item_filter", RetentionItemFilter)
            fields = options.get("fields", default_fields)
            if fields:
                options["fields"] = _with_stamp(fields)
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
    def write(fh: IO[bytes]) -> None:
        fh.write(text.encode("utf-8"))

    feedfiles.atomic_write(manifest_path(feed), write, on_step=on_step)
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

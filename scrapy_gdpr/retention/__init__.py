"""Retention: what is stored, for how long, and where to find it again.

* :mod:`.stamp`: the retention stamp every item carries, and the feed filter.
* :mod:`.feeds`: stamped exporters, locking local feed storage, manifests.
* :mod:`.expiry`: deleting what has expired.
* :mod:`.recorder`: the extension that records a crawl in the ledger and purges at open.
* :mod:`.ledger`: the retention ledger (SQLite or PostgreSQL).
* :mod:`.feedfiles`: reading and rewriting stamped feed files.
* :mod:`.stores`: item stores beyond feed files.
* :mod:`.rights`: access and erasure for a data subject.
* :mod:`.logpurge`: expiry of logs and caches.
"""

from __future__ import annotations

import importlib
from typing import Any

# The names ``scrapy_gdpr.retention`` held when it was one module, for settings and code
# that name them (``scrapy_gdpr.retention.RetentionPipeline``). Imported on first use so
# that importing the ledger does not import the whole retention stage.
_MOVED_NAMES: dict[str, str] = {
    "GdprCsvItemExporter": "scrapy_gdpr.retention.feeds",
    "GdprXmlItemExporter": "scrapy_gdpr.retention.feeds",
    "LockingFileFeedStorage": "scrapy_gdpr.retention.feeds",
    "MANIFEST_SUFFIX": "scrapy_gdpr.retention.feeds",
    "_retention_extension": "scrapy_gdpr.retention.feeds",
    "configure_feeds": "scrapy_gdpr.retention.feeds",
    "local_feed_path": "scrapy_gdpr.retention.feeds",
    "manifest_path": "scrapy_gdpr.retention.feeds",
    "read_manifest": "scrapy_gdpr.retention.feeds",
    "write_manifest": "scrapy_gdpr.retention.feeds",
    "PurgeResult": "scrapy_gdpr.retention.expiry",
    "_describe_exc": "scrapy_gdpr.retention.expiry",
    "_feed_format": "scrapy_gdpr.retention.expiry",
    "_note_damage": "scrapy_gdpr.retention.expiry",
    "_purge_feed_file": "scrapy_gdpr.retention.expiry",
    "purge": "scrapy_gdpr.retention.expiry",
    "RetentionExtension": "scrapy_gdpr.retention.recorder",
    "_LedgerWriter": "scrapy_gdpr.retention.recorder",
    "_file_hash": "scrapy_gdpr.retention.recorder",
    "_month": "scrapy_gdpr.retention.recorder",
    "_store_path": "scrapy_gdpr.retention.recorder",
    "iter_local_feeds": "scrapy_gdpr.retention.recorder",
    "line_record": "scrapy_gdpr.retention.recorder",
    "record_feed": "scrapy_gdpr.retention.recorder",
    "MEDIA_FIELDS": "scrapy_gdpr.retention.stamp",
    "RetentionItemFilter": "scrapy_gdpr.retention.stamp",
    "RetentionPipeline": "scrapy_gdpr.retention.stamp",
    "STAMP_FIELDS": "scrapy_gdpr.retention.stamp",
    "STAMP_VERSION": "scrapy_gdpr.retention.stamp",
    "_CANONICAL": "scrapy_gdpr.retention.stamp",
    "_STAMP_TIME": "scrapy_gdpr.retention.stamp",
    "content_hash": "scrapy_gdpr.retention.stamp",
    "expiry_check": "scrapy_gdpr.retention.stamp",
    "flat_stamp": "scrapy_gdpr.retention.stamp",
    "get_stamp": "scrapy_gdpr.retention.stamp",
    "is_expired": "scrapy_gdpr.retention.stamp",
    "stamp_time": "scrapy_gdpr.retention.stamp",
}


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    if name not in _MOVED_NAMES:
        raise AttributeError(f"module 'scrapy_gdpr.retention' has no attribute {name!r}")
    return getattr(importlib.import_module(_MOVED_NAMES[name]), name)

"""The retention stamp: purpose, lawful basis, policy fingerprint and expiry on every item.

* :class:`RetentionPipeline` (item pipeline, 900) turns every item into a dict with a
  ``_gdpr`` stamp.
* :class:`RetentionItemFilter` lets only stamped items into a feed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy.utils.misc import load_object

from scrapy_gdpr._component import component_runtime
from scrapy_gdpr.audit import Reason, drop
from scrapy_gdpr.items.provenance import ProvenancedDict, registry
from scrapy_gdpr.retention.feedfiles import STAMP_FIELD
from scrapy_gdpr.retention.ledger import parse_ts

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Self

    from scrapy.crawler import Crawler

    from scrapy_gdpr.policy.durations import Duration
    from scrapy_gdpr.retention.recorder import RetentionExtension

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


class RetentionPipeline:
    """Item pipeline (900): returns the item as a dict with a ``gdpr`` retention stamp.

    An item without provenance is dropped (fail closed): its source, and so its
    purpose and expiry, are unknown. The stamped item (a
    :class:`~scrapy_gdpr.items.provenance.ProvenancedDict`) carries its provenance. When
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
                self.runtime, "", Reason.RETENTION, clause=self.policy.clause("retention"),
                detail=f"{type(item).__name__} has no provenance: its source and expiry are unknown",
            )
        # a plain dict is copied as is (no adapter round-trip); other items through ItemAdapter
        data = ProvenancedDict(item if type(item) is dict else ItemAdapter(item).items(), prov)
        if STAMP_FIELD in data:
            raise drop(
                self.runtime, prov.url, Reason.RETENTION, clause=self.policy.clause("retention"),
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
                    "scrapy_gdpr.retention.stamp.RetentionPipeline enabled?", {"type": type(item).__name__},
                )
            return False
        if self.item_types and stamp.get("item_type") not in self.item_types:
            return False
        return not (self.purpose and stamp.get("purpose") != self.purpose)

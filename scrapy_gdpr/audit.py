"""Reason codes, the audit log, and the one place every refusal goes through.

``raise refuse(...)`` keeps the reason code, the stats key ``gdpr/blocked/<reason>``
and the audit log line together, so the three cannot drift apart. Scrapy does not
log an ``IgnoreRequest``; the audit line is the record of every refusal.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from scrapy_gdpr.exceptions import GdprDropItem, PolicyViolation

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

#: How many sample URLs per reason the compliance report keeps.
SAMPLES_PER_REASON = 10


class Reason(StrEnum):
    """Why a request, item or image was refused. The value is the stats key suffix."""

    DOMAIN = "domain"  # not listed in the policy, or a denied path
    TERMS = "terms"  # terms forbid crawling, or were never reviewed
    TERMS_DRIFT = "terms_drift"  # terms text changed since the review
    ROBOTS = "robots"  # robots.txt disallows
    ROBOTS_UNREACHABLE = "robots_unreachable"  # robots.txt 5xx/429/unreachable: complete disallow
    OPTOUT = "optout"  # an opt-out signal reserves the purpose
    OBJECTION = "objection"  # a person's objection (or an erasure) covers it
    JURISDICTION = "jurisdiction"  # an excluded jurisdiction
    PRIVATE_NETWORK = "private_network"  # resolves to loopback/private/link-local/metadata
    RETRY_AFTER = "retry_after"  # the host asked us to wait longer than the policy's ceiling
    FACES = "faces"  # the face stage refused an image or item
    UNCHECKED = "unchecked"  # content that cannot be checked (unknown type, undecodable)
    RETENTION = "retention"  # no provenance or retention stamp
    MALFORMED_URL = "malformed_url"  # user information, a bad port or host, control characters
    UNDECIDED = "undecided"  # a component could not decide: fail closed
    PAYMENT_REQUIRED = "payment_required"  # HTTP 402 (pay-per-crawl): refused, never retried
    DENY_LIST = "deny_list"  # the host is on a deny list file named in the policy (opt_out.deny_lists)
    LICENSE = "license"  # an RSL licence prohibits the purpose, or needs a licence the policy does not hold


#: What :meth:`AuditLog.write` does with ``json.dumps``, built once.
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)


class AuditLog:
    """Append-only JSON Lines audit log, safe to write from several threads."""

    def __init__(self, path: Path | None, defaults: dict[str, Any] | None = None) -> None:
        self.path = path
        #: Fields every line carries unless the line sets them (e.g. the policy fingerprint).
        self.defaults = dict(defaults or {})
        self._lock = threading.Lock()
        self._fh = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **record}
        for key, value in self.defaults.items():
            record.setdefault(key, value)
        line = _ENCODER.encode(record)  # json.dumps with these options, without a new encoder per line
        with self._lock:
            if self._fh is not None:
                self._fh.write(line + "\n")
                self._fh.flush()

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        """Write several lines with one timestamp and one flush (e.g. a purge's deletions);
        each line as :meth:`write` makes it."""
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        encode = _ENCODER.encode
        defaults = self.defaults
        lines = []
        for record in records:
            line = {"time": stamp, **record}
            for key, value in defaults.items():
                line.setdefault(key, value)
            lines.append(encode(line))
        if not lines:
            return
        lines.append("")
        text = "\n".join(lines)
        with self._lock:
            if self._fh is not None:
                self._fh.write(text)
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


class Refusals:
    """Counts and sample URLs of refusals, for the compliance report."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.samples: dict[str, list[str]] = defaultdict(list)
        #: The detail of the first refusal of each reason (shown in the close summary).
        self.details: dict[str, str] = {}
        #: Refusals by kind (request, item, image, ...).
        self.kinds: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def add(self, reason: str, url: str, *, kind: str = "request", detail: str = "") -> None:
        with self._lock:
            self.counts[reason] += 1
            self.kinds[kind] += 1
            if detail and reason not in self.details:
                self.details[reason] = detail
            if len(self.samples[reason]) < SAMPLES_PER_REASON and url not in self.samples[reason]:
                self.samples[reason].append(url)


class AuditContext(Protocol):
    """What a refusal or an audit line needs of a crawl (a :class:`~scrapy_gdpr.runtime.GdprRuntime`)."""

    @property
    def crawler(self) -> Crawler: ...
    @property
    def audit(self) -> AuditLog: ...
    @property
    def refusals(self) -> Refusals: ...
    @property
    def spider_name(self) -> str: ...
    @property
    def policy_fingerprint(self) -> str: ...


def record(rt: AuditContext, event: str, url: str = "", **fields: Any) -> None:
    """Write an audit line that is not a refusal (a decision, a purge, an erasure)."""
    rt.audit.write(
        {
            "spider": rt.spider_name,
            "url": url,
            "decision": event,
            "policy_fingerprint": rt.policy_fingerprint,
            **fields,
        }
    )


def _refusal(rt: AuditContext, url: str, reason: Reason | str, clause: str, detail: str, kind: str) -> str:
    reason = str(reason)
    crawler = rt.crawler
    if crawler.stats is not None:
        crawler.stats.inc_value(f"gdpr/blocked/{reason}")
    rt.refusals.add(reason, url, kind=kind, detail=detail)
    rt.audit.write(
        {
            "spider": rt.spider_name,
            "url": url,
            "decision": "refused",
            "kind": kind,
            "reason": reason,
            "clause": clause,
            "detail": detail,
            "policy_fingerprint": rt.policy_fingerprint,
        }
    )
    message = f"Refused ({reason}): {detail}" if detail else f"Refused ({reason})"
    logger.debug(
        "GDPR refused %(kind)s %(url)s: %(reason)s (%(clause)s) %(detail)s",
        {"kind": kind, "url": url, "reason": reason, "clause": clause, "detail": detail},
        extra={"spider": crawler.spider},
    )
    return message


def refuse(rt: AuditContext, url: str, reason: Reason | str, clause: str = "", detail: str = "") -> PolicyViolation:
    """Count, log and audit a refused request; return the exception to raise."""
    message = _refusal(rt, url, reason, clause, detail, "request")
    return PolicyViolation(str(reason), message, clause=clause)


def drop(rt: AuditContext, url: str, reason: Reason | str, clause: str = "", detail: str = "", *, kind: str = "item") -> GdprDropItem:
    """Count, log and audit a refused item (or image); return the DropItem to raise."""
    message = _refusal(rt, url, reason, clause, detail, kind)
    return GdprDropItem(str(reason), message, clause=clause)


def note_refusal(rt: AuditContext, url: str, reason: Reason | str, clause: str = "", detail: str = "", *, kind: str) -> None:
    """Count, log and audit a refusal that raises nothing (e.g. one image of an item,
    or a browser sub-resource aborted by the Playwright predicate)."""
    _refusal(rt, url, reason, clause, detail, kind)

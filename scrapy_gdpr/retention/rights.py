"""Data-subject rights: access (one archive), erasure (everywhere), receipts, and the
record of processing.

A request is matched by selectors, never by identity documents:

* ``url``: a page or image URL, exactly;
* ``prefix``: every URL starting with it;
* ``domain``: a host and its subdomains;
* ``contains``: any stored item whose URL or text contains it (a name, a handle).

There is no time window and no limit on how much is returned or erased.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import secrets
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy_gdpr.gate.objections import append_objection, objection_value
from scrapy_gdpr.retention import feedfiles
from scrapy_gdpr.retention.feeds import manifest_path, read_manifest, write_manifest
from scrapy_gdpr.retention.ledger import OBJECT_KINDS, Ledger, Record, Selector, parse_ts
from scrapy_gdpr.retention.receipts import access_html, receipt_html, receipt_markdown
from scrapy_gdpr.retention.recorder import line_record
from scrapy_gdpr.retention.stores import FoundItem, ItemStore, add_store_holdings, erase_from_stores
from scrapy_gdpr.retention.textmatch import normalise_text, text_values
from scrapy_gdpr.urls import mask_password

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from scrapy_gdpr.audit import AuditLog

logger = logging.getLogger(__name__)

#: Selector kinds that also go to the objection list (``contains`` cannot: the
#: request gate sees URLs, not content).
OBJECTION_KINDS = {"url": "url", "prefix": "prefix", "domain": "domain"}


def new_request_id(kind: str, now: datetime | None = None) -> str:
    """``ACC-20261123T162300Z-3f9a1c`` / ``ERA-...``."""
    now = now or datetime.now(UTC)
    prefix = {"access": "ACC", "erasure": "ERA"}[kind]
    return f"{prefix}-{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


@dataclass
class Holdings:
    """Everything held that matches a request, and what was searched to find it."""

    selectors: list[Selector]
    items: dict[str, FoundItem] = field(default_factory=dict)
    rows: list[Record] = field(default_factory=list)
    feed_files: list[str] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    #: the item stores searched (``GDPR_ITEM_STORES``, see scrapy_gdpr.retention.stores)
    stores_searched: list[str] = field(default_factory=list)
    #: item stores that could not be searched, with why
    store_errors: list[str] = field(default_factory=list)
    #: every feed file read (known to the ledger, named in FEEDS or given)
    searched_feeds: list[str] = field(default_factory=list)
    #: feed files that could not be read, with the reason
    unreadable: list[dict[str, str]] = field(default_factory=list)
    #: torn or damaged parts of feed files (``matches``: whether the request matches it)
    damaged: list[dict[str, Any]] = field(default_factory=list)
    #: feed files with a damaged part that matches the request
    damaged_files: list[str] = field(default_factory=list)
    #: feed files of the crawls (stamped records, a manifest or a ledger row) with a
    #: damaged part: an erasure repairs them when they are free
    repairable: list[str] = field(default_factory=list)
    #: distinct stamped items read in every feed file, plus the ledger's item rows
    items_held: int = 0
    #: feed files searched that hold stamped items
    stamped_feeds: int = 0

    @property
    def objects(self) -> list[Record]:
        seen: dict[str, Record] = {}
        for r in self.rows:
            if r.kind in OBJECT_KINDS:
                seen.setdefault(r.location, r)
        return list(seen.values())


# --------------------------------------------------------------------------- matching


def item_values(rec: feedfiles.FeedRecord) -> list[str]:
    """The decoded values of an item's own fields: JSON escapes, XML entities and CSV
    quoting undone; not the field names, not the retention stamp."""
    raw = rec.raw
    if isinstance(raw, str):  # a JSON Lines line
        try:
            data = json.loads(raw)
        except ValueError:
            return []
        raw = data
    if isinstance(raw, dict):
        return list(text_values(raw))
    if isinstance(raw, tuple):  # CSV: (header, row)
        header, row = raw
        return [v for k, v in zip(header, row, strict=False) if not k.startswith(feedfiles.CSV_PREFIX)]
    if hasattr(raw, "iter"):  # an XML item element
        out: list[str] = []
        for child in raw:
            if child.tag == feedfiles.STAMP_FIELD:
                continue
            out += [e.text for e in child.iter() if len(e) == 0 and e.text]
        return out
    return list(text_values(raw, top=False))


class Matcher:
    """Whether a feed record (or a damaged part of a file) matches the selectors.

    URL selectors match the record's ``source_url`` (the stamp); ``contains`` matches
    the normalised text of the item's own values (:func:`normalise_text`).
    """

    def __init__(self, selectors: Sequence[Selector]) -> None:
        self.url_selectors = [s for s in selectors if s.kind != "contains"]
        self.needles = [normalise_text(s.value) for s in selectors if s.kind == "contains"]
        self.needles = [n for n in self.needles if n]

    def _text_matches(self, values: Iterable[str]) -> bool:
        if not self.needles:
            return False
        for value in values:
            text = normalise_text(value)
            if any(n in text for n in self.needles):
                return True
        return False

    def record(self, rec: feedfiles.FeedRecord) -> bool:
        if any(sel.matches_url(rec.source_url) for sel in self.url_selectors):
            return True
        return bool(self.needles) and self._text_matches(item_values(rec))

    def fragment(self, fmt: str, text: str) -> bool:
        """A torn record: its URLs and values, as far as they can be decoded."""
        values = _fragment_values(fmt, text)
        urls = [u for v in values for u in _URL_IN_TEXT.findall(v)]
        if any(sel.matches_url(u.rstrip(".,;)")) for sel in self.url_selectors for u in urls):
            return True
        return self._text_matches(values)


_URL_IN_TEXT = re.compile(r"https?://[^\s<>\"',]+")
_JSON_STRING = re.compile(r'"((?:[^"\\]|\\.)*)(?:"(\s*:)?|\\?$)', re.DOTALL)


def _fragment_values(fmt: str, text: str) -> list[str]:
    if fmt in ("json", "jsonlines"):
        out = []
        for m in _JSON_STRING.finditer(text):
            if m.group(2):  # a key
                continue
            body = m.group(1)
            try:
                out.append(json.loads(f'"{body}"'))
            except ValueError:  # cut inside an escape
                out.append(re.sub(r"\\u[0-9a-fA-F]{0,3}$|\\$", "", body))
        return out
    if fmt == "csv":
        try:
            return [cell for row in csv.reader(io.StringIO(text)) for cell in row]
        except csv.Error:
            return [text]
    return [text]


def record_matches(rec: feedfiles.FeedRecord, selectors: Sequence[Selector]) -> bool:
    return Matcher(selectors).record(rec)


def feed_locations(ledger: Ledger) -> list[str]:
    """Every feed file the ledger knows (files and files of recorded lines)."""
    return ledger.locations(["feed_file", "feed_line"])


def _format_of(path: Path) -> str | None:
    manifest = read_manifest(path)
    if manifest and manifest.get("format") in feedfiles.FORMATS:
        return str(manifest["format"])
    return feedfiles.guess_format(path)


def find_holdings(ledger: Ledger, selectors: Sequence[Selector], audit_paths: Iterable[Path] = (),
                  feeds: Iterable[str | Path] = (), stores: Sequence[ItemStore] = ()) -> Holdings:
    """Scan the ledger, every known feed file (and ``feeds``), the item stores and the
    audit logs for ``selectors``. A file that cannot be read is reported in ``unreadable`` and the
    others are still searched."""
    out = Holdings(selectors=list(selectors))
    matcher = Matcher(selectors)
    rows: dict[int, Record] = {}
    for sel in selectors:
        if sel.kind == "contains":
            continue  # text is matched on item values, never on URLs or stamps
        for r in ledger.find(sel):
            rows[r.id or 0] = r
    # every feed file is read: lines the ledger has not recorded yet are found too
    known = feed_locations(ledger)
    locations = list(dict.fromkeys([*known, *(str(Path(p).resolve()) for p in feeds)]))
    known_set = set(known)
    seen_ids: set[str] = set()
    for location in locations:
        path = Path(location)
        fmt = _format_of(path)
        if fmt is None or not path.exists():
            continue
        out.searched_feeds.append(location)
        damage: list[feedfiles.Damage] = []
        matched: list[tuple[feedfiles.FeedRecord, str]] = []
        stamped = 0
        try:
            for rec in feedfiles.read_records(path, fmt, damage):
                if not rec.stamp:
                    continue
                stamped += 1
                seen_ids.add(rec.item_id)
                if matcher.record(rec):
                    matched.append((rec, fmt))
        except Exception as exc:  # noqa: BLE001 - one unreadable file is reported, the others searched
            out.unreadable.append({"location": location, "error": _describe(exc)})
            logger.warning("GDPR: %(path)s cannot be read: %(error)s; the other files are searched",
                           {"path": location, "error": _describe(exc)})
            continue
        if stamped:
            out.stamped_feeds += 1
        # a file given or named in FEEDS that holds no stamped item and that no crawl
        # recorded is not a feed of ours: it is searched, but never rewritten
        ours = bool(stamped) or location in known_set or manifest_path(path).exists()
        if not ours:
            continue
        if damage:
            out.repairable.append(location)
        damaged_match = False
        for d in damage:
            hit = d.lost_data and matcher.fragment(fmt, d.fragment)
            damaged_match = damaged_match or hit
            out.damaged.append({**d.as_dict(), "matches": hit})
        if damaged_match:
            out.damaged_files.append(location)
        for rec, rec_fmt in matched:
            found = out.items.get(rec.item_id)
            if found is None:
                found = out.items[rec.item_id] = FoundItem(
                    item_id=rec.item_id, source_url=rec.source_url, data=_record_data(rec, rec_fmt),
                    stamp=dict(rec.stamp), source_format=rec_fmt,
                )
            elif rec_fmt in ("jsonlines", "json") and found.source_format not in ("jsonlines", "json"):
                found.data, found.stamp, found.source_format = _record_data(rec, rec_fmt), dict(rec.stamp), rec_fmt
            found.locations.append(location)
        if matched:
            out.feed_files.append(location)
    out.items_held = len(seen_ids) + ledger.count("item")
    # items in the registered item stores (before the media and rows of matched items)
    add_store_holdings(out, stores, selectors)
    # the media and rows of matched items (an image found through its page's text)
    for r in ledger.find_items(list(out.items)):
        rows[r.id or 0] = r
    for r in rows.values():
        if r.kind in ("item", "feed_line") and r.item_id and r.item_id not in out.items:
            out.items[r.item_id] = FoundItem(item_id=r.item_id, source_url=r.url, data=None)
    out.rows = sorted(rows.values(), key=lambda r: r.id or 0)
    item_ids = set(out.items)
    for path in audit_paths:
        out.audit += _matching_audit(path, selectors, item_ids)
    return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or exc}"
    return str(exc) or type(exc).__name__


#: An access or erasure matching more than this share of the items held needs
#: ``--yes`` (a selector that matches nearly everything is almost always a mistake).
CONFIRM_SHARE = 0.10
#: ... unless it matches at most this many items.
CONFIRM_MIN_ITEMS = 3


def needs_confirmation(holdings: Holdings) -> str | None:
    """Why a request must be confirmed with ``--yes`` (None when it need not)."""
    matched = len(holdings.items)
    held = max(holdings.items_held, matched)
    if matched <= CONFIRM_MIN_ITEMS or not held or matched <= CONFIRM_SHARE * held:
        return None
    return (f"the request matches {matched} of the {held} items held ({matched / held:.0%}), more than "
            f"{CONFIRM_SHARE:.0%}: check the selectors, then run it again with --yes")


def _record_data(rec: feedfiles.FeedRecord, fmt: str) -> Any:
    raw = rec.raw
    if fmt == "jsonlines":
        return json.loads(raw)
    if fmt == "csv":
        header, row = raw
        flat = dict(zip(header, row, strict=False))
        data = {k: v for k, v in flat.items() if not k.startswith(feedfiles.CSV_PREFIX)}
        data[feedfiles.STAMP_FIELD] = {k[len(feedfiles.CSV_PREFIX):]: v for k, v in flat.items()
                                       if k.startswith(feedfiles.CSV_PREFIX)}
        return data
    if fmt == "xml":
        return _xml_to_data(raw)
    return raw


def _xml_to_data(elem: Any) -> Any:
    children = list(elem)
    if not children:
        return elem.text or ""
    if all(c.tag == "value" for c in children):
        return [_xml_to_data(c) for c in children]
    return {c.tag: _xml_to_data(c) for c in children}


def _matching_audit(path: Path, selectors: Sequence[Selector], item_ids: set[str]) -> list[dict[str, Any]]:
    matches: list[dict[str, Any]] = []
    try:
        fh = path.open("r", encoding="utf-8")
    except FileNotFoundError:
        return matches
    with fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            urls = [str(entry.get(k) or "") for k in ("url", "object_url")]
            if entry.get("item_id") in item_ids or any(s.matches_url(u) for s in selectors for u in urls):
                matches.append({"log": str(path), **entry})
    return matches


def audit_paths_for(template: str | None, explicit: Sequence[str] = ()) -> list[Path]:
    """Audit logs to search: the given files, or every file the template can name."""
    if explicit:
        return [Path(p) for p in explicit]
    if not template:
        return []
    if "%(" not in template:
        return [Path(template)]
    pattern = Path(template.replace("%(name)s", "*"))
    base = pattern.parent if pattern.is_absolute() else Path.cwd() / pattern.parent
    return sorted(base.glob(pattern.name))


# --------------------------------------------------------------------------- access


def _jsonable(r: Record) -> dict[str, Any]:
    return r.as_json()


def export_access(holdings: Holdings, out: Path, *, request_id: str, received: datetime,
                  controller: str = "", contact: str = "") -> dict[str, Any]:
    """Write one zip with everything held, an ``index.html`` for people and JSON for machines.

    ``out`` must be a new file: an existing one (or a link) raises ``FileExistsError``
    and is never overwritten; a partly written archive is removed on an error.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    files: list[dict[str, Any]] = []
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            summary = _write_access_zip(fh, holdings, files, request_id, received, controller, contact)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
        raise
    return summary


def _write_access_zip(fh: Any, holdings: Holdings, files: list[dict[str, Any]], request_id: str,
                      received: datetime, controller: str, contact: str) -> dict[str, Any]:
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        items = [
            {"item_id": f.item_id, "source_url": f.source_url, "stored_in": f.locations, "item": f.data}
            for f in holdings.items.values()
        ]
        zf.writestr("items.json", json.dumps(items, indent=2, ensure_ascii=False, default=str))
        zf.writestr("ledger.json", json.dumps([_jsonable(r) for r in holdings.rows], indent=2, ensure_ascii=False))
        zf.writestr("audit.jsonl", "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in holdings.audit))
        for i, obj in enumerate(holdings.objects):
            path = Path(obj.location)
            if not path.is_file():
                continue
            name = f"files/{obj.kind}/{i:04d}-{path.name}"
            zf.write(path, name)
            files.append({"archive_path": name, "kind": obj.kind, "object_url": obj.object_url,
                          "source_url": obj.url, "stored_at": obj.location,
                          "expires_at": obj.expires_at.isoformat()})
        summary = {
            "request_id": request_id,
            "kind": "access",
            "received": received.isoformat(),
            "selectors": [str(s) for s in holdings.selectors],
            "items": len(items),
            "files": len(files),
            "ledger_rows": len(holdings.rows),
            "audit_entries": len(holdings.audit),
            "feed_files": holdings.feed_files,
            "stores_searched": holdings.stores_searched,
            "store_errors": holdings.store_errors,
        }
        zf.writestr("request.json", json.dumps(summary, indent=2, ensure_ascii=False))
        zf.writestr("index.html", access_html(summary, items, files, {k: v.stamp or {} for k, v in holdings.items.items()},
                                               controller, contact))
    return summary


# --------------------------------------------------------------------------- erasure


@dataclass
class ErasureResult:
    request_id: str
    received: str
    selectors: list[str]
    objections_added: list[str] = field(default_factory=list)
    feed_lines: int = 0
    feed_files: list[str] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    ledger_rows: int = 0
    #: rows written for lines of a rewritten file that the ledger did not know yet
    ledger_rows_recorded: int = 0
    pending: list[str] = field(default_factory=list)
    #: items deleted per item store searched (scrapy_gdpr.retention.stores)
    store_items: dict[str, int] = field(default_factory=dict)
    #: item stores that could not be searched or erased, with why (the erasure is incomplete)
    store_errors: list[str] = field(default_factory=list)
    #: what was searched: the ledger, every feed file read, the stores
    searched: dict[str, Any] = field(default_factory=dict)
    #: files that could not be read or rewritten, with the reason
    failed: list[dict[str, str]] = field(default_factory=list)
    #: torn or damaged parts of feed files, and whether they were removed
    damaged: list[dict[str, Any]] = field(default_factory=list)
    #: why the erasure cannot be called complete (besides pending and failed files)
    problems: list[str] = field(default_factory=list)
    completed: str = ""

    @property
    def complete(self) -> bool:
        return not (self.pending or self.failed or self.problems or self.store_errors)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "status": "complete" if self.complete else "incomplete"}


def objection_entries(selectors: Sequence[Selector]) -> list[tuple[str, str]]:
    """The objection-list entries of the selectors, validated and canonical; raises
    ``ValueError`` (before anything is written) for a value that cannot be one."""
    out = []
    for sel in selectors:
        kind = OBJECTION_KINDS.get(sel.kind)
        if kind is not None:
            out.append((kind, objection_value(kind, sel.value)))
    return out


def ledger_problems(state: str, holdings: Holdings) -> list[str]:
    """Why a search cannot be complete given the ledger's state (``missing``,
    ``empty`` or ``ok``)."""
    if state == "missing":
        return ["the ledger did not exist: only the feed files named in the settings or given were searched"]
    if state == "empty" and holdings.stamped_feeds:
        return [(f"the ledger is empty while {holdings.stamped_feeds} feed file(s) with stamped items exist: "
                "it is not the ledger the crawls wrote to")]
    return []


def erase(
    ledger: Ledger,
    selectors: Sequence[Selector],
    *,
    objections_path: Path | None,
    audit: AuditLog | None = None,
    request_id: str | None = None,
    received: datetime | None = None,
    lock_timeout: float = 30.0,
    feeds: Iterable[str | Path] = (),
    ledger_state: str = "ok",
    stores: Sequence[ItemStore] = (),
) -> ErasureResult:
    """Erase everything matching ``selectors`` and object to it for later crawls.

    The objection entries are validated first (nothing is written when one is
    invalid); the objection is written before anything is erased, so a crawl
    starting meanwhile already skips it; then feed files are rewritten (torn records
    that match are removed with them), media deleted, and the ledger rows removed
    last (a re-run finds whatever an interrupted erasure left). ``ledger_state``
    (``missing``, ``empty``, ``ok``) says whether the ledger could be trusted.
    """
    received = received or datetime.now(UTC)
    request_id = request_id or new_request_id("erasure", received)
    result = ErasureResult(request_id=request_id, received=received.isoformat(), selectors=[str(s) for s in selectors])
    entries = objection_entries(selectors) if objections_path is not None else []
    for kind, value in entries:
        assert objections_path is not None
        append_objection(objections_path, kind, value, note=f"erasure {request_id}")
        result.objections_added.append(f"{kind} {value}")
    holdings = find_holdings(ledger, selectors, feeds=feeds, stores=stores)
    result.searched = {
        "ledger": mask_password(ledger.url) + {"missing": " (did not exist)", "empty": " (empty)"}.get(ledger_state, ""),
        "feed_files": holdings.searched_feeds,
        "stores": holdings.stores_searched,
    }
    result.problems += ledger_problems(ledger_state, holdings)
    result.failed += holdings.unreadable
    matcher = Matcher(selectors)
    item_ids = set(holdings.items)
    # the item stores (scrapy_gdpr.retention.stores): every matched item, whichever store held it
    result.store_items, failed = erase_from_stores(stores, item_ids)
    result.store_errors = holdings.store_errors + failed
    feed_row_ids: set[int] = set()
    to_rewrite = list(dict.fromkeys([*holdings.feed_files, *holdings.damaged_files]))
    torn_only = [location for location in holdings.repairable if location not in to_rewrite]
    for location in [*to_rewrite, *torn_only]:
        path = Path(location)
        fmt = _format_of(path)
        if fmt is None:
            continue

        def matches(rec: feedfiles.FeedRecord) -> bool:
            return rec.item_id in item_ids or matcher.record(rec)

        try:
            # a file with only a torn part that does not match is repaired if it is free
            outcome = feedfiles.rewrite(path, fmt, matches, repair=True,
                                        lock_timeout=lock_timeout if location in to_rewrite else 0.0)
        except feedfiles.FileBusy:
            if location in to_rewrite:
                result.pending.append(location)
            continue
        except Exception as exc:  # noqa: BLE001 - reported as failed, the other files erased
            result.failed.append({"location": location, "error": _describe(exc)})
            continue
        for d in outcome.damage:
            result.damaged.append({**d.as_dict(), "removed": outcome.changed})
        if not outcome.changed:
            continue
        result.feed_lines += outcome.removed
        result.feed_files.append(location)
        recorded = ledger.at_location(location)
        feed_row_ids.update(r.id for r in recorded if r.id is not None)
        if path.exists():
            old = read_manifest(path) or {}
            write_manifest(path, fmt, outcome, **{k: v for k, v in old.items()
                                                  if k in ("purpose", "policy_fingerprint", "spider", "created")})
            removed = set(outcome.removed_ids or [])
            gone = [r.id for r in recorded if r.kind == "feed_line" and r.item_id in removed and r.id is not None]
            result.ledger_rows += ledger.delete_ids(gone)
            if outcome.earliest:
                row = ledger.feed_file(location)
                if row is not None:
                    row.expires_at = parse_ts(outcome.earliest)
                    ledger.set_feed_file(row)
            # lines the ledger did not know yet (a crawl killed before its feed closed)
            if ledger_state != "missing":  # never into a stand-in for a ledger that is not there
                known = {r.item_id for r in recorded if r.kind == "feed_line"}
                result.ledger_rows_recorded += _record_new_lines(ledger, path, fmt, known)
        else:
            with contextlib.suppress(FileNotFoundError):
                manifest_path(path).unlink()
            result.ledger_rows += ledger.delete_location(location)
    deleted_locations = set()
    for obj in holdings.objects:
        path = Path(obj.location)
        try:
            if feedfiles.remove_durably(path) or not path.exists():
                result.objects.append(obj.location)
                deleted_locations.add(obj.location)
        except OSError as exc:
            result.failed.append({"location": obj.location, "error": _describe(exc)})
    pending = set(result.pending) | {f["location"] for f in result.failed}
    ids = [r.id for r in holdings.rows if r.id is not None and r.id not in feed_row_ids
           and r.location not in pending]
    result.ledger_rows += ledger.delete_ids(ids)
    for location in deleted_locations:
        result.ledger_rows += ledger.delete_location(location)
    result.completed = datetime.now(UTC).isoformat()
    if audit is not None:
        audit.write({"spider": "", "url": "", "decision": "erased", **result.as_dict()})
    return result


def _record_new_lines(ledger: Ledger, path: Path, fmt: str, known: set[str]) -> int:
    return ledger.add([line_record(path, rec) for rec in feedfiles.read_records(path, fmt)
                       if rec.stamp and rec.expires_at and rec.item_id not in known])



# --------------------------------------------------------------------------- receipts


def write_receipts(data: dict[str, Any], folder: Path) -> dict[str, Path]:
    """``<id>.json``, ``<id>.md`` and ``<id>.html`` for the privacy officer's file."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / str(data["request_id"])
    paths = {"json": stem.with_suffix(".json"), "md": stem.with_suffix(".md"), "html": stem.with_suffix(".html")}
    paths["json"].write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    paths["md"].write_text(receipt_markdown(data), encoding="utf-8")
    paths["html"].write_text(receipt_html(data), encoding="utf-8")
    return paths


# The record of processing is a document: it lives in scrapy_gdpr.documents.record.
_MOVED_NAMES = {
    "processing_record": "scrapy_gdpr.documents.record",
    "render_processing_record_markdown": "scrapy_gdpr.documents.record",
    "render_processing_record_html": "scrapy_gdpr.documents.record",
}


def __getattr__(name: str) -> Any:
    if name not in _MOVED_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_MOVED_NAMES[name]), name)

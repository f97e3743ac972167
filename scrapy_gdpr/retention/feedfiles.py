"""Reading and rewriting stamped feed files (JSON Lines, JSON, CSV, XML).

Purge and erasure remove single items from feed files written by Scrapy's stock
exporters. A rewrite is atomic: the kept records go to a temporary file in the same
folder, which is flushed and fsynced, renamed over the original, and the folder is
fsynced, so a process killed at any point leaves either the old file or the new one.

Crawls and rewrites coordinate with ``flock`` on the feed file itself: a crawl holds
a shared lock while its exporter writes (:class:`LockingFileFeedStorage`), a
rewrite an exclusive one, and a rewrite re-checks after locking that the path still
names the file it locked.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import html
import io
import json
import logging
import os
import re
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from collections.abc import Iterator

logger = logging.getLogger(__name__)

#: The item field that carries the retention stamp.
STAMP_FIELD = "gdpr"
#: CSV columns are ``gdpr.<name>``.
CSV_PREFIX = STAMP_FIELD + "."

FORMATS = ("jsonlines", "json", "csv", "xml")
_SUFFIXES = {".jsonl": "jsonlines", ".jl": "jsonlines", ".jsonlines": "jsonlines", ".json": "json",
             ".csv": "csv", ".xml": "xml"}
_FORMAT_ALIASES = {"jsonl": "jsonlines", "jl": "jsonlines"}


def normalise_format(fmt: str) -> str:
    return _FORMAT_ALIASES.get(fmt, fmt)


def guess_format(path: str | Path) -> str | None:
    return _SUFFIXES.get(Path(path).suffix.lower())


@dataclass
class FeedRecord:
    """One item in a feed file: its stamp (flat strings for CSV) and its raw text."""

    stamp: dict[str, Any]
    raw: Any

    @property
    def item_id(self) -> str:
        return str(self.stamp.get("item_id", ""))

    @property
    def expires_at(self) -> str:
        return str(self.stamp.get("expires_at", ""))

    @property
    def source_url(self) -> str:
        return str(self.stamp.get("source_url", ""))


# --------------------------------------------------------------------------- steps


#: Called with a step's name after each step a rewrite or a purge makes durable (a
#: temporary file written, a rename, a removal, ...); ``None`` when nothing listens.
#: A caller may report progress from it; the crash tests stop the process there.
OnStep = Callable[[str], None]


def notify_step(on_step: OnStep | None, what: str) -> None:
    if on_step is not None:
        on_step(what)


# --------------------------------------------------------------------------- atomic writes


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None], *, on_step: OnStep | None = None) -> None:
    """Write ``path`` through ``write(fh)`` atomically (temp file, fsync, rename, fsync dir)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".gdpr-tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            notify_step(on_step, "temp written")
            os.fsync(fh.fileno())
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).chmod(path.stat().st_mode & 0o7777)
        Path(tmp).replace(path)
        notify_step(on_step, "renamed")
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(tmp).unlink()
        raise


def remove_durably(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


def clean_temp_files(folder: Path) -> None:
    """Remove temporary files a killed rewrite left behind."""
    for tmp in folder.glob(".*.gdpr-tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# --------------------------------------------------------------------------- locking


class FileBusy(RuntimeError):
    """A crawl is writing the feed file."""


@contextlib.contextmanager
def exclusive(path: Path, timeout: float = 0.0) -> Iterator[int | None]:
    """Hold an exclusive flock on ``path`` (None when the file does not exist).

    Raises :class:`FileBusy` when a crawl holds it longer than ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            yield None
            return
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise FileBusy(f"{path} is being written by a crawl") from None
                    time.sleep(0.05)
            try:
                same = path.stat().st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield fd
                return
        finally:
            os.close(fd)  # releases the lock
        # the path was replaced while we waited: lock the new file


def lock_shared(fh: IO[bytes], path: Path) -> IO[bytes]:
    """For writers: hold a shared lock on the open ``fh`` (reopening if it was replaced)."""
    while True:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
        try:
            if path.stat().st_ino == os.fstat(fh.fileno()).st_ino:
                return fh
        except FileNotFoundError:
            pass
        mode = fh.mode
        fh.close()
        fh = path.open(mode)


# --------------------------------------------------------------------------- reading


_JSONL_STAMP = re.compile(r'"' + STAMP_FIELD + r'": \{')
_decoder = json.JSONDecoder()
#: Text feeds are read with ``surrogateescape``: bytes that are not UTF-8 (a crawl
#: killed in the middle of a character, a file written in another encoding) are
#: kept as they are when a file is rewritten, and never stop a purge or an erasure.
_ERRORS = "surrogateescape"
#: How much of a damaged part is kept in memory (for matching and the report).
FRAGMENT_LIMIT = 1 << 20


@dataclass
class Damage:
    """A part of a feed file that is not a complete record.

    A crawl killed while writing (SIGKILL, a power cut) leaves a torn last record,
    a JSON array without ``]`` or an XML document without ``</items>``. Readers
    skip the part and report it here; purge, erasure and a crawl that reopens the
    file remove it when they rewrite the file (:func:`rewrite`, :func:`repair`).
    """

    path: str
    detail: str
    #: the damaged text (at most :data:`FRAGMENT_LIMIT` characters; "" when nothing
    #: but a closing bracket or tag is missing)
    fragment: str = ""

    @property
    def lost_data(self) -> bool:
        """Whether the damaged part holds any item data (not only a missing end)."""
        return bool(self.fragment.strip())

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "detail": self.detail, "characters": len(self.fragment)}


def _jsonl_stamp(line: str) -> dict[str, Any]:
    # Fast path: the stamp is the last top-level key, and `"gdpr": {` cannot occur
    # inside a JSON string (quotes are escaped there), so only the stamp is parsed.
    pos = line.rfind(f'"{STAMP_FIELD}": {{')
    if pos >= 0:
        try:
            stamp, end = _decoder.raw_decode(line, pos + len(STAMP_FIELD) + 4)
            if isinstance(stamp, dict) and "item_id" in stamp and line[end:].strip() == "}":
                return stamp
        except ValueError:
            pass
    data = json.loads(line)  # ValueError: a damaged line
    stamp = data.get(STAMP_FIELD) if isinstance(data, dict) else None
    return stamp if isinstance(stamp, dict) else {}


_WS = " \t\r\n"
#: Where reading can resume after a damaged part: an array start or a separator,
#: followed by an object (checked to be a stamped record before it is trusted).
_JSON_RESUME = re.compile(r"[\[,]\s*(?=[\{\]])")


def _json_objects(text: str, path: str, damage: list[Damage]) -> Iterator[Any]:
    """The elements of the arrays in a JSON feed; several arrays when a feed was
    appended to (overwrite: false). A part that does not parse is reported and
    skipped up to the next stamped record (in the same array or the next one)."""
    pos = 0
    n = len(text)
    in_array = False
    not_closed = "the JSON array is not closed (no ']'): the crawl writing it was killed"

    def skip(p: int) -> int:
        while p < n and text[p] in _WS:
            p += 1
        return p

    def resync(start: int, detail: str) -> tuple[int, bool]:
        for m in _JSON_RESUME.finditer(text, start + 1):
            at = m.end()
            if text[at] == "]":
                if text[m.start()] != "[":
                    continue
            else:
                try:
                    value, _ = _decoder.raw_decode(text, at)
                except ValueError:
                    continue
                if not (isinstance(value, dict) and isinstance(value.get(STAMP_FIELD), dict)):
                    continue
            opener = text[m.start()]
            damage.append(Damage(path, detail, text[start : m.start()][:FRAGMENT_LIMIT]))
            # after a separator: inside the array, at the record; at "[": a new array
            return (m.end(), True) if opener == "," else (m.start(), False)
        damage.append(Damage(path, detail, text[start:][:FRAGMENT_LIMIT]))
        return n, False

    while True:
        pos = skip(pos)
        if pos >= n:
            if in_array:
                damage.append(Damage(path, not_closed))
            return
        if not in_array:
            if text[pos] != "[":
                pos, in_array = resync(pos, f"text outside a JSON array at character {pos}")
                continue
            pos = skip(pos + 1)
            if pos < n and text[pos] == "]":
                pos += 1
                continue
            in_array = True
            continue
        try:
            value, end = _decoder.raw_decode(text, pos)
        except ValueError:
            pos, in_array = resync(pos, f"a torn record at character {pos}")
            continue
        yield value
        pos = skip(end)
        if pos >= n:
            damage.append(Damage(path, not_closed))
            return
        if text[pos] == ",":
            pos += 1
        elif text[pos] == "]":
            pos += 1
            in_array = False
        else:
            pos, in_array = resync(pos, f"unexpected text after a record at character {pos}")


def _xml_documents(data: bytes) -> list[bytes]:
    """XML documents in a feed; several when a feed was appended to."""
    parts = re.split(rb"(?=<\?xml )", data)
    return [p for p in parts if p.strip()]


_TAG = re.compile(r"<[^>]*>?")


def _xml_fragment_text(data: bytes) -> str:
    """The text in a torn piece of XML, with tags removed and entities decoded."""
    text = data.decode("utf-8", _ERRORS)
    return html.unescape(_TAG.sub(" ", text))


def _xml_items(doc: bytes, path: str, damage: list[Damage]) -> Iterator[ET.Element]:
    """The complete item elements of one XML document; a torn end is reported, and
    after a damaged item reading resumes at the next item's start tag."""
    seen = 0  # complete items before this part of the document
    while True:
        parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
        error: str | None = None
        try:
            parser.feed(doc)
            parser.close()
        except ET.ParseError as exc:
            error = str(exc)
        depth = 0
        last_tag = "item"
        complete = 0
        events = parser.read_events()
        while True:
            try:  # an error met while feeding is raised here, after the events before it
                event, elem = cast("tuple[str, ET.Element]", next(events))  # "start"/"end" events only
            except StopIteration:
                break
            except ET.ParseError as exc:
                error = error or str(exc)
                break
            if event == "start":
                depth += 1
            else:
                depth -= 1
                if depth == 1:
                    complete += 1
                    last_tag = elem.tag
                    yield elem
        if error is None:
            return
        # the damaged part: from the end of the last complete item to the next item
        end_tag = f"</{last_tag}>".encode()
        cut = doc.find(b">", doc.find(b"<items")) + 1
        for _ in range(complete):  # the end of the last complete item
            cut = doc.find(end_tag, cut) + len(end_tag)
        tail = doc[max(cut, 0):]
        starts = re.compile(rb"<" + re.escape(last_tag.encode()) + rb"[\s>/]")
        first = starts.search(tail)
        after = starts.search(tail, first.end()) if first else None
        broken = tail[: after.start()] if after else tail
        text = _xml_fragment_text(broken).strip()
        detail = "the XML document is not closed (no '</items>'): the crawl writing it was killed" if not text \
            else f"a torn record after item {seen + complete} ({error.split(':')[0]})"
        damage.append(Damage(path, detail, text[:FRAGMENT_LIMIT]))
        if after is None:
            return
        seen += complete
        doc = b"<items>" + tail[after.start():]


def _xml_stamp(elem: ET.Element) -> dict[str, Any]:
    stamp_elem = elem.find(STAMP_FIELD)
    if stamp_elem is None:
        return {}
    return {child.tag: (child.text or "") if len(child) == 0 else child for child in stamp_elem}


def _csv_is_header(row: list[str]) -> bool:
    return CSV_PREFIX + "item_id" in row


def read_records(path: Path, fmt: str, damage: list[Damage] | None = None) -> Iterator[FeedRecord]:
    """Every complete item in a feed file, with its stamp ({} when unstamped).

    Parts that are not complete records (a torn last record, a missing ``]`` or
    ``</items>``) are skipped and appended to ``damage`` (logged when it is None).
    """
    fmt = normalise_format(fmt)
    found: list[Damage] = [] if damage is None else damage
    before = len(found)
    name = str(path)
    if fmt == "jsonlines":
        with path.open("r", encoding="utf-8", errors=_ERRORS, newline="") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    stamp = _jsonl_stamp(line)
                except ValueError:
                    torn = not line.endswith("\n")
                    found.append(Damage(name, "a torn last line" if torn else "a line that is not JSON",
                                        line[:FRAGMENT_LIMIT]))
                    continue
                yield FeedRecord(stamp, line)
    elif fmt == "json":
        text = path.read_text(encoding="utf-8", errors=_ERRORS)
        for obj in _json_objects(text, name, found):
            found_stamp = obj.get(STAMP_FIELD) if isinstance(obj, dict) else None
            yield FeedRecord(found_stamp if isinstance(found_stamp, dict) else {}, obj)
    elif fmt == "csv":
        with path.open("r", encoding="utf-8", errors=_ERRORS, newline="") as fh:
            text = fh.read()
        rows = list(_csv_rows(text, name, found))
        header: list[str] = []
        for row, line_text in rows:
            if _csv_is_header(row):
                header = row
                continue
            if not row:
                continue
            if header and len(row) != len(header):
                found.append(Damage(name, f"a CSV row with {len(row)} of {len(header)} columns", line_text))
                continue
            stamp = {
                name_[len(CSV_PREFIX) :]: value
                for name_, value in zip(header, row, strict=False)
                if name_.startswith(CSV_PREFIX)
            }
            yield FeedRecord(stamp, (header, row))
    elif fmt == "xml":
        for doc in _xml_documents(path.read_bytes()):
            yield from (FeedRecord(_xml_stamp(elem), elem) for elem in _xml_items(doc, name, found))
    else:
        raise ValueError(f"unsupported feed format {fmt!r}")
    if damage is None:
        for d in found[before:]:
            logger.warning("GDPR: %(path)s: %(detail)s; skipped", {"path": d.path, "detail": d.detail})


def _csv_rows(text: str, name: str, damage: list[Damage]) -> Iterator[tuple[list[str], str]]:
    """CSV rows with their text; a last row without its line end is torn."""
    body = text
    torn = ""
    if text and not text.endswith("\n"):
        cut = text.rfind("\n") + 1
        body, torn = text[:cut], text[cut:]
    reader = csv.reader(io.StringIO(body, newline=""))
    last = 0
    try:
        for row in reader:
            yield row, ""
    except csv.Error as exc:
        damage.append(Damage(name, f"a CSV row that cannot be read ({exc})", body[last:][:FRAGMENT_LIMIT]))
    if torn:
        damage.append(Damage(name, "a torn last row", torn[:FRAGMENT_LIMIT]))


def is_complete(path: Path, fmt: str) -> bool:
    """Whether a feed file ends as its exporter ends it (checked on the last bytes
    only): a file that does not may be torn, and must not be appended to."""
    fmt = normalise_format(fmt)
    try:
        size = path.stat().st_size
        if size == 0:
            return True
        with path.open("rb") as fh:
            fh.seek(max(0, size - 64))
            tail = fh.read()
    except FileNotFoundError:
        return True
    if fmt in ("jsonlines", "csv"):
        return tail.endswith(b"\n")
    if fmt == "json":
        last = tail.rstrip(b" \t\r\n")
        return last.endswith((b"\n]", b"[]", b"[\n]")) or last == b"]"
    if fmt == "xml":
        return tail.rstrip(b" \t\r\n").endswith(b"</items>")
    return True


def repair(path: Path, fmt: str, *, lock_timeout: float = 0.0, on_step: OnStep | None = None) -> list[Damage]:
    """Make a torn feed file whole again before a crawl appends to it: every
    complete record is kept, the damaged parts are removed (and returned), and the
    file ends as its exporter ends it. Atomic, under the exclusive lock."""
    fmt = normalise_format(fmt)
    damage: list[Damage] = []
    with exclusive(path, lock_timeout) as fd:
        if fd is None or is_complete(path, fmt):
            return damage
        records = list(read_records(path, fmt, damage))
        if fmt in ("jsonlines", "csv") and not damage:
            # only the last line end is missing: the last record is complete
            with path.open("ab") as fh:
                fh.write(b"\r\n" if fmt == "csv" else b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            damage.append(Damage(str(path), "the last line had no line end"))
            return damage
        if not records:
            remove_durably(path)
            notify_step(on_step, "removed")
        else:
            atomic_write(path, lambda fh: _write(fh, fmt, records), on_step=on_step)
    return damage


# --------------------------------------------------------------------------- rewriting


@dataclass
class RewriteResult:
    kept: int = 0
    removed: int = 0
    removed_ids: list[str] | None = None
    #: (item_id, source_url, expires_at) of each removed record
    removed_records: list[tuple[str, str, str]] | None = None
    earliest: str = ""
    latest: str = ""
    #: damaged parts found (removed when the file was rewritten)
    damage: list[Damage] = field(default_factory=list)
    #: whether the file was rewritten or deleted
    changed: bool = False


def rewrite(path: Path, fmt: str, drop: Callable[[FeedRecord], bool], *, lock_timeout: float = 0.0,
            repair: bool = False, on_step: OnStep | None = None) -> RewriteResult:
    """Remove the records ``drop`` selects from a feed file, atomically.

    Unstamped records are kept (they cannot be judged; the item filter keeps them
    out of new files). Damaged parts (a torn record) are never written back. The
    file is left untouched when nothing is dropped (and, with ``repair``, nothing is
    damaged), and is deleted when nothing is kept.
    """
    fmt = normalise_format(fmt)
    result = RewriteResult(removed_ids=[], removed_records=[])
    with exclusive(path, lock_timeout) as fd:
        if fd is None:
            return result
        kept: list[FeedRecord] = []
        removed_records: list[tuple[str, str, str]] = []
        earliest = latest = ""
        for rec in read_records(path, fmt, result.damage):
            stamp = rec.stamp
            if stamp and drop(rec):
                removed_records.append((
                    str(stamp.get("item_id", "")), str(stamp.get("source_url", "")), str(stamp.get("expires_at", ""))
                ))
            else:
                kept.append(rec)
                expiry = str(stamp.get("expires_at", ""))
                if expiry:
                    earliest = min(earliest or expiry, expiry)
                    latest = max(latest, expiry)
        result.removed = len(removed_records)
        result.removed_records = removed_records
        result.removed_ids = [item_id for item_id, _, _ in removed_records]
        result.earliest, result.latest = earliest, latest
        result.kept = len(kept)
        if not result.removed and not (repair and result.damage):
            return result
        result.changed = True
        if not kept:
            remove_durably(path)
            notify_step(on_step, "removed")
            return result
        atomic_write(path, lambda fh: _write(fh, fmt, kept), on_step=on_step)
    return result


def _write(fh: IO[bytes], fmt: str, records: list[FeedRecord]) -> None:
    if fmt == "jsonlines":
        for rec in records:
            line = rec.raw if rec.raw.endswith("\n") else rec.raw + "\n"
            fh.write(line.encode("utf-8", _ERRORS))
    elif fmt == "json":
        # what JsonItemExporter writes (indent None): "[\n" items joined by ",\n" "\n]"
        fh.write(b"[\n")
        fh.write(",\n".join(json.dumps(r.raw, ensure_ascii=False) for r in records).encode("utf-8", _ERRORS))
        fh.write(b"\n]")
    elif fmt == "csv":
        text = io.StringIO(newline="")
        writer = csv.writer(text)
        header: list[str] | None = None
        for rec in records:
            rec_header, row = rec.raw
            if rec_header != header:
                writer.writerow(rec_header)
                header = rec_header
            writer.writerow(row)
        fh.write(text.getvalue().encode("utf-8", _ERRORS))
    elif fmt == "xml":
        fh.write(b'<?xml version="1.0" encoding="utf-8"?>\n<items>')
        for rec in records:
            fh.write(ET.tostring(rec.raw, encoding="utf-8", xml_declaration=False))
        fh.write(b"</items>")
    else:  # pragma: no cover - checked by read_records
        raise ValueError(fmt)


def summarise(path: Path, fmt: str) -> RewriteResult:
    """Count and expiry range of the stamped records in a file."""
    out = RewriteResult()
    for rec in read_records(path, fmt, out.damage):
        out.kept += 1
        if rec.expires_at:
            out.earliest = min(out.earliest or rec.expires_at, rec.expires_at)
            out.latest = max(out.latest, rec.expires_at)
    return out

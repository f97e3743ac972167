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
import io
import json
import logging
import os
import re
import signal
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

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


# --------------------------------------------------------------------------- crash points


_ops = 0


def crash_point(what: str) -> None:
    """Test hook: ``GDPR_TEST_KILL_AFTER=N`` SIGKILLs this process at the N-th point."""
    global _ops
    limit = os.environ.get("GDPR_TEST_KILL_AFTER")
    if not limit:
        return
    _ops += 1
    if _ops >= int(limit):
        logger.debug("test kill at %(what)s", {"what": what})
        os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------- atomic writes


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through ``write(fh)`` atomically (temp file, fsync, rename, fsync dir)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".gdpr-tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            crash_point("temp written")
            os.fsync(fh.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
        crash_point("renamed")
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
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
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
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
            if os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino:
                return fh
        except FileNotFoundError:
            pass
        mode = fh.mode
        fh.close()
        fh = path.open(mode)  # type: ignore[assignment]


# --------------------------------------------------------------------------- reading


_JSONL_STAMP = re.compile(r'"' + STAMP_FIELD + r'": \{')
_decoder = json.JSONDecoder()


def _jsonl_stamp(line: str) -> dict[str, Any]:
    # Fast path: the stamp is the last top-level key, and `"gdpr": {` cannot occur
    # inside a JSON string (quotes are escaped there), so only the stamp is parsed.
    pos = line.rfind(f'"{STAMP_FIELD}": {{')
    if pos >= 0:
        try:
            stamp, _ = _decoder.raw_decode(line, pos + len(STAMP_FIELD) + 4)
            if isinstance(stamp, dict) and "item_id" in stamp:
                return stamp
        except ValueError:
            pass
    try:
        data = json.loads(line)
    except ValueError:
        return {}
    stamp = data.get(STAMP_FIELD) if isinstance(data, dict) else None
    return stamp if isinstance(stamp, dict) else {}


def _json_arrays(text: str) -> Iterator[list[Any]]:
    """Arrays in a JSON feed; several when a feed was appended to (overwrite: false)."""
    pos = 0
    n = len(text)
    while True:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n:
            return
        value, pos = _decoder.raw_decode(text, pos)
        yield value if isinstance(value, list) else [value]


def _xml_documents(data: bytes) -> list[bytes]:
    """XML documents in a feed; several when a feed was appended to."""
    parts = re.split(rb"(?=<\?xml )", data)
    return [p for p in parts if p.strip()]


def _xml_stamp(elem: ET.Element) -> dict[str, Any]:
    stamp_elem = elem.find(STAMP_FIELD)
    if stamp_elem is None:
        return {}
    return {child.tag: (child.text or "") if len(child) == 0 else child for child in stamp_elem}


def _csv_is_header(row: list[str]) -> bool:
    return CSV_PREFIX + "item_id" in row


def read_records(path: Path, fmt: str) -> Iterator[FeedRecord]:
    """Every item in a feed file, with its stamp ({} when unstamped)."""
    fmt = normalise_format(fmt)
    if fmt == "jsonlines":
        with path.open("r", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield FeedRecord(_jsonl_stamp(line), line)
    elif fmt == "json":
        text = path.read_text(encoding="utf-8")
        for array in _json_arrays(text):
            for obj in array:
                stamp = obj.get(STAMP_FIELD) if isinstance(obj, dict) else None
                yield FeedRecord(stamp if isinstance(stamp, dict) else {}, obj)
    elif fmt == "csv":
        with path.open("r", encoding="utf-8", newline="") as fh:
            header: list[str] = []
            for row in csv.reader(fh):
                if _csv_is_header(row):
                    header = row
                    continue
                if not row:
                    continue
                stamp = {
                    name[len(CSV_PREFIX) :]: value
                    for name, value in zip(header, row, strict=False)
                    if name.startswith(CSV_PREFIX)
                }
                yield FeedRecord(stamp, (header, row))
    elif fmt == "xml":
        for doc in _xml_documents(path.read_bytes()):
            root = ET.fromstring(doc)  # noqa: S314 - our own exporter's output
            for elem in root:
                yield FeedRecord(_xml_stamp(elem), elem)
    else:
        raise ValueError(f"unsupported feed format {fmt!r}")


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


def rewrite(path: Path, fmt: str, drop: Callable[[FeedRecord], bool], *, lock_timeout: float = 0.0) -> RewriteResult:
    """Remove the records ``drop`` selects from a feed file, atomically.

    Unstamped records are kept (they cannot be judged; the item filter keeps them
    out of new files). The file is left untouched when nothing is dropped, and is
    deleted when nothing is kept.
    """
    fmt = normalise_format(fmt)
    result = RewriteResult(removed_ids=[], removed_records=[])
    with exclusive(path, lock_timeout) as fd:
        if fd is None:
            return result
        kept: list[FeedRecord] = []
        removed_records: list[tuple[str, str, str]] = []
        earliest = latest = ""
        for rec in read_records(path, fmt):
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
        if not result.removed:
            return result
        if not kept:
            remove_durably(path)
            crash_point("removed")
            return result
        atomic_write(path, lambda fh: _write(fh, fmt, kept))
    return result


def _write(fh: IO[bytes], fmt: str, records: list[FeedRecord]) -> None:
    if fmt == "jsonlines":
        for rec in records:
            line = rec.raw if rec.raw.endswith("\n") else rec.raw + "\n"
            fh.write(line.encode("utf-8"))
    elif fmt == "json":
        # what JsonItemExporter writes (indent None): "[\n" items joined by ",\n" "\n]"
        fh.write(b"[\n")
        fh.write(",\n".join(json.dumps(r.raw, ensure_ascii=False) for r in records).encode("utf-8"))
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
        fh.write(text.getvalue().encode("utf-8"))
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
    for rec in read_records(path, fmt):
        out.kept += 1
        if rec.expires_at:
            out.earliest = min(out.earliest or rec.expires_at, rec.expires_at)
            out.latest = max(out.latest, rec.expires_at)
    return out

"""The objection list: URLs, URL prefixes and domains people asked to be excluded.

File format (UTF-8 text, one entry per line; ``#`` starts a comment)::

    url https://example.org/people/jane.html
    prefix https://example.org/people/jane/
    domain jane-doe.example

An erasure (``scrapy gdpr-erase``) appends its selector here with
:func:`append_objection`, so the request gate skips it on every later crawl.

:class:`ObjectionList` holds the entries for fast lookups: a URL is canonicalised
once (w3lib's ``canonicalize_url``, lower-case host, default port removed, ``http``
and ``https`` treated alike) and looked up in hash tables, so the cost of a lookup
depends on the length of the URL, not on the number of entries. A list read from a
file picks up lines appended to it while a crawl runs.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import threading
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from w3lib.url import canonicalize_url

if TYPE_CHECKING:
    from scrapy_gdpr.runtime import GdprRuntime

logger = logging.getLogger(__name__)

KINDS = ("url", "prefix", "domain")
#: What a malformed line of the file does (the policy's ``objections.on_invalid``).
ON_INVALID = ("refuse", "skip")
SERVICE = "objections"

_DEFAULT_PORTS = {"http": "80", "https": "443"}
#: How many hosts' ``domain`` verdicts an :class:`ObjectionList` keeps.
HOST_VERDICTS_SIZE = 10_000
# URLs that canonicalize_url would return unchanged (apart from the host case, an
# empty path and a fragment): no percent-escapes, no dot segments, unreserved
# characters, a query (if any) already sorted (checked in code).
_PLAIN_URL = re.compile(
    r"^(https?)://([A-Za-z0-9.-]+)(?::(\d+))?(/[A-Za-z0-9\-_~/.]*)?(?:\?([A-Za-z0-9\-_~.=&]*))?(?:#.*)?$", re.DOTALL
)
# A whole "url|prefix URL" line whose URL takes the fast path (reading a large file).
_PLAIN_LINE = re.compile(r"^(url|prefix)[ \t]+(https?)://([a-z0-9.-]+)(?::(\d+))?(/[A-Za-z0-9\-_~/.]*)?[ \t]*$")
_DOMAIN = re.compile(r"^(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")


class ObjectionFileError(ValueError):
    """The objection file cannot be read or has a malformed line (``file:line``)."""


#: Characters no objection value may hold: they would end a line (``str.splitlines``
#: also breaks at U+2028, U+2029, U+0085, VT, FF and the C0 separators) or are
#: invisible controls.
_FORBIDDEN_CATEGORIES = ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")


def objection_value(kind: str, value: str) -> str:
    """The canonical text of an objection entry, validated; raises ``ValueError``
    with the reason for a value that cannot be one.

    ``url`` and ``prefix``: an absolute http(s) URL, written as w3lib's
    ``canonicalize_url`` gives it (percent-escaped, IDNA host, sorted query);
    ``domain``: a host name or IP address, lower-case, IDNA-encoded. The value is
    one token of printable ASCII, and the written line reads back as the same entry.
    """
    if kind not in KINDS:
        raise ValueError(f"objection kind must be one of {KINDS}, not {kind!r}")
    if not isinstance(value, str) or not value.strip():
        raise ValueError("an objection needs a value")
    bad = next((c for c in value if unicodedata.category(c) in _FORBIDDEN_CATEGORIES), None)
    if bad is not None:
        raise ValueError(f"{value!r} contains U+{ord(bad):04X} ({unicodedata.name(bad, 'a control character')}), "
                         "which no URL or domain holds")
    value = value.strip()
    try:
        if kind == "domain":
            text = canonical_domain(value)
        else:
            if any(c.isspace() for c in value):
                raise ValueError(f"{value!r} contains white space, which no URL holds (write it as %20)")
            key = canonical_url(value)
            text = canonicalize_url(value)
            parts = urlsplit(text)
            if parts.scheme not in _DEFAULT_PORTS:
                raise ValueError(f"{value!r} is not an absolute http(s) URL")
            if parts.port is not None and str(parts.port) == _DEFAULT_PORTS[parts.scheme]:
                text = parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]).geturl()
    except UnicodeError as exc:
        raise ValueError(f"{value!r} is not a valid {'domain' if kind == 'domain' else 'URL'}: {exc}") from None
    if not text.isascii() or not text.isprintable() or any(c.isspace() for c in text) or "#" in text[:1]:
        raise ValueError(f"{value!r} cannot be written as one objection entry")
    parsed = _parse_line(f"{kind} {text}", "<new entry>", 1)
    if parsed is None or (kind != "domain" and parsed[1] != key):  # pragma: no cover - a safety net
        raise ValueError(f"{value!r} does not read back as the same objection entry")
    return text


def append_objection(path: str | Path, kind: str, value: str, *, note: str = "") -> str:
    """Validate, canonicalise and append one entry durably (fsync), creating the file
    if needed; return the entry's value as written.

    Raises ``ValueError`` (before writing anything) for a value that cannot be an
    entry (:func:`objection_value`). The note goes into a ``#`` comment line, with
    anything that could end the line replaced.
    """
    text = objection_value(kind, value)
    note = "".join(" " if unicodedata.category(c) in _FORBIDDEN_CATEGORIES or c.isspace() else c for c in note)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    comment = f"# {stamp} {note}".rstrip() + "\n"
    with path.open("a+b") as fh:
        fh.seek(0, os.SEEK_END)
        lead = b""
        if fh.tell():
            fh.seek(fh.tell() - 1)
            if fh.read(1) != b"\n":
                lead = b"\n"  # the file did not end its last line: never join ours to it
        fh.write(lead + (comment + f"{kind} {text}\n").encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
    return text


# --------------------------------------------------------------------------- canonical forms


def canonical_host(host: str) -> str:
    """Lower-case, IDNA-encoded, without a trailing dot or IPv6 brackets."""
    host = host.strip().rstrip(".").lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host or host[-1:].isdigit():  # only addresses (no TLD is numeric)
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    return host


def canonical_url(url: str) -> str:
    """The form URLs are compared in: ``https://host[:port]/path?sorted-query``.

    ``http`` and ``https`` map to the same key (an objection is about a page, not the
    scheme it is served over); a default port is dropped, a non-default one kept.
    Raises ``ValueError`` for anything that is not an absolute http(s) URL.
    """
    m = _PLAIN_URL.match(url)
    if m is not None and "/." not in (m.group(4) or "") and _sorted_query(m.group(5)):
        scheme, host, port, path = m.group(1), m.group(2).lower().rstrip("."), m.group(3), m.group(4) or "/"
        if not host:
            raise ValueError(f"{url!r} has no host")
        if m.group(5):
            path += "?" + m.group(5)
    else:
        canon = canonicalize_url(url.strip())
        parts = urlsplit(canon)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"{url!r} is not an absolute http(s) URL")
        host = canonical_host(parts.hostname)
        if ":" in host:
            host = f"[{host}]"
        try:
            port = str(parts.port) if parts.port is not None else None
        except ValueError:
            raise ValueError(f"{url!r} has an invalid port") from None
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
    if port is not None and port == _DEFAULT_PORTS[scheme]:
        port = None
    return f"https://{host}:{port}{path}" if port else f"https://{host}{path}"


def _sorted_query(query: str | None) -> bool:
    """True when canonicalize_url would keep ``query`` as it is."""
    if not query:
        return query is None
    pairs = [p.partition("=") for p in query.split("&")]
    return all(k and eq for k, eq, _ in pairs) and pairs == sorted(pairs)


def canonical_domain(value: str) -> str:
    host = canonical_host(value)
    if not _DOMAIN.match(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{value!r} is not a domain name") from None
    return host


# --------------------------------------------------------------------------- the list


class ObjectionList:
    """Objections held for constant-time lookups (per URL: hash lookups only).

    * ``url`` entries: a hash table of canonical URLs.
    * ``domain`` entries: a hash table of domains; a host is looked up with each of
      its parent domains (``a.b.example`` -> ``a.b.example``, ``b.example``,
      ``example``), so a domain covers its subdomains.
    * ``prefix`` entries: a hash table of canonical prefixes plus the sorted set of
      their lengths; a URL is looked up by its leading slices of those lengths. The
      cost depends on the URL's length, not on how many entries there are.

    Lists read from a file (:meth:`from_file`) check the file's size and mtime
    before each lookup and read only the lines appended since (a full re-read when
    the file shrank or was replaced); entries added with :meth:`add` are kept.
    """

    def __init__(self, path: Path | None = None, *, on_invalid: str = "refuse") -> None:
        if on_invalid not in ON_INVALID:
            raise ValueError(f"on_invalid must be one of {ON_INVALID}, not {on_invalid!r}")
        self.path = path
        #: what a malformed line does: ``refuse`` (the list is unusable until it is
        #: fixed) or ``skip`` (the line is logged with its number and left out)
        self.on_invalid = on_invalid
        #: the lines skipped under ``on_invalid: skip`` (``file:line: reason``)
        self.skipped: list[str] = []
        self._fspath = os.fspath(path) if path is not None else ""
        self._urls: dict[str, int] = {}
        self._prefixes: dict[str, int] = {}
        self._prefix_lengths: list[int] = []
        self._domains: dict[str, int] = {}
        self._added: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._offset = 0  # bytes of the file consumed (complete lines only)
        self._line = 0  # lines consumed
        self._stat: tuple[int, int, int] | None = None  # (inode, size, mtime_ns)
        # The ``domain`` verdict per host looked up, emptied whenever a domain entry
        # is added or the list is cleared (a generation count guards a concurrent add).
        self._host_verdicts: dict[str, str | None] = {}
        self._generation = 0
        #: The error that made the list unusable (a malformed appended line): lookups
        #: raise it until the file is fixed, so nothing is fetched meanwhile.
        self.error: ObjectionFileError | None = None

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, *, on_invalid: str = "refuse") -> ObjectionList:
        """Read ``path`` (a missing file is an empty list that may appear later).

        Raises :class:`ObjectionFileError` (with ``file:line``) when the file cannot be
        read, or a line is malformed and ``on_invalid`` is ``refuse`` (the default);
        with ``skip`` a malformed line is logged as a warning with its number and left
        out (``skipped``).
        """
        objections = cls(Path(path), on_invalid=on_invalid)
        objections.refresh()
        if objections.error is not None:
            raise objections.error
        return objections

    @classmethod
    def from_entries(cls, entries: Iterable[tuple[str, str] | str]) -> ObjectionList:
        """Build an in-memory list from ``(kind, value)`` pairs or ``"kind value"`` lines."""
        objections = cls()
        for n, entry in enumerate(entries, 1):
            if isinstance(entry, str):
                parsed = _parse_line(entry, "<entries>", n)
                if parsed is None:
                    continue
                objections._insert_key(*parsed, n)
            else:
                objections._insert(entry[0], entry[1], n)
        objections._sort_lengths()
        return objections

    def add(self, kind: str, value: str) -> None:
        """Add an entry in memory (kept across re-reads of the file)."""
        with self._lock:
            self._insert(kind, value, 0)
            self._sort_lengths()
            self._added.append((kind, value))

    def _insert(self, kind: str, value: str, line: int) -> None:
        if kind not in KINDS:
            raise ValueError(f"objection kind must be one of {KINDS}, not {kind!r}")
        self._insert_key(kind, canonical_domain(value) if kind == "domain" else canonical_url(value), line)

    def _insert_key(self, kind: str, key: str, line: int) -> None:
        if kind == "url":
            self._urls.setdefault(key, line)
        elif kind == "prefix":
            if key not in self._prefixes:
                self._prefixes[key] = line
                self._prefix_lengths.append(len(key))
        else:
            self._domains.setdefault(key, line)
            self._forget_hosts()

    def _forget_hosts(self) -> None:
        self._generation += 1
        self._host_verdicts.clear()

    def _sort_lengths(self) -> None:
        self._prefix_lengths = sorted(set(self._prefix_lengths))

    def _clear(self) -> None:
        self._urls.clear()
        self._prefixes.clear()
        self._prefix_lengths = []
        self._domains.clear()
        self._forget_hosts()
        self._offset = self._line = 0
        for kind, value in self._added:
            self._insert(kind, value, 0)
        self._sort_lengths()

    # -- file -----------------------------------------------------------------------
    def refresh(self) -> None:
        """Read what was appended to the file since the last call (cheap when nothing was)."""
        if self.path is None:
            return
        try:
            st = os.stat(self._fspath)
        except FileNotFoundError:
            if self._stat is not None:
                with self._lock:
                    self._clear()
                    self._stat = None
                    self.error = None
            return
        except OSError as exc:
            self.error = ObjectionFileError(f"{self.path}: the objection file cannot be read: {exc}")
            return
        stat = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stat == self._stat:
            return
        with self._lock:
            if self._stat is not None and (st.st_ino != self._stat[0] or st.st_size < self._offset):
                self._clear()  # replaced or truncated: read it again from the start
            self._read_tail()
            self._stat = stat

    def _read_tail(self) -> None:
        assert self.path is not None
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError as exc:
            self.error = ObjectionFileError(f"{self.path}: the objection file cannot be read: {exc}")
            return
        end = data.rfind(b"\n")
        if end < 0:
            return  # no complete line yet (a writer may be in the middle of one)
        chunk = data[: end + 1]
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_line = self._line + chunk[: exc.start].count(b"\n") + 1
            self.error = ObjectionFileError(f"{self.path}:{bad_line}: the line is not UTF-8 text")
            return
        line_no = self._line
        name = str(self.path)
        plain = _PLAIN_LINE.match
        urls, prefixes = self._urls, self._prefixes
        # lines end with "\n" only: str.splitlines() would also break inside a line at
        # U+2028, U+0085 and other separators, shifting every later line number
        for raw in text.split("\n")[:-1]:
            line_no += 1
            if raw.endswith("\r"):
                raw = raw[:-1]
            m = plain(raw)
            if m is not None and "/." not in (path := m.group(5) or "/") and not m.group(3).endswith("."):
                # the common case, inlined: lower-case host, no query, no escapes
                kind, scheme, host, port = m.group(1, 2, 3, 4)
                if port and port != _DEFAULT_PORTS[scheme]:
                    host = f"{host}:{port}"
                key = f"https://{host}{path}"
                if kind == "url":
                    urls.setdefault(key, line_no)
                elif key not in prefixes:
                    prefixes[key] = line_no
                    self._prefix_lengths.append(len(key))
                continue
            try:
                parsed = _parse_line(raw, name, line_no)
                if parsed is not None:
                    self._insert_key(parsed[0], parsed[1], line_no)
            except ValueError as exc:
                error = exc if isinstance(exc, ObjectionFileError) else ObjectionFileError(f"{name}:{line_no}: {exc}")
                if self.on_invalid == "skip":
                    self.skipped.append(str(error))
                    logger.warning("GDPR objection list: %(error)s; this line is skipped (objections.on_invalid: "
                                   "skip); fix or remove it", {"error": error})
                    continue
                self.error = error
                break
        else:
            self._offset += len(chunk)
            self._line = line_no
            self.error = None
        self._sort_lengths()

    # -- lookups --------------------------------------------------------------------
    def match(self, url: str) -> str | None:
        """The entry covering ``url`` (``"prefix https://..."``), or None.

        Raises :class:`ObjectionFileError` while the file has a malformed line, and
        ``ValueError`` for a URL that is not an absolute http(s) URL.
        """
        self.refresh()
        if self.error is not None:
            raise self.error
        key = canonical_url(url)
        if key in self._urls:
            return self._describe("url", key, self._urls[key])
        for length in self._prefix_lengths:
            if length > len(key):
                break
            head = key[:length]
            if head in self._prefixes:
                return self._describe("prefix", head, self._prefixes[head])
        if not self._domains:
            return None
        authority = key[8 : key.find("/", 8)]  # key = "https://host[:port]/..."
        host = authority[1 : authority.index("]")] if authority.startswith("[") else authority.partition(":")[0]
        return self.match_host(host, refresh=False)

    def match_host(self, host: str, *, refresh: bool = True) -> str | None:
        """The ``domain`` entry covering ``host`` (or one of its parent domains)."""
        if refresh:
            self.refresh()
            if self.error is not None:
                raise self.error
        if not self._domains:
            return None
        verdicts = self._host_verdicts
        if host in verdicts:
            return verdicts[host]
        generation = self._generation
        verdict = self._match_domain(host)
        if len(verdicts) >= HOST_VERDICTS_SIZE:
            del verdicts[next(iter(verdicts))]  # the oldest entry
        verdicts[host] = verdict
        if self._generation != generation:  # an entry was added meanwhile
            verdicts.pop(host, None)
        return verdict

    def _match_domain(self, host: str) -> str | None:
        host = canonical_host(host)
        if host in self._domains:
            return self._describe("domain", host, self._domains[host])
        if ":" in host:
            return None
        dot = host.find(".")
        while dot >= 0:
            host = host[dot + 1 :]
            if host in self._domains:
                return self._describe("domain", host, self._domains[host])
            dot = host.find(".")
        return None

    def _describe(self, kind: str, key: str, line: int) -> str:
        if line and self.path is not None:
            return f"{kind} {key} ({self.path}:{line})"
        return f"{kind} {key}"

    def __len__(self) -> int:
        return len(self._urls) + len(self._prefixes) + len(self._domains)


def _parse_line(raw: str, name: str, line_no: int) -> tuple[str, str] | None:
    """``(kind, canonical key)`` of one line, None for blank and comment lines."""
    line = raw.strip()
    if not line or line.startswith("#"):
        return None
    parts = line.split()
    if len(parts) > 2 and not parts[2].startswith("#"):
        raise ObjectionFileError(f"{name}:{line_no}: expected 'KIND VALUE', got {line!r}")
    if len(parts) < 2 or parts[0] not in KINDS:
        raise ObjectionFileError(
            f"{name}:{line_no}: expected 'url URL', 'prefix URL' or 'domain NAME', got {line!r}"
        )
    kind, value = parts[0], parts[1]
    try:
        return kind, canonical_domain(value) if kind == "domain" else canonical_url(value)
    except (ValueError, UnicodeError) as exc:
        raise ObjectionFileError(f"{name}:{line_no}: {exc}") from None


# --------------------------------------------------------------------------- the service


def objections_path(rt: GdprRuntime) -> Path:
    """``GDPR_OBJECTIONS`` when set, else ``objections.path`` relative to the policy file."""
    if rt.config.objections:
        return Path(rt.config.objections)
    return rt.policy.resolve_path(rt.policy.objections.path)


def objection_list(rt: GdprRuntime) -> ObjectionList:
    """The crawl's shared :class:`ObjectionList` (``runtime.services["objections"]``),
    read on first use. A malformed or unreadable file raises, which stops the crawl."""
    objections = rt.services.get(SERVICE)
    if objections is None:
        path = objections_path(rt)
        on_invalid = getattr(rt.policy.objections, "on_invalid", "refuse")
        objections = rt.services[SERVICE] = ObjectionList.from_file(path, on_invalid=on_invalid)
        logger.info(
            "GDPR objection list %(path)s: %(n)d entries", {"path": path, "n": len(objections)}
        )
    return objections  # type: ignore[no-any-return]

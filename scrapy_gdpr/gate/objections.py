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
from urllib.parse import quote, unquote, urlsplit

from w3lib.url import canonicalize_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from scrapy_gdpr.runtime import GdprRuntime

logger = logging.getLogger(__name__)

KINDS = ("url", "prefix", "domain")
#: What a malformed line of the file does (the policy's ``objections.on_invalid``).
ON_INVALID = ("refuse", "skip")

_DEFAULT_PORTS = {"http": "80", "https": "443"}
#: How many hosts' ``domain`` verdicts an :class:`ObjectionList` keeps.
HOST_VERDICTS_SIZE = 10_000
_UNSEEN = object()  # no verdict kept for the host
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


#: Rounds of percent-decoding a path may need before it stops changing. A path that
#: still changes after that (``%2525252F``) cannot be normalised: on a domain with
#: path rules it is refused.
MAX_DECODE_ROUNDS = 3
#: Printable ASCII: what :func:`_reencode` leaves as it is.
_ASCII_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


class PathError(ValueError):
    """A path that cannot be normalised, so path rules cannot be applied to it."""


def normalise_path(path: str) -> str:
    """Percent-encoding and dot segments normalised as w3lib's canonicalize_url does,
    so ``/priv%61te/`` and ``/a/../private/`` meet a ``/private/`` rule."""
    if not path.startswith("/"):
        path = "/" + path
    canon = canonical_url("http://h.invalid" + path)
    return canon[len("https://h.invalid") :]


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on an absolute path (``/a/b/../c`` -> ``/a/c``)."""
    segments = path.split("/")[1:]
    out: list[str] = []
    for i, seg in enumerate(segments):
        if seg in (".", ".."):
            if seg == ".." and out:
                out.pop()
            if i == len(segments) - 1:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def _server_view(path: str, *, collapse: bool, lenient: bool) -> str:
    """``path`` as a server may resolve it: backslashes as slashes, optionally
    repeated slashes collapsed and, ``lenient``, ``;params`` and trailing dots and
    spaces dropped from each segment (Tomcat, IIS); dot segments resolved last."""
    path = path.replace("\\", "/")
    if not path.startswith("/"):
        path = "/" + path
    segments = path.split("/")[1:]
    if lenient:
        kept = []
        for given in segments:
            seg = given.partition(";")[0].rstrip(" ")
            if seg.strip("."):
                seg = seg.rstrip(". ")
            kept.append(seg)
        segments = kept
    if collapse:
        last = segments[-1:] == [""]
        segments = [seg for seg in segments if seg] + ([""] if last else [])
    return _remove_dot_segments("/" + "/".join(segments))


def path_forms(path: str) -> list[str]:
    """Every spelling of ``path`` (with its query) that a path rule must consider.

    The first is the canonical form (w3lib's ``canonicalize_url``: unreserved
    escapes decoded, reserved ones such as ``%2F`` kept, dot segments resolved,
    the query sorted). Then each round of percent-decoding (``/admin%2Fx`` ->
    ``/admin/x``, ``%252F`` -> ``%2F`` -> ``/``), each taken with and without
    collapsed slashes and ``;params``. Raises :class:`PathError` when the path is
    still changing after :data:`MAX_DECODE_ROUNDS` rounds or cannot be parsed.
    """
    try:
        canon = normalise_path(path)
    except (ValueError, UnicodeError) as exc:
        raise PathError(f"{exc}") from None
    forms = [canon]
    plain, _, _ = canon.partition("?")
    if (
        "%" not in canon
        and ";" not in plain
        and "//" not in plain
        and "/." not in plain
        and "./" not in plain
        and not plain.endswith(".")
    ):
        return forms  # nothing to decode, no dot segment or parameter: one spelling
    current = canon
    for round_ in range(MAX_DECODE_ROUNDS + 1):
        head, sep, query = current.partition("?")
        for collapse in (False, True):
            for lenient in (False, True):
                form = _server_view(head, collapse=collapse, lenient=lenient) + sep + query
                if form not in forms:
                    forms.append(form)
        decoded = unquote(current, errors="surrogateescape")
        if decoded == current:
            return forms
        if round_ == MAX_DECODE_ROUNDS:
            break
        current = decoded
    raise PathError(f"it is still percent-encoded after {MAX_DECODE_ROUNDS} rounds of decoding")


def _reencode(form: str) -> str:
    """A decoded spelling in the canonical form's encoding (non-ASCII as UTF-8 escapes;
    bytes that were not UTF-8 as they were), so that it can meet a canonical key."""
    if form.isascii():
        return form
    return quote(form, safe=_ASCII_SAFE, errors="surrogateescape")


def prefix_forms(prefix: str) -> tuple[str, ...]:
    """A path rule's prefix in the canonical and in the fully decoded spelling."""
    canon = normalise_path(prefix)
    decoded = canon
    for _ in range(MAX_DECODE_ROUNDS):
        decoded = unquote(decoded, errors="surrogateescape")
    head, sep, query = decoded.partition("?")
    return tuple(dict.fromkeys((canon, _server_view(head, collapse=True, lenient=False) + sep + query)))


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
        # url and prefix keys map to ``line << 1 | written_as_http``: the key is the
        # canonical https:// form, and the bit lets a match quote the entry as written
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
        #: Callables ``source(self)`` run before each refresh, which may ``add`` entries
        #: (the shared objection table of several crawl machines); one that raises
        #: ObjectionFileError makes the lookup fail (closed).
        self.sources: list[Callable[[ObjectionList], None]] = []

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
                objections._insert_key(*parsed, _tag(n, entry.split()[1]))
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
        key = canonical_domain(value) if kind == "domain" else canonical_url(value)
        self._insert_key(kind, key, line if kind == "domain" else _tag(line, value))

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
        for source in self.sources:
            source(self)
        if self.path is None:
            return
        try:
            st = os.stat(self._fspath)  # noqa: PTH116 - before every lookup: no Path object each time
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
        for given in text.split("\n")[:-1]:
            line_no += 1
            raw = given.removesuffix("\r")
            m = plain(raw)
            if m is not None and "/." not in (path := m.group(5) or "/") and not m.group(3).endswith("."):
                # the common case, inlined: lower-case host, no query, no escapes
                kind, scheme, host, port = m.group(1, 2, 3, 4)
                if port and port != _DEFAULT_PORTS[scheme]:
                    host = f"{host}:{port}"
                key = f"https://{host}{path}"
                tag = line_no << 1 | (scheme == "http")
                if kind == "url":
                    urls.setdefault(key, tag)
                elif key not in prefixes:
                    prefixes[key] = tag
                    self._prefix_lengths.append(len(key))
                continue
            try:
                parsed = _parse_line(raw, name, line_no)
                if parsed is not None:
                    tag = line_no if parsed[0] == "domain" else _tag(line_no, raw.split()[1])
                    self._insert_key(parsed[0], parsed[1], tag)
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
    def match(self, url: str, *, host: str | None = None) -> str | None:
        """The entry covering ``url`` (``"prefix https://..."``), or None.

        ``host``: the URL's host as :func:`canonical_host` gives it, when the caller
        has checked that ``url`` is an absolute http(s) URL (then a list of domain
        entries only is searched without parsing the URL again).

        Raises :class:`ObjectionFileError` while the file has a malformed line, and
        ``ValueError`` for a URL that is not an absolute http(s) URL.
        """
        self.refresh()
        if self.error is not None:
            raise self.error
        if host is not None and not self._urls and not self._prefixes:
            if not self._domains:
                return None
            verdict = self._host_verdicts.get(host, _UNSEEN)  # match_host's cached answer, without the call
            return self.match_host(host, refresh=False) if verdict is _UNSEEN else verdict  # type: ignore[return-value]
        key = canonical_url(url)
        found = self._match_key(key)
        if found is not None:
            return found
        if self._urls or self._prefixes:
            found = self._match_spellings(url, key)
            if found is not None:
                return found
        if not self._domains:
            return None
        authority = key[8 : key.find("/", 8)]  # key = "https://host[:port]/..."
        host = authority[1 : authority.index("]")] if authority.startswith("[") else authority.partition(":")[0]
        return self.match_host(host, refresh=False)

    def _match_key(self, key: str) -> str | None:
        """The ``url`` or ``prefix`` entry covering the canonical ``key``."""
        if key in self._urls:
            return self._describe("url", key, self._urls[key])
        for length in self._prefix_lengths:
            if length > len(key):
                break
            head = key[:length]
            if head in self._prefixes:
                return self._describe("prefix", head, self._prefixes[head])
        return None

    def _match_spellings(self, url: str, key: str) -> str | None:
        """Entries covering another spelling a server may read the path as
        (``/people%2Fjane/`` as ``/people/jane/``, ``/people;x/jane/``...), see
        :func:`path_forms`. Raises ``ValueError`` for a path that cannot be
        normalised (the gate then refuses it: it cannot be checked)."""
        cut = key.find("/", 8)  # key = "https://host[:port]/..."
        rest = key[cut:]
        plain = rest.partition("?")[0]
        if "%" not in rest and ";" not in plain and "//" not in plain and "./" not in plain and not plain.endswith("."):
            return None  # one spelling only: the canonical key already said no
        try:
            forms = path_forms(rest)
        except PathError as exc:
            raise ValueError(f"{url!r}: its path cannot be normalised ({exc})") from None
        origin = key[:cut]
        for form in forms[1:]:
            found = self._match_key(origin + _reencode(form))
            if found is not None:
                return found
        return None

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
        """The entry as the file spells its scheme (``http://`` or ``https://``), with its line."""
        if kind != "domain":
            if line & 1:
                key = "http://" + key[len("https://") :]
            line >>= 1
        if line and self.path is not None:
            return f"{kind} {key} ({self.path}:{line})"
        return f"{kind} {key}"

    def __len__(self) -> int:
        return len(self._urls) + len(self._prefixes) + len(self._domains)


def _tag(line: int, value: str) -> int:
    """``line << 1``, plus 1 when ``value`` (a URL or prefix as written) is ``http:``."""
    return line << 1 | (value.lstrip()[:5].lower() == "http:")


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
    """The objection list named in the policy (``objections.path``, relative to the
    policy file). It always applies; ``GDPR_OBJECTIONS`` can only add another list.

    For a policy read from the project's egg (Scrapyd, :mod:`scrapy_gdpr.egg`) the
    list is the one at the same place under the job's working folder, which
    ``gdpr-erase`` can write to; the list deployed in the egg applies as well
    (:func:`deployed_objections_path`)."""
    from scrapy_gdpr.config import from_project_root
    from scrapy_gdpr.egg import project_folder_of

    folder = project_folder_of(rt.policy.path)
    relative = Path(rt.policy.objections.path)
    if folder is None or relative.is_absolute():
        return rt.policy.resolve_path(rt.policy.objections.path)
    return from_project_root(Path(folder) / relative)


def deployed_objections_path(rt: GdprRuntime) -> Path | None:
    """The policy's objection list as deployed in the project's egg, or None when the
    policy was not read from an egg (the list then is :func:`objections_path`)."""
    from scrapy_gdpr.egg import project_folder_of

    if project_folder_of(rt.policy.path) is None or Path(rt.policy.objections.path).is_absolute():
        return None
    return rt.policy.resolve_path(rt.policy.objections.path)


def extra_objections_path(rt: GdprRuntime) -> Path | None:
    """The list ``GDPR_OBJECTIONS`` adds to the policy's, or None (unset, or the same file)."""
    if not rt.config.objections:
        return None
    from scrapy_gdpr.config import from_project_root

    extra = from_project_root(rt.config.objections)
    if extra.resolve() == objections_path(rt).resolve():
        return None
    return extra


def objection_list(rt: GdprRuntime) -> ObjectionList:
    """The crawl's shared :class:`ObjectionList` of the policy (``runtime.objections``),
    read on first use. A malformed or unreadable file raises, which stops the crawl."""
    objections = rt.objections
    if objections is None:
        path = objections_path(rt)
        on_invalid = getattr(rt.policy.objections, "on_invalid", "refuse")
        objections = rt.objections = ObjectionList.from_file(path, on_invalid=on_invalid)
        logger.info(
            "GDPR objection list %(path)s: %(n)d entries", {"path": path, "n": len(objections)}
        )
    return objections


def deployed_objection_list(rt: GdprRuntime) -> ObjectionList | None:
    """The policy's objection list as deployed in the project's egg (read-only), or None."""
    path = deployed_objections_path(rt)
    if path is None:
        return None
    on_invalid = getattr(rt.policy.objections, "on_invalid", "refuse")
    objections = ObjectionList.from_file(path, on_invalid=on_invalid)
    logger.info(
        "GDPR objection list deployed in the project's egg: %(n)d entries (new objections go to %(path)s)",
        {"n": len(objections), "path": objections_path(rt)},
    )
    return objections



def extra_objection_list(rt: GdprRuntime) -> ObjectionList | None:
    """The shared :class:`ObjectionList` that ``GDPR_OBJECTIONS`` adds to the policy's
    list, or None. Checked after the policy's list, never instead of it."""
    path = extra_objections_path(rt)
    if path is None:
        return None
    objections = rt.extra_objections
    if objections is None:
        objections = rt.extra_objections = ObjectionList.from_file(path)
        logger.info(
            "GDPR objection list added by GDPR_OBJECTIONS %(path)s: %(n)d entries (the policy's list "
            "%(policy_list)s applies as well)",
            {"path": path, "n": len(objections), "policy_list": objections_path(rt)},
        )
    return objections

"""RFC 9309 robots.txt gate.

:class:`RobotsGateMiddleware` takes the place of Scrapy's ``RobotsTxtMiddleware``
and fails closed where the stock one fails open:

* robots.txt is fetched by this middleware (redirects and retries handled here),
  once per scheme+host+port, shared by every request waiting for it;
* 2xx is parsed, 4xx means no restrictions, 5xx/429/network errors mean complete
  disallow (``robots_unreachable``), re-tried after a back-off;
* the group is chosen by the policy's product token (RFC 9309 §2.2.1), not by a
  substring of the User-Agent;
* Crawl-delay and Request-rate become per-slot delay floors;
* ``Content-Signal`` and ``Content-Usage`` lines reserve purposes (``optout``).

Other components ask ``runtime.robots.allows(url)``; spiders can read
the sitemaps with :func:`sitemaps`.
"""

from __future__ import annotations

import logging
import math
import re
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin, urlsplit

import http_sfv
from scrapy import Request
from scrapy.exceptions import IgnoreRequest
from scrapy.http.request import NO_CALLBACK
from scrapy.utils.asyncio import run_in_thread
from scrapy.utils.defer import deferred_from_coro, maybe_deferred_to_future
from twisted.internet.defer import Deferred

from scrapy_gdpr._component import chainable, component_runtime
from scrapy_gdpr.audit import Reason, record, refuse
from scrapy_gdpr.gate._download import body_problem, capped, size_detail, too_large
from scrapy_gdpr.gate.politeness import parse_retry_after, slot_floors
from scrapy_gdpr.internal import internal_kind, internal_meta
from scrapy_gdpr.shared.state import download_once, gate_state
from scrapy_gdpr.urls import origin_of, site_root

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, MutableMapping, Sequence
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response

logger = logging.getLogger(__name__)

#: Meta of the robots.txt requests this middleware sends.
ROBOTS_META: dict[str, Any] = {
    **internal_meta("robots"),
    "dont_obey_robotstxt": True,
    "dont_redirect": True,
    "dont_retry": True,
    "handle_httpstatus_all": True,
    "dont_merge_cookies": True,
}

#: A robots.txt download is stopped at this many times ``robots.max_size`` (after
#: decompression): a larger body is parsed up to ``max_size``, a body over the cap
#: makes the host unreachable (complete disallow).
DOWNLOAD_FACTOR = 4

#: Internal request kinds (:mod:`scrapy_gdpr.internal`) this middleware lets through unchecked.
INTERNAL = frozenset({"robots", "terms", "tdmrep", "rsl"})

#: ``request.meta`` key: the purposes reserved for a URL by their own product token's rules.
TOKENS_META = "gdpr_robots_tokens"

#: How many problem hosts the compliance report lists (counts are always exact).
REPORT_LIMIT = 1000

#: Purposes named by the two content-signal syntaxes.
_CONTENT_SIGNAL_KEYS = {"search": "search", "ai-train": "ai-train", "ai-input": "ai-input"}
#: IETF AI-preferences vocabulary keys (``Content-Usage``) and the purpose each covers;
#: ``train-genai`` and ``ai-use`` come from earlier drafts, honouring them is stricter.
CONTENT_USAGE_KEYS: dict[str, str] = {"train-ai": "ai-train", "train-genai": "ai-train", "ai-use": "ai-input", "search": "search"}

_USER_AGENT = {"user-agent", "useragent", "user agent"}
_ALLOW = {"allow"}
_DISALLOW = {"disallow", "dissallow", "dissalow", "disalow", "diasllow", "disallaw"}
_PASS_THROUGH = {"crawl-delay": "Crawl-delay", "crawl delay": "Crawl-delay", "request-rate": "Request-rate",
                 "request rate": "Request-rate"}
_SITEMAP = {"sitemap", "sitemaps", "site-map"}
_LICENSE = {"license", "licence"}  # RSL 1.0: the URL of the site's licence document
_CONTENT_SIGNAL = {"content-signal", "content-signals"}
_CONTENT_USAGE = {"content-usage"}
_TOKEN_RE = re.compile(r"[A-Za-z_-]*")
#: A known directive name followed by white space instead of a colon ("Disallow /x").
_NO_COLON_RE = re.compile(
    "^({})\\s+(.*)$".format(
        "|".join(
            re.escape(name).replace("\\ ", "\\s+")
            for name in sorted(
                _USER_AGENT | _ALLOW | _DISALLOW | set(_PASS_THROUGH) | _SITEMAP | _CONTENT_SIGNAL | _CONTENT_USAGE
                | _LICENSE,
                key=len,
                reverse=True,  # the longest name first: "user agent" before "user"
            )
        )
    ),
    re.IGNORECASE,
)


def _robots_url(url: str) -> str:
    """The robots.txt of ``url``'s site (an http(s) URL: the gate refused the others)."""
    root = site_root(url)
    if root is None:
        parts = urlsplit(url)
        root = f"{parts.scheme}://{parts.netloc.lower()}"
    return f"{root}/robots.txt"


def _robots_key(url: str) -> tuple[str, str] | None:
    """The shared-cache key of the robots.txt of page ``url``'s site (its URL)."""
    return ("robots", _robots_url(url)) if site_root(url) is not None else None


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class Signal:
    """One content-signal line of the applicable group."""

    line: int
    text: str
    path: str | None
    prefs: dict[str, bool]  # purpose -> True (allowed) / False (reserved); unknown purposes absent
    #: Content-Signal only: purposes named by an item that cannot be read (reserved, in doubt)
    doubt: dict[str, str] = field(default_factory=dict)


#: robots.txt files up to this size are parsed on the reactor thread (microseconds).
PARSE_INLINE_BYTES = 32 * 1024

#: ASCII kept as it is in a path (RFC 3986 pchar, "/" and "?", and the pattern characters).
_KEEP = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?")
#: Escapes undone in the decoded spelling: all of ``_KEEP`` but the pattern characters.
_DECODE = _KEEP - frozenset(b"*$")


def _encode(text: str, *, decode: bool) -> str:
    """``text`` as the octets RFC 9309 2.2.2 compares, percent-encoded.

    Octets outside US-ASCII (a path given raw, in UTF-8 or not) and ASCII that is not
    allowed in a path are percent-encoded; existing escapes get upper-case hex digits;
    a ``%`` not starting an escape is ``%25``. With ``decode``, escapes of ASCII that
    may stand in a path are undone (``%7E``, ``%62``, also ``%2F``): the spelling a
    server that decodes them sees, which ``Disallow`` rules are also matched in.
    """
    if _PLAIN.fullmatch(text):
        return text  # the common case: nothing to do
    # one character per octet, so that non-UTF-8 octets survive as themselves
    octets = text.encode("utf-8", "surrogateescape").decode("latin-1")
    return _ESCAPE.sub(_escape_decoded if decode else _escape, octets)


_KEEP_CLASS = "A-Za-z0-9\\-._~!$&'()*+,;=:@/?"
_PLAIN = re.compile(f"[{_KEEP_CLASS}]*")
_ESCAPE = re.compile(f"%[0-9A-Fa-f]{{2}}|[^{_KEEP_CLASS}]")


def _escape(m: re.Match[str]) -> str:
    s = m.group(0)
    return s.upper() if len(s) == 3 else f"%{ord(s):02X}"


def _escape_decoded(m: re.Match[str]) -> str:
    s = m.group(0)
    if len(s) == 3:
        value = int(s[1:], 16)
        return chr(value) if value in _DECODE else s.upper()
    return f"%{ord(s):02X}"


class PathPattern:
    """One RFC 9309 path pattern: ``*`` matches any octets, a final ``$`` ends the path.

    Matched from the start of the path, in time linear in its length (no regular
    expression, so no pattern can make matching backtrack).
    """

    __slots__ = ("anchored", "pieces")

    def __init__(self, encoded: str) -> None:
        self.anchored = encoded.endswith("$")
        if self.anchored:
            encoded = encoded[:-1]
        self.pieces = encoded.split("*")

    def matches(self, path: str) -> bool:
        pieces = self.pieces
        first = pieces[0]
        if not path.startswith(first):
            return False
        if len(pieces) == 1:
            return not self.anchored or len(path) == len(first)
        pos = len(first)
        for piece in pieces[1:-1]:
            found = path.find(piece, pos)  # the leftmost place leaves the most room after it
            if found < 0:
                return False
            pos = found + len(piece)
        last = pieces[-1]
        if self.anchored:
            return len(path) - len(last) >= pos and path.endswith(last)
        return path.find(last, pos) >= 0


class _Rule:
    """An Allow or Disallow rule, in the two spellings it is compared in.

    An Allow applies only to the spelling it gives; a Disallow also to the decoded
    spelling (``/%7Ea`` and ``/~a``, ``/a%2Fb`` and ``/a/b``): in doubt, the rule
    that forbids.
    """

    __slots__ = ("allow", "decoded", "index", "length", "raw")

    def __init__(self, index: int, allow: bool, value: str) -> None:
        self.index = index
        self.allow = allow
        raw = _encode(value, decode=False)
        self.length = len(raw)  # octets (RFC 9309 2.2.2: the most octets is the most specific)
        self.raw = PathPattern(raw)
        decoded = _encode(value, decode=True)
        self.decoded = self.raw if decoded == raw else PathPattern(decoded)


class RuleSet:
    """The Allow/Disallow rules of one group, ordered for RFC 9309 2.2.2 precedence:
    the longest matching pattern wins, an Allow wins over an equally long Disallow.

    Rules whose fixed start names a whole first path segment (``/wp-admin/...``) are
    filed under it, so a URL is compared only with the rules of its own first segment
    and the few that are not filed (``/``, ``/*.php``, ``/p``).
    """

    __slots__ = ("__weakref__", "_decoded", "_decoded_differs", "_raw", "rules")

    def __init__(self, rules: Iterable[tuple[str, str]]) -> None:
        built = [_Rule(i, kind == "Allow", value) for i, (kind, value) in enumerate(rules)]
        built.sort(key=lambda r: (-r.length, not r.allow, r.index))
        self.rules = built
        # spelling -> (rules not filed, rules by first segment), each list in precedence order
        self._raw = self._file(built, lambda r: r.raw)
        self._decoded = self._file([r for r in built if not r.allow], lambda r: r.decoded)
        self._decoded_differs = any(r.decoded is not r.raw for r in built if not r.allow)

    @staticmethod
    def _file(
        rules: list[_Rule], pattern: Callable[[_Rule], PathPattern]
    ) -> tuple[list[_Rule], dict[str, list[_Rule]]]:
        general: list[_Rule] = []
        filed: dict[str, list[_Rule]] = {}
        for rule in rules:
            segment = _segment(pattern(rule).pieces[0])
            if segment is None:
                general.append(rule)
            else:
                filed.setdefault(segment, []).append(rule)
        return general, filed

    def decide(self, url: str) -> _Rule | None:
        """The rule deciding ``url`` (None: no rule matches, so it is allowed)."""
        path = url_path(url)
        if path == "/robots.txt":
            return None  # RFC 9309 2.2.2: implicitly allowed
        raw = _encode(path, decode=False)
        best = self._first(self._raw, raw, False, None)
        # a path _encode returns as it is (no escape, nothing to encode) decodes to itself too
        decoded = path if raw is path else _encode(path, decode=True)
        if decoded != raw or self._decoded_differs:
            # a Disallow also applies to the decoded spelling (see _Rule)
            best = self._first(self._decoded, decoded, True, best)
        return best

    @staticmethod
    def _first(
        filed: tuple[list[_Rule], dict[str, list[_Rule]]], path: str, decoded: bool, best: _Rule | None
    ) -> _Rule | None:
        general, by_segment = filed
        segment = _segment(path)
        for rules in (general, by_segment.get(segment) if segment is not None else None):
            for rule in rules or ():
                if best is not None and (-rule.length, not rule.allow, rule.index) >= (
                        -best.length, not best.allow, best.index):
                    break  # the lists are in precedence order: nothing later can win
                if (rule.decoded if decoded else rule.raw).matches(path):
                    best = rule
                    break
        return best


def _segment(prefix: str) -> str | None:
    """``/a/`` of ``/a/b``: the first path segment with its slashes, when complete."""
    end = prefix.find("/", 1)
    return prefix[: end + 1] if end > 0 else None


def url_path(url: str) -> str:
    """The path and query of ``url`` that rules are matched against (``/`` when empty)."""
    parts = urlsplit(url, "", True)  # the gate's split, cached
    path = parts.path or "/"
    if not path.startswith("/"):
        path = "/" + path
    return f"{path}?{parts.query}" if parts.query else path


@dataclass(slots=True)
class RobotsRules:
    """What one robots.txt says to this crawler (its product-token group, else ``*``)."""

    group: str  # the product token, "*", or "" when no group applies
    parser: RuleSet | None
    rules: list[tuple[int, str, str]] = field(default_factory=list)  # (line, Allow/Disallow, value)
    crawl_delay: float | None = None
    request_rate: tuple[int, int] | None = None  # (requests, seconds)
    signals: list[Signal] = field(default_factory=list)
    sitemaps: list[str] = field(default_factory=list)
    #: RSL ``License:`` lines outside any group or in the applicable group: (line, URL as written)
    licenses: list[tuple[int, str]] = field(default_factory=list)
    truncated: bool = False
    _signal_matchers: dict[str, PathPattern] = field(default_factory=dict, repr=False)

    def can_fetch(self, url: str) -> bool:
        if self.parser is None:
            return True
        rule = self.parser.decide(url)
        return rule is None or rule.allow

    def explain(self, url: str) -> str:
        """The rule that decides ``url``."""
        group = f"group User-agent: {self.group}"
        rule = self.parser.decide(url) if self.parser is not None else None
        if rule is None:
            return f"robots.txt ({group}) has no rule for this URL"
        line, kind, value = self.rules[rule.index]
        return f"robots.txt line {line} '{kind}: {value}' ({group})"

    def reserved(self, url: str, purposes: Iterable[str]) -> tuple[str, Signal] | None:
        """The first of ``purposes`` that a content signal reserves for ``url``, and the line."""
        if not self.signals:
            return None
        wanted = list(purposes)
        path = url_path(url)
        raw = _encode(path, decode=False)
        for kind in ("Content-Usage", "Content-Signal"):
            candidates = [s for s in self.signals if s.text.lower().startswith(kind.lower())]
            if not candidates:
                continue
            matched: list[tuple[int, Signal]] = []
            for s in candidates:
                if s.path is None:
                    matched.append((0, s))
                elif self._matcher(s.path).matches(raw):
                    matched.append((len(s.path), s))
            if not matched:
                continue
            longest = max(length for length, _ in matched)
            best = [s for length, s in matched if length == longest]
            for purpose in wanted:
                for s in best:  # any "no" among equally specific lines reserves
                    if s.prefs.get(purpose) is False or purpose in s.doubt:
                        return purpose, s
        return None

    def _matcher(self, path: str) -> PathPattern:
        m = self._signal_matchers.get(path)
        if m is None:
            m = self._signal_matchers[path] = PathPattern(_encode(path, decode=False))
        return m


_LINE_END = re.compile(r"\r\n|\r|\n")
_BOM = "\ufeff"


def _split_line(line: str) -> tuple[str, str] | None:
    if ":" in line:
        name, value = line.split(":", 1)
        name = " ".join(name.split()).lower()
        if name in _USER_AGENT or name in _ALLOW or name in _DISALLOW or name in _PASS_THROUGH \
                or name in _SITEMAP or name in _CONTENT_SIGNAL or name in _CONTENT_USAGE or name in _LICENSE:
            return name, value.strip()
    m = _NO_COLON_RE.match(line)
    if m:
        return " ".join(m.group(1).split()).lower().replace("user agent", "user-agent"), m.group(2).strip()
    if ":" in line:
        name, value = line.split(":", 1)
        return " ".join(name.split()).lower(), value.strip()
    return None


def _ua_token(value: str) -> str:
    value = value.strip()
    if value == "*" or (value.startswith("*") and value[1:2].isspace()):
        return "*"
    m = _TOKEN_RE.match(value)
    return m.group(0).lower() if m else ""


def _split_path(value: str) -> tuple[str | None, str]:
    """An optional leading path pattern, then the preference text."""
    if value.startswith("/"):
        parts = value.split(None, 1)
        return parts[0], (parts[1] if len(parts) > 1 else "")
    return None, value


def _crawl_delay(value: str) -> float | None:
    try:
        delay = float(value.split(maxsplit=1)[0]) if value.split() else None
    except ValueError:
        return None
    if delay is None or not math.isfinite(delay) or delay < 0:
        return None
    return delay


_RATE_RE = re.compile(r"^(\d{1,9})\s*/\s*(\d{1,9})\s*([smhd]?)(?:\s|$)", re.IGNORECASE)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _request_rate(value: str) -> tuple[int, int] | None:
    m = _RATE_RE.match(value)
    if not m:
        return None
    requests, seconds = int(m.group(1)), int(m.group(2)) * _UNIT[m.group(3).lower()]
    if requests <= 0 or seconds <= 0:
        return None
    return requests, seconds


@dataclass(frozen=True, slots=True)
class ContentSignal:
    """What one ``Content-Signal`` value says, as read by :func:`read_content_signal`."""

    prefs: dict[str, bool]  # purpose -> True (allowed) / False (reserved)
    doubt: dict[str, str]  # purpose -> the item naming it that cannot be read: reserved, in doubt
    problems: list[str]


def read_content_signal(text: str) -> ContentSignal:
    """Cloudflare's ``search=yes, ai-train=no`` (contentsignals.org), the one reader of
    this syntax for every carrier (robots.txt line, HTTP response header).

    Keys are case-insensitive; unknown keys are ignored. An item naming a known key
    whose value is not ``yes`` or ``no`` (``ai-train=maybe``, a bare ``ai-train``)
    cannot be read: its purpose goes to ``doubt``, which callers treat as reserved.
    Other unreadable items (``garbage``) are listed in ``problems`` and name no purpose.
    """
    prefs: dict[str, bool] = {}
    doubt: dict[str, str] = {}
    problems: list[str] = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        name = key.strip().lower()
        purpose = _CONTENT_SIGNAL_KEYS.get(name)
        value = value.strip().lower()
        if purpose is None:
            if not sep or not _TOKEN_RE.fullmatch(name) or not name:
                problems.append(f"cannot read {item.strip()!r}")
            continue
        if sep and value in ("yes", "no"):
            prefs[purpose] = prefs.get(purpose, True) and value == "yes"  # a repeated key: any "no" reserves
        else:
            doubt.setdefault(purpose, item.strip())
            problems.append(f"{name} has a value other than yes/no in {item.strip()!r}: {purpose} reserved, in doubt")
    return ContentSignal(prefs, doubt, problems)


#: A vocabulary key named anywhere in a Content-Usage value that cannot be parsed.
_USAGE_KEY_RE = re.compile(
    r"(?<![A-Za-z0-9_.*-])({})(?![A-Za-z0-9_.*-])".format("|".join(map(re.escape, CONTENT_USAGE_KEYS))), re.IGNORECASE
)


def read_content_usage(text: str) -> tuple[dict[str, str], list[str], dict[str, str]]:
    """IETF aipref ``train-ai=n, search=y`` as a Structured Fields Dictionary, the one
    reader of this syntax for every carrier (robots.txt rule, HTTP response header).

    Returns ``{vocabulary key: "y" | "n"}``, the problems, and ``{vocabulary key: what
    was written}`` for the keys whose preference cannot be read, which callers treat as
    reserved, in doubt (malformed fails closed for its purpose): a known key whose
    value is not the token ``y`` or ``n`` (``train-ai="n"``, a bare ``train-ai``), and,
    when the whole field cannot be parsed (``Train-AI=n``, ``train-ai=n,,``,
    non-ASCII), every known key the text names. Unknown keys and parameters are
    ignored; the last of duplicate keys wins (done by the parser).
    """
    d = http_sfv.Dictionary()  # type: ignore[attr-defined]
    try:
        d.parse(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        named = {m.group(1).lower(): text.strip() for m in _USAGE_KEY_RE.finditer(text)}
        return {}, [f"cannot parse {text!r} ({str(exc) or 'not a valid structured field dictionary'})"], named
    prefs: dict[str, str] = {}
    problems: list[str] = []
    doubt: dict[str, str] = {}
    for key, member in d.items():
        if key not in CONTENT_USAGE_KEYS:
            continue
        value = getattr(member, "value", None)
        if isinstance(value, http_sfv.Token) and str(value) in ("y", "n"):  # type: ignore[attr-defined]
            prefs[key] = str(value)
        else:
            written = key if value is True else f"{key}={member}"  # as serialised: train-ai="n"
            doubt[key] = written
            problems.append(f"{key} has a value other than the tokens y/n ({written}): reserved, in doubt")
    return prefs, problems, doubt


def _content_usage_prefs(text: str) -> tuple[dict[str, bool], dict[str, str]]:
    """Purpose -> allowed, and purpose -> the unreadable item (reserved, in doubt), from
    :func:`read_content_usage`; of two keys for one purpose (``train-ai``,
    ``train-genai``), any ``n`` reserves."""
    prefs: dict[str, bool] = {}
    read, _, unreadable = read_content_usage(text)
    for key, value in read.items():
        purpose = CONTENT_USAGE_KEYS[key]
        prefs[purpose] = prefs.get(purpose, True) and value == "y"
    doubt = {CONTENT_USAGE_KEYS[key]: item for key, item in unreadable.items()}
    return prefs, doubt


def _strip_bom(body: bytes) -> bytes:
    """Drop a UTF-8 byte order mark at the start, also a cut one (``EF``, ``EF BB``)."""
    for bom in (b"\xef\xbb\xbf", b"\xef\xbb", b"\xef"):
        if body.startswith(bom):
            return body[len(bom) :]
    return body


def parse_robots(
    body: bytes,
    product_token: str,
    *,
    max_size: int = 512000,
    content_signal: bool = True,
    content_usage: bool = True,
    shared: MutableMapping[tuple[tuple[str, str], ...], RuleSet] | None = None,
) -> RobotsRules:
    """Parse the first ``max_size`` bytes of a robots.txt for ``product_token``.

    A group is one or more ``User-agent`` lines and the records after them, up to the
    next ``User-agent`` line that follows an ``Allow`` or ``Disallow`` line (RFC 9309
    2.2): other records (``Crawl-delay``, ``Sitemap``, content signals, unknown or
    broken lines, blank lines) never end the list of user agents, so
    ``User-agent: a`` / ``Crawl-delay: 5`` / ``User-agent: *`` / ``Disallow: /``
    is one group for ``a`` and ``*``. Groups apply when a user-agent line's product
    token equals ours (case-insensitively); all such groups combine; else the ``*``
    groups; else none. ``shared`` maps rule lists to rule sets already built, so the
    many sites serving the same rules (CMS defaults) share one.
    """
    truncated = len(body) > max_size
    if truncated:
        body = body[:max_size]
        # a cut line could turn "Allow: /a/b" into "Allow: /": drop it
        cut = max(body.rfind(b"\n"), body.rfind(b"\r"))
        body = body[: cut + 1] if cut >= 0 else b""
    # surrogateescape keeps octets that are not UTF-8 (a Latin-1 path) as they are
    text = _strip_bom(body).decode("utf-8", errors="surrogateescape")
    token = product_token.lower()

    groups: list[tuple[set[str], list[tuple[int, str, str]]]] = []
    global_lines: list[tuple[int, str, str]] = []
    sitemaps: list[str] = []
    licenses: list[tuple[int, str]] = []
    current: tuple[set[str], list[tuple[int, str, str]]] | None = None
    had_rule = False  # the current group has an Allow/Disallow: a User-agent line starts a new group
    for number, raw in enumerate(_LINE_END.split(text), start=1):
        line = raw.split("#", 1)[0].strip()
        bom = line.startswith(_BOM)
        if bom:
            line = line.lstrip(_BOM).strip()
        if not line:
            continue
        parsed = _split_line(line)
        if parsed is None:
            continue
        name, value = parsed
        if bom and name not in _DISALLOW:
            continue  # a stray byte order mark spoils the line; only a Disallow is kept, in doubt
        if name in _SITEMAP:
            if value:
                sitemaps.append(value)
            continue
        if name in _LICENSE:
            # a licence is about the content, not one crawler: read in every group, as Sitemap
            if value:
                licenses.append((number, value))
            continue
        if name in _USER_AGENT:
            if current is None or had_rule:
                current = (set(), [])
                groups.append(current)
                had_rule = False
            current[0].add(_ua_token(value))
            continue
        entry = (number, name, value)
        if current is None:
            global_lines.append(entry)
            continue
        if name in _ALLOW or name in _DISALLOW:
            had_rule = True
        current[1].append(entry)

    chosen = [g for g in groups if token and token in g[0]]
    group = product_token if chosen else ""
    if not chosen:
        chosen = [g for g in groups if "*" in g[0]]
        group = "*" if chosen else ""
    lines = sorted((e for g in chosen for e in g[1]), key=lambda e: e[0])

    rules: list[tuple[int, str, str]] = []
    signals: list[Signal] = []
    delays: list[float] = []
    rates: list[tuple[int, int]] = []
    # lines before the first User-agent belong to no group: only content signals
    # there count (for everyone), as crawler-commons reads them
    tagged = [(e, False) for e in global_lines] + [(e, True) for e in lines]
    for (number, name, value), in_group in tagged:
        if name in _ALLOW or name in _DISALLOW:
            if not in_group or not value:
                continue  # an empty value is no rule (RFC 9309 2.2.2)
            kind = "Allow" if name in _ALLOW else "Disallow"
            # not a path: read as one, in doubt the wider reading
            rule_path = "/" + value if kind == "Disallow" and not value.startswith(("/", "*")) else value
            rules.append((number, kind, rule_path))
        elif name in _PASS_THROUGH:
            if not in_group:
                continue
            if _PASS_THROUGH[name] == "Crawl-delay":
                if (delay := _crawl_delay(value)) is not None:
                    delays.append(delay)
            elif (rate := _request_rate(value)) is not None:
                rates.append(rate)
        elif name in _CONTENT_SIGNAL:
            if content_signal:
                path, prefs_text = _split_path(value)
                read = read_content_signal(prefs_text)
                signals.append(Signal(number, f"Content-Signal: {value}", path, read.prefs, read.doubt))
        elif name in _CONTENT_USAGE and content_usage:
            path, prefs_text = _split_path(value)
            prefs, doubt = _content_usage_prefs(prefs_text)
            signals.append(Signal(number, f"Content-Usage: {value}", path, prefs, doubt))

    ruleset = None
    if rules:
        key = tuple((kind, value) for _, kind, value in rules)
        ruleset = shared.get(key) if shared is not None else None
        if ruleset is None:
            ruleset = RuleSet(key)
            if shared is not None:
                shared[key] = ruleset
    return RobotsRules(
        group=group,
        parser=ruleset,
        rules=rules,
        # several values in the group: the most cautious one
        crawl_delay=max(delays) if delays else None,
        request_rate=max(rates, key=lambda r: r[1] / r[0]) if rates else None,
        signals=signals,
        sitemaps=sitemaps,
        licenses=licenses,
        truncated=truncated,
    )


# --------------------------------------------------------------------------- cache entries


State = Literal["parsed", "unavailable", "unreachable"]


@dataclass(slots=True)
class RobotsEntry:
    """The cached robots.txt answer for one scheme+host+port."""

    origin: str
    robots_url: str
    state: State
    rules: RobotsRules | None = None
    status: int | None = None
    error: str = ""
    fetched_at: float = 0.0  # the clock's monotonic()
    expires_at: float = 0.0
    attempts: int = 0  # consecutive unreachable fetches
    delay: float = 0.0  # the delay floor for this origin's slot(s)
    #: The rules for each purpose's own product token (lower case), when the policy names any
    purpose_rules: dict[str, RobotsRules] = field(default_factory=dict)
    delay_note: str = ""
    slot_keys: set[str] = field(default_factory=set)


def _max_age(response: Response) -> float | None:
    value = response.headers.get(b"Cache-Control")
    if not value:
        return None
    m = re.search(rb"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", value, re.IGNORECASE)
    return float(m.group(1)) if m else None


# --------------------------------------------------------------------------- middleware


@chainable
class RobotsGateMiddleware:
    """Downloader middleware enforcing robots.txt (RFC 9309) and its content signals."""

    #: The shortest cache lifetime a ``Cache-Control: max-age`` can set (seconds).
    MIN_TTL: float = 60.0

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)
        self.clock = self.runtime.clock
        policy = self.runtime.policy
        self.product_token = policy.crawler.product_token
        robots = policy.robots
        self.max_size = robots.max_size
        self.download_limit = DOWNLOAD_FACTOR * self.max_size
        self.max_redirects = robots.max_redirects
        self.retry_times = robots.retry_times
        self.retry_backoff = policy.duration(robots.retry_backoff).total_seconds()
        self.ttl = policy.duration(robots.cache_ttl).total_seconds()
        self.max_crawl_delay = policy.duration(robots.max_crawl_delay).total_seconds()
        self.content_signal = policy.opt_out.content_signal
        self.content_usage = policy.opt_out.content_usage
        self.cache_size = max(1, self.runtime.config.robots_cache_size)
        self.cache: OrderedDict[str, RobotsEntry] = OrderedDict()
        self._waiters: dict[str, list[Deferred[RobotsEntry]]] = {}
        self._fetching: dict[str, Deferred[None]] = {}  # keeps the fetch tasks referenced
        #: parsers by rule text, shared by the cache entries that use them
        self._parsers: weakref.WeakValueDictionary[tuple[tuple[str, str], ...], RuleSet] = (
            weakref.WeakValueDictionary()
        )
        self.purposes: list[str] = list(policy.signal_purposes())
        #: Per-purpose product tokens (the Google-Extended pattern): (token, its signal purposes,
        #: policy clause). The fetch needs the main token's permission; these only reserve purposes.
        self.purpose_tokens: list[tuple[str, tuple[str, ...], str]] = [
            (p.product_token, tuple(p.signal_purposes), policy.clause("purposes", i, "product_token"))
            for i, p in enumerate(policy.purposes)
            if p.product_token and p.product_token.lower() != self.product_token.lower()
        ]
        self.floors = slot_floors(crawler)
        self._report: dict[str, Any] = {
            "product_token": self.product_token,
            "unreachable_count": 0,
            "unreachable": {},
            "redirect_failures": 0,
            "truncated": [],
            "capped_delays": {},
            "sitemaps": {},
        }
        self.runtime.report_sections["robots"] = self._report
        #: origins (``scheme://host:port``) whose robots.txt the crawl asked for: sent
        #: to them, answered or not (each redirect hop's origin too)
        self.asked: set[str] = set()
        self.runtime.robots = self
        # several workers: a site's robots.txt answer is read along with the first of its
        # answers asked for (the terms page's, when a check is due)
        gate_state(crawler).along_providers.append(_robots_key)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    # -- the hook --------------------------------------------------------------------
    async def process_request(self, request: Request) -> None:
        if internal_kind(request) in INTERNAL:
            return
        meta = request.meta
        url = request.url
        if url.startswith(("data:", "file:")):
            return
        parts = urlsplit(url, "", True)  # the gate (40) split it already: cached
        origin = origin_of(parts)
        entry = self.cache.get(origin)
        if entry is not None and self.clock.monotonic() < entry.expires_at:
            self.cache.move_to_end(origin)  # entry_for's fresh-entry path, without a coroutine
        else:
            entry = await self.entry_for(url, parts)
        allowed, reason, detail = self._decide(entry, url)
        if not allowed:
            raise refuse(self.runtime, url, reason or Reason.UNDECIDED, clause=self._clause(reason), detail=detail)
        if self.purpose_tokens:
            # a redirect copies the meta of the request it follows: decide afresh for this URL
            meta.pop(TOKENS_META, None)
            if reserved := self.token_reservations(entry, url):
                meta[TOKENS_META] = reserved
        if entry.delay:
            key = self.crawler.engine.downloader.get_slot_key(request)
            if key not in entry.slot_keys:
                entry.slot_keys.add(key)
            self.floors.set(key, f"robots.txt {entry.origin}", entry.delay)

    # -- the service -----------------------------------------------------------------
    async def allows(self, url: str) -> tuple[bool, str, str]:
        """``(allowed, reason code, detail)`` for ``url``, fetching robots.txt if needed."""
        if url.startswith(("data:", "file:")):
            return True, "", ""
        entry = await self.entry_for(url)
        allowed, reason, detail = self._decide(entry, url)
        return allowed, str(reason) if reason else "", detail

    async def sitemaps(self, url: str) -> list[str]:
        """The ``Sitemap:`` URLs of the robots.txt for ``url``'s scheme, host and port."""
        entry = await self.entry_for(url)
        return list(entry.rules.sitemaps) if entry.rules is not None else []

    def token_reservations(self, entry: RobotsEntry, url: str) -> list[dict[str, Any]]:
        """Purposes whose own product token may not have ``url``: ``[{"token", "purposes",
        "clause", "text"}]``. A Disallow for the token, or a content signal in the token's
        group, reserves the purpose's opt-out purposes (folded in by the opt-out middleware)."""
        out: list[dict[str, Any]] = []
        for token, purposes, clause in self.purpose_tokens:
            rules = entry.purpose_rules.get(token.lower())
            if rules is None:
                continue
            if not rules.can_fetch(url):
                text = f"{entry.robots_url}: {rules.explain(url).removeprefix('robots.txt ')} disallows {token}"
                out.append({"token": token, "purposes": list(purposes), "clause": clause, "text": text})
                continue
            for wanted in purposes:  # each purpose on its own: a line may reserve several
                found = rules.reserved(url, [wanted])
                if found is not None:
                    purpose, signal = found
                    text = (f"{entry.robots_url} line {signal.line} '{signal.text}' (group User-agent: {rules.group}) "
                            f"reserves {purpose} for {token}")
                    out.append({"token": token, "purposes": [purpose], "clause": clause, "text": text})
        return out

    def _decide(self, entry: RobotsEntry, url: str) -> tuple[bool, Reason | None, str]:
        if entry.state == "unreachable":
            return False, Reason.ROBOTS_UNREACHABLE, (
                f"{entry.robots_url} is unreachable ({entry.error}): complete disallow (RFC 9309 2.3.1.4)"
            )
        rules = entry.rules
        if rules is None:
            return True, None, ""
        if not rules.can_fetch(url):
            return False, Reason.ROBOTS, rules.explain(url)
        found = rules.reserved(url, self.purposes)
        if found is not None:
            purpose, signal = found
            detail = f"{entry.robots_url} line {signal.line} '{signal.text}' reserves {purpose}"
            if purpose in signal.doubt:
                values = "y/n" if signal.text.startswith("Content-Usage") else "yes/no"
                detail += f" ({signal.doubt[purpose]!r} is not {values}: reserved, in doubt)"
            return False, Reason.OPTOUT, detail
        return True, None, ""

    def _clause(self, reason: Reason | None) -> str:
        policy = self.runtime.policy
        if reason == Reason.OPTOUT:
            return policy.clause("purposes")
        if reason == Reason.ROBOTS_UNREACHABLE:
            return policy.clause("robots")
        return policy.clause("crawler", "product_token")

    # -- cache -----------------------------------------------------------------------
    async def entry_for(self, url: str, parts: Any = None) -> RobotsEntry:
        """The robots.txt entry for ``url``, fetching it once for all waiters when needed."""
        origin = origin_of(parts if parts is not None else url)
        entry = self.cache.get(origin)
        if entry is not None and self.clock.monotonic() < entry.expires_at:
            self.cache.move_to_end(origin)
            return entry
        waiter: Deferred[RobotsEntry] = Deferred()
        waiters = self._waiters.get(origin)
        if waiters is None:
            self._waiters[origin] = [waiter]
            # several workers: the site's answers other components ask for next (its
            # tdmrep.json) are read in the same round trip as this one
            state = gate_state(self.crawler)
            robots_url = _robots_url(url)
            also = state.along_with(url, but=("robots", robots_url)) if state.shared else []
            fetch = deferred_from_coro(self._refresh(origin, robots_url, entry, also))
            if not fetch.called:
                self._fetching[origin] = fetch
        else:
            waiters.append(waiter)
            self.crawler.stats.inc_value("gdpr/robots/waited")
        return await maybe_deferred_to_future(waiter)

    async def _refresh(
        self, origin: str, robots_url: str, previous: RobotsEntry | None, also: Sequence[tuple[str, str]] = ()
    ) -> None:
        try:
            entry = await self._fetch(origin, robots_url, previous, also)
        except Exception as exc:
            logger.exception("Unexpected error fetching %(url)s", {"url": robots_url}, extra={"spider": self.crawler.spider})
            entry = self._unreachable(origin, robots_url, previous, f"{type(exc).__name__}: {exc}", None)
        if previous is not None and previous.slot_keys and not entry.delay:
            for key in previous.slot_keys:
                self.floors.clear(key, f"robots.txt {origin}")
        self.cache[origin] = entry
        self.cache.move_to_end(origin)
        while len(self.cache) > self.cache_size:
            _, old = self.cache.popitem(last=False)
            for key in old.slot_keys:
                self.floors.clear(key, f"robots.txt {old.origin}")
        self._fetching.pop(origin, None)
        for waiter in self._waiters.pop(origin, []):
            waiter.callback(entry)

    async def _fetch(
        self, origin: str, robots_url: str, previous: RobotsEntry | None, also: Sequence[tuple[str, str]] = ()
    ) -> RobotsEntry:
        stats = self.crawler.stats
        url = robots_url
        seen = {url}
        hops = 0
        while True:
            meta = {**ROBOTS_META, **capped(self.download_limit)}
            request = Request(url, meta=meta, callback=NO_CALLBACK, dont_filter=True, priority=1000)
            stats.inc_value("gdpr/robots/fetches")
            try:
                response = await download_once(self.crawler, request, "robots", self.ttl, self._shared_ttl, also)
                also = ()  # the first hop's
            except Exception as exc:  # noqa: BLE001 - any download failure is handled below, never as allowed
                if too_large(exc) or not isinstance(exc, IgnoreRequest):  # sent, not refused before it left
                    self.asked.add(origin_of(url))
                if too_large(exc):
                    stats.inc_value("gdpr/robots/too_large")
                    error = f"robots.txt {size_detail(self.download_limit)}"
                    return self._unreachable(origin, robots_url, previous, error, None)
                stats.inc_value(f"gdpr/robots/exception/{type(exc).__name__}")
                return self._unreachable(origin, robots_url, previous, f"{type(exc).__name__}: {exc}", None)
            self.asked.add(origin_of(url))
            status = response.status
            stats.inc_value(f"gdpr/robots/status/{status}")
            if 300 <= status < 400 and status != 304:
                location = response.headers.get(b"Location")
                if not location:
                    return self._unreachable(origin, robots_url, previous, f"{status} without Location", response)
                target = urljoin(url, location.decode("latin-1").strip())
                hops += 1
                problem = ""
                if urlsplit(target).scheme not in ("http", "https"):
                    problem = f"redirect to a non-HTTP URL {target}"
                elif target in seen:
                    problem = f"redirect loop at {target}"
                elif hops > self.max_redirects:
                    problem = f"more than {self.max_redirects} redirects (policy robots.max_redirects)"
                if problem:
                    self._report["redirect_failures"] += 1
                    return self._unreachable(origin, robots_url, previous, problem, response)
                seen.add(target)
                url = target
                continue
            if 200 <= status < 300:
                if problem := body_problem(response, self.download_limit):
                    stats.inc_value("gdpr/robots/unusable_body")
                    return self._unreachable(origin, robots_url, previous, f"robots.txt unusable: {problem}", response)
                entry = self._parsed(origin, robots_url, response, await self._parse(response.body))
                for token, _, _ in self.purpose_tokens:
                    entry.purpose_rules[token.lower()] = await self._parse(response.body, token)
                return entry
            if status == 429 or status >= 500:
                return self._unreachable(origin, robots_url, previous, f"HTTP {status}", response)
            if 400 <= status < 500:
                # RFC 9309 2.3.1.3 "unavailable": no restrictions
                return self._finish(RobotsEntry(origin, robots_url, "unavailable", status=status), response)
            return self._unreachable(origin, robots_url, previous, f"unexpected HTTP {status}", response)

    def _shared_ttl(self, response: Response) -> float:
        """How long other workers may use this robots.txt answer (``_finish``'s rule)."""
        max_age = _max_age(response)
        return self.ttl if max_age is None else min(self.ttl, max(max_age, min(self.MIN_TTL, self.ttl)))

    def _finish(self, entry: RobotsEntry, response: Response | None) -> RobotsEntry:
        now = self.clock.monotonic()
        ttl = self.ttl
        if response is not None:
            max_age = _max_age(response)
            if max_age is not None:
                ttl = min(ttl, max(max_age, min(self.MIN_TTL, self.ttl)))
        entry.fetched_at = now
        entry.expires_at = now + ttl
        return entry

    async def _parse(self, body: bytes, token: str | None = None) -> RobotsRules:
        """Parse a robots.txt for ``token`` (default: the crawler's product token); a large
        one (up to the 500 KiB limit can take a second) is parsed in a thread, off the reactor."""
        parse = partial(
            parse_robots,
            body,
            token or self.product_token,
            max_size=self.max_size,
            content_signal=self.content_signal,
            content_usage=self.content_usage,
            shared=self._parsers,
        )
        if len(body) <= PARSE_INLINE_BYTES:
            return parse()
        return await run_in_thread(parse)

    def _parsed(self, origin: str, robots_url: str, response: Response, rules: RobotsRules) -> RobotsEntry:
        entry = RobotsEntry(origin, robots_url, "parsed", rules=rules, status=response.status)
        if rules.truncated:
            self.crawler.stats.inc_value("gdpr/robots/truncated")
            if len(self._report["truncated"]) < REPORT_LIMIT:
                self._report["truncated"].append(robots_url)
        delays = []
        if rules.crawl_delay:
            delays.append((rules.crawl_delay, f"Crawl-delay: {rules.crawl_delay:g}"))
        if rules.request_rate:
            requests, seconds = rules.request_rate
            delays.append((seconds / requests, f"Request-rate: {requests}/{seconds}s"))
        if delays:
            delay, note = max(delays)
            if delay > self.max_crawl_delay:
                logger.warning(
                    "%(url)s asks for %(note)s; capped at robots.max_crawl_delay (%(cap)g s)",
                    {"url": robots_url, "note": note, "cap": self.max_crawl_delay},
                    extra={"spider": self.crawler.spider},
                )
                if len(self._report["capped_delays"]) < REPORT_LIMIT:
                    self._report["capped_delays"][origin] = {"asked": delay, "applied": self.max_crawl_delay}
                delay = self.max_crawl_delay
            entry.delay, entry.delay_note = delay, note
            self.crawler.stats.inc_value("gdpr/robots/crawl_delay_hosts")
        if rules.sitemaps:
            self.crawler.stats.inc_value("gdpr/robots/sitemaps", len(rules.sitemaps))
            if len(self._report["sitemaps"]) < REPORT_LIMIT:
                self._report["sitemaps"][origin] = rules.sitemaps[:20]
        for signal in rules.signals:
            record(self.runtime, "content_signal", robots_url, line=signal.line, text=signal.text,
                   group=rules.group, preferences=signal.prefs,
                   **({"reserved_in_doubt": signal.doubt} if signal.doubt else {}))
            logger.info(
                "%(url)s line %(line)d: %(text)s -> %(prefs)s",
                {"url": robots_url, "line": signal.line, "text": signal.text, "prefs": signal.prefs or "unknown"},
                extra={"spider": self.crawler.spider},
            )
        return self._finish(entry, response)

    def _unreachable(
        self, origin: str, robots_url: str, previous: RobotsEntry | None, error: str, response: Response | None
    ) -> RobotsEntry:
        attempts = previous.attempts + 1 if previous is not None and previous.state == "unreachable" else 1
        now = self.clock.monotonic()
        if attempts <= self.retry_times:
            wait = self.retry_backoff * 2 ** (attempts - 1)
            retry_after = parse_retry_after(response.headers.get(b"Retry-After")) if response is not None else None
            if retry_after is not None:
                wait = max(wait, retry_after)
        else:
            # retries exhausted: complete disallow until the cache lifetime ends
            wait = self.ttl
        entry = RobotsEntry(
            origin, robots_url, "unreachable", status=response.status if response is not None else None,
            error=error, fetched_at=now, expires_at=now + wait, attempts=attempts,
        )
        stats = self.crawler.stats
        if attempts == 1:
            stats.inc_value("gdpr/robots/unreachable")
            self._report["unreachable_count"] += 1
        hosts = self._report["unreachable"]
        if origin in hosts or len(hosts) < REPORT_LIMIT:
            first = hosts.get(origin, {}).get("since") or self.clock.now().isoformat(timespec="seconds")
            hosts[origin] = {
                "robots_url": robots_url,
                "error": error,
                "attempts": attempts,
                "since": first,
                "retry_in_seconds": round(wait, 3),
                "gave_up": attempts > self.retry_times,
            }
        logger.warning(
            "%(url)s unreachable (%(error)s), attempt %(n)d: disallowing %(origin)s for %(wait).0f s",
            {"url": robots_url, "error": error, "n": attempts, "origin": origin, "wait": wait},
            extra={"spider": self.crawler.spider},
        )
        return entry


async def sitemaps(crawler: Crawler, url: str) -> list[str]:
    """The ``Sitemap:`` URLs listed in the robots.txt of ``url``'s site.

    Needs :class:`RobotsGateMiddleware` enabled (the add-on does it); fetches the
    robots.txt if it is not cached yet. Use it from ``async def start()`` or a callback::

        for sitemap in await scrapy_gdpr.gate.robots.sitemaps(self.crawler, url):
            yield Request(sitemap, callback=self.parse_sitemap)
    """
    service = component_runtime(crawler).robots
    if service is None:
        raise RuntimeError("scrapy_gdpr.gate.robots.RobotsGateMiddleware is not enabled")
    result: list[str] = await service.sitemaps(url)
    return result

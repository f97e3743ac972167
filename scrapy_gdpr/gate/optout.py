"""Opt-out signals on responses: X-Robots-Tag, meta robots, TDMRep, Content-Usage, Content-Signal.

:class:`OptOutMiddleware` (downloader middleware at 120, so its ``process_response``
sees decompressed bodies after redirects) reads every signal a response carries,
combines them into one decision per opt-out purpose (``search``, ``ai-train``,
``ai-input``; most restrictive wins) and attaches the decision for the spider's
purposes to ``response.meta["gdpr_optout"]`` and ``response.meta["gdpr_images_optout"]``.
Non-HTML responses (images, PDFs...) whose signals reserve a purpose of the spider
are refused outright, so they are never stored.

:class:`NoFollowMiddleware` (spider middleware) drops requests yielded from a page
whose robots rules say ``nofollow``.

The parsers are plain functions, usable without Scrapy. The mapping of signals to
purposes is documented in ``docs/optout.md``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from scrapy.exceptions import IgnoreRequest
from scrapy.http import HtmlResponse, Request
from scrapy.http.request import NO_CALLBACK
from scrapy.utils.asyncio import run_in_thread

from scrapy_gdpr import audit
from scrapy_gdpr._component import SpiderOutputMiddleware, chainable, component_runtime
from scrapy_gdpr.audit import Reason, note_refusal, refuse
from scrapy_gdpr.decisions import OPTOUT_META, OptOutDecision, PurposeDecision
from scrapy_gdpr.gate._download import body_problem, capped, size_detail, too_large
from scrapy_gdpr.gate._flight import Flight
from scrapy_gdpr.gate.contentcredentials import TrainingMining, read_training_mining
from scrapy_gdpr.gate.robots import (
    CONTENT_USAGE_KEYS,
    TOKENS_META,
    PathPattern,
    read_content_signal,
    read_content_usage,
)
from scrapy_gdpr.gate.rsl import RSL_META
from scrapy_gdpr.gate.xmp import DMI_PURPOSES, read_data_mining
from scrapy_gdpr.internal import internal_kind, internal_meta
from scrapy_gdpr.shared.state import download_once, gate_state
from scrapy_gdpr.urls import site_root

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterable, Mapping, Sequence
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response

logger = logging.getLogger(__name__)

PURPOSES = ("search", "ai-train", "ai-input")
AI_PURPOSES = ("ai-train", "ai-input")

#: Robots rules and the opt-out purposes each one reserves for the page itself.
RULE_PURPOSES: dict[str, tuple[str, ...]] = {
    "noindex": ("search",),
    "none": ("search",),
    "noai": AI_PURPOSES,
}
#: Robots rules reserving the page's images, and for which purposes.
IMAGE_RULE_PURPOSES: dict[str, tuple[str, ...]] = {
    "noimageindex": ("search",),
    "noimageai": AI_PURPOSES,
}
#: Rules acted on (besides the two maps above): link following and caching.
OTHER_RULES = {"nofollow", "noarchive", "all", "unavailable_after"}
#: Rules that are valid but place no restriction this project acts on.
IGNORED_RULES = {
    "nosnippet",
    "indexifembedded",
    "notranslate",
    "noodp",
    "noydir",
    "nocache",
    "max-snippet",
    "max-image-preview",
    "max-video-preview",
}
KNOWN_RULES = set(RULE_PURPOSES) | set(IMAGE_RULE_PURPOSES) | OTHER_RULES | IGNORED_RULES
#: Rules that take a value after a colon (``max-snippet: 20``); never bot names.
VALUED_RULES = {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}

_TOKEN_RE = re.compile(r"^[A-Za-z_-]+$")
#: A crawler name that is readable but cannot be this crawler's token (``360Spider``,
#: ``bot.v2``): its rules are for another crawler. Any other name cannot be read.
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")

TDMREP_PATH = "/.well-known/tdmrep.json"
TDMREP_MAX_SIZE = 1_000_000
INTERNAL_PRIORITY = 1000
#: Header name -> its lower-case bytes, as :meth:`OptOutMiddleware._headers` looks it up.
_HEADER_KEYS: dict[str, bytes] = {}


def _tdmrep_key(url: str) -> tuple[str, str] | None:
    """The shared-cache key of the TDMRep file of page ``url``'s site (its URL)."""
    origin = site_root(url)
    return None if origin is None else ("tdmrep", origin + TDMREP_PATH)


def _key(name: str) -> bytes:
    """A header name as the set of a response's lower-case header names holds it."""
    key = _HEADER_KEYS.get(name)
    if key is None:
        key = _HEADER_KEYS[name] = name.lower().encode("latin-1")
    return key


# --------------------------------------------------------------------------- signals


@dataclass(frozen=True)
class Signal:
    """One restrictive signal seen on a response: where it came from and what it said."""

    source: str  # x_robots_tag, robots_tag, meta_robots, tdmrep_file, tdmrep_header, tdmrep_meta, content_usage, rsl
    rule: str  # noindex, noai, tdm-reservation, train-ai ...
    text: str  # what a person reads: "X-Robots-Tag: noindex"
    reason: str = "optout"  # the refusal reason a reservation by this signal gives (an RSL licence: "license")

    def __str__(self) -> str:
        return self.text


@dataclass
class RobotsRules:
    """Robots rules that apply to this crawler, with the text that set each one."""

    rules: dict[str, str] = field(default_factory=dict)  # rule -> signal text
    problems: list[str] = field(default_factory=list)

    def add(self, rule: str, text: str) -> None:
        self.rules.setdefault(rule, text)


def _split_rules(value: str) -> list[str]:
    """Split a comma list of rules, keeping ``unavailable_after`` dates (which contain commas) whole."""
    pieces = [p.strip() for p in value.split(",")]
    out: list[str] = []
    for piece in pieces:
        if out and out[-1].lower().startswith("unavailable_after") and not _starts_rule(piece):
            out[-1] = f"{out[-1]}, {piece}"
        else:
            out.append(piece)
    return [p for p in out if p]


def _starts_rule(piece: str) -> bool:
    head = piece.split(":", 1)[0].strip().lower()
    return head in KNOWN_RULES or bool(_TOKEN_RE.match(head) and ":" in piece)


def _parse_date(text: str) -> datetime | None:
    text = text.strip()
    try:
        moment = parsedate_to_datetime(text)  # RFC 822 / 850 / 1123
    except (TypeError, ValueError, IndexError):
        moment = None
    if moment is None:
        for candidate in (text, text.replace("Z", "+00:00")):
            try:
                moment = datetime.fromisoformat(candidate)
                break
            except ValueError:
                continue
    if moment is None:
        for fmt in ("%A, %d-%b-%y %H:%M:%S %Z", "%d %b %Y %H:%M:%S %Z", "%d-%b-%Y %H:%M:%S %Z"):
            try:
                moment = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _apply_rule(piece: str, label: str, out: RobotsRules, now: datetime, text: str | None = None) -> None:
    """Apply one rule (``noindex``, ``unavailable_after: <date>``) to ``out``.

    ``text`` is what the signal is reported as (default ``"<label>: <rule>"``).
    """
    name, _, value = piece.partition(":")
    name = name.strip().lower()
    text = text or f"{label}: {piece.strip()}"
    if name in VALUED_RULES:
        if name == "unavailable_after":
            moment = _parse_date(value)
            if moment is None:
                # malformed fails closed: the date may have passed
                out.problems.append(f"{label}: cannot read the date in {piece!r}; noindex, in doubt")
                out.add("noindex", f"{text} (the date cannot be read: noindex, in doubt)")
            elif moment <= now:
                out.add("noindex", text)
        return
    if value.strip():
        out.problems.append(f"{label}: unexpected value in {piece!r}")
    if name in KNOWN_RULES:
        if name == "none":
            out.add("none", text)
            out.add("noindex", text)
            out.add("nofollow", text)
        else:
            out.add(name, text)
        return
    # Not a rule we know. If it hides a restrictive rule ("noindex nofollow",
    # "noai;"), honour that rule rather than fail open; otherwise ignore it.
    words = [w for w in re.split(r"[^a-z_-]+", name) if w]
    hidden = [w for w in words if w in RULE_PURPOSES or w in IMAGE_RULE_PURPOSES or w in ("nofollow", "noarchive")]
    if hidden:
        out.problems.append(f"{label}: malformed rule {piece!r}, read as {', '.join(hidden)}")
        for w in hidden:
            _apply_rule(w, label, out, now, text)
    elif name:
        logger.debug("Unknown robots rule %(rule)r in %(label)s ignored", {"rule": piece, "label": label})


def parse_x_robots_tag(values: Iterable[str], token: str, *, now: datetime | None = None,
                       label: str = "X-Robots-Tag") -> RobotsRules:
    """Rules of ``X-Robots-Tag`` header values (each value one header line) for ``token``.

    Google's syntax: a comma list of rules, where ``botname: rules`` scopes the rules
    after it (up to the next ``botname:``) to that crawler; unscoped rules apply to
    every crawler. Bot names are compared with ``token`` case-insensitively. A value
    containing ``;`` or ``=`` is read with the ``robots-tag`` draft syntax instead.
    """
    now = now or datetime.now(UTC)
    out = RobotsRules()
    token = token.lower()
    for raw in values:
        value = raw.strip()
        if not value:
            continue
        if ";" in value or "=" in value:
            _merge(out, parse_robots_tag([value], token, now=now, label=label))
            continue
        _parse_scoped(value, token, label, out, now)
    return out


def _parse_scoped(value: str, token: str, label: str, out: RobotsRules, now: datetime, prefix: str = "") -> None:
    """One comma list of rules where ``botname:`` scopes the rules after it."""
    applies, scope = True, ""
    for given in _split_rules(value):
        piece = given
        head, sep, rest = piece.partition(":")
        head_l = head.strip().lower()
        if sep and head_l not in VALUED_RULES and head_l not in KNOWN_RULES:
            if not _NAME_RE.match(head.strip()):
                # a crawler name that cannot be read may be meant for this crawler: its
                # rules apply, in doubt (malformed fails closed)
                out.problems.append(f"{label}: cannot read {piece!r}; its rules applied, in doubt")
                applies, scope = True, head.strip()
            else:
                applies, scope = head_l == token, head.strip()
            piece = rest.strip()
            if not piece:
                continue
        if applies:
            text = f"{label}: {prefix}{scope}: {piece}" if scope else f"{label}: {prefix}{piece}"
            _apply_rule(piece, label, out, now, text)


def parse_robots_tag(values: Iterable[str], token: str, *, now: datetime | None = None,
                     label: str = "Robots-Tag") -> RobotsRules:
    """Rules of ``robots-tag`` header values in draft-illyes-repext syntax.

    ``rules; Token=rules; *=rules``: the part without ``=`` (or ``*=``) applies to
    every crawler, ``Token=`` only to the crawler whose product token it names.
    """
    now = now or datetime.now(UTC)
    out = RobotsRules()
    token = token.lower()
    for raw in values:
        for given in raw.split(";"):
            part = given.strip()
            if not part:
                continue
            name, sep, rules = part.partition("=")
            if sep:
                name = name.strip()
                if name != "*" and not _NAME_RE.match(name):
                    # a crawler name that cannot be read may be ours: its rules apply, in doubt
                    out.problems.append(f"{label}: cannot read {part!r}; its rules applied, in doubt")
                elif name != "*" and name.lower() != token:
                    continue
                _parse_scoped(rules, token, label, out, now, prefix=f"{name}=")
            else:
                # rules for every crawler; a Google-style "botname:" prefix is honoured too
                _parse_scoped(part, token, label, out, now)
    return out


def _merge(into: RobotsRules, other: RobotsRules) -> None:
    for rule, text in other.rules.items():
        into.add(rule, text)
    into.problems.extend(other.problems)


def _may_have_meta(body: bytes) -> bool:
    """False only when the document has no ``<meta`` tag at all: then no meta element
    can count, and the HTML need not be parsed. (A tag name cannot be written with
    character references, so this cannot be evaded.)"""
    return _META_TAG.search(body) is not None


_META_TAG = re.compile(rb"<meta", re.IGNORECASE)  # ASCII case folding, as bytes.lower()


def parse_meta_robots(response: HtmlResponse, token: str, *, now: datetime | None = None) -> tuple[RobotsRules, dict[str, str]]:
    """Robots rules of ``<meta name="robots|<token>">`` in ``<head>``, and the TDMRep metas.

    Returns the rules and ``{"tdm-reservation": ..., "tdm-policy": ...}`` (when present).
    Only elements inside ``<head>`` count (draft-illyes-repext).
    """
    out = RobotsRules()
    tdm: dict[str, str] = {}
    if not _may_have_meta(response.body):
        return out, tdm
    now = now or datetime.now(UTC)
    token = token.lower()
    for meta in response.xpath("//head/meta[@name]"):
        name = (meta.attrib.get("name") or "").strip().lower()
        content = meta.attrib.get("content")
        if name in ("tdm-reservation", "tdm-policy"):
            if content is not None:
                tdm.setdefault(name, content.strip())
            continue
        if name not in ("robots", token):
            continue
        if content is None:
            out.problems.append(f'<meta name="{name}"> without content')
            continue
        label = f'<meta name="{meta.attrib.get("name")}">'
        text = f'<meta name="{meta.attrib.get("name")}" content="{content.strip()}">'
        for piece in _split_rules(content):
            _apply_rule(piece, label, out, now, text)
    return out, tdm


# --------------------------------------------------------------------------- Content-Usage


@dataclass
class ContentUsage:
    """Preferences of a ``Content-Usage`` field: purpose -> ``"n"`` or ``"y"`` per key."""

    prefs: dict[str, str] = field(default_factory=dict)  # vocabulary key -> "y"/"n"
    problems: list[str] = field(default_factory=list)
    #: vocabulary key -> what was written, for keys whose preference cannot be read: reserved, in doubt
    doubt: dict[str, str] = field(default_factory=dict)


def parse_content_usage(values: Iterable[str]) -> ContentUsage:
    """Parse ``Content-Usage`` header values as one Structured Fields Dictionary.

    Repeated header lines are combined with ``, `` (RFC 9110 §5.3). Malformed fails
    closed for its purpose: a known key whose value is not the token ``y`` or ``n``,
    and every known key named in a field that cannot be parsed (uppercase keys, stray
    commas), go to ``doubt``; unknown keys and all parameters are ignored; a repeated
    key's last value wins (draft-ietf-aipref-vocab).
    """
    out = ContentUsage()
    joined = ", ".join(v.strip() for v in values if v.strip())
    if not joined:
        return out
    prefs, problems, doubt = read_content_usage(joined)  # the robots.txt rule's reader
    out.prefs.update(prefs)
    out.doubt.update(doubt)
    out.problems.extend(f"Content-Usage: {p}" for p in problems)
    return out


# --------------------------------------------------------------------------- TDMRep


@dataclass(frozen=True)
class TdmRule:
    location: str
    reservation: int | None
    policy: str | None
    pattern: PathPattern
    #: a tdm-reservation that is not 0 or 1, as written: reserved, in doubt (``reservation`` is 1)
    doubt: str = ""


def _tdm_value(value: Any) -> int | None:
    """``tdm-reservation`` as 0/1, or None (unset) for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value.strip())
    return None


_PCT = re.compile(r"%([0-9A-Fa-f]{2})")


def _decode_unreserved(path: str) -> str:
    """Decode percent-encoded unreserved characters (RFC 3986), as TDMRep asks before matching."""

    def repl(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        return char if char.isascii() and (char.isalnum() or char in "-._~") else m.group(0).upper()

    return _PCT.sub(repl, path)


def _pattern(location: str) -> PathPattern:
    """A TDMRep location as a path pattern: ``*`` any characters, a final ``$`` anchors.

    Matched in linear time, so a hostile ``tdmrep.json`` cannot stall the crawl."""
    return PathPattern(_decode_unreserved(location))


def parse_tdmrep_file(body: bytes) -> tuple[list[TdmRule], list[str]]:
    """Rules of a ``/.well-known/tdmrep.json`` body; raises ValueError when it is not valid."""
    data = json.loads(body.decode("utf-8-sig"))
    if not isinstance(data, list):
        raise ValueError("tdmrep.json is not a JSON array")  # noqa: TRY004 - the file is invalid, as other errors
    rules: list[TdmRule] = []
    problems: list[str] = []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("location"), str):
            problems.append(f"tdmrep.json entry {i} has no location; skipped")
            continue
        location = entry["location"].strip()
        if not location.startswith(("/", "*")):
            location = "/" + location
        reservation = _tdm_value(entry.get("tdm-reservation"))
        doubt = ""
        if reservation is None and "tdm-reservation" in entry:
            # malformed fails closed: the location is reserved, in doubt
            doubt = json.dumps(entry["tdm-reservation"])[:100]
            reservation = 1
            problems.append(f"tdmrep.json entry {i}: tdm-reservation {doubt} is not 0 or 1; reserved, in doubt")
        policy = entry.get("tdm-policy")
        rules.append(TdmRule(location, reservation, policy if isinstance(policy, str) else None, _pattern(location),
                             doubt))
    return rules, problems


def match_tdmrep(rules: list[TdmRule], url: str) -> TdmRule | None:
    """The first rule whose location matches the URL's path (and query): TDMRep's "most specific"."""
    parts = urlsplit(url, "", True)  # the gate's split, cached
    target = _decode_unreserved((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    for rule in rules:
        if rule.pattern.matches(target):
            return rule
    return None


@dataclass
class _TdmEntry:
    rules: list[TdmRule] | None = None  # None: no file (unset)
    fetched_at: float = 0.0
    error: str = ""
    unread: str = ""  # why a file that exists could not be read (over the cap): reserved, in doubt
    unread_signal: Signal | None = None  # the signal of ``unread``, made on the first page that needs it
    flight: Flight = field(default_factory=Flight)  # the fetch, shared by concurrent requests


# --------------------------------------------------------------------------- decision


#: No signal for any purpose: what a decision reads until something is reserved (shared,
#: read-only; most pages reserve nothing, and a decision is made for every response).
_NO_SIGNALS: Mapping[str, Sequence[Signal]] = MappingProxyType(dict.fromkeys(PURPOSES, ()))


class Decision:
    """The combined opt-out decision for one response (one per response: no ``__dict__``)."""

    __slots__ = ("images", "noarchive", "nofollow", "reserved", "seen", "tdm_policy")

    def __init__(self) -> None:
        #: The signals reserving each purpose, and each purpose's images (``reserve``,
        #: ``reserve_images``: a list per purpose from the first reservation on).
        self.reserved: Mapping[str, Sequence[Signal]] = _NO_SIGNALS
        self.images: Mapping[str, Sequence[Signal]] = _NO_SIGNALS
        self.nofollow: Signal | None = None
        self.noarchive: Signal | None = None
        #: every signal read, among them each one that reserves a purpose or the images
        self.seen: list[Signal] = []
        self.tdm_policy: str | None = None

    def reserve(self, purposes: Iterable[str], signal: Signal) -> None:
        if self.reserved is _NO_SIGNALS:
            self.reserved = {p: [] for p in PURPOSES}
        reserved = cast("dict[str, list[Signal]]", self.reserved)
        for p in purposes:
            if signal not in reserved[p]:
                reserved[p].append(signal)

    def reserve_images(self, purposes: Iterable[str], signal: Signal) -> None:
        if self.images is _NO_SIGNALS:
            self.images = {p: [] for p in PURPOSES}
        images = cast("dict[str, list[Signal]]", self.images)
        for p in purposes:
            if signal not in images[p]:
                images[p].append(signal)


#: The robots rules response headers: (name, lower-case name, source, parser).
_ROBOTS_HEADERS = (("X-Robots-Tag", b"x-robots-tag", "x_robots_tag", parse_x_robots_tag),
                   ("Robots-Tag", b"robots-tag", "robots_tag", parse_robots_tag))


def _robots_into(decision: Decision, rules: RobotsRules, source: str) -> None:
    for rule, text in rules.rules.items():
        signal = Signal(source, rule, text)
        if rule in RULE_PURPOSES:
            if rule == "none":
                continue  # recorded through the noindex and nofollow it implies
            decision.reserve(RULE_PURPOSES[rule], signal)
            decision.seen.append(signal)
        elif rule in IMAGE_RULE_PURPOSES:
            decision.reserve_images(IMAGE_RULE_PURPOSES[rule], signal)
            decision.seen.append(signal)
        elif rule == "nofollow" and decision.nofollow is None:
            decision.nofollow = signal
            decision.seen.append(signal)
        elif rule == "noarchive" and decision.noarchive is None:
            decision.noarchive = signal
            decision.seen.append(signal)


# --------------------------------------------------------------------------- middleware


@chainable
class OptOutMiddleware:
    """Downloader middleware reading opt-out signals and attaching the decision."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)
        self.clock = self.runtime.clock
        self.policy = self.runtime.policy
        self.switches = self.policy.opt_out
        self.token = self.policy.crawler.product_token
        self.tdmrep_ttl = self.policy.duration(self.switches.tdmrep_cache_ttl).total_seconds()
        #: The opt-out purposes of the spider, each with the policy clause naming it.
        self.spider_purposes: dict[str, str] = {
            sp: self.policy.clause("purposes", i, "signal_purposes") for sp, i in self.policy.signal_purposes().items()
        }
        self._tdm: dict[str, _TdmEntry] = {}
        #: The decision of a page that reserves none of the spider's purposes (frozen: shared).
        self._allowed = self._decision(Decision())
        self._summary: dict[str, Any] = {"pages_with_reservations": 0, "refused_responses": 0,
                                         "reserved": dict.fromkeys(PURPOSES, 0), "tdmrep_files": {}}
        self.runtime.report_sections["optout"] = self._summary
        if self.switches.tdmrep:
            # several workers: a site's TDMRep answer is read along with the first of its
            # answers asked for (robots.txt's, or the terms page's when a check is due)
            gate_state(crawler).along_providers.append(_tdmrep_key)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    # -- TDMRep file -----------------------------------------------------------------

    async def _tdmrep(self, origin: str) -> _TdmEntry:
        """The origin's TDMRep rules, fetched once per TTL; concurrent callers share one fetch."""
        entry = self._tdm.get(origin)
        if entry is not None and not entry.flight.busy and self.clock.monotonic() - entry.fetched_at < self.tdmrep_ttl:
            return entry
        if entry is None:
            entry = self._tdm[origin] = _TdmEntry()
        await entry.flight.run(lambda: self._fetch_tdmrep_stamped(origin, entry))
        return self._tdm[origin]

    async def _fetch_tdmrep_stamped(self, origin: str, entry: _TdmEntry) -> None:
        try:
            await self._fetch_tdmrep(origin, entry)
        finally:
            entry.fetched_at = self.clock.monotonic()

    async def _fetch_tdmrep(self, origin: str, entry: _TdmEntry) -> None:
        url = origin + TDMREP_PATH
        stats = self.crawler.stats
        request = Request(url, priority=INTERNAL_PRIORITY, callback=NO_CALLBACK, dont_filter=True,
                          meta={**internal_meta("tdmrep"), **capped(TDMREP_MAX_SIZE)})
        entry.rules, entry.error, entry.unread, entry.unread_signal = None, "", "", None
        try:
            response = await download_once(self.crawler, request, "tdmrep", self.tdmrep_ttl)
        except Exception as exc:  # noqa: BLE001 - any download failure: the file is unread, reserved in doubt
            if too_large(exc):
                entry.unread = f"the file is {size_detail(TDMREP_MAX_SIZE)}"
            elif isinstance(exc, IgnoreRequest):
                entry.error = f"not fetched: {exc}"
            else:  # network errors: the file is unreachable, so unset
                entry.error = f"unreachable: {exc.__class__.__name__}: {exc}"
        else:
            if response.status == 200 and (problem := body_problem(response, TDMREP_MAX_SIZE)):
                entry.unread = problem
            elif response.status == 200:
                try:
                    rules, problems = parse_tdmrep_file(response.body)
                except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
                    # a file that is there but cannot be read may hold reservations: in doubt, reserved
                    entry.unread = f"invalid file: {exc.__class__.__name__}: {str(exc)[:200]}"
                else:
                    entry.rules = rules
                    for problem in problems:
                        logger.warning("TDMRep %(url)s: %(p)s", {"url": url, "p": problem},
                                       extra={"spider": self.crawler.spider})
            elif response.status != 404:
                entry.error = f"HTTP {response.status}"
        if entry.unread:
            stats.inc_value("gdpr/optout/tdmrep_file/unread")
            logger.warning("TDMRep file %(url)s cannot be read (%(e)s): text and data mining is treated as "
                           "reserved for %(origin)s", {"url": url, "e": entry.unread, "origin": origin},
                           extra={"spider": self.crawler.spider})
            status = f"unread, TDM reserved ({entry.unread})"
        elif entry.rules is not None:
            stats.inc_value("gdpr/optout/tdmrep_file/found")
            status = f"{len(entry.rules)} rule(s)"
        elif entry.error:
            stats.inc_value("gdpr/optout/tdmrep_file/error")
            logger.warning("TDMRep file %(url)s treated as unset: %(e)s", {"url": url, "e": entry.error},
                           extra={"spider": self.crawler.spider})
            status = f"unset ({entry.error})"
        else:
            status = "none (404)"
        self._summary["tdmrep_files"][origin] = status

    # -- hooks ----------------------------------------------------------------------
    async def process_request(self, request: Request) -> None:
        if not self.switches.tdmrep or internal_kind(request):
            return
        origin = site_root(request.url)
        if origin is not None:
            # TDMRep: the file must be checked before the first page of an origin.
            entry = self._tdm.get(origin)
            if entry is None or entry.flight.busy or self.clock.monotonic() - entry.fetched_at >= self.tdmrep_ttl:
                await self._tdmrep(origin)  # not fetched yet, in flight, or expired

    async def process_response(self, request: Request, response: Response) -> Response:
        if internal_kind(request):
            return response
        decision = self._decide_now(response, request)
        if not isinstance(decision, Decision):  # the origin's TDMRep file, or a C2PA manifest, to read first
            decision = await decision
        self._attach(request, response, decision)
        self._enforce(response, decision)
        return response

    # -- the decision ---------------------------------------------------------------
    def _problem(self, source: str, message: str, url: str) -> None:
        self.crawler.stats.inc_value(f"gdpr/optout/malformed/{source}")
        logger.warning("Opt-out signal on %(url)s not fully readable: %(m)s", {"url": url, "m": message},
                       extra={"spider": self.crawler.spider})

    def _headers(self, response: Response, name: str, present: frozenset[bytes] | None = None) -> list[str]:
        """The values of header ``name``; ``present``: the response's lower-case header
        names, when known, so that absent headers cost one set lookup."""
        if present is not None and _key(name) not in present:
            return []
        return [v.decode("latin-1") for v in response.headers.getlist(name)]

    async def decide(self, response: Response, request: Request | None = None) -> Decision:
        """Read every enabled signal on ``response`` and combine them."""
        decision = self._decide_now(response, request)
        return decision if isinstance(decision, Decision) else await decision

    def _decide_now(self, response: Response, request: Request | None) -> Decision | Coroutine[Any, Any, Decision]:
        """:meth:`decide`, without a coroutine when nothing has to be awaited: the decision,
        or a coroutine that completes it after reading the origin's TDMRep file (not read
        yet, or expired) or an embedded C2PA manifest."""
        decision = Decision()
        url = response.url
        sw = self.switches
        meta = request.meta if request is not None else {}
        # purposes with their own product token that robots.txt keeps out (the robots gate decides)
        for found in meta.get(TOKENS_META) or ():
            signal = Signal("robots_token", str(found["token"]).lower(), str(found["text"]))
            decision.reserve(found["purposes"], signal)
            decision.seen.append(signal)
        # purposes an RSL licence refuses (the licence middleware decides)
        for found in meta.get(RSL_META) or ():
            signal = Signal("rsl", "license", str(found["text"]), reason=str(Reason.LICENSE))
            decision.reserve(found["purposes"], signal)
            decision.seen.append(signal)
        present = frozenset(map(bytes.lower, response.headers))  # Scrapy's header names are bytes
        if sw.x_robots_tag:
            for header, lower, source, parser in _ROBOTS_HEADERS:
                values = self._headers(response, header) if lower in present else []
                if values:
                    rules = parser(values, self.token)
                    for p in rules.problems:
                        self._problem(source, p, url)
                    _robots_into(decision, rules, source)
        meta_tdm: dict[str, str] = {}
        # a page without a <meta tag has no robots or TDMRep meta element: nothing to parse
        if isinstance(response, HtmlResponse) and (sw.meta_robots or sw.tdmrep) and _may_have_meta(response.body):
            try:
                rules, meta_tdm = parse_meta_robots(response, self.token)
            except Exception as exc:  # noqa: BLE001 - an unparseable body: nothing can be read from it
                self._problem("meta_robots", f"cannot parse the HTML: {exc}", url)
                rules, meta_tdm = RobotsRules(), {}
            if sw.meta_robots:
                for p in rules.problems:
                    self._problem("meta_robots", p, url)
                _robots_into(decision, rules, "meta_robots")
        if sw.tdmrep:
            origin = site_root(url)
            entry = self._tdm.get(origin) if origin is not None else None
            if origin is not None and (
                entry is None or entry.flight.busy or self.clock.monotonic() - entry.fetched_at >= self.tdmrep_ttl
            ):
                return self._decide_after_tdmrep(response, decision, meta_tdm, present, origin)
            self._decide_tdmrep(response, decision, meta_tdm, present, origin, entry)
        return self._decide_rest(response, decision, present)

    async def _decide_after_tdmrep(
        self, response: Response, decision: Decision, meta_tdm: dict[str, str], present: frozenset[bytes], origin: str
    ) -> Decision:
        entry = await self._tdmrep(origin)  # not fetched yet, in flight, or expired
        self._decide_tdmrep(response, decision, meta_tdm, present, origin, entry)
        rest = self._decide_rest(response, decision, present)
        return rest if isinstance(rest, Decision) else await rest

    def _decide_rest(
        self, response: Response, decision: Decision, present: frozenset[bytes]
    ) -> Decision | Coroutine[Any, Any, Decision]:
        """The signals read after TDMRep's; a coroutine when a C2PA manifest is to be read."""
        url = response.url
        sw = self.switches
        if sw.content_usage and b"content-usage" in present:
            values = self._headers(response, "Content-Usage")
            if values:
                usage = parse_content_usage(values)
                for p in usage.problems:
                    self._problem("content_usage", p, url)
                for key, value in usage.prefs.items():
                    if value == "n":
                        signal = Signal("content_usage", key, f"Content-Usage: {key}=n")
                        decision.reserve([CONTENT_USAGE_KEYS[key]], signal)
                        decision.seen.append(signal)
                for key, item in usage.doubt.items():
                    purpose = CONTENT_USAGE_KEYS[key]
                    if decision.reserved[purpose] and any(s.source == "content_usage" for s in decision.reserved[purpose]):
                        continue  # already reserved by a readable "n" of the same field
                    signal = Signal("content_usage", key, f"Content-Usage: {', '.join(values)} ({item!r} cannot be "
                                    f"read: {purpose} reserved, in doubt)")
                    decision.reserve([purpose], signal)
                    decision.seen.append(signal)
        if sw.content_signal and b"content-signal" in present:
            values = self._headers(response, "Content-Signal")
            if values:
                self._decide_content_signal(", ".join(v.strip() for v in values if v.strip()), decision, url)
        if isinstance(response, HtmlResponse):
            return decision
        if sw.image_metadata:
            self._decide_xmp(response.body, decision, url)
        if sw.content_credentials and b"c2pa" in response.body:
            return self._read_c2pa(response, decision)
        return decision

    async def _read_c2pa(self, response: Response, decision: Decision) -> Decision:
        mime = (response.headers.get("Content-Type") or b"").decode("latin-1").split(";", 1)[0].strip().lower()
        found = await run_in_thread(read_training_mining, response.body, mime or None)  # native code
        self._decide_c2pa(found, decision, response.url)
        return decision

    def _decide_c2pa(self, found: TrainingMining, decision: Decision, url: str) -> None:
        """The C2PA / CAWG training-and-mining assertion of an embedded manifest."""
        for purposes, text in found.reservations:
            signal = Signal("c2pa", "training-mining", text)
            decision.reserve(purposes, signal)
            decision.seen.append(signal)
        for problem in found.problems:
            self._problem("c2pa", f"C2PA: {problem}", url)
        if found.problems and not found.reservations:
            signal = Signal("c2pa", "unreadable", f"C2PA manifest cannot be read ({found.problems[0]}): "
                            "every purpose reserved, in doubt")
            decision.reserve(PURPOSES, signal)
            decision.seen.append(signal)

    def _decide_xmp(self, body: bytes, decision: Decision, url: str) -> None:
        """IPTC/PLUS ``plus:DataMining`` in the XMP of an image or document, read from the
        downloaded bytes, before any pipeline (and the face stage's metadata stripping)."""
        found = read_data_mining(body)
        for value in dict.fromkeys(found.values):
            purposes = DMI_PURPOSES.get(value)
            if purposes is None:
                found.problems.append(f"unknown plus:DataMining value {value!r}")
            elif purposes:
                signal = Signal("xmp", value.lower(), f"XMP plus:DataMining {value}")
                decision.reserve(purposes, signal)
                decision.seen.append(signal)
        for problem in found.problems:
            self._problem("xmp", f"XMP: {problem}", url)
        if found.problems:
            signal = Signal("xmp", "unreadable", f"XMP plus:DataMining cannot be read ({found.problems[0]}): "
                            "every purpose reserved, in doubt")
            decision.reserve(PURPOSES, signal)
            decision.seen.append(signal)

    def _decide_content_signal(self, value: str, decision: Decision, url: str) -> None:
        """The ``Content-Signal`` response header: the robots.txt syntax and reader, for this page."""
        read = read_content_signal(value)
        for p in read.problems:
            self._problem("content_signal", f"Content-Signal: {p}", url)
        for purpose, allowed in read.prefs.items():
            if not allowed:
                signal = Signal("content_signal", purpose, f"Content-Signal: {value}")
                decision.reserve([purpose], signal)
                decision.seen.append(signal)
        for purpose, item in read.doubt.items():
            if read.prefs.get(purpose) is False:
                continue  # already reserved by a readable "no"
            signal = Signal("content_signal", purpose,
                            f"Content-Signal: {value} ({item!r} is not yes/no: {purpose} reserved, in doubt)")
            decision.reserve([purpose], signal)
            decision.seen.append(signal)

    def _decide_tdmrep(
        self, response: Response, decision: Decision, meta_tdm: dict[str, str], present: frozenset[bytes] | None,
        origin: str | None, entry: _TdmEntry | None,
    ) -> None:
        """TDMRep: ``entry``, the TDMRep file of ``origin`` (the page's site root, None for
        a URL that has none), read; then the page's header and meta element."""
        # TDMRep's own precedence: file < header < HTML meta; absence never resets.
        value: int | None = None
        signal: Signal | None = None
        policy: str | None = None
        if origin is not None and entry is not None:
            rule = match_tdmrep(entry.rules, response.url) if entry.rules else None
            if entry.unread:
                value = 1
                signal = entry.unread_signal
                if signal is None:
                    signal = entry.unread_signal = Signal(
                        "tdmrep_file", "tdm-reservation",
                        f"{origin}{TDMREP_PATH} cannot be read ({entry.unread}): reserved, in doubt")
            elif rule is not None and rule.doubt:
                value, policy = 1, rule.policy
                signal = Signal("tdmrep_file", "tdm-reservation",
                                f"{origin}{TDMREP_PATH}: location {rule.location} tdm-reservation={rule.doubt} is not "
                                "0 or 1: reserved, in doubt")
            elif rule is not None and rule.reservation is not None:
                value, policy = rule.reservation, rule.policy
                signal = Signal("tdmrep_file", "tdm-reservation",
                                f"{origin}{TDMREP_PATH}: location {rule.location} tdm-reservation={rule.reservation}")
        headers = ([h.strip() for h in self._headers(response, "tdm-reservation", present)]
                   if present is None or b"tdm-reservation" in present else [])
        if headers:
            values = {_tdm_value(h) for h in headers}
            if None in values:
                # malformed fails closed: reserved, in doubt
                self._problem("tdmrep_header", f"tdm-reservation {', '.join(headers)!r} is not 0 or 1; reserved, in "
                              "doubt", response.url)
                value = 1
                signal = Signal("tdmrep_header", "tdm-reservation",
                                f"tdm-reservation: {', '.join(headers)[:100]} (not 0 or 1: reserved, in doubt)")
                policy = next(iter(self._headers(response, "tdm-policy")), policy)
            else:
                value = max(v for v in values if v is not None)  # repeated, conflicting headers: the reservation wins
                signal = Signal("tdmrep_header", "tdm-reservation", f"tdm-reservation: {value}")
                policy = next(iter(self._headers(response, "tdm-policy")), policy)
        if "tdm-reservation" in meta_tdm:
            meta_value = _tdm_value(meta_tdm["tdm-reservation"])
            if meta_value is None:
                written = meta_tdm["tdm-reservation"][:100]
                self._problem("tdmrep_meta", f'<meta name="tdm-reservation" content="{written}"> '
                              "is not 0 or 1; reserved, in doubt", response.url)
                value = 1
                signal = Signal("tdmrep_meta", "tdm-reservation", f'<meta name="tdm-reservation" content="{written}"> '
                                "(not 0 or 1: reserved, in doubt)")
                policy = meta_tdm.get("tdm-policy", policy)
            else:
                value = meta_value
                signal = Signal("tdmrep_meta", "tdm-reservation", f'<meta name="tdm-reservation" content="{meta_value}">')
                policy = meta_tdm.get("tdm-policy", policy)
        if value == 1 and signal is not None:
            decision.reserve(AI_PURPOSES, signal)
            decision.seen.append(signal)
            decision.tdm_policy = policy

    def _attach(self, request: Request, response: Response, decision: Decision) -> None:
        reserved_of, images_of = decision.reserved, decision.images
        result = self._allowed  # nothing reserves a purpose of the spider: the same (immutable) decision
        if reserved_of is not _NO_SIGNALS or images_of is not _NO_SIGNALS:
            for p in self.spider_purposes:
                if reserved_of[p] or images_of[p]:
                    result = self._decision(decision)
                    break
        meta = request.meta
        meta[OPTOUT_META] = result
        meta.update(result.meta_views())
        if decision.nofollow is not None:
            meta["gdpr_nofollow"] = str(decision.nofollow)
        if decision.noarchive is not None:
            meta["gdpr_noarchive"] = str(decision.noarchive)
        if decision.tdm_policy:
            meta["gdpr_tdm_policy"] = decision.tdm_policy

        if not decision.seen:
            return  # no signal: nothing reserved, nothing to count or record
        inc_value = self.crawler.stats.inc_value
        seen = list(dict.fromkeys(decision.seen))
        for signal in seen:
            inc_value(f"gdpr/optout/{signal.source}/{signal.rule}")
        # a Signal reads as its text
        reserved = {p: [s.text for s in reserved_of[p]] for p in PURPOSES if reserved_of[p]}
        images = {p: [s.text for s in images_of[p]] for p in PURPOSES if images_of[p]}
        if reserved or images:
            self._summary["pages_with_reservations"] += 1
            for p in reserved:
                self._summary["reserved"][p] += 1
                inc_value(f"gdpr/optout/reserved/{p}")
            audit.record(
                self.runtime,
                "optout_decision",
                response.url,
                purposes={p: d.allowed for p, d in result.purposes.items()},
                reserved=reserved,
                images_reserved=images,
                signals=[s.text for s in seen],
            )

    def _decision(self, decision: Decision) -> OptOutDecision:
        """The decision for the spider's purposes, as attached to the request."""
        image_signals = list(dict.fromkeys(s for p in self.spider_purposes for s in decision.images[p]))
        return OptOutDecision(
            purposes=MappingProxyType({
                purpose: PurposeDecision(
                    not decision.reserved[purpose],
                    tuple(str(s) for s in decision.reserved[purpose]),
                    # the refusal reason of a reserved purpose: "optout", or "license" (an RSL licence)
                    reason=str(decision.reserved[purpose][0].reason) if decision.reserved[purpose] else "",
                )
                for purpose in self.spider_purposes
            }),
            images_reserved=bool(image_signals),
            images_signal=str(image_signals[0]) if image_signals else "",
        )

    def _enforce(self, response: Response, decision: Decision) -> None:
        """Refuse non-HTML responses (images, documents) that reserve the spider's purposes."""
        if isinstance(response, HtmlResponse):
            return
        for purpose, clause in self.spider_purposes.items():
            if decision.reserved[purpose]:
                self._summary["refused_responses"] += 1
                first = decision.reserved[purpose][0]
                raise refuse(self.runtime, response.url, first.reason, clause=clause,
                             detail=f"{purpose} reserved by {first}")
        ctype = (response.headers.get("Content-Type") or b"").decode("latin-1").lower()
        if ctype.startswith("image/"):
            for purpose, clause in self.spider_purposes.items():
                if decision.images[purpose]:
                    self._summary["refused_responses"] += 1
                    raise refuse(self.runtime, response.url, Reason.OPTOUT, clause=clause,
                                 detail=f"images reserved for {purpose} by {decision.images[purpose][0]}")


@chainable
class NoFollowMiddleware(SpiderOutputMiddleware):
    """Spider middleware: drops requests a callback yields from a ``nofollow`` page.

    Every request yielded while handling such a response is treated as following a
    link from it (a callback's requests cannot be told apart), and refused with an
    audit line (kind ``link``).
    """

    def __init__(self, crawler: Crawler) -> None:
        super().__init__(crawler)
        self.runtime = component_runtime(crawler)
        switches = self.runtime.policy.opt_out
        self.enabled = switches.x_robots_tag or switches.meta_robots

    def get_processed_request(self, request: Request, response: Response | None) -> Request | None:
        if not self.enabled or response is None:
            return request
        signal = response.meta.get("gdpr_nofollow")
        if not signal:
            return request
        note_refusal(self.runtime, request.url, Reason.OPTOUT, clause="opt_out",
                     detail=f"link from {response.url}, which says {signal}", kind="link")
        return None

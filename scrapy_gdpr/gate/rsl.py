"""RSL (Really Simple Licensing 1.0) licences: what a site licenses, for which use.

A site names its RSL document (XML, namespace ``https://rslstandard.org/rsl``,
media type ``application/rsl+xml``) in three places, all read here:

* a ``License:`` line in robots.txt (read by the robots gate's parser, anywhere
  in the file, as ``Sitemap:``): it covers every page of the site;
* an HTTP ``Link`` header ``<URL>; rel="license"; type="application/rsl+xml"``;
* ``<link rel="license" type="application/rsl+xml" href="URL">`` in an HTML ``<head>``;
* the document itself, inline in an HTML page: ``<script type="application/rsl+xml">``.

The document lists ``<content url="...">`` elements (a full URL or an RFC 9309
path pattern), each with one or more ``<license>`` offers: ``<permits
type="usage">`` and ``<prohibits type="usage">`` name usage types (``all``,
``ai-all``, ``ai-train``, ``ai-input``, ``ai-index``, ``search``), ``<permits>``/
``<prohibits>`` of type ``user`` or ``geo`` restrict who may use it, and
``<payment type="...">`` says what it costs (no ``<payment>``: free).

Each policy purpose falls under RSL usage types (``purposes[].rsl_usage``, by
default its ``signal_purposes``). For a page and a purpose, every usage type of
the purpose must be granted by one offer of the most specific ``<content>`` that
covers the page:

* granted free, without conditions (no ``user``/``geo`` terms, no licence server):
  allowed;
* granted only for a payment, under conditions, or through a licence server:
  allowed when the policy records the licence as held (``opt_out.rsl_licences``,
  by the document's URL and usage type), otherwise refused;
* granted by no offer (prohibited, or not among what ``<permits>`` lists): refused.

Anything that cannot be read fails closed: a document that cannot be fetched
(any status but 200, a network error, over 1,000,000 bytes, a host the policy
gate refuses) or parsed (not XML, a DTD or entity, not an RSL root), and an offer
with an unknown usage type, an unknown ``type`` or an unknown payment type refuse
the purposes they could concern, in doubt. Refusals have reason ``license``.

:class:`LicenceMiddleware` (downloader middleware at 125) decides the robots.txt
licences before a page is fetched (a page that no purpose of the crawl may use is
not fetched at all), and the Link header and ``<link>`` licences when it arrives.
Purposes refused for a fetched page are handed to the opt-out middleware
(``request.meta["gdpr_rsl"]``), which folds them into the page's one per-purpose
decision; items from the page are then dropped (reason ``license``) and a non-HTML
response is refused.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit
from xml.etree.ElementTree import ParseError

from defusedxml import ElementTree as SafeET
from scrapy.exceptions import IgnoreRequest
from scrapy.http import HtmlResponse, Request
from scrapy.http.request import NO_CALLBACK

from scrapy_gdpr import audit
from scrapy_gdpr._component import chainable, component_runtime
from scrapy_gdpr.audit import Reason, refuse
from scrapy_gdpr.gate._download import body_problem, capped, size_detail, too_large
from scrapy_gdpr.gate._flight import Flight
from scrapy_gdpr.gate.robots import PathPattern, _encode, url_path
from scrapy_gdpr.internal import download_internal, internal_kind, internal_meta
from scrapy_gdpr.urls import origin_of

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Response

    from scrapy_gdpr.policy import HeldLicence

logger = logging.getLogger(__name__)

RSL_NS = "https://rslstandard.org/rsl"
RSL_TYPE = "application/rsl+xml"
#: ``request.meta`` key: purposes an RSL licence refuses for the page (folded in by the opt-out middleware).
RSL_META = "gdpr_rsl"
#: The largest RSL document read, after decompression.
MAX_SIZE = 1_000_000
INTERNAL_PRIORITY = 1000

#: Usage types a policy purpose can fall under.
PURPOSE_USAGES = ("search", "ai-index", "ai-train", "ai-input")
#: Usage types a document may name, and the purpose usage types each covers.
USAGE_COVERS: dict[str, frozenset[str]] = {
    "all": frozenset(PURPOSE_USAGES),
    "ai-all": frozenset({"ai-index", "ai-train", "ai-input"}),
    **{u: frozenset({u}) for u in PURPOSE_USAGES},
}
USER_TYPES = frozenset({"commercial", "non-commercial", "education", "government", "personal"})
#: Payment types of RSL 1.0. Only ``free`` needs no licence; ``attribution`` puts an
#: obligation on later use that the crawl cannot keep on its own, so it needs one too.
PAYMENT_TYPES = frozenset({"free", "attribution", "purchase", "subscription", "training", "crawl", "use",
                           "contribution"})
_TERM_TYPES = frozenset({"usage", "user", "geo"})
_GEO = re.compile(r"^[A-Za-z]{2}$")
_SPLIT = re.compile(r"[\s,]+")


# --------------------------------------------------------------------------- the document


@dataclass(frozen=True)
class Offer:
    """One ``<license>`` of a ``<content>``."""

    permits: dict[str, frozenset[str]]  # term type -> values
    prohibits: dict[str, frozenset[str]]
    payment: str  # "free" when no <payment> is given
    problems: tuple[str, ...] = ()

    def grants(self, usage: str) -> bool:
        """Whether this offer lets ``usage`` (a purpose usage type) be done at all."""
        if self.problems:
            return False
        listed = self.permits.get("usage")
        if listed is not None and not any(usage in USAGE_COVERS[u] for u in listed):
            return False
        return not any(usage in USAGE_COVERS[u] for u in self.prohibits.get("usage", ()))

    @property
    def conditional(self) -> bool:
        """Whether the offer restricts who or where (``user``/``geo`` terms), which the crawl cannot check."""
        return any(t != "usage" for t in self.permits) or any(t != "usage" for t in self.prohibits)


@dataclass
class Content:
    """One ``<content>`` element: what it covers and its offers."""

    url: str
    server: str | None
    offers: list[Offer]
    problems: list[str] = field(default_factory=list)
    origin: str | None = None  # a full URL's scheme://host:port; None for a path
    pattern: PathPattern | None = None
    length: int = 0

    def matches(self, url: str) -> bool:
        if self.origin is not None and origin_of(url) != self.origin:
            return False
        assert self.pattern is not None
        return self.pattern.matches(_encode(url_path(url), decode=False))


@dataclass
class Document:
    """A parsed RSL document."""

    url: str
    contents: list[Content] = field(default_factory=list)

    def covering(self, url: str) -> list[Content]:
        """The most specific ``<content>`` elements covering ``url`` (several when equally specific)."""
        matched = [c for c in self.contents if c.matches(url)]
        if not matched:
            return []
        longest = max(c.length for c in matched)
        return [c for c in matched if c.length == longest]


def _local(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return "", tag


def _terms(element: Any, kind: str, problems: list[str]) -> tuple[str, frozenset[str]] | None:
    term_type = (element.get("type") or "").strip().lower()
    values = frozenset(v.lower() for v in _SPLIT.split((element.text or "").strip()) if v)
    if term_type not in _TERM_TYPES:
        problems.append(f"<{kind}> with type {element.get('type')!r}, not usage/user/geo")
        return None
    if term_type == "usage":
        unknown = sorted(values - set(USAGE_COVERS))
        if unknown:
            problems.append(f"<{kind} type=\"usage\"> names unknown usage types {', '.join(unknown)}")
    elif term_type == "user":
        unknown = sorted(values - USER_TYPES)
        if unknown:
            problems.append(f"<{kind} type=\"user\"> names unknown user types {', '.join(unknown)}")
    elif any(not _GEO.match(v) for v in values):
        problems.append(f'<{kind} type="geo"> has values that are not ISO 3166 country codes')
    return term_type, values


def _offer(element: Any) -> Offer:
    permits: dict[str, frozenset[str]] = {}
    prohibits: dict[str, frozenset[str]] = {}
    payments: list[str] = []
    problems: list[str] = []
    for child in element:
        if not isinstance(child.tag, str):
            continue
        ns, name = _local(child.tag)
        if ns != RSL_NS:
            continue  # extensions in other namespaces
        if name in ("permits", "prohibits"):
            read = _terms(child, name, problems)
            if read is not None:
                into = permits if name == "permits" else prohibits
                into[read[0]] = into.get(read[0], frozenset()) | read[1]
        elif name == "payment":
            kind = (child.get("type") or "").strip().lower()
            if kind not in PAYMENT_TYPES:
                problems.append(f"<payment> with unknown type {child.get('type')!r}")
            payments.append(kind)
    # no <payment>: free; several: free only when every one is (otherwise the first paid one)
    payment = next((p for p in payments if p != "free"), "free")
    return Offer(permits, prohibits, payment, tuple(problems))


def parse_rsl(body: bytes, url: str) -> Document:
    """Parse an RSL document fetched from ``url``; raises ValueError when it is not one."""
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except ParseError as exc:
        raise ValueError(f"not well-formed XML ({exc})") from None
    except ValueError as exc:  # defusedxml: a DTD, an entity or an external reference
        raise ValueError(f"refused XML ({type(exc).__name__})") from None
    ns, name = _local(root.tag)
    if (ns, name) != (RSL_NS, "rsl"):
        raise ValueError(f'the root element is {root.tag!r}, not <rsl xmlns="{RSL_NS}">')
    doc = Document(url)
    for element in root:
        if not isinstance(element.tag, str) or _local(element.tag) != (RSL_NS, "content"):
            continue
        where = (element.get("url") or "").strip()
        server = (element.get("server") or "").strip() or None
        offers = [_offer(o) for o in element if isinstance(o.tag, str) and _local(o.tag) == (RSL_NS, "license")]
        content = Content(where, server, offers)
        if not where:
            content.problems.append("<content> without a url: read as covering every page")
            where = "/"
        if not offers:
            content.problems.append(f'<content url="{where}"> offers no <license>')
        parts = urlsplit(where)
        if parts.scheme in ("http", "https") and parts.netloc:
            content.origin = origin_of(where)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        else:
            path = where if where.startswith(("/", "*")) else "/" + where
        encoded = _encode(path, decode=False)
        content.pattern = PathPattern(encoded)
        content.length = len(encoded) + (1000 if content.origin else 0)  # a full URL is more specific
        doc.contents.append(content)
    if not doc.contents:
        raise ValueError("the document has no <content> element")
    return doc


# --------------------------------------------------------------------------- discovery


_RSL_TYPE_BYTES = re.compile(rb"rsl\+xml", re.IGNORECASE)
_LINK = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]*)*)")
_PARAM = re.compile(r";\s*([A-Za-z0-9*_.-]+)\s*=\s*(\"[^\"]*\"|[^;,\s]*)")


def link_header_licences(values: Iterable[str], base: str) -> list[str]:
    """RSL document URLs of ``Link`` header values (RFC 8288): ``rel`` naming ``license``
    and ``type`` ``application/rsl+xml``, resolved against ``base``."""
    out: list[str] = []
    for value in values:
        for m in _LINK.finditer(value):
            params = {k.lower(): v.strip('"').strip() for k, v in _PARAM.findall(m.group(2))}
            rels = params.get("rel", "").lower().split()
            if "license" in rels and params.get("type", "").lower() == RSL_TYPE:
                out.append(urljoin(base, m.group(1).strip()))
    return out


def html_inline_documents(response: HtmlResponse) -> list[str]:
    """The texts of ``<script type="application/rsl+xml">`` elements: RSL documents inline in the page."""
    if _RSL_TYPE_BYTES.search(response.body) is None:
        return []
    return ["".join(script.xpath("text()").getall()) for script in response.xpath("//script[@type]")
            if (script.attrib.get("type") or "").strip().lower() == RSL_TYPE]


def html_licences(response: HtmlResponse) -> list[str]:
    """RSL document URLs of ``<link rel="license" type="application/rsl+xml">`` in ``<head>``."""
    if _RSL_TYPE_BYTES.search(response.body) is None:
        return []  # no element can name the type (a cheap test before parsing)
    out: list[str] = []
    for link in response.xpath("//head/link[@rel][@href]"):
        rels = (link.attrib.get("rel") or "").lower().split()
        if "license" in rels and (link.attrib.get("type") or "").strip().lower() == RSL_TYPE:
            out.append(response.urljoin(link.attrib["href"].strip()))
    return out


# --------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Verdict:
    """What a licence says about one usage type of one purpose on one page."""

    allowed: bool
    text: str


def held_licence(held: Iterable[HeldLicence], document: str, usage: str, today: date) -> HeldLicence | None:
    """The held licence for ``usage`` of the RSL document at ``document``, when one is valid today."""
    for licence in held:
        if licence.document.rstrip("/") != document.rstrip("/") or usage not in licence.usage:
            continue
        if licence.obtained_on <= today and (licence.expires_on is None or today <= licence.expires_on):
            return licence
    return None


def decide(doc: Document, url: str, usage: str, held: Iterable[HeldLicence], today: date) -> Verdict | None:
    """The licence's verdict on ``usage`` of ``url`` (None: the document does not cover the page)."""
    contents = doc.covering(url)
    if not contents:
        return None
    held = list(held)
    verdicts = [_decide_content(doc, c, usage, held, today) for c in contents]
    refused = [v for v in verdicts if not v.allowed]
    return refused[0] if refused else verdicts[0]


def _decide_content(doc: Document, content: Content, usage: str, held: list[HeldLicence], today: date) -> Verdict:
    where = f"RSL {doc.url} <content url=\"{content.url or '/'}\">"
    problems = list(content.problems) + [p for o in content.offers for p in o.problems]
    granting = [o for o in content.offers if o.grants(usage)]
    if not granting:
        if problems:
            return Verdict(False, f"{where} cannot be fully read ({problems[0]}): {usage} refused, in doubt")
        return Verdict(False, f"{where} does not license {usage}")
    free = [o for o in granting if o.payment == "free" and not o.conditional and content.server is None]
    if free and not content.problems:
        return Verdict(True, f"{where} licenses {usage} free")
    licence = held_licence(held, doc.url, usage, today)
    if licence is not None:
        return Verdict(True, f"{where} licenses {usage}; held: {licence.reference}")
    offer = granting[0]
    needs = [f"payment {offer.payment}"] if offer.payment != "free" else []
    if offer.conditional:
        needs.append("user or geo terms")
    if content.server:
        needs.append(f"licence server {content.server}")
    if content.problems:
        needs.append(content.problems[0])
    return Verdict(False, f"{where} licenses {usage} only with a licence ({', '.join(needs)}); "
                          "opt_out.rsl_licences records none held")


# --------------------------------------------------------------------------- middleware


@dataclass
class _DocEntry:
    document: Document | None = None
    error: str = ""  # why the document cannot be read
    fetched_at: float = 0.0
    flight: Flight = field(default_factory=Flight)


@chainable
class LicenceMiddleware:
    """Downloader middleware applying RSL licences (``opt_out.rsl``)."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)
        policy = self.runtime.policy
        self.policy = policy
        self.enabled = policy.opt_out.rsl
        self.ttl = policy.duration(policy.opt_out.rsl_cache_ttl).total_seconds()
        self.held = list(policy.opt_out.rsl_licences)
        #: (purpose id, its RSL usage types, its opt-out purposes, the policy clause)
        self.purposes: list[tuple[str, tuple[str, ...], tuple[str, ...], str]] = [
            (p.id, tuple(p.licence_usage), tuple(p.signal_purposes),
             policy.clause("purposes", i, "rsl_usage" if p.rsl_usage is not None else "signal_purposes"))
            for i, p in enumerate(policy.purposes)
        ]
        self.spider_purposes = {sp for _, _, sps, _ in self.purposes for sp in sps}
        self._docs: dict[str, _DocEntry] = {}
        self._summary: dict[str, Any] = {"documents": {}, "refused_requests": 0, "pages_with_refusals": 0}
        self.runtime.report_sections["rsl"] = self._summary

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    # -- hooks ----------------------------------------------------------------------
    async def process_request(self, request: Request) -> None:
        if not self.enabled:
            return
        if internal_kind(request):
            return
        meta = request.meta
        meta.pop(RSL_META, None)  # a redirect copies the meta of the request it follows
        robots = self.runtime.robots
        url = request.url
        if robots is None or url.startswith(("data:", "file:")):
            return
        parts = urlsplit(url, "", True)  # the gate (40) split it already: cached
        entry = robots.cache.get(origin_of(parts))
        if entry is None or time.monotonic() >= entry.expires_at:  # the robots gate (100) has fetched it
            entry = await robots.entry_for(url, parts)
        if entry.rules is None or not entry.rules.licenses:
            return
        sources: list[tuple[str, str, _DocEntry | None]] = [
            (urljoin(entry.robots_url, value), f"{entry.robots_url} line {line} 'License: {value}'", None)
            for line, value in entry.rules.licenses]
        refusals = await self.evaluate(request.url, sources)
        if not refusals:
            return
        reserved = {sp for r in refusals for sp in r["purposes"]}
        if self.spider_purposes and self.spider_purposes <= reserved:
            # no purpose of the crawl may use the page: it is not fetched
            self._summary["refused_requests"] += 1
            first = refusals[0]
            raise refuse(self.runtime, request.url, Reason.LICENSE, clause=first["clause"], detail=first["text"])
        request.meta[RSL_META] = refusals

    async def process_response(self, request: Request, response: Response) -> Response:
        if not self.enabled or internal_kind(request):
            return response
        headers = response.headers
        links = headers.getlist("Link") if "Link" in headers else None  # getlist raises and catches when absent
        named = [(u, f'Link: <{u}>; rel="license"') for u in
                 link_header_licences([v.decode("latin-1") for v in links], response.url)] if links else []
        inline: list[tuple[str, str, _DocEntry | None]] = []
        # no element can name the RSL type without the text "rsl+xml": nothing to parse
        if isinstance(response, HtmlResponse) and _RSL_TYPE_BYTES.search(response.body) is not None:
            try:
                named += [(u, f'<link rel="license" href="{u}">') for u in html_licences(response)]
                for k, text in enumerate(html_inline_documents(response)):
                    inline.append((f"{response.url}#rsl-{k + 1}", (f'<script type="{RSL_TYPE}"> number {k + 1} '
                                   "in the page"), self._inline(text, response.url)))
            except Exception as exc:  # noqa: BLE001 - an unparseable body: no <link> can be read from it
                logger.debug("Cannot read <link> elements of %(url)s: %(e)s", {"url": response.url, "e": exc})
        sources = ([(u, n, None) for u, n in dict.fromkeys(named)] + inline) if named or inline else []
        if sources:
            refusals = await self.evaluate(response.url, sources)
            if refusals:
                request.meta[RSL_META] = [*request.meta.get(RSL_META, []), *refusals]
        if request.meta.get(RSL_META):
            self._summary["pages_with_refusals"] += 1
        return response

    # -- the decision -----------------------------------------------------------------
    def _inline(self, text: str, url: str) -> _DocEntry:
        """An RSL document written inline in a page, parsed (it is not fetched)."""
        entry = _DocEntry(fetched_at=time.monotonic())
        try:
            entry.document = parse_rsl(text.strip().encode("utf-8"), url)
        except ValueError as exc:
            entry.error = f"invalid RSL document: {exc}"
            self.crawler.stats.inc_value("gdpr/optout/malformed/rsl")
            logger.warning("Inline RSL document of %(url)s cannot be read (%(e)s): every purpose it may license is "
                           "refused, in doubt", {"url": url, "e": entry.error}, extra={"spider": self.crawler.spider})
        return entry

    async def evaluate(self, url: str, sources: list[tuple[str, str, _DocEntry | None]]) -> list[dict[str, Any]]:
        """The purposes the licences at ``sources`` (document URL, where it was named, the
        document when it is already read) refuse for ``url``:
        ``[{"purpose", "purposes", "clause", "text"}]``."""
        today = date.today()
        out: list[dict[str, Any]] = []
        stats = self.crawler.stats
        for document_url, named, known in sources:
            entry = known if known is not None else await self._document(document_url)
            for purpose_id, usages, signal_purposes, clause in self.purposes:
                if any(r["purpose"] == purpose_id for r in out):
                    continue  # already refused by an earlier licence
                for usage in usages:
                    if entry.document is None:
                        verdict: Verdict | None = Verdict(
                            False, f"RSL {document_url} cannot be read ({entry.error}): {usage} refused, in doubt")
                    else:
                        verdict = decide(entry.document, url, usage, self.held, today)
                    if verdict is None or verdict.allowed:
                        continue
                    text = f"{verdict.text} (named by {named})"
                    out.append({"purpose": purpose_id, "purposes": list(signal_purposes), "clause": clause,
                                "text": text})
                    stats.inc_value(f"gdpr/rsl/refused/{usage}")
                    audit.record(self.runtime, "rsl_decision", url, purpose=purpose_id, usage=usage,
                                 allowed=False, document=document_url, named_by=named, detail=verdict.text)
                    break
        return out

    async def _document(self, url: str) -> _DocEntry:
        entry = self._docs.get(url)
        if entry is not None and not entry.flight.busy and time.monotonic() - entry.fetched_at < self.ttl:
            return entry
        if entry is None:
            entry = self._docs[url] = _DocEntry()
        await entry.flight.run(lambda: self._fetch(url, entry))
        return entry

    async def _fetch(self, url: str, entry: _DocEntry) -> None:
        stats = self.crawler.stats
        entry.document, entry.error = None, ""
        try:
            if urlsplit(url).scheme not in ("http", "https"):
                entry.error = "not an HTTP URL"
                return
            request = Request(url, priority=INTERNAL_PRIORITY, callback=NO_CALLBACK, dont_filter=True,
                              meta={**internal_meta("rsl"), **capped(MAX_SIZE)})
            try:
                response = await download_internal(self.crawler, request)
            except Exception as exc:  # noqa: BLE001 - any download failure: the licence is unreadable, refused in doubt
                if too_large(exc):
                    entry.error = f"the document is {size_detail(MAX_SIZE)}"
                elif isinstance(exc, IgnoreRequest):
                    entry.error = f"not fetched: {exc}"
                else:
                    entry.error = f"unreachable: {type(exc).__name__}: {exc}"
                return
            if response.status != 200:
                entry.error = f"HTTP {response.status}"
            elif problem := body_problem(response, MAX_SIZE):
                entry.error = problem
            else:
                try:
                    entry.document = parse_rsl(response.body, url)
                except ValueError as exc:
                    entry.error = f"invalid RSL document: {exc}"
        finally:
            entry.fetched_at = time.monotonic()
            if entry.document is not None:
                stats.inc_value("gdpr/rsl/documents/read")
                problems = [p for c in entry.document.contents for p in
                            [*c.problems, *(p for o in c.offers for p in o.problems)]]
                for problem in problems:
                    stats.inc_value("gdpr/optout/malformed/rsl")
                    logger.warning("RSL document %(url)s not fully readable: %(p)s; the purposes it may concern "
                                   "are refused, in doubt", {"url": url, "p": problem},
                                   extra={"spider": self.crawler.spider})
                self._summary["documents"][url] = f"{len(entry.document.contents)} content element(s)"
                logger.info("RSL document %(url)s read: %(n)d content element(s)",
                            {"url": url, "n": len(entry.document.contents)}, extra={"spider": self.crawler.spider})
            else:
                stats.inc_value("gdpr/rsl/documents/unreadable")
                stats.inc_value("gdpr/optout/malformed/rsl")
                logger.warning("RSL document %(url)s cannot be read (%(e)s): every purpose it may license is "
                               "refused, in doubt", {"url": url, "e": entry.error},
                               extra={"spider": self.crawler.spider})
                self._summary["documents"][url] = f"unreadable ({entry.error})"

"""Request gate: domain allowlist, jurisdictions, objections, private networks.

:class:`PolicyGateMiddleware` runs first among the downloader middlewares, so a
host the policy rules out is never contacted, not even for its robots.txt.
:class:`ItemGatePipeline` runs first among the item pipelines, before any image is
downloaded. :class:`PolicyGate` holds the checks; the Playwright predicate
(:mod:`scrapy_gdpr.playwright`) uses the same object for browser sub-resources.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urljoin, urlsplit

from itemadapter import ItemAdapter
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.reactor import is_reactor_installed

from scrapy_gdpr._component import component_runtime
from scrapy_gdpr.audit import Reason, drop, note_refusal, refuse
from scrapy_gdpr.denylist import deny_lists
from scrapy_gdpr.exceptions import PolicyViolation
from scrapy_gdpr.objections import (
    ObjectionFileError,
    PathError,
    canonical_host,
    canonical_url,
    extra_objection_list,
    objection_list,
    objections_path,
    path_forms,
    prefix_forms,
)
from scrapy_gdpr.optout import IMAGE_RULE_PURPOSES
from scrapy_gdpr.policy import PolicyError
from scrapy_gdpr.status import refuse_startup
from scrapy_gdpr.provenance import provenance_of

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.http import Request
    from typing_extensions import Self

    from scrapy_gdpr.objections import ObjectionList
    from scrapy_gdpr.policy import DomainRule, Policy
    from scrapy_gdpr.runtime import GdprRuntime

logger = logging.getLogger(__name__)

SERVICE = "gate"

#: Names of cloud instance-metadata services. Refused even where a domain rule has
#: ``allow_private_network: true``: no crawl has a reason to read them.
METADATA_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)
#: Addresses of cloud instance-metadata services (AWS, GCP, Azure, OCI, DigitalOcean:
#: 169.254.169.254; AWS IPv6: fd00:ec2::254; Alibaba: 100.100.100.200; Oracle:
#: 192.0.0.192; AWS ECS task metadata: 169.254.170.2). Always refused.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

#: ``request.meta["gdpr_internal"]`` values of the policy's own requests that pass
#: the path rules of a listed host.
INTERNAL_PATH_EXEMPT = frozenset({"robots", "tdmrep"})

# Never raw in a URL a client sends: C0 controls, space, DEL.
_CONTROL = re.compile(r"[\x00-\x20\x7f]")
# One label of a host name as it goes on the wire (underscores occur in real names).
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?", re.ASCII)
_BRACKETED = re.compile(r"\[[0-9A-Fa-f:.]+\](?::[0-9]*)?", re.ASCII)


def url_problem(url: str, parts: SplitResult) -> str | None:
    """Why ``url`` (an http(s) URL, split) is malformed, or None.

    Refused alone, before any other check, so that it never stands for its host
    (a robots.txt fetch, a DNS lookup, a cache entry): user information
    (``http://x@host/``), a port that is not a number from 1 to 65535, a host that
    is not a valid name or address (empty labels, percent-escapes, bad IDNA or
    punycode), control characters or spaces, a backslash in the authority.
    """
    if (m := _CONTROL.search(url)) is not None:
        return f"it contains the control character or space {m.group()!r} at position {m.start()}"
    return authority_problem(parts)


def authority_problem(parts: SplitResult) -> str | None:
    """What :func:`url_problem` finds wrong with the authority (``user@host:port``)
    of a split URL without control characters: it depends on ``parts.netloc`` only."""
    netloc = parts.netloc
    if "@" in netloc:
        return "it carries user information (user@host); credentials are never sent"
    if "\\" in netloc:
        return "its authority contains a backslash"
    try:
        port = parts.port
    except ValueError as exc:
        return f"its port is invalid ({exc})"
    if port == 0:
        return "its port is 0"
    if netloc.startswith("["):
        if not _BRACKETED.fullmatch(netloc):
            return "its IPv6 address is not well formed"
        return None
    host = parts.hostname or ""
    if host.endswith("."):
        host = host[:-1]
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            return f"its host name is not a valid international name ({exc})"
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return f"{host!r} is not a valid host name"
    for label in labels:
        if label.startswith("xn--"):
            try:
                decoded = label[4:].encode("ascii").decode("punycode")
            except UnicodeError:
                return f"the label {label!r} of its host name is not valid punycode"
            if not decoded or decoded.isascii():
                return f"the label {label!r} of its host name is not valid punycode"
    return None


@dataclass(frozen=True)
class Refusal:
    """Why the gate refuses a URL, and which policy clause says so."""

    reason: Reason
    clause: str
    detail: str


@dataclass(frozen=True)
class _HostInfo:
    """What the policy says of one host, whatever its path."""

    host: str  #: canonical form
    jurisdiction: Refusal | None
    rule: int | None  #: index of the most specific domain rule, or None


def non_public_address(
    host: str,
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
    *,
    literal: bool,
    allow_private: bool,
) -> tuple[str, bool] | None:
    """Why ``host`` must not be contacted, or None: any non-public address refuses
    (a client may connect to any of them), a cloud metadata address always, the
    others unless the domain allows private networks. ``(text, metadata)``."""
    for ip in addresses:
        kind = address_class(ip)
        if kind is None:
            continue
        said = f"{host} is" if literal else f"{host} resolves to {ip},"  # a literal as it was written
        metadata = kind.startswith("cloud metadata")
        if metadata or not allow_private:
            return f"{said} a {kind} address", metadata
    return None


def address_class(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What makes ``ip`` non-public ("loopback", "cloud metadata", ...), or None.

    Addresses embedded in IPv6 (IPv4-mapped, 6to4, Teredo, NAT64) are checked too.
    """
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        for inner in embedded:
            if (kind := address_class(inner)) is not None:
                return f"{kind} (embedded in {ip})"
    for attr, kind in (
        ("is_loopback", "loopback"),
        ("is_unspecified", "unspecified"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_reserved", "reserved"),
        ("is_private", "private"),
    ):
        if getattr(ip, attr):
            return kind
    if not ip.is_global:
        return "not globally routable"  # shared (100.64/10), documentation ranges, ...
    return None


class PolicyGate:
    """The request gate's checks for one policy, in this order:

    0. a well-formed URL (:func:`url_problem`; refused alone, as ``malformed_url``),
    1. objections (a person's objection is the most specific reason),
    2. jurisdictions (excluded TLDs and domains), then the deny lists (``opt_out.deny_lists``),
    3. the domain allowlist, then its ``deny_paths`` / ``allow_paths``,
    4. private networks (needs DNS, so last; only hosts that passed 1-3 are resolved).
    """

    def __init__(self, crawler: Crawler, runtime: GdprRuntime, objections: ObjectionList) -> None:
        self.crawler = crawler
        self.policy: Policy = runtime.policy
        self.objections = objections
        self.objections_clause = self.policy.clause("objections", "path")
        # the policy's list always applies; GDPR_OBJECTIONS can only add one
        self.objection_lists = [(objections, self.objections_clause)]
        extra = extra_objection_list(runtime)
        if extra is not None:
            self.objection_lists.append((extra, "GDPR_OBJECTIONS setting"))
        self.dns_timeout = runtime.config.dns_timeout
        self._rules: dict[str, int] = {}
        for i, rule in enumerate(self.policy.domains):
            self._rules.setdefault(canonical_host(rule.domain), i)
        self._terms: dict[str, int] = {}
        for i, rule in enumerate(self.policy.domains):
            if rule.terms is not None:
                try:
                    self._terms.setdefault(canonical_url(rule.terms.url), i)
                except ValueError:
                    pass
        jur = self.policy.jurisdictions
        self._tlds = {t.lstrip(".").lower(): i for i, t in enumerate(jur.exclude_tlds)}
        self._excluded = {canonical_host(d): i for i, d in enumerate(jur.exclude_domains)}
        self._denied, findings = deny_lists(self.policy)
        if findings:  # a list that cannot be read cannot say which sites to leave alone
            raise refuse_startup(crawler, PolicyError(findings))
        # deny rules match case-insensitively (casefolded), allow rules exactly
        self._deny = [
            [tuple(f.casefold() for f in prefix_forms(p)) for p in rule.deny_paths] for rule in self.policy.domains
        ]
        self._allow = [[prefix_forms(p) for p in rule.allow_paths] for rule in self.policy.domains]
        self._domains_clause = self.policy.clause("domains")
        # Network verdicts per (host, rule): the same lifetime as Scrapy's own DNS
        # cache, whose answer the download then uses; failures are not kept.
        self._network: OrderedDict[tuple[str, int | None], Refusal | None] = OrderedDict()
        self._network_size = max(1, crawler.settings.getint("DNSCACHE_SIZE", 10000))
        # Host-level decisions (canonical host, jurisdiction verdict, domain rule):
        # they depend on the policy only, which does not change during a crawl.
        self._hosts: dict[str, _HostInfo] = {}
        self._hosts_size = self._network_size
        #: authority (``urlsplit().netloc``) -> (its problem, or None; its host's decisions)
        self._netlocs: dict[str, tuple[str | None, _HostInfo | None]] = {}

    # -- the rules ------------------------------------------------------------------
    def host_info(self, hostname: str) -> _HostInfo:
        """The policy's host-level decisions for ``hostname`` (as ``urlsplit`` gives it), cached."""
        info = self._hosts.get(hostname)
        if info is None:
            host = canonical_host(hostname)
            info = _HostInfo(host, self.check_jurisdiction(host) or self.check_deny_list(host), self.rule_for(host))
            if len(self._hosts) >= self._hosts_size:
                del self._hosts[next(iter(self._hosts))]  # the oldest entry
            self._hosts[hostname] = info
        return info

    def _netloc_info(self, parts: SplitResult) -> tuple[str | None, _HostInfo | None]:
        """(what is wrong with the authority, or None; the host's decisions), cached
        by ``parts.netloc``. Raises as ``urlsplit``'s attributes do."""
        problem = authority_problem(parts)
        info = self.host_info(parts.hostname or "") if problem is None else None
        if len(self._netlocs) >= self._hosts_size:
            del self._netlocs[next(iter(self._netlocs))]  # the oldest entry
        self._netlocs[parts.netloc] = problem, info
        return problem, info

    def rule_for(self, host: str) -> int | None:
        """Index of the most specific domain rule covering ``host``, or None."""
        host = canonical_host(host)
        i = self._rules.get(host)
        if i is not None:
            return i
        if ":" in host:
            return None
        dot = host.find(".")
        while dot >= 0:
            host = host[dot + 1 :]
            i = self._rules.get(host)
            if i is not None and self.policy.domains[i].include_subdomains:
                return i
            dot = host.find(".")
        return None

    def check_static(self, url: str, internal: str | None = None) -> tuple[Refusal | None, int | None, str]:
        """Checks 1-3 (no I/O). Returns (refusal or None, the rule index, the host)."""
        try:
            parts = urlsplit(url)
            if parts.scheme.lower() in ("http", "https"):
                if (m := _CONTROL.search(url)) is not None:
                    problem: str | None = (
                        f"it contains the control character or space {m.group()!r} at position {m.start()}"
                    )
                    info = None
                else:
                    # the authority's checks and the host's decisions, once per authority
                    netloc = self._netlocs.get(parts.netloc)
                    problem, info = netloc if netloc is not None else self._netloc_info(parts)
                if problem is not None:
                    detail = f"the URL is malformed: {problem}"
                    return Refusal(Reason.MALFORMED_URL, self._domains_clause, detail), None, ""
                assert info is not None
            else:
                info = self.host_info(parts.hostname or "")
        except (ValueError, UnicodeError) as exc:
            detail = f"the URL is malformed: it cannot be parsed ({exc})"
            return Refusal(Reason.MALFORMED_URL, self._domains_clause, detail), None, ""
        host = info.host
        if parts.scheme.lower() not in ("http", "https") or not host:
            detail = f"only http(s) URLs of listed domains are fetched, not {parts.scheme or 'this'}: URLs"
            return Refusal(Reason.DOMAIN, self._domains_clause, detail), None, host
        refusal = self.check_objection(url, host) or info.jurisdiction
        if refusal is not None:
            return refusal, None, host
        refusal, index = self._check_domain(url, host, info.rule, internal, parts)
        return refusal, index, host

    def check_objection(self, url: str, host: str | None = None) -> Refusal | None:
        """``host``: the canonical host of ``url``, an http(s) URL the gate found well formed."""
        for objections, clause in self.objection_lists:
            try:
                entry = objections.match(url, host=host)
            except ObjectionFileError as exc:
                return Refusal(Reason.UNDECIDED, clause, f"the objection list is unusable: {exc}")
            except (ValueError, UnicodeError) as exc:
                return Refusal(Reason.UNDECIDED, clause, f"the URL cannot be checked for objections: {exc}")
            if entry is not None:
                return Refusal(Reason.OBJECTION, clause, f"covered by the objection {entry}")
        return None

    def check_domain(self, url: str, host: str, internal: str | None = None) -> tuple[Refusal | None, int | None]:
        """The domain allowlist, then the rule's paths. Returns (refusal, rule index)."""
        return self._check_domain(url, host, self.rule_for(host), internal)

    def _check_domain(
        self, url: str, host: str, index: int | None, internal: str | None, parts: SplitResult | None = None
    ) -> tuple[Refusal | None, int | None]:
        is_terms_page = internal == "terms" and canonical_url(url) in self._terms
        if index is None and is_terms_page:
            return None, self._terms[canonical_url(url)]  # a listed domain's reviewed terms
        if index is None:
            return Refusal(Reason.DOMAIN, self._domains_clause, f"{host} is not a listed domain"), None
        if internal in INTERNAL_PATH_EXEMPT or is_terms_page:
            return None, index
        if not self._deny[index] and not self._allow[index]:
            return None, index  # no path rules on this domain
        rule = self.policy.domains[index]
        try:
            forms = path_forms(_path_of(parts if parts is not None else urlsplit(url)))
        except PathError as exc:
            clause = self.policy.clause("domains", index, "deny_paths" if self._deny[index] else "allow_paths")
            detail = f"the path cannot be normalised ({exc}), so the path rules of {rule.domain} cannot be applied"
            return Refusal(Reason.MALFORMED_URL, clause, detail), index
        path = forms[0]
        # deny: any spelling under a denied prefix, in any letter case
        folded = [f.casefold() for f in forms]
        for j, prefixes in enumerate(self._deny[index]):
            for form, fold in zip(forms, folded, strict=True):
                if fold.startswith(prefixes):
                    clause = self.policy.clause("domains", index, "deny_paths", j)
                    spelled = f" (read as {form})" if form != path else ""
                    detail = f"{path}{spelled} is under the denied path {rule.deny_paths[j]}"
                    return Refusal(Reason.DOMAIN, clause, detail), index
        # allow: every spelling under an allowed prefix, letter case as written
        allow = self._allow[index]
        if allow:
            for form in forms:
                if not any(form.startswith(prefixes) for prefixes in allow):
                    clause = self.policy.clause("domains", index, "allow_paths")
                    spelled = f" (read as {form})" if form != path else ""
                    detail = f"{path}{spelled} is not under an allowed path of {rule.domain}"
                    return Refusal(Reason.DOMAIN, clause, detail), index
        return None, index

    def check_jurisdiction(self, host: str) -> Refusal | None:
        if _is_ip_address(host):
            return None  # an address has no TLD; the domain rules still apply
        tld = host.rsplit(".", 1)[-1]
        if tld in self._tlds:
            return Refusal(
                Reason.JURISDICTION,
                self.policy.clause("jurisdictions", "exclude_tlds", self._tlds[tld]),
                f".{tld} is an excluded top-level domain",
            )
        name = host
        while True:
            if name in self._excluded:
                return Refusal(
                    Reason.JURISDICTION,
                    self.policy.clause("jurisdictions", "exclude_domains", self._excluded[name]),
                    f"{host} is under the excluded domain {name}",
                )
            dot = name.find(".")
            if dot < 0:
                return None
            name = name[dot + 1 :]

    def check_deny_list(self, host: str) -> Refusal | None:
        """The host, or a domain above it, is on a deny list (``opt_out.deny_lists``)."""
        if not self._denied:
            return None
        name = host
        while True:
            found = self._denied.get(name)
            if found is not None:
                path, line, index = found
                return Refusal(Reason.DENY_LIST, self.policy.clause("opt_out", "deny_lists", index),
                               f"{host} is under {name}, listed in the deny list {path}:{line}")
            dot = name.find(".")
            if dot < 0 or _is_ip_address(host):
                return None
            name = name[dot + 1 :]

    async def check_network(self, host: str, index: int | None) -> Refusal | None:
        """Check 4: refuse hosts on loopback/private/link-local/metadata addresses."""
        if (own := self.host_info(host).rule) is not None:
            index = own
        key = (host, index)
        if key in self._network:
            self._network.move_to_end(key)
            return self._network[key]
        refusal, final = await self._check_network(host, index)
        if final:
            self._network[key] = refusal
            if len(self._network) > self._network_size:
                self._network.popitem(last=False)
        return refusal

    async def _check_network(self, host: str, index: int | None) -> tuple[Refusal | None, bool]:
        """The verdict, and whether it may be cached (not after a failed lookup)."""
        rule: DomainRule | None = self.policy.domains[index] if index is not None else None
        clause = (
            self.policy.clause("domains", index, "allow_private_network")
            if index is not None
            else self._domains_clause
        )
        if host in METADATA_HOSTS or host.endswith(".metadata.google.internal"):
            return Refusal(Reason.PRIVATE_NETWORK, clause, f"{host} is a cloud metadata service"), True
        try:
            addresses = [ipaddress.ip_address(host)]
            literal = True
        except ValueError:
            try:
                addresses = [ipaddress.ip_address(a.partition("%")[0]) for a in await self.resolve(host)]
                if not addresses:
                    raise OSError("no address") from None
            except Exception as exc:  # noqa: BLE001 - any failure: fail closed
                detail = f"{host} could not be resolved, so it cannot be checked for a private address"
                return Refusal(Reason.UNDECIDED, clause, f"{detail}: {exc.__class__.__name__}: {exc}"), False
            literal = False
        problem = non_public_address(host, addresses, literal=literal,
                                     allow_private=rule is not None and rule.allow_private_network)
        if problem is not None:
            text, metadata = problem
            if not metadata:
                text += "; set allow_private_network: true on the domain only for a local test site"
            return Refusal(Reason.PRIVATE_NETWORK, clause, text), True
        return None, True

    async def resolve(self, host: str) -> list[str]:
        """The addresses ``host`` resolves to, within GDPR_DNS_TIMEOUT.

        With a Twisted reactor: through the reactor's resolver (Scrapy's DNS_RESOLVER
        and its cache, which the download then uses too). Without one: asyncio's
        ``getaddrinfo``, every address it returns.
        """
        if is_reactor_installed():
            from twisted.internet import reactor

            d = reactor.resolver.getHostByName(host)  # type: ignore[attr-defined]
            d.addTimeout(self.dns_timeout, reactor)
            return [str(await maybe_deferred_to_future(d))]
        loop = asyncio.get_running_loop()
        infos = await asyncio.wait_for(loop.getaddrinfo(host, None), self.dns_timeout)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    async def check(self, url: str, internal: str | None = None) -> Refusal | None:
        refusal, index, host = self.check_static(url, internal)
        if refusal is not None:
            return refusal
        if (own := self.host_info(host).rule) is not None:
            index = own
        key = (host, index)
        if key in self._network:  # check_network's cached path, without a coroutine
            self._network.move_to_end(key)
            return self._network[key]
        return await self.check_network(host, index)


def policy_gate(crawler: Crawler, rt: GdprRuntime) -> PolicyGate:
    """The crawl's shared :class:`PolicyGate` (``runtime.services["gate"]``)."""
    gate = rt.services.get(SERVICE)
    if gate is None:
        gate = rt.services[SERVICE] = PolicyGate(crawler, rt, objection_list(rt))
        rt.report_sections.setdefault(
            "gate",
            {
                "domains": [
                    {"domain": r.domain, "include_subdomains": r.include_subdomains,
                     "allow_paths": list(r.allow_paths), "deny_paths": list(r.deny_paths),
                     "allow_private_network": r.allow_private_network}
                    for r in rt.policy.domains
                ],
                "jurisdictions": {
                    "exclude_tlds": list(rt.policy.jurisdictions.exclude_tlds),
                    "exclude_domains": list(rt.policy.jurisdictions.exclude_domains),
                },
                "objections": {
                    "path": str(objections_path(rt)), "entries_at_start": len(gate.objections),
                    # the list GDPR_OBJECTIONS adds, when set
                    **({"added_by_setting": [{"path": str(o.path), "entries_at_start": len(o)}
                                             for o, _ in gate.objection_lists[1:]]}
                       if len(gate.objection_lists) > 1 else {}),
                },
            },
        )
    return gate  # type: ignore[no-any-return]


def _is_ip_address(host: str) -> bool:
    """Whether ``host`` is an IP address literal (no exception for host names)."""
    if ":" not in host and not host[-1:].isdigit():
        return False  # a host name: no top-level domain is numeric
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _path_of(parts: SplitResult) -> str:
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class PolicyGateMiddleware:
    """Downloader middleware refusing what the policy rules out, before any contact.

    Every request is checked: the spider's, redirects, robots.txt, terms pages and
    media downloads. See :class:`PolicyGate` for the order of the checks.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)
        self.gate = policy_gate(crawler, self.runtime)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        refusal = await self.gate.check(request.url, request.meta.get("gdpr_internal"))
        if refusal is not None:
            raise refuse(self.crawler, request.url, refusal.reason, clause=refusal.clause, detail=refusal.detail)
        if request.meta.get("playwright"):
            # the browser follows redirects itself: guard its page before it navigates
            from scrapy_gdpr.playwright import prepare_request

            prepare_request(self.crawler, request)

    def process_exception(self, request: Request, exception: Exception) -> None:
        """A browser request whose navigation was redirected to a refused URL fails in
        the browser (``net::ERR_BLOCKED_BY_CLIENT``); it is a refusal, already audited
        by the hop guard: raise it as one, so Scrapy does not log a download error."""
        if not request.meta.get("playwright"):
            return
        from scrapy_gdpr.playwright import refused_navigation

        refused = refused_navigation(request)
        if refused is not None:
            reason, clause, detail = refused
            raise PolicyViolation(reason, f"Refused ({reason}): {detail}", clause=clause)


class ItemGatePipeline:
    """Drops items from objected-to or opted-out pages; strips reserved image URLs.

    Runs before the images pipeline, so a reserved or objected-to image is never
    requested.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)
        self.policy = self.runtime.policy
        self.gate = policy_gate(crawler, self.runtime)
        settings = crawler.settings
        self.url_fields = [
            settings.get("IMAGES_URLS_FIELD") or "image_urls",
            settings.get("FILES_URLS_FIELD") or "file_urls",
        ]
        # which opt-out purposes (search, ai-train, ai-input) the spider's purposes fall under
        self.signal_purposes: dict[str, int] = {}
        for i, purpose in enumerate(self.policy.purposes):
            for sp in purpose.signal_purposes:
                self.signal_purposes.setdefault(sp, i)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        provenance = provenance_of(self.crawler, item)
        if provenance is None:
            raise drop(
                self.crawler,
                "",
                Reason.UNDECIDED,
                detail=f"{type(item).__name__} item has no provenance (not yielded from a response "
                "callback, or the provenance middleware is off), so its source cannot be checked",
            )
        url = provenance.url
        objection = self.gate.check_objection(url)
        if objection is not None:
            raise drop(self.crawler, url, objection.reason, clause=objection.clause, detail=objection.detail)
        for sp, i in self.signal_purposes.items():
            decision = provenance.optout.get(sp)
            if decision is None:
                continue
            allowed = decision.get("allowed") if isinstance(decision, dict) else None
            if allowed is True:
                continue
            signal = decision.get("signal", "") if isinstance(decision, dict) else ""
            raise drop(
                self.crawler,
                url,
                Reason.OPTOUT,
                clause=self.policy.clause("purposes", i, "signal_purposes"),
                detail=f"the source page reserves {sp}" + (f" ({signal})" if signal else ""),
            )
        self._filter_media(item, url, provenance.images_reserved, provenance.images_signal)
        return item

    def _image_clause(self, signal: str) -> str:
        """The policy purpose whose opt-out purpose the page's image reservation hits:
        ``noimageindex`` reserves ``search``, ``noimageai`` the AI purposes."""
        text = signal.lower()
        for rule, purposes in IMAGE_RULE_PURPOSES.items():
            if rule in text:
                for sp in purposes:
                    if sp in self.signal_purposes:
                        return self.policy.clause("purposes", self.signal_purposes[sp], "signal_purposes")
        if self.signal_purposes:  # a reservation is only recorded for the spider's purposes
            return self.policy.clause("purposes", min(self.signal_purposes.values()), "signal_purposes")
        return self.policy.clause("purposes")

    def _filter_media(self, item: Any, source: str, reserved: bool, signal: str) -> None:
        adapter = ItemAdapter(item)
        for field in self.url_fields:
            urls = adapter.get(field)
            if not urls:
                continue
            if isinstance(urls, str):
                urls = [urls]
            kept = []
            for u in urls:
                absolute = urljoin(source, str(u))
                if reserved:
                    note_refusal(
                        self.crawler, absolute, Reason.OPTOUT, clause=self._image_clause(signal),
                        detail=f"the page {source} reserves its images" + (f" ({signal})" if signal else ""),
                        kind="image",
                    )
                    continue
                refusal = self.gate.check_objection(absolute)
                if refusal is not None:
                    note_refusal(
                        self.crawler, absolute, refusal.reason, clause=refusal.clause, detail=refusal.detail, kind="image"
                    )
                    continue
                kept.append(u)
            if len(kept) != len(urls):
                adapter[field] = kept

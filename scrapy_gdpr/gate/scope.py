"""Request gate: domain allowlist, jurisdictions, objections, private networks.

:class:`~scrapy_gdpr.gate.middleware.PolicyGateMiddleware` runs first among the downloader middlewares, so a
host the policy rules out is never contacted, not even for its robots.txt.
:class:`~scrapy_gdpr.items.gate.ItemGatePipeline` applies the same objection checks
to items. :class:`PolicyGate` holds the checks; the Playwright predicate
(:mod:`scrapy_gdpr.gate.playwright`) uses the same object for browser sub-resources.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, urlsplit

from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.reactor import is_reactor_installed

from scrapy_gdpr.audit import Reason
from scrapy_gdpr.exitcodes import refuse_startup
from scrapy_gdpr.gate.addresses import _CONTROL, METADATA_HOSTS, authority_problem, is_ip_address, non_public_address
from scrapy_gdpr.gate.denylist import deny_lists
from scrapy_gdpr.gate.objections import (
    ObjectionFileError,
    PathError,
    canonical_host,
    canonical_url,
    deployed_objection_list,
    extra_objection_list,
    objection_list,
    objections_path,
    path_forms,
    prefix_forms,
)
from scrapy_gdpr.policy import PolicyError

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

    from scrapy_gdpr.gate.objections import ObjectionList
    from scrapy_gdpr.policy import DomainRule, Policy
    from scrapy_gdpr.runtime import GdprRuntime


#: Internal request kinds (:mod:`scrapy_gdpr.internal`) of the policy's own requests that pass
#: the path rules of a listed host.
INTERNAL_PATH_EXEMPT = frozenset({"robots", "tdmrep", "rsl"})


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
        deployed = deployed_objection_list(runtime)
        if deployed is not None:  # a policy read from the project's egg: the list deployed with it
            self.objection_lists.append((deployed, self.objections_clause))
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
                with contextlib.suppress(ValueError):
                    self._terms.setdefault(canonical_url(rule.terms.url), i)
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
            # the arguments urlparse() passes: Scrapy's urlparse_cached (the offsite middleware
            # at 50, the download) finds this split in urlsplit's cache rather than parsing again
            parts = urlsplit(url, "", True)
            scheme = parts.scheme.lower()
            if scheme in ("http", "https"):
                # (the scan only when a space or a character that is not printable is there)
                if (" " in url or not url.isprintable()) and (m := _CONTROL.search(url)) is not None:
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
        if scheme not in ("http", "https") or not host:
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
            forms = path_forms(_path_of(parts if parts is not None else urlsplit(url, "", True)))
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
        if is_ip_address(host):
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
            if dot < 0 or is_ip_address(host):
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
            except Exception as exc:  # noqa: BLE001 - any resolver failure: undecided, refused
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

            d = reactor.resolver.getHostByName(host)
            d.addTimeout(self.dns_timeout, reactor)
            return [str(await maybe_deferred_to_future(d))]
        loop = asyncio.get_running_loop()
        infos = await asyncio.wait_for(loop.getaddrinfo(host, None), self.dns_timeout)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    async def check(self, url: str, internal: str | None = None) -> Refusal | None:
        decided, refusal, host, index = self.check_now(url, internal)
        return refusal if decided else await self.check_network(host, index)

    def check_now(self, url: str, internal: str | None = None) -> tuple[bool, Refusal | None, str, int | None]:
        """:meth:`check` without a coroutine: ``(decided, refusal, host, rule index)``. When
        the address check of the host is not cached yet (not decided), ``await
        check_network(host, index)`` decides."""
        # ``index`` is already the host's own rule when it has one (check_network's first step)
        refusal, index, host = self.check_static(url, internal)
        if refusal is not None:
            return True, refusal, host, index
        key = (host, index)
        network = self._network
        if key in network:  # check_network's cached path
            network.move_to_end(key)
            return True, network[key], host, index
        return False, None, host, index


def policy_gate(crawler: Crawler, rt: GdprRuntime) -> PolicyGate:
    """The crawl's shared :class:`PolicyGate` (``runtime.gate``)."""
    gate = rt.gate
    if gate is None:
        gate = rt.gate = PolicyGate(crawler, rt, objection_list(rt))
        # several machines: the objections gdpr-erase made on any of them (the
        # table beside the PostgreSQL ledger), checked by every objection lookup
        from scrapy_gdpr.gate.shared_objections import shared_objections

        shared_objections(crawler, gate.objections, rt.config.ledger)
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
                                             for o, c in gate.objection_lists[1:] if c == "GDPR_OBJECTIONS setting"]}
                       if any(c == "GDPR_OBJECTIONS setting" for _, c in gate.objection_lists) else {}),
                    # a policy read from the project's egg: the list deployed with it
                    **({"deployed_in_egg": [{"path": str(o.path), "entries_at_start": len(o)}
                                            for o, c in gate.objection_lists[1:] if c != "GDPR_OBJECTIONS setting"]}
                       if any(c != "GDPR_OBJECTIONS setting" for _, c in gate.objection_lists[1:]) else {}),
                },
            },
        )
    return gate


def _path_of(parts: SplitResult) -> str:
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")



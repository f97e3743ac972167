"""scrapy gdpr-terms URL [--save DIR]: fingerprint a terms page for a reviewer."""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import re
import socket
import sys
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urljoin, urlsplit

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError
from scrapy.http import Headers
from scrapy.responsetypes import responsetypes

from scrapy_gdpr.gate.addresses import METADATA_HOSTS, address_class, non_public_address
from scrapy_gdpr.gate.terms import MAX_SIZE, fingerprint, normalise_terms
from scrapy_gdpr.policy import PolicyError, load_policy

if TYPE_CHECKING:
    from scrapy_gdpr.policy import DomainRule, Policy

TIMEOUT = 30.0
#: Redirect hops followed, as many as the crawl's robots.txt fetch may follow at most.
MAX_REDIRECTS = 10


class FetchError(Exception):
    """The terms page cannot be fetched under the crawl's network rules."""


class Command(ScrapyCommand):
    requires_project = False
    requires_crawler_process = False
    default_settings: ClassVar[dict[str, Any]] = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "[options] <url>"

    def short_desc(self) -> str:
        return "Print the fingerprint and normalised text of a terms-of-use page"

    def long_desc(self) -> str:
        return (
            "Fetch a terms-of-use page, normalise its text exactly as the crawl's terms check "
            "does, and print its fingerprint and text for the reviewer to record in the policy "
            "(domains[].terms.fingerprint). With --save DIR, also write the text to a snapshot "
            "file, which the compliance report diffs against when the terms change. The fetch "
            "obeys the crawl's network rules: no private, loopback, link-local or cloud metadata "
            "address at any redirect hop (unless --policy lists the host with "
            f"allow_private_network: true), at most {MAX_REDIRECTS} redirects, and at most "
            f"{MAX_SIZE} bytes read after decompression."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument("--save", metavar="DIR", help="write the normalised text to DIR/<host>.terms.txt")
        parser.add_argument("--user-agent", metavar="UA", help="User-Agent to send (default: the USER_AGENT setting)")
        parser.add_argument("--policy", metavar="FILE",
                            help="apply this policy's domain rules: allow_private_network of listed domains, and "
                                 "redirects only to the URL's host or listed domains, as the crawl does")
        parser.add_argument("--text", dest="show_text", action=argparse.BooleanOptionalAction, default=True,
                            help="print the normalised text (default: yes)")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        if len(args) != 1:
            raise UsageError("give exactly one URL")
        url = args[0]
        if not re.match(r"^https?://[^\s/]+", url):
            raise UsageError(f"{url!r} is not an absolute http(s) URL")
        policy = None
        if opts.policy:
            try:
                policy = load_policy(opts.policy)
            except PolicyError as exc:
                print(f"error: the policy {opts.policy} cannot be used:\n{exc}", file=sys.stderr)
                self.exitcode = 1
                return
        assert self.settings is not None
        user_agent = opts.user_agent or self.settings.get("USER_AGENT") or "scrapy-gdpr terms check"
        try:
            status, final_url, headers, body = fetch(url, user_agent, policy)
        except FetchError as exc:
            print(f"error: cannot fetch {url}: {exc}", file=sys.stderr)
            self.exitcode = 1
            return
        if status != 200:
            print(f"error: {url} answered HTTP {status}; the crawl would refuse this domain", file=sys.stderr)
            if status in (404, 410):
                print("If the site publishes no terms of use at all, record that in the policy with "
                      "verdict: none_published (the crawl then watches this address for terms appearing)",
                      file=sys.stderr)
            self.exitcode = 1
            return
        response_cls = responsetypes.from_args(headers=headers, url=final_url, body=body)
        response = response_cls(url=final_url, status=status, headers=headers, body=body)
        text = normalise_terms(response)
        fp = fingerprint(text)
        if not text:
            ctype = (headers.get("Content-Type") or b"").decode("latin-1") or "unknown type"
            print(f"error: {url} has no readable text ({ctype}); the crawl would refuse this domain, "
                  "since changes to it cannot be detected", file=sys.stderr)
            self.exitcode = 1
            return
        print(f"url: {url}")
        if final_url != url:
            print(f"redirected to: {final_url}")
        print(f"fingerprint: {fp}")
        if opts.show_text:
            print(f"--- normalised text ({len(text.splitlines())} lines) ---")
            print(text)
            print("--- end ---")
        if opts.save:
            folder = Path(opts.save)
            folder.mkdir(parents=True, exist_ok=True)
            host = (urlsplit(url).hostname or "terms").lower()
            path = folder / f"{host}.terms.txt"
            path.write_text(text + "\n", encoding="utf-8")
            print(f"saved: {path}")
            print("Record under the domain's terms in the policy (run from the policy's folder, "
                  "the snapshot path below is already relative to the policy file):")
            print(f'  fingerprint: "{fp}"')
            print(f"  snapshot: {path.as_posix()}")


# --------------------------------------------------------------------------- the fetch


def _rule_for(policy: Policy | None, host: str) -> DomainRule | None:
    """The most specific domain rule of ``policy`` covering ``host``."""
    if policy is None:
        return None
    best: DomainRule | None = None
    for rule in policy.domains:
        covers = host == rule.domain or (rule.include_subdomains and host.endswith("." + rule.domain))
        if covers and (best is None or len(rule.domain) > len(best.domain)):
            best = rule
    return best


def _refuse_metadata(host: str) -> None:
    """Cloud metadata services are refused by name or address, whatever the policy says."""
    if host in METADATA_HOSTS or host.endswith(".metadata.google.internal"):
        raise FetchError(f"{host} is a cloud metadata service")
    try:
        kind = address_class(ipaddress.ip_address(host))
    except ValueError:
        return
    if kind is not None and kind.startswith("cloud metadata"):
        raise FetchError(f"{host} is a {kind} address")


def _address_for(host: str, port: int, policy: Policy | None) -> str:
    """The address to connect to for ``host``, checked as the crawl's gate checks it.

    Every address the name resolves to must be public (a client may connect to any of
    them); the connection then goes to the checked address, so a second lookup cannot
    answer differently (DNS rebinding).
    """
    _refuse_metadata(host)
    literal = True
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        literal = False
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise FetchError(f"{host} could not be resolved ({exc})") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
        if not addresses:
            raise FetchError(f"{host} could not be resolved") from None
    rule = _rule_for(policy, host)
    problem = non_public_address(host, addresses, literal=literal,
                                 allow_private=rule is not None and rule.allow_private_network)
    if problem is not None:
        text, metadata = problem
        if not metadata:
            text += (", which the crawl never contacts; list the domain with allow_private_network: true in the "
                     "policy given with --policy (local test sites only)")
        raise FetchError(text)
    return str(addresses[0])


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _read_capped(resp: http.client.HTTPResponse) -> bytes:
    """The body, decoded, refused once it passes :data:`MAX_SIZE` bytes after decompression."""
    codings = [c.strip().lower() for c in (resp.getheader("Content-Encoding") or "").split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
        raise FetchError(f"the body is encoded as {', '.join(codings)}, which this command does not decode")
    raw = resp.read(MAX_SIZE + 1)
    if not codings:
        if len(raw) > MAX_SIZE:
            raise FetchError(f"the page is larger than {MAX_SIZE} bytes")
        return raw
    wbits = 31 if codings[0] in ("gzip", "x-gzip") else 15
    decoder = zlib.decompressobj(wbits)
    out = b""
    data = raw
    while True:
        try:
            out += decoder.decompress(data, MAX_SIZE + 1 - len(out))
        except zlib.error as exc:
            raise FetchError(f"the body cannot be decompressed ({exc})") from None
        if len(out) > MAX_SIZE:
            raise FetchError(f"the page is larger than {MAX_SIZE} bytes (after decompression)")
        data = decoder.unconsumed_tail
        if not data:
            if len(raw) > MAX_SIZE:
                raise FetchError(f"the page is larger than {MAX_SIZE} bytes (compressed)")
            return out


def fetch(url: str, user_agent: str, policy: Policy | None = None) -> tuple[int, str, Headers, bytes]:
    """``(status, final URL, headers, body)`` of ``url``, following redirects under the crawl's rules."""
    first_host = (urlsplit(url).hostname or "").lower().rstrip(".")
    seen = {url}
    for hop in range(MAX_REDIRECTS + 1):
        try:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise FetchError(f"{url} is not a valid URL ({exc})") from None
        host = (parts.hostname or "").lower().rstrip(".")
        if parts.scheme not in ("http", "https") or not host:
            raise FetchError(f"redirected to {url}, which is not an http(s) URL")
        _refuse_metadata(host)
        if hop and policy is not None and host != first_host and _rule_for(policy, host) is None:
            raise FetchError(f"redirected to {url}: {host} is not a listed domain of {policy.path}, so the crawl "
                             "would refuse it; review the terms at their final address instead")
        address = _address_for(host, port, policy)
        cls = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        conn = cls(host, port, address, TIMEOUT)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("GET", target, headers={"User-Agent": user_agent, "Accept-Encoding": "identity"})
            resp = conn.getresponse()
            headers = _headers(resp.getheaders())
            location = resp.getheader("Location")
            if 300 <= resp.status < 400 and location:
                seen_next = urljoin(url, location.strip())
                if seen_next in seen:
                    raise FetchError(f"redirect loop at {seen_next}")
                seen.add(seen_next)
                url = seen_next
                continue
            return resp.status, url, headers, _read_capped(resp)
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"{exc.__class__.__name__}: {exc}") from None
        finally:
            conn.close()
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")


def _headers(items: Any) -> Headers:
    values: dict[str, list[str]] = {}
    for name, value in items:
        values.setdefault(name, []).append(value)
    return Headers(values)

"""What a URL's host and addresses may be: well-formed, public, never a cloud metadata service.

One definition, used by the request gate, the browser sub-resource gate, the review
document and ``scrapy gdpr-terms``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from urllib.parse import SplitResult

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
    host = host.removesuffix(".")
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


def is_ip_address(host: str) -> bool:
    """Whether ``host`` is an IP address literal (no exception for host names)."""
    if ":" not in host and not host[-1:].isdigit():
        return False  # a host name: no top-level domain is numeric
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

"""Deny lists: files of domains a crawl never contacts (``opt_out.deny_lists``).

A deny list is a published or in-house list of sites to be excluded, imported as
it is. Format (UTF-8 text)::

    # sites that asked not to be crawled
    example.org          # and every subdomain of it
    *.example.net        # the same as example.net
    bücher.example       # IDNA names are read as their xn-- form

One domain per line; ``#`` starts a comment; blank lines are ignored. Every line is
validated: a URL, a path, a second word or a name that is not a domain is an error
reported as ``file:line``, and the crawl does not start until it is fixed (a list
that cannot be read cannot say which sites must not be crawled).
"""

from __future__ import annotations

import stat
from typing import TYPE_CHECKING

from scrapy_gdpr.gate.objections import canonical_domain
from scrapy_gdpr.policy import Finding

if TYPE_CHECKING:
    from pathlib import Path

    from scrapy_gdpr.policy import Policy

#: The largest deny list read (a published list of a million domains is ~20 MB).
MAX_BYTES = 200 * 1024 * 1024
FIX = "write one domain name per line, e.g. 'example.org' (its subdomains are included); '#' starts a comment"


def read_deny_list(path: Path, key: str) -> tuple[dict[str, int], list[Finding]]:
    """``{canonical domain: line}`` of the file at ``path``, and a finding per bad line.

    ``key`` is the policy key naming the file (``opt_out.deny_lists[0]``), for the findings.
    """
    name = str(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end
            return {}, [Finding(name, None, key, "the deny list is not a regular file",
                                "point opt_out.deny_lists at a text file")]
        if info.st_size > MAX_BYTES:
            return {}, [Finding(name, None, key, f"the deny list is larger than {MAX_BYTES} bytes",
                                "split it into several files listed under opt_out.deny_lists")]
        data = path.read_bytes()
    except OSError as exc:
        return {}, [Finding(name, None, key, f"the deny list cannot be read: {exc.strerror or exc}",
                            "create the file, or fix the path (relative to the policy file)")]
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    domains: dict[str, int] = {}
    findings: list[Finding] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            findings.append(Finding(name, number, key, "the line is not UTF-8 text", "save the file as UTF-8"))
            continue
        line = text.split("#", 1)[0].strip()
        if not line:
            continue
        if len(line.split()) > 1:
            findings.append(Finding(name, number, key, f"expected one domain, got {line!r}", FIX))
            continue
        value = line.removeprefix("*.")
        if "/" in value or "://" in value:
            findings.append(Finding(name, number, key, f"{line!r} is a URL or path, not a domain name", FIX))
            continue
        try:
            domain = canonical_domain(value)
        except (ValueError, UnicodeError) as exc:
            message = str(exc) if isinstance(exc, ValueError) and "domain name" in str(exc) else \
                f"{line!r} is not a domain name ({exc})"
            findings.append(Finding(name, number, key, message, FIX))
            continue
        domains.setdefault(domain, number)
    return domains, findings


def deny_lists(policy: Policy) -> tuple[dict[str, tuple[str, int, int]], list[Finding]]:
    """Every deny list of the policy: ``{domain: (file, line, list index)}`` and the findings."""
    merged: dict[str, tuple[str, int, int]] = {}
    findings: list[Finding] = []
    for index, relative in enumerate(policy.opt_out.deny_lists):
        path = policy.resolve_path(relative)
        domains, problems = read_deny_list(path, f"opt_out.deny_lists[{index}]")
        findings.extend(problems)
        for domain, line in domains.items():
            merged.setdefault(domain, (str(path), line, index))
    return merged, findings

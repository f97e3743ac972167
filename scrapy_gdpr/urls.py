"""The URL helpers every stage shares: one definition each."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

#: host is plain text (no user info, IPv6 brackets, escapes or odd characters).
_PLAIN_HOST = re.compile(r"[a-z][a-z0-9+.-]*://([A-Za-z0-9.-]*)(?::[0-9]*)?(?=[/?#]|$)")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21}


def host_of(url: str) -> str:
    """The lower-case host of a URL, as ``urlsplit(url).hostname`` ("" if none)."""
    plain = _PLAIN_HOST.match(url)
    if plain is not None:
        return plain.group(1).lower()
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


#: ``(scheme, authority)`` -> :func:`origin_of`'s answer: every request of the crawl asks
#: for its origin, and a crawl meets few authorities. Emptied when it holds this many.
_ORIGINS: dict[tuple[str, str], str] = {}
ORIGINS_SIZE = 10_000


def origin_of(url: str | Any) -> str:
    """``scheme://host:port`` with the default port spelled out.

    ``url`` is a URL or an already split one (``urlsplit(url)``, ``urlparse_cached(request)``).
    """
    parts = urlsplit(url, "", True) if isinstance(url, str) else url  # the key urlparse() uses: one cache
    key = (parts.scheme, parts.netloc)
    origin = _ORIGINS.get(key)
    if origin is None:
        origin = _origin(parts)
        if len(_ORIGINS) >= ORIGINS_SIZE:
            _ORIGINS.clear()
        _ORIGINS[key] = origin
    return origin


def _origin(parts: Any) -> str:
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = _DEFAULT_PORTS.get(scheme, 0)
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def site_root(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL as written (lower case), where site-wide files
    such as ``/.well-known/tdmrep.json`` live; None for other URLs."""
    parts = urlsplit(url, "", True)  # the key urlparse() uses: one cache
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc.lower()}"


def mask_password(url: str) -> str:
    """``url`` with the password of its user information shown as ``***`` (for logs and documents)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    return url.replace(f":{password}@", ":***@") if password else url

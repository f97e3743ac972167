"""Size caps on the gate's own downloads (robots.txt, terms pages, tdmrep.json).

Scrapy enforces ``meta["download_maxsize"]`` twice: the HTTP download handler
cancels a body whose announced or received size is over it
(``DownloadCancelledError``), and ``HttpCompressionMiddleware`` stops decompressing
at it (``IgnoreRequest``), so a small gzip bomb never grows past the cap. What
arrives is checked once more here, for bodies that reach the gate another way
(another download handler, decompression switched off).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scrapy.exceptions import DownloadCancelledError, IgnoreRequest

if TYPE_CHECKING:
    from scrapy.http import Response

def capped(limit: int) -> dict[str, Any]:
    """Request meta capping the body at ``limit`` bytes, after decompression."""
    return {"download_maxsize": limit, "download_warnsize": 0}


def too_large(exc: BaseException) -> bool:
    """Whether a failed download was stopped by its size cap."""
    if isinstance(exc, DownloadCancelledError):
        return "max size" in str(exc)
    if isinstance(exc, IgnoreRequest):
        cause = exc.__cause__
        return (cause is not None and type(cause).__name__ == "_DecompressionMaxSizeExceeded") or (
            "DOWNLOAD_MAXSIZE" in str(exc) and "decompression" in str(exc)
        )
    return False


def body_problem(response: Response, limit: int) -> str:
    """Why the body of ``response`` cannot be used ("" when it can)."""
    codings = [
        c.strip().lower()
        for value in response.headers.getlist(b"Content-Encoding")
        for c in value.split(b",")
        if c.strip() and c.strip().lower() != b"identity"
    ]
    if codings:
        names = ", ".join(c.decode("latin-1") for c in codings)
        return (f"the body is still encoded ({names}); enable Scrapy's HttpCompressionMiddleware so it "
                "is decoded within the size cap")
    if len(response.body) > limit:
        return f"the body is {len(response.body)} bytes, over the cap of {limit} bytes"
    return ""


def size_detail(limit: int) -> str:
    """The reason text of a download stopped by its cap."""
    return f"larger than {limit} bytes (after decompression)"

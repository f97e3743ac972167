"""The objection list: URLs, URL prefixes and domains people asked to be excluded.

File format (UTF-8 text, one entry per line; ``#`` starts a comment)::

    url https://example.org/people/jane.html
    prefix https://example.org/people/jane/
    domain jane-doe.example

An erasure (``scrapy gdpr-erase``) appends its selector here with
:func:`append_objection`, so the request gate skips it on every later crawl.
(Placeholder API: the request-gate work implements fast lookups.)
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

KINDS = ("url", "prefix", "domain")


def append_objection(path: str | Path, kind: str, value: str, *, note: str = "") -> None:
    """Append one entry durably (fsync), creating the file if needed."""
    if kind not in KINDS:
        raise ValueError(f"objection kind must be one of {KINDS}, not {kind!r}")
    if any(c in value for c in "\r\n") or not value.strip():
        raise ValueError("an objection value must be one non-empty line")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    comment = f"# {stamp} {note}".rstrip() + "\n"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(comment + f"{kind} {value.strip()}\n")
        fh.flush()
        os.fsync(fh.fileno())

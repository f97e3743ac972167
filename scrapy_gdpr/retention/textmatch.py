"""What a text search of stored items (``--contains``) compares, in one place: the
decoded values of an item (never its keys, never the retention stamp), each
normalised the same way for feed files, item stores and erasure."""

from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING, Any

from scrapy_gdpr.retention.feedfiles import STAMP_FIELD

if TYPE_CHECKING:
    from collections.abc import Iterator


def normalise_text(text: str) -> str:
    """The form text is compared in: Unicode NFKC, case-folded, runs of white space
    as one space (``"ZOË  Quill"`` and ``"zoe\\u0308 quill"`` are both ``"zoë quill"``)."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.split())


def text_values(data: Any, *, top: bool = True) -> Iterator[str]:
    """The decoded values of an item, recursively: strings, and numbers as text.

    Keys are not values, and the retention stamp (the ``gdpr`` field) is left out: a
    request for the text ``search`` must not match every item of that purpose.
    """
    if isinstance(data, str):
        yield data
    elif isinstance(data, bool) or data is None:
        return
    elif isinstance(data, (int, float)):
        yield str(data)
    elif isinstance(data, dict):
        for key, value in data.items():
            if top and key == STAMP_FIELD:
                continue
            yield from text_values(value, top=False)
    elif isinstance(data, (list, tuple)):
        for value in data:
            yield from text_values(value, top=False)
    elif isinstance(data, bytes):
        return
    else:
        yield str(data)

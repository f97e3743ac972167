"""Retention: what is stored, for how long, and where to find it again.

* :mod:`.core`: the retention stamp, feed storage and exporters, manifests, purge
  and the extension that records and purges around a crawl.
* :mod:`.ledger`: the retention ledger (SQLite or PostgreSQL).
* :mod:`.feedfiles`: reading and rewriting stamped feed files.
* :mod:`.stores`: item stores beyond feed files.
* :mod:`.rights`: access and erasure for a data subject.
* :mod:`.logpurge`: expiry of logs and caches.
"""

from __future__ import annotations

import importlib
from typing import Any

# The names ``scrapy_gdpr.retention`` held when it was one module, for settings and code
# that name them (``scrapy_gdpr.retention.RetentionPipeline``). Imported on first use so
# that importing the ledger does not import the whole retention stage.
_MOVED_NAMES: dict[str, str] = {}


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    module = importlib.import_module(_MOVED_NAMES.get(name, "scrapy_gdpr.retention.core"))
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'scrapy_gdpr.retention' has no attribute {name!r}") from None

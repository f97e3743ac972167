"""The request gate: everything a request passes before it is fetched.

* :mod:`.addresses`: well-formed hosts, public addresses, no cloud metadata service.
* :mod:`.middleware` (at 40) with :mod:`.scope`: the policy's domains, jurisdictions, objections, deny lists
  and private networks (downloader middleware at 40).
* :mod:`.terms`: the reviewed terms of use and their drift (60).
* :mod:`.robots`: robots.txt, RFC 9309 (100).
* :mod:`.optout`: opt-out signals on responses (120), with :mod:`.xmp` and
  :mod:`.contentcredentials` for signals inside files.
* :mod:`.politeness` (560) and :mod:`.paywall` (570).
* :mod:`.playwright`: sub-resources of browser-rendered pages.
* :mod:`.objections`, :mod:`.denylist`: the lists people and publishers keep.
"""

from __future__ import annotations

import importlib
from typing import Any

# The names ``scrapy_gdpr.gate`` held when it was one module, for settings and code
# that name them (``scrapy_gdpr.gate.PolicyGateMiddleware``). Imported on first use so
# that importing one submodule does not import the whole gate.
_MOVED_NAMES = {
    "ItemGatePipeline": "scrapy_gdpr.items.gate",
    "PolicyGateMiddleware": "scrapy_gdpr.gate.middleware",
    **dict.fromkeys(
        ("METADATA_HOSTS", "METADATA_ADDRESSES", "url_problem", "non_public_address", "address_class"),
        "scrapy_gdpr.gate.addresses",
    ),
}


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    module = importlib.import_module(_MOVED_NAMES.get(name, "scrapy_gdpr.gate.scope"))
    try:
        return getattr(module, name)
    except AttributeError:
        raise AttributeError(f"module 'scrapy_gdpr.gate' has no attribute {name!r}") from None

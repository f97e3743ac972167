"""The module paths of the flat layout, kept importable.

Settings, docs and user code name components by their dotted path
(``scrapy_gdpr.robots.RobotsGateMiddleware``). The modules now live in packages
that follow a request and an item (``scrapy_gdpr.gate.robots``); every old path
still imports, as the very same module object, so a class has one identity
whichever path named it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType

#: old module -> the module it is now (both absolute).
MOVED: dict[str, str] = {
    f"scrapy_gdpr.{old}": f"scrapy_gdpr.{new}"
    for old, new in {
        "durations": "policy.durations",
        "policy_docs": "policy.field_docs",
        "explain": "policy.explain",
        "robots": "gate.robots",
        "optout": "gate.optout",
        "terms": "gate.terms",
        "objections": "gate.objections",
        "politeness": "gate.politeness",
        "playwright": "gate.playwright",
        "denylist": "gate.denylist",
        "paywall": "gate.paywall",
        "contentcredentials": "gate.contentcredentials",
        "xmp": "gate.xmp",
        "rsl": "gate.rsl",
        "_download": "gate._download",
        "_flight": "gate._flight",
        "provenance": "items.provenance",
        "images": "media.pipelines",
        "facepool": "media.facepool",
        "ledger": "retention.ledger",
        "feedfiles": "retention.feedfiles",
        "rights": "retention.rights",
        "stores": "retention.stores",
        "logpurge": "retention.logpurge",
        "textmatch": "retention.textmatch",
        "review": "documents.review",
        "report": "documents.report",
        "description": "documents.description",
        "state": "shared.state",
        "redisqueue": "shared.queue",
        "shared_objections": "gate.shared_objections",

        "figures": "ops.figures",
        "metrics": "ops.metrics",
        "monitors": "ops.monitors",

    }.items()
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old module path with the module that now holds its code."""

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module was executed under its own name already."""


def install() -> None:
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())

"""The opt-out decision of a page, as the gate writes it and the item gate reads it.

:class:`OptOutDecision` travels in ``request.meta[OPTOUT_META]`` (the gate's
``OptOutMiddleware`` writes it on the response), is copied into the item's
:class:`~scrapy_gdpr.items.provenance.Provenance`, and is read by the item gate. Only
:func:`optout_decision` reads the meta key: anything else a spider put there is no decision.

``response.meta["gdpr_optout"]`` and ``["gdpr_images_optout"]`` (documented in
``docs/optout.md``) are plain views of it for spiders (:meth:`OptOutDecision.meta_views`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from scrapy.http import Request, Response

#: The ``meta`` key of the decision.
OPTOUT_META = "gdpr_optout_decision"


@dataclass(frozen=True)
class PurposeDecision:
    """Whether one opt-out purpose (search, ai-train, ai-input) is allowed on a page."""

    allowed: bool
    #: The signals that reserve it, as written (the first one is quoted in refusals).
    signals: tuple[str, ...] = ()
    #: The refusal reason of a reserved purpose: "optout", or "license" (an RSL licence).
    reason: str = ""

    @property
    def signal(self) -> str:
        return self.signals[0] if self.signals else ""


@dataclass(frozen=True)
class OptOutDecision:
    """The opt-out decision of one page, for the purposes of the crawl's policy."""

    purposes: Mapping[str, PurposeDecision] = field(default_factory=lambda: MappingProxyType({}))
    #: Whether the page reserves its images (noimageindex / noimageai), and the signal saying so.
    images_reserved: bool = False
    images_signal: str = ""

    def reserved(self, purpose: str) -> PurposeDecision | None:
        """The decision for ``purpose`` when the page reserves it, else None."""
        decision = self.purposes.get(purpose)
        return decision if decision is not None and not decision.allowed else None

    def meta_views(self) -> dict[str, Any]:
        """The documented plain-dict views for spiders (``gdpr_optout``, ``gdpr_images_optout``)."""
        optout: dict[str, Any] = {}
        for p, d in self.purposes.items():
            signals = d.signals
            view = optout[p] = {"allowed": d.allowed, "signal": signals[0] if signals else "", "signals": list(signals)}
            if not d.allowed:
                view["reason"] = d.reason or "optout"
        return {
            "gdpr_optout": optout,
            "gdpr_images_optout": {"reserved": self.images_reserved, "signal": self.images_signal},
        }


def optout_decision(message: Request | Response) -> OptOutDecision | None:
    """The opt-out decision attached to a request or response, or None."""
    decision = message.meta.get(OPTOUT_META)
    return decision if isinstance(decision, OptOutDecision) else None

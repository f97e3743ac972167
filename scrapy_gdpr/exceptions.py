"""Exceptions raised by scrapy-gdpr components.

Refusals subclass Scrapy's own exceptions so that Scrapy's stats name them
(``downloader/exception_type_count/scrapy_gdpr.exceptions.PolicyViolation``,
``item_dropped_reasons_count/GdprDropItem``) and existing handlers keep working.
"""

from __future__ import annotations

from scrapy.exceptions import DropItem, IgnoreRequest

from scrapy_gdpr.policy import PolicyError

__all__ = ["GdprDropItem", "PolicyError", "PolicyViolation"]


class PolicyViolation(IgnoreRequest):
    """A request refused by the request gate; ``reason`` is the reason code."""

    def __init__(self, reason: str, message: str, *, clause: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.clause = clause


class GdprDropItem(DropItem):
    """An item (or its image) refused by the policy; ``reason`` is the reason code."""

    def __init__(self, reason: str, message: str, *, clause: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.clause = clause

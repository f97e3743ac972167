"""The item gate: drops items from objected-to or opted-out pages and strips reserved image URLs.

:class:`ItemGatePipeline` (item pipeline at 10) runs before the media pipelines, so a
reserved or objected-to image is never requested.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from itemadapter import ItemAdapter

from scrapy_gdpr._component import component_runtime
from scrapy_gdpr.audit import Reason, drop, note_refusal
from scrapy_gdpr.gate.optout import IMAGE_RULE_PURPOSES
from scrapy_gdpr.gate.scope import policy_gate
from scrapy_gdpr.items.provenance import provenance_of

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler


class ItemGatePipeline:
    """Drops items from objected-to or opted-out pages; strips reserved image URLs.

    Runs before the images pipeline, so a reserved or objected-to image is never
    requested.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)
        self.policy = self.runtime.policy
        self.gate = policy_gate(crawler, self.runtime)
        settings = crawler.settings
        self.url_fields = [
            settings.get("IMAGES_URLS_FIELD") or "image_urls",
            settings.get("FILES_URLS_FIELD") or "file_urls",
        ]
        # which opt-out purposes (search, ai-train, ai-input) the spider's purposes fall under
        self.signal_purposes = self.policy.signal_purposes()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        provenance = provenance_of(self.crawler, item)
        if provenance is None:
            raise drop(
                self.runtime,
                "",
                Reason.UNDECIDED,
                detail=f"{type(item).__name__} item has no provenance (not yielded from a response "
                "callback, or the provenance middleware is off), so its source cannot be checked",
            )
        url = provenance.url
        objection = self.gate.check_objection(url)
        if objection is not None:
            raise drop(self.runtime, url, objection.reason, clause=objection.clause, detail=objection.detail)
        optout = provenance.optout
        for sp, i in self.signal_purposes.items():
            reserved = optout.reserved(sp) if optout is not None else None
            if reserved is None:
                continue
            signal = reserved.signal
            reason = reserved.reason or Reason.OPTOUT
            raise drop(
                self.runtime,
                url,
                reason,
                clause=self.policy.clause("purposes", i, "signal_purposes"),
                detail=(f"the licence of the source page refuses {sp}" if reason == Reason.LICENSE
                        else f"the source page reserves {sp}") + (f" ({signal})" if signal else ""),
            )
        if optout is not None:
            self._filter_media(item, url, optout.images_reserved, optout.images_signal)
        else:
            self._filter_media(item, url, False, "")
        return item

    def _image_clause(self, signal: str) -> str:
        """The policy purpose whose opt-out purpose the page's image reservation hits:
        ``noimageindex`` reserves ``search``, ``noimageai`` the AI purposes."""
        text = signal.lower()
        for rule, purposes in IMAGE_RULE_PURPOSES.items():
            if rule in text:
                for sp in purposes:
                    if sp in self.signal_purposes:
                        return self.policy.clause("purposes", self.signal_purposes[sp], "signal_purposes")
        if self.signal_purposes:  # a reservation is only recorded for the spider's purposes
            return self.policy.clause("purposes", min(self.signal_purposes.values()), "signal_purposes")
        return self.policy.clause("purposes")

    def _filter_media(self, item: Any, source: str, reserved: bool, signal: str) -> None:
        adapter = ItemAdapter(item)
        for field in self.url_fields:
            urls = adapter.get(field)
            if not urls:
                continue
            if isinstance(urls, str):
                urls = [urls]
            kept = []
            for u in urls:
                absolute = urljoin(source, str(u))
                if reserved:
                    note_refusal(
                        self.runtime, absolute, Reason.OPTOUT, clause=self._image_clause(signal),
                        detail=f"the page {source} reserves its images" + (f" ({signal})" if signal else ""),
                        kind="image",
                    )
                    continue
                refusal = self.gate.check_objection(absolute)
                if refusal is not None:
                    note_refusal(
                        self.runtime, absolute, refusal.reason, clause=refusal.clause, detail=refusal.detail, kind="image"
                    )
                    continue
                kept.append(u)
            if len(kept) != len(urls):
                adapter[field] = kept

"""HTTP 402 Payment Required (pay-per-crawl): refused, never retried.

:class:`PaymentRequiredMiddleware` (downloader middleware at 570) sees every
response before Scrapy's ``RetryMiddleware`` (550) could retry it, so a 402 is
refused even when a project lists 402 in ``RETRY_HTTP_CODES``. A site that asks a
crawler to pay has said "not for free"; the crawl records no licence, so the
request is refused with reason ``payment_required``, whether or not the answer
names a price (``crawler-price``, Cloudflare's pay-per-crawl header). The price,
when given, is logged and audited; nothing is ever paid.

Internal fetches (robots.txt, terms pages, ``tdmrep.json``) are left to their own
components, which treat a 402 as the status it is.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from scrapy_gdpr._component import chainable, component_runtime
from scrapy_gdpr.audit import Reason, refuse
from scrapy_gdpr.internal import internal_kind

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Request, Response

logger = logging.getLogger(__name__)

#: Response headers that carry the price of a pay-per-crawl page, first found wins.
PRICE_HEADERS = ("crawler-price", "crawler-exact-price", "x-price")
#: The longest price text kept for the log (a header is free text).
MAX_PRICE_TEXT = 200


@chainable
class PaymentRequiredMiddleware:
    """Downloader middleware refusing HTTP 402 answers (``opt_out.payment_required``)."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)
        policy = self.runtime.policy
        self.enabled = policy.opt_out.payment_required
        self.clause = policy.clause("opt_out", "payment_required")

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    # a coroutine: Scrapy awaits it as it is (a plain return value it wraps in one first)
    async def process_response(self, request: Request, response: Response) -> Response:
        if response.status != 402 or not self.enabled or internal_kind(request):
            return response
        price = ""
        for name in PRICE_HEADERS:
            raw = response.headers.get(name)
            if raw:
                price = f"{name}: {raw.decode('latin-1').strip()[:MAX_PRICE_TEXT]}"
                break
        stats = self.crawler.stats
        assert stats is not None
        stats.inc_value("gdpr/payment_required/priced" if price else "gdpr/payment_required/unpriced")
        detail = (f"HTTP 402 Payment Required ({price}): pay-per-crawl, nothing is paid, not retried" if price
                  else "HTTP 402 Payment Required: pay-per-crawl, nothing is paid, not retried")
        logger.info("%(url)s: %(detail)s", {"url": response.url, "detail": detail},
                    extra={"spider": self.crawler.spider})
        raise refuse(self.runtime, response.url, Reason.PAYMENT_REQUIRED, clause=self.clause, detail=detail)

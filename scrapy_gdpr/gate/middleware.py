"""The policy gate as a downloader middleware (at 40, first of all): a host the policy rules
out is never contacted, not even for its robots.txt.

The checks are :class:`~scrapy_gdpr.gate.scope.PolicyGate`'s; a browser-rendered request
is handed to :mod:`scrapy_gdpr.gate.playwright`, which guards the page before it navigates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scrapy_gdpr._component import chainable, component_runtime
from scrapy_gdpr.audit import refuse
from scrapy_gdpr.exceptions import PolicyViolation
from scrapy_gdpr.gate.playwright import prepare_request, refused_navigation
from scrapy_gdpr.gate.scope import policy_gate
from scrapy_gdpr.internal import internal_kind

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.http import Request


@chainable
class PolicyGateMiddleware:
    """Downloader middleware refusing what the policy rules out, before any contact.

    Every request is checked: the spider's, redirects, robots.txt, terms pages and
    media downloads. See :class:`PolicyGate` for the order of the checks.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.runtime = component_runtime(crawler)
        self.gate = policy_gate(crawler, self.runtime)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> Self:
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        url = request.url
        gate = self.gate
        decided, refusal, host, index = gate.check_now(url, internal_kind(request))
        if not decided:  # the host's addresses are not checked yet
            refusal = await gate.check_network(host, index)
        if refusal is not None:
            raise refuse(self.runtime, url, refusal.reason, clause=refusal.clause, detail=refusal.detail)
        if request.meta.get("playwright"):
            # the browser follows redirects itself: guard its page before it navigates
            prepare_request(self.crawler, request)

    def process_exception(self, request: Request, exception: Exception) -> None:
        """A browser request whose navigation was redirected to a refused URL fails in
        the browser (``net::ERR_BLOCKED_BY_CLIENT``); it is a refusal, already audited
        by the hop guard: raise it as one, so Scrapy does not log a download error."""
        if not request.meta.get("playwright"):
            return
        refused = refused_navigation(request)
        if refused is not None:
            reason, clause, detail = refused
            raise PolicyViolation(reason, f"Refused ({reason}): {detail}", clause=clause)

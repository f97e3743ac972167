"""Sub-resources of browser-rendered pages (scrapy-playwright).

Only the page request of a browser-rendered page is a Scrapy request; the images,
scripts, styles and XHR the browser then asks for never pass Scrapy's downloader
middlewares. scrapy-playwright's one hook for them is ``PLAYWRIGHT_ABORT_REQUEST``,
a predicate called for every request the page makes. :class:`SubresourceGate` is
that predicate, built from the policy: domains, jurisdictions, objections, private
networks (the same :class:`~scrapy_gdpr.gate.PolicyGate` as the downloader
middleware) and robots.txt (``runtime.services["robots"]``). The add-on installs it
with :func:`update_settings`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy.settings import SETTINGS_PRIORITIES
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.misc import load_object

from scrapy_gdpr.audit import Reason, note_refusal
from scrapy_gdpr.gate import Refusal, policy_gate
from scrapy_gdpr.runtime import get_runtime

if TYPE_CHECKING:
    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings
    from typing_extensions import Self

    from scrapy_gdpr.policy import Policy

logger = logging.getLogger(__name__)

SETTING = "PLAYWRIGHT_ABORT_REQUEST"
RULES_FLAG = "--host-resolver-rules="
#: Browser-internal schemes that never reach the network.
LOCAL_SCHEMES = frozenset({"data", "blob", "about", "chrome-extension"})


class SubresourceGate:
    """``PLAYWRIGHT_ABORT_REQUEST`` predicate: True (abort) for every browser request
    the policy rules out, each refusal counted and audited with ``kind="subresource"``.

    ``user_predicate`` is a predicate the user had set; a request is aborted when
    either says so. Anything that goes wrong while deciding aborts the request.
    """

    def __init__(self, crawler: Crawler, user_predicate: Callable[[Any], Any] | None = None) -> None:
        self.crawler = crawler
        self.user_predicate = user_predicate

    def __repr__(self) -> str:
        wrapped = f" wrapping {self.user_predicate!r}" if self.user_predicate else ""
        return f"<{type(self).__module__}.{type(self).__qualname__}{wrapped}>"

    # the settings hold this object; copying them must not copy the crawler
    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self

    async def __call__(self, request: Any) -> bool:
        url = str(request.url)
        try:
            refusal = await _on_reactor_thread(self.refusal(url))
        except Exception as exc:  # noqa: BLE001 - cannot decide: abort
            logger.exception("GDPR: could not check browser request %(url)s", {"url": url})
            refusal = Refusal(Reason.UNDECIDED, "", f"the check failed: {exc.__class__.__name__}: {exc}")
        stats = self.crawler.stats
        if refusal is not None:
            detail = f"{refusal.detail} (browser {_resource_type(request)} request{_frame_of(request)})"
            note_refusal(self.crawler, url, refusal.reason, clause=refusal.clause, detail=detail, kind="subresource")
            if stats is not None:
                stats.inc_value("gdpr/playwright/aborted")
            return True
        if self.user_predicate is not None:
            result = self.user_predicate(request)
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return True
        if stats is not None:
            stats.inc_value("gdpr/playwright/allowed")
        return False

    async def refusal(self, url: str) -> Refusal | None:
        """Why ``url`` may not be requested by the browser, or None."""
        scheme = urlsplit(url).scheme.lower()
        if scheme in LOCAL_SCHEMES:
            return None
        rt = get_runtime(self.crawler)
        refusal = await policy_gate(self.crawler, rt).check(url)
        if refusal is not None:
            return refusal
        robots = rt.services.get("robots")
        if robots is None:
            return Refusal(Reason.UNDECIDED, "", "no robots.txt service is running to check it (fail closed)")
        allowed, reason, detail = await robots.allows(url)
        if allowed:
            return None
        try:
            code = Reason(reason)
        except ValueError:
            code = Reason.ROBOTS
        return Refusal(code, "", detail or "disallowed by robots.txt")


async def _on_reactor_thread(coro: Awaitable[Refusal | None]) -> Refusal | None:
    """Await ``coro`` on the reactor's thread (DNS, robots.txt and the audit log live
    there); scrapy-playwright may run the predicate on its own thread's event loop
    (always on Windows)."""
    from twisted.python import threadable

    if threadable.ioThread is None or threadable.isInIOThread():
        return await coro
    from twisted.internet import reactor

    future: concurrent.futures.Future[Refusal | None] = concurrent.futures.Future()

    def start() -> None:
        d = deferred_from_coro(coro)
        d.addCallbacks(future.set_result, lambda failure: future.set_exception(failure.value))

    reactor.callFromThread(start)  # type: ignore[attr-defined]
    return await asyncio.wrap_future(future)


def _resource_type(request: Any) -> str:
    return str(getattr(request, "resource_type", "") or "unknown")


def _frame_of(request: Any) -> str:
    try:
        frame_url = request.frame.url
    except Exception:  # noqa: BLE001 - service workers have no frame
        return ""
    return f" from {frame_url}" if frame_url else ""


def update_settings(settings: BaseSettings, crawler: Crawler) -> None:
    """Add-on hook: install :class:`SubresourceGate` as ``PLAYWRIGHT_ABORT_REQUEST``,
    and, for a locally launched Chromium, host rules from the policy
    (:func:`browser_host_rules`) in ``PLAYWRIGHT_LAUNCH_OPTIONS["args"]``.

    A predicate the user set is kept and wrapped (abort if either says abort). The
    settings are written at the add-on priority, or at the user's priority when theirs
    is higher, so that an explicit ``None`` cannot switch the checks off.
    """
    current = settings.get(SETTING)
    if isinstance(current, SubresourceGate):
        return
    user = load_object(current) if current else None
    priority = max(settings.getpriority(SETTING) or 0, SETTINGS_PRIORITIES["addon"])
    settings.set(SETTING, SubresourceGate(crawler, user), priority)
    _install_host_rules(settings, get_runtime(crawler).policy)


def browser_host_rules(policy: Policy, user_rules: str = "", extra_hosts: list[str] | tuple[str, ...] = ()) -> str:
    """Chromium ``--host-resolver-rules`` that let the browser reach listed hosts only.

    Every other name (and every IP address that is not a listed domain) fails to
    resolve, which also stops what ``PLAYWRIGHT_ABORT_REQUEST`` never sees: redirect
    hops, preconnects, service workers, WebSockets. A listed host that the user's
    own rules map (``MAP *.test 127.0.0.1``) keeps that mapping; the user's other
    rules are dropped. ``extra_hosts`` (a proxy server) stay reachable.
    """
    user: list[tuple[str, str]] = []
    for raw in user_rules.split(","):
        parts = raw.split()
        if len(parts) == 3 and parts[0].upper() == "MAP":
            user.append((parts[1].lower(), parts[2]))
    patterns: list[str] = []
    for rule in policy.domains:
        host = rule.domain.strip("[]")
        try:
            ip = ipaddress.ip_address(host)
            patterns.append(f"[{ip}]" if ip.version == 6 else str(ip))
            continue
        except ValueError:
            pass
        patterns.append(host)
        if rule.include_subdomains:
            patterns.append(f"*.{host}")
    patterns.extend(h for h in extra_hosts if h)
    out: list[str] = []
    for pattern in dict.fromkeys(patterns):
        target = next((t for p, t in user if fnmatchcase(pattern, p)), None)
        out.append(f"MAP {pattern} {target}" if target is not None else f"EXCLUDE {pattern}")
    out.append("MAP * ~NOTFOUND")
    return ", ".join(out)


def _with_host_rules(options: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """``options`` (launch or persistent-context kwargs) with our host rules in ``args``."""
    options = copy.deepcopy(options)
    args = [str(a) for a in options.get("args") or []]
    user_rules = next((a[len(RULES_FLAG) :] for a in reversed(args) if a.startswith(RULES_FLAG)), "")
    proxy = (options.get("proxy") or {}).get("server") or ""
    proxy_host = urlsplit(proxy if "://" in proxy else f"http://{proxy}").hostname if proxy else ""
    rules = browser_host_rules(policy, user_rules, (proxy_host or "",))
    options["args"] = [a for a in args if not a.startswith(RULES_FLAG)] + [RULES_FLAG + rules]
    return options


def _install_host_rules(settings: BaseSettings, policy: Policy) -> None:
    browser = settings.get("PLAYWRIGHT_BROWSER_TYPE") or "chromium"
    if browser != "chromium" or settings.get("PLAYWRIGHT_CDP_URL") or settings.get("PLAYWRIGHT_CONNECT_URL"):
        logger.warning(
            "GDPR: browser sub-resources are checked by PLAYWRIGHT_ABORT_REQUEST only; redirects "
            "followed inside the browser are not (host rules need a locally launched Chromium)"
        )
        return
    name = "PLAYWRIGHT_LAUNCH_OPTIONS"
    priority = max(settings.getpriority(name) or 0, SETTINGS_PRIORITIES["addon"])
    settings.set(name, _with_host_rules(settings.getdict(name), policy), priority)
    contexts = settings.getdict("PLAYWRIGHT_CONTEXTS")
    if any(isinstance(kw, dict) and kw.get("user_data_dir") for kw in contexts.values()):
        contexts = {
            key: _with_host_rules(kw, policy) if isinstance(kw, dict) and kw.get("user_data_dir") else kw
            for key, kw in contexts.items()
        }
        priority = max(settings.getpriority("PLAYWRIGHT_CONTEXTS") or 0, SETTINGS_PRIORITIES["addon"])
        settings.set("PLAYWRIGHT_CONTEXTS", contexts, priority)

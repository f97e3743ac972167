"""Sub-resources of browser-rendered pages (scrapy-playwright).

Only the page request of a browser-rendered page is a Scrapy request; the images,
scripts, styles and XHR the browser then asks for never pass Scrapy's downloader
middlewares. scrapy-playwright's one hook for them is ``PLAYWRIGHT_ABORT_REQUEST``,
a predicate called for every request the page makes. :class:`SubresourceGate` is
that predicate, built from the policy: domains, jurisdictions, objections, private
networks (the same :class:`~scrapy_gdpr.gate.scope.PolicyGate` as the downloader
middleware) and robots.txt (``runtime.robots``). The add-on installs it
with :func:`update_settings`.

Playwright's routing sees only the first URL of a request: redirect hops are
followed inside the browser without it. So, in Chromium, the predicate also opens a
DevTools session on each page it sees (:class:`_HopGuard`) that pauses every
request at the network layer, redirect hops included, and lets a hop go on only
when the same checks pass.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import ipaddress
import logging
import weakref
from collections.abc import Awaitable, Callable
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy.settings import SETTINGS_PRIORITIES
from scrapy.utils.defer import deferred_from_coro
from scrapy.utils.misc import load_object

from scrapy_gdpr.audit import Reason, note_refusal
from scrapy_gdpr.gate.scope import Refusal, policy_gate
from scrapy_gdpr.runtime import get_runtime

if TYPE_CHECKING:
    from typing import Self

    from scrapy.crawler import Crawler
    from scrapy.settings import BaseSettings

    from scrapy_gdpr.policy import Policy
    from scrapy_gdpr.runtime import GdprRuntime

logger = logging.getLogger(__name__)

SETTING = "PLAYWRIGHT_ABORT_REQUEST"
RULES_FLAG = "--host-resolver-rules="
#: Browser-internal schemes that never reach the network.
LOCAL_SCHEMES = frozenset({"data", "blob", "about", "chrome-extension"})
#: What a refused redirect hop fails with in the browser (``net::ERR_BLOCKED_BY_CLIENT``).
HOP_ERROR = "BlockedByClient"
#: scrapy-playwright's per-request page hook, and where a user's own hook is kept.
PAGE_INIT = "playwright_page_init_callback"
USER_PAGE_INIT = "gdpr_page_init_callback"
#: Names which crawler's :class:`SubresourceGate` prepares a page (a string: meta stays picklable).
GATE_KEY = "gdpr_browser_gate"
#: Set on a browser request whose navigation the hop guard refused: (reason, clause, detail).
REFUSED_META = "gdpr_browser_refused"

#: The crawlers' predicates by key, for :func:`guard_page`.
_GATES: weakref.WeakValueDictionary[str, SubresourceGate] = weakref.WeakValueDictionary()
# page states besides a guard: DevTools not available (warned once), or guarding failed
_NO_CDP = "no-cdp"
_FAILED = "failed"


class SubresourceGate:
    """``PLAYWRIGHT_ABORT_REQUEST`` predicate: True (abort) for every browser request
    the policy rules out, each refusal counted and audited with ``kind="subresource"``.

    ``user_predicate`` is a predicate the user had set; a request is aborted when
    either says so. Anything that goes wrong while deciding aborts the request.
    """

    def __init__(self, crawler: Crawler, user_predicate: Callable[[Any], Any] | None = None) -> None:
        self.crawler = crawler
        self.user_predicate = user_predicate
        #: pages with a hop guard, or _NO_CDP / _FAILED
        self._guarded: weakref.WeakKeyDictionary[Any, _HopGuard | str] = weakref.WeakKeyDictionary()
        self._no_cdp_logged = False
        self._contexts: weakref.WeakSet[Any] = weakref.WeakSet()
        self.key = f"{id(crawler):x}-{id(self):x}"
        _GATES[self.key] = self

    def __repr__(self) -> str:
        wrapped = f" wrapping {self.user_predicate!r}" if self.user_predicate else ""
        return f"<{type(self).__module__}.{type(self).__qualname__}{wrapped}>"

    @property
    def runtime(self) -> GdprRuntime:
        """The crawl's runtime, made on first use (the gate exists before the crawl's components)."""
        return get_runtime(self.crawler)

    # the settings hold this object; copying them must not copy the crawler
    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self

    async def __call__(self, request: Any) -> bool:
        url = str(request.url)
        refusal = await self.decide(url)
        stats = self.crawler.stats
        if refusal is None:
            refusal = await self._unguarded(request)
        if refusal is not None:
            detail = f"{refusal.detail} (browser {_resource_type(request)} request{_frame_of(request)})"
            note_refusal(self.runtime, url, refusal.reason, clause=refusal.clause, detail=detail, kind="subresource")
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

    async def decide(self, url: str) -> Refusal | None:
        """:meth:`refusal` on the reactor's thread; a check that fails refuses."""
        try:
            return await _on_reactor_thread(self.refusal(url))
        except Exception as exc:
            logger.exception("GDPR: could not check browser request %(url)s", {"url": url})
            clause = get_runtime(self.crawler).policy.clause("domains")
            return Refusal(Reason.UNDECIDED, clause, f"the check failed: {exc.__class__.__name__}: {exc}")

    async def refusal(self, url: str) -> Refusal | None:
        """Why ``url`` may not be requested by the browser, or None."""
        scheme = urlsplit(url).scheme.lower()
        if scheme in LOCAL_SCHEMES:
            return None
        rt = get_runtime(self.crawler)
        refusal = await policy_gate(self.crawler, rt).check(url)
        if refusal is not None:
            return refusal
        robots = rt.robots
        if robots is None:
            return Refusal(
                Reason.UNDECIDED,
                self._robots_clause(Reason.ROBOTS_UNREACHABLE),
                "no robots.txt service is running to check it (fail closed)",
            )
        allowed, reason, detail = await robots.allows(url)
        if allowed:
            return None
        try:
            code = Reason(reason)
        except ValueError:
            code = Reason.ROBOTS
        return Refusal(code, self._robots_clause(code), detail or "disallowed by robots.txt")

    def _robots_clause(self, reason: Reason) -> str:
        """The policy clause behind a robots.txt decision (as the robots gate cites it)."""
        policy = get_runtime(self.crawler).policy
        if reason == Reason.OPTOUT:
            return policy.clause("purposes")
        if reason == Reason.ROBOTS_UNREACHABLE:
            return policy.clause("robots")
        return policy.clause("crawler", "product_token")

    # -- redirect hops ------------------------------------------------------------------
    async def _unguarded(self, request: Any) -> Refusal | None:
        """A refusal when the request's page has no working hop guard (fail closed)."""
        page = _page_of(request)
        if page is None:
            if _is_navigation(request):
                # a window the page opens navigates before its frame exists: nothing
                # can be put on it before this request starts, so its hops would be unseen
                return Refusal(
                    Reason.UNDECIDED,
                    get_runtime(self.crawler).policy.clause("domains"),
                    "its redirect hops cannot be checked: it started before the page was prepared "
                    "(a window opened by the page)",
                )
            return None  # a service worker, or a test double: the host rules still apply
        state = self._guarded.get(page)
        if isinstance(state, _HopGuard) or state == _NO_CDP:
            return None
        if state is None:
            # not prepared by guard_page (the Scrapy request did not pass the policy
            # gate middleware): guard the page now; this request started before the
            # guard, so its own redirect hops could not be seen: refuse it
            await self.prepare(page)
            state = self._guarded.get(page)
            if state == _NO_CDP:
                return None
        clause = get_runtime(self.crawler).policy.clause("domains")
        why = "the page could not be prepared" if state == _FAILED else "it started before the page was prepared"
        return Refusal(Reason.UNDECIDED, clause, f"its redirect hops cannot be checked: {why}")

    async def prepare(self, page: Any) -> None:
        """Attach a :class:`_HopGuard` to ``page`` once, before it navigates (Chromium
        only; other browsers and remote ones without DevTools get the predicate alone,
        with a warning). A failure marks the page, and the predicate then aborts all its
        requests."""
        if page in self._guarded:
            return
        try:
            session = await page.context.new_cdp_session(page)
        except Exception as exc:  # noqa: BLE001 - whatever the browser raises, the page is not guarded
            if (self.crawler.settings.get("PLAYWRIGHT_BROWSER_TYPE") or "chromium") == "chromium":
                self._guarded[page] = _FAILED  # Chromium has the protocol: a real failure
                logger.warning("GDPR: a browser page could not be prepared for redirect checks: %(e)r", {"e": exc})
                return
            self._guarded[page] = _NO_CDP
            if not self._no_cdp_logged:
                self._no_cdp_logged = True
                logger.warning(
                    "GDPR: redirect hops inside the browser cannot be checked (%(error)s); only "
                    "the first URL of each browser request passes the gate. Use Chromium.",
                    {"error": f"{exc.__class__.__name__}: {exc}"},
                )
            return
        guard = _HopGuard(self, page, session)
        try:
            await guard.start()
            context = page.context
            if context not in self._contexts:
                # pages the page opens (window.open, target=_blank) are not routed by
                # scrapy-playwright: a context route sends their requests to this
                # predicate (page routes take precedence, so routed pages never get here)
                await context.route("**", self._context_route)
                self._contexts.add(context)
        except Exception as exc:  # noqa: BLE001 - whatever the browser raises, the page is not guarded
            self._guarded[page] = _FAILED
            logger.warning("GDPR: a browser page could not be prepared for redirect checks: %(e)r", {"e": exc})
            return
        self._guarded[page] = guard

    async def _context_route(self, route: Any, request: Any) -> None:
        try:
            abort = await self(request)
        except Exception:
            logger.exception("GDPR: could not check browser request %(url)s", {"url": request.url})
            abort = True
        if abort:
            await route.abort()
        else:
            await route.fallback()

    async def check_hop(self, url: str, resource_type: str, page_url: str) -> Refusal | None:
        """Why a redirect hop paused by a :class:`_HopGuard` may not go on, or None; a
        refusal is counted and audited like any other browser request."""
        refusal = await self.decide(url)
        stats = self.crawler.stats
        if refusal is None:
            if stats is not None:
                stats.inc_value("gdpr/playwright/redirect_hops")
            return None
        detail = f"{refusal.detail} (redirect hop of a browser {resource_type} request"
        detail += f" from {page_url})" if page_url else ")"
        note_refusal(self.runtime, url, refusal.reason, clause=refusal.clause, detail=detail, kind="subresource")
        if stats is not None:
            stats.inc_value("gdpr/playwright/aborted")
        return Refusal(refusal.reason, refusal.clause, f"{detail} at {url}")


#: Tasks handling paused requests, referenced until done.
_TASKS: set[asyncio.Future[Any]] = set()


class _HopGuard:
    """A DevTools session on one page pausing every request at the network layer
    (``Fetch.enable``), redirect hops included, which Playwright's routing never
    shows. A hop goes on only if :meth:`SubresourceGate.check_hop` says so; the
    first URL of a request was already checked by the predicate and goes on at once.
    """

    def __init__(self, gate: SubresourceGate, page: Any, session: Any) -> None:
        self.gate = gate
        self.page = page
        self.session = session
        self.main_frame = ""
        #: the meta of the Scrapy request the page is rendering (set by guard_page):
        #: a refused hop of its navigation is recorded there, so that the download's
        #: error becomes the refusal it is
        self.meta: dict[str, Any] | None = None

    async def start(self) -> None:
        self.session.on("Fetch.requestPaused", self._paused)
        await self.session.send("Fetch.enable", {"patterns": [{"urlPattern": "*", "requestStage": "Request"}]})
        try:
            tree = await self.session.send("Page.getFrameTree")
            self.main_frame = str(tree["frameTree"]["frame"]["id"])
        except Exception:  # noqa: BLE001, S110 - only the error's wording depends on it
            pass

    def _paused(self, event: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self._handle(event))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    async def _handle(self, event: dict[str, Any]) -> None:
        request_id = event["requestId"]
        try:
            refusal = None
            if event.get("redirectedRequestId"):
                url = str(event["request"]["url"])
                kind = str(event.get("resourceType") or "unknown").lower()
                try:
                    page_url = str(self.page.url)
                except Exception:  # noqa: BLE001 - the page is gone
                    page_url = ""
                refusal = await self.gate.check_hop(url, kind, page_url)
                meta = self.meta
                if refusal is not None and meta is not None and kind == "document" and (
                    event.get("frameId") == self.main_frame
                ):
                    meta[REFUSED_META] = (str(refusal.reason), refusal.clause, refusal.detail)
            if refusal is None:
                await self.session.send("Fetch.continueRequest", {"requestId": request_id})
            else:
                await self.session.send("Fetch.failRequest", {"requestId": request_id, "errorReason": HOP_ERROR})
        except Exception as exc:  # noqa: BLE001 - whatever the browser raises, the request fails closed
            logger.debug("GDPR: browser request %(id)s failed closed: %(e)r", {"id": request_id, "e": exc})
            with contextlib.suppress(Exception):  # the page or the browser is gone
                await self.session.send("Fetch.failRequest", {"requestId": request_id, "errorReason": HOP_ERROR})


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

    reactor.callFromThread(start)
    return await asyncio.wrap_future(future)


async def guard_page(page: Any, request: Any) -> None:
    """``playwright_page_init_callback`` set on every browser request by
    :func:`prepare_request`: guard ``page`` before it navigates, then run the user's
    own page init callback, if any."""
    gate = _GATES.get(str(request.meta.get(GATE_KEY, "")))
    if gate is not None:
        await gate.prepare(page)
        guard = gate._guarded.get(page)
        if isinstance(guard, _HopGuard):
            guard.meta = request.meta
    user = request.meta.get(USER_PAGE_INIT)
    if user:
        await load_object(user)(page, request)


def refused_navigation(request: Any) -> tuple[str, str, str] | None:
    """``(reason, clause, detail)`` when the hop guard refused a redirect hop of the
    browser request's own navigation (already audited), else None."""
    refused = request.meta.pop(REFUSED_META, None)
    if isinstance(refused, tuple) and len(refused) == 3:
        return refused
    return None


def prepare_request(crawler: Crawler, request: Any) -> None:
    """For a browser request (``meta["playwright"]``): make scrapy-playwright call
    :func:`guard_page` on its page before navigating (called by the policy gate
    middleware). A user's ``playwright_page_init_callback`` is kept and called after."""
    gate = crawler.settings.get(SETTING)
    if not isinstance(gate, SubresourceGate) or not request.meta.get("playwright"):
        return
    meta = request.meta
    meta.pop(REFUSED_META, None)  # a retry starts afresh
    current = meta.get(PAGE_INIT)
    if current != GUARD_PAGE:
        if current:
            meta[USER_PAGE_INIT] = current
        meta[PAGE_INIT] = GUARD_PAGE
    meta[GATE_KEY] = gate.key


# The documented path (docs/gate.md), stable across releases: it travels in request.meta
# and may sit in a persisted request queue.
GUARD_PAGE = "scrapy_gdpr.playwright.guard_page"


def _is_navigation(request: Any) -> bool:
    try:
        return bool(request.is_navigation_request())
    except Exception:  # noqa: BLE001 - a request without a frame is no navigation
        return False


def _page_of(request: Any) -> Any:
    """The page a Playwright request belongs to, or None (service workers have no frame)."""
    try:
        return request.frame.page
    except Exception:  # noqa: BLE001 - service workers have no frame
        return None


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
    if browser != "chromium":
        logger.warning(
            "GDPR: browser sub-resources are checked by PLAYWRIGHT_ABORT_REQUEST only; redirects "
            "followed inside the browser are not (the redirect guard and host rules need Chromium)"
        )
        return
    if settings.get("PLAYWRIGHT_CDP_URL") or settings.get("PLAYWRIGHT_CONNECT_URL"):
        logger.warning(
            "GDPR: a remote browser gets no host rules: preconnects, service workers and WebSockets "
            "are not limited to the listed domains (host rules need a locally launched Chromium)"
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

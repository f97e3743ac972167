"""Helpers shared by the tests (never shipped)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

import pytest
from scrapy.resolver import CachingThreadedResolver
from scrapy.utils.defer import deferred_from_coro
from twisted.internet import defer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

P = ParamSpec("P")
ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def coroutine_test(coro_f: Callable[P, Awaitable[Any]]) -> Callable[P, Any]:
    """Run an ``async def`` test on the asyncio reactor (Scrapy's tests/utils/decorators.py)."""

    @wraps(coro_f)
    def f(*args: P.args, **kwargs: P.kwargs) -> Any:
        return deferred_from_coro(coro_f(*args, **kwargs))

    return f


class LocalResolver(CachingThreadedResolver):
    """Resolves ``*.test`` to 127.0.0.1 so one mock server can play many hosts.

    Use it as ``TWISTED_DNS_RESOLVER = "tests.utils.LocalResolver"`` in subprocess
    crawls; in-process tests get it installed on the reactor by ``conftest.py``.
    """

    def getHostByName(self, name: str, timeout: Any = ()) -> Any:
        if name.endswith(".test"):
            return defer.succeed("127.0.0.1")
        return super().getHostByName(name, timeout)


class ManualClock:
    """A clock that moves only when the test moves it (:meth:`advance`); ``sleep``
    advances it at once. Give it to a crawl with :func:`use_clock` before the crawl
    starts, so that TTLs, back-offs and pauses need no real waiting."""

    def __init__(self, start: datetime | None = None) -> None:
        self.seconds = 1000.0
        self.start = start or datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds - 1000.0)

    def advance(self, seconds: float) -> None:
        self.seconds += seconds

    async def sleep(self, seconds: float) -> None:
        from scrapy.utils.asyncio import sleep

        self.advance(seconds)
        await sleep(0)


def use_clock(crawler: Any, clock: Any) -> Any:
    """Make ``clock`` the time every scrapy-gdpr component of ``crawler`` reads."""
    from scrapy_gdpr.runtime import get_runtime

    get_runtime(crawler).clock = clock
    return clock


async def wait_until(condition: Callable[[], bool], within: float = 30.0) -> None:
    """Poll ``condition`` on the reactor until it holds (fail after ``within`` s)."""
    from scrapy.utils.asyncio import sleep

    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await sleep(0.02)


def install_face_pool(crawler: Any, **seams: Any) -> Any:
    """Give the crawl a face pool built with ``seams`` (``detector_factory``,
    ``stage``) before its pipelines acquire one. Returns the pool."""
    from scrapy_gdpr.facepool import FacePool, install_pool
    from scrapy_gdpr.runtime import get_runtime

    runtime = get_runtime(crawler)
    return install_pool(runtime, FacePool(runtime, **seams))


class BrokenFaceModel:
    """An extension for subprocess crawls (``EXTENSIONS = {"tests.utils.BrokenFaceModel": 0}``):
    the face pool's detector cannot be built, as with a damaged model file."""

    @classmethod
    def from_crawler(cls, crawler: Any) -> BrokenFaceModel:
        from scrapy_gdpr.faces.detector import ModelIntegrityError

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise ModelIntegrityError("cannot read face model: file is truncated")

        install_face_pool(crawler, detector_factory=broken)
        return cls()


def free_port() -> int:
    """A port nothing listens on now (bound to 0 and closed again): for a server a
    subprocess starts, or for an address that must refuse connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PurgeSteps:
    """An extension for crawls (``EXTENSIONS = {PurgeSteps: 1}``, after the retention
    extension): the purge at spider open reports each durable step to ``steps``,
    through the hook tests/test_purge_crash.py kills the purge command with."""

    steps: list[str] = []

    def __init__(self, crawler: Any) -> None:
        from scrapy_gdpr.runtime import get_runtime

        extension = get_runtime(crawler).retention
        assert extension is not None, "the retention extension must be built first"
        type(self).steps = []
        extension.on_step = type(self).steps.append

    @classmethod
    def from_crawler(cls, crawler: Any) -> PurgeSteps:
        return cls(crawler)


def run_scrapy(*args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m scrapy.cmdline ARGS`` in a subprocess, as Scrapy's own tests do."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "scrapy.cmdline", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False,
    )


def chromium_path() -> str | None:
    path = os.environ.get("GDPR_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return path if path and Path(path).exists() else None


def require_service(name: str, reason: str) -> None:
    """Skip with a clear reason on a user's machine; fail in CI (CI=true), where it is required."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{name} is required in CI but is not available: {reason}")
    pytest.skip(f"{name} not available on this machine ({reason}); CI runs these tests")


#: The Redis the tests use (a database of its own; keys under a unique prefix per test).
REDIS_URL = os.environ.get("GDPR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_client() -> Any:
    """A client of :data:`REDIS_URL`; skips (or fails in CI) when Redis does not answer."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        require_service("Redis", f"{REDIS_URL}: {exc}")
    return client


@pytest.fixture(name="prefix")
def redis_prefix() -> Any:
    """A key prefix of this test's own in :data:`REDIS_URL`; its keys are deleted afterwards."""
    client = redis_client()
    name = f"gdpr-test-{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(client.scan_iter(match=f"{name}*"))
    if keys:
        client.delete(*keys)
    client.close()


def terms_fingerprint(url: str) -> str:
    """Fetch a terms page from a local test server and fingerprint it as the crawl does."""
    import urllib.request
    from urllib.parse import urlsplit

    from scrapy.http import HtmlResponse

    from scrapy_gdpr.terms import fingerprint, normalise_terms

    parts = urlsplit(url)
    local = f"http://127.0.0.1:{parts.port}{parts.path}"
    req = urllib.request.Request(local, headers={"Host": parts.netloc})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
        ctype = resp.headers.get("Content-Type", "text/html")
    return fingerprint(normalise_terms(HtmlResponse(url, body=body, headers={"Content-Type": ctype})))


# --------------------------------------------------------------------------- policy files
#
# Every test policy starts from tests/data/policies/valid.yaml; each writer below
# changes what its tests are about and writes ``policy.yaml`` into the test's folder.

#: The valid policy every test policy starts from.
VALID_POLICY = DATA / "policies" / "valid.yaml"
#: The ``*.test`` host of the face-stage gallery tests (tests/gallery.py).
GALLERY_HOST = "gallery-people.test"
#: The hosts of the retention tests (tests/retention_support.py).
RETENTION_HOSTS = ("people.test", "news.test")


def policy_data() -> dict[str, Any]:
    """valid.yaml, parsed."""
    import yaml

    data: dict[str, Any] = yaml.safe_load(VALID_POLICY.read_text(encoding="utf-8"))
    return data


def save_policy(folder: Path, data: dict[str, Any], name: str = "policy.yaml") -> Path:
    """Write ``data`` as ``folder/name`` and return its path."""
    import yaml

    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def sections_policy(tmp_path: Path, **sections: Any) -> Path:
    """valid.yaml with top-level sections replaced/merged (dicts are merged one level deep)."""
    data = policy_data()
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return save_policy(tmp_path, data)


def domains_policy(tmp_path: Path, domains: list[dict[str, Any]], **sections: Any) -> Path:
    """valid.yaml with other domains (and sections); objections in tmp_path."""
    data = policy_data()
    data["domains"] = domains
    data["objections"] = {"path": "objections.txt"}
    data.update(sections)
    return save_policy(tmp_path, data)


def terms_policy(tmp_path: Path, domains: list[dict[str, Any]], interval: str = "P1D") -> Path:
    """valid.yaml with ``domains`` (private network allowed) checked for terms every ``interval``."""
    data = policy_data()
    data["domains"] = [{"allow_private_network": True, **d} for d in domains]
    data["terms_check"] = {"interval": interval}
    return save_policy(tmp_path, data)


def signals_policy(tmp_path: Path, *, signal_purposes: list[str] | None = None,
                   opt_out: dict[str, Any] | None = None, **changes: Any) -> Path:
    """valid.yaml whose purpose falls under ``signal_purposes`` (default: all three),
    with the ``opt_out`` section and other sections replaced."""
    data = policy_data()
    data["purposes"][0]["signal_purposes"] = signal_purposes or ["search", "ai-train", "ai-input"]
    if opt_out is not None:
        data["opt_out"] = opt_out
    data.update(changes)
    return save_policy(tmp_path, data)


def faces_policy(tmp_path: Path, hosts: tuple[str, ...] = (GALLERY_HOST,), **faces: Any) -> Path:
    """valid.yaml with our ``*.test`` hosts listed and ``faces`` overridden (an Art. 9
    condition documented when the action is ``keep``)."""
    data = policy_data()
    for host in hosts:
        data["domains"].append({"domain": host, "allow_private_network": True})
    data["faces"] = {**data.get("faces", {}), **faces}
    if faces.get("action") == "keep":
        data["special_categories"] = {
            "biometric": {
                "condition": "explicit_consent",
                "reference": "DPIA-TEST-1",
                "reviewed_by": "Dana Protection",
                "reviewed_on": "2026-10-01",
            }
        }
    return save_policy(tmp_path, data)


def retention_policy(tmp_path: Path, *, items: str = "P30D", images: str = "P14D",
                     objections: str = "objections.txt", **retention: str) -> Path:
    """valid.yaml for the retention tests: their hosts, item and image periods, an
    objection list in tmp_path, and other ``retention`` keys (``logs``, ``caches``)."""
    data = policy_data()
    for host in RETENTION_HOSTS:
        data["domains"].append({**data["domains"][0], "domain": host,
                                "terms": {**data["domains"][0]["terms"], "url": f"http://{host}/terms.html"}})
    data["retention"] = {"items": {"default": items}, "images": images, "files": images, **retention}
    data["objections"] = {"path": objections}
    return save_policy(tmp_path, data)


def write_policy(path: Path, mockserver: Any, hosts: list[str], **changes: Any) -> Path:
    """A valid policy listing ``hosts`` (``*.test`` names or 127.0.0.1) of ``mockserver``,
    each with a terms review whose fingerprint matches the served terms page.

    ``changes`` replace top-level sections (e.g. ``faces={"action": "drop_item"}``).
    """
    data = policy_data()
    domains = []
    for host in hosts:
        terms_url = mockserver.url("/terms.html", host=None if host == "127.0.0.1" else host)
        domains.append({
            "domain": host,
            "allow_private_network": True,
            "terms": {
                "url": terms_url,
                "verdict": "permits",
                "reviewed_on": "2026-10-01",
                "reviewed_by": "Dana Protection",
                "fingerprint": terms_fingerprint(terms_url),
            },
        })
    data["domains"] = domains
    data["politeness"] = {"default_delay": 0, "default_concurrency": 8}
    data.update(changes)
    return save_policy(path.parent, data, path.name)


def addon_settings(tmp_path: Path, policy: Path, **extra: Any) -> dict[str, Any]:
    """Settings for an in-process crawl with the whole add-on, writing into ``tmp_path``."""
    from scrapy_gdpr.addon import Addon

    return {
        "ADDONS": {Addon: 0},
        "GDPR_POLICY": str(policy),
        "GDPR_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "GDPR_REPORT_DIR": str(tmp_path / "reports"),
        "GDPR_LEDGER": f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        "LOG_LEVEL": "INFO",
        **extra,
    }


PLAYWRIGHT_HANDLER = "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler"


def playwright_settings(chromium: str) -> dict[str, Any]:
    """scrapy-playwright with the system Chromium, headless, ``*.test`` mapped to 127.0.0.1."""
    return {
        "DOWNLOAD_HANDLERS": {"http": PLAYWRIGHT_HANDLER, "https": PLAYWRIGHT_HANDLER},
        "PLAYWRIGHT_BROWSER_TYPE": "chromium",
        "PLAYWRIGHT_LAUNCH_OPTIONS": {
            "executable_path": chromium,
            "args": [
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--host-resolver-rules=MAP *.test 127.0.0.1",
            ],
        },
    }

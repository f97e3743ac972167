"""Helpers for the retention, ledger, purge and rights tests.

Crawls here enable the retention components (and the provenance middleware) without
the add-on, so that the request gates and the face-stage images pipeline written
elsewhere do not decide what these tests see; ``test_addon_hook_*`` checks the
add-on wiring separately.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import scrapy
from PIL import Image
from scrapy.settings import Settings

from scrapy_gdpr.provenance import ProvenanceMiddleware
from scrapy_gdpr.report import ComplianceReport
from scrapy_gdpr.retention import RetentionExtension, RetentionPipeline, configure_feeds
from tests.utils import RETENTION_HOSTS
from tests.utils import retention_policy as write_policy  # noqa: F401 - the helper the retention tests import from here

HOSTS = RETENTION_HOSTS
POSTGRES_DSN = os.environ.get("GDPR_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


class PageItem(scrapy.Item):
    url = scrapy.Field()
    title = scrapy.Field()
    image_urls = scrapy.Field()
    images = scrapy.Field()


class PagesSpider(scrapy.Spider):
    """Yields one PageItem per start URL, with the page's <img> URLs."""

    name = "pages"

    def __init__(self, urls: list[str] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.urls = urls or []

    async def start(self):  # type: ignore[no-untyped-def]
        for url in self.urls:
            yield scrapy.Request(url)

    def parse(self, response):  # type: ignore[no-untyped-def]
        images = [response.urljoin(src) for src in response.css("img::attr(src)").getall()]
        yield PageItem(url=response.url, title=response.css("title::text").get(default=""), image_urls=images)


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def make_site(root: Path) -> Path:
    """A mock-server site: people.test with two pages and images, news.test with one."""
    site = root / "site"
    shutil.copytree(Path(__file__).parent / "site" / "default", site / "default")
    people = site / "hosts" / "people"
    people.mkdir(parents=True)
    (people / "img").mkdir()
    (people / "img" / "jane.png").write_bytes(png_bytes((10, 120, 200)))
    (people / "img" / "john.png").write_bytes(png_bytes((30, 200, 40)))
    (people / "jane.html").write_text(
        "<html><head><title>Jane</title></head><body><img src='/img/jane.png'></body></html>", encoding="utf-8")
    (people / "john.html").write_text(
        "<html><head><title>John</title></head><body><img src='/img/john.png'></body></html>", encoding="utf-8")
    news = site / "hosts" / "news"
    news.mkdir(parents=True)
    (news / "a.html").write_text("<html><head><title>News A</title></head><body>x</body></html>", encoding="utf-8")
    return site


def feed_settings(feeds: dict[str, Any]) -> dict[str, Any]:
    """FEEDS, FEED_EXPORTERS and FEED_STORAGES as the add-on hook sets them."""
    settings = Settings({"FEEDS": feeds})
    configure_feeds(settings, None)  # type: ignore[arg-type]
    return {
        "FEEDS": settings.getdict("FEEDS"),
        "FEED_EXPORTERS": settings.getdict("FEED_EXPORTERS"),
        "FEED_STORAGES": settings.getdict("FEED_STORAGES"),
    }


def crawl_settings(tmp_path: Path, policy: Path, ledger_url: str, feeds: dict[str, Any] | None = None,
                   images: bool = False, **extra: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "GDPR_POLICY": str(policy),
        "GDPR_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "GDPR_REPORT_DIR": str(tmp_path / "reports"),
        "GDPR_LEDGER": ledger_url,
        "SPIDER_MIDDLEWARES": {ProvenanceMiddleware: 950},
        "ITEM_PIPELINES": {RetentionPipeline: 900},
        "EXTENSIONS": {ComplianceReport: 0, RetentionExtension: 0},
        "TWISTED_DNS_RESOLVER": "tests.utils.LocalResolver",
        "LOG_LEVEL": "INFO",
    }
    if images:
        settings["ITEM_PIPELINES"]["scrapy.pipelines.images.ImagesPipeline"] = 1
        settings["IMAGES_STORE"] = str(tmp_path / "images")
        settings["IMAGES_THUMBS"] = {"small": (20, 20)}
    if feeds:
        settings.update(feed_settings(feeds))
    settings.update(extra)
    return settings


def postgres_url() -> str:
    """A fresh schema on the test server, or skip (fail in CI) when none is reachable."""
    from tests.utils import require_service

    try:
        import psycopg
    except ImportError:  # pragma: no cover
        require_service("PostgreSQL", "psycopg is not installed")
    schema = "gdpr_test_" + uuid.uuid4().hex[:12]
    try:
        with psycopg.connect(POSTGRES_DSN, connect_timeout=3, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        require_service("PostgreSQL", f"cannot connect to {POSTGRES_DSN}: {exc}".strip())
    sep = "&" if "?" in POSTGRES_DSN else "?"
    return f"{POSTGRES_DSN}{sep}options=-csearch_path%3D{schema}"


def drop_postgres_schema(url: str) -> None:
    import psycopg

    schema = url.rsplit("%3D", 1)[1]
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.requires_postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The same tests on both back ends."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
        return
    url = postgres_url()
    try:
        yield url
    finally:
        drop_postgres_schema(url)


def stamp_for(url: str, expires_at: datetime, *, collected_at: datetime | None = None, item_id: str | None = None) -> dict[str, Any]:
    from scrapy_gdpr.retention import STAMP_VERSION, stamp_time

    collected = collected_at or expires_at - timedelta(days=30)
    return {
        "stamp_version": STAMP_VERSION,
        "item_id": item_id or uuid.uuid4().hex,
        "item_type": "PageItem",
        "spider": "pages",
        "source_url": url,
        "collected_at": stamp_time(collected),
        "expires_at": stamp_time(expires_at),
        "retention": "P30D",
        "purpose": "search",
        "lawful_basis": "legitimate_interests",
        "policy_id": "test-gallery",
        "policy_fingerprint": "sha256:" + "0" * 64,
        "content_sha256": "sha256:" + "1" * 64,
        "faces": None,
    }


EXPORTERS = {
    "jsonlines": "scrapy.exporters.JsonLinesItemExporter",
    "json": "scrapy.exporters.JsonItemExporter",
    "csv": "scrapy_gdpr.retention.GdprCsvItemExporter",
    "xml": "scrapy_gdpr.retention.GdprXmlItemExporter",
}
SUFFIX = {"jsonlines": "jsonl", "json": "json", "csv": "csv", "xml": "xml"}


def write_stamped_feed(path: Path, fmt: str, items: list[dict[str, Any]], *, ledger: Any = None) -> None:
    """Write items (with stamps) through Scrapy's exporters, as a crawl would; record the file."""
    from scrapy.utils.misc import load_object

    from scrapy_gdpr.retention import record_feed

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        exporter = load_object(EXPORTERS[fmt])(fh)
        exporter.start_exporting()
        for item in items:
            exporter.export_item(item)
        exporter.finish_exporting()
    if ledger is not None:
        record_feed(ledger, path, fmt, purpose="search", policy_fingerprint="sha256:" + "0" * 64, spider="pages")


def page_item(url: str, expires_at: datetime, text: str = "") -> dict[str, Any]:
    return {"url": url, "title": text or f"Title of {url}", "gdpr": stamp_for(url, expires_at)}


def feed_ids(path: Path, fmt: str) -> list[str]:
    from scrapy_gdpr import feedfiles

    if not path.exists():
        return []
    return sorted(r.item_id for r in feedfiles.read_records(path, fmt))


def add_object(ledger: Any, folder: Path, name: str, page_url: str, object_url: str, expires_at: datetime,
               kind: str = "image") -> Path:
    from scrapy_gdpr.ledger import Record

    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(png_bytes())
    ledger.add([Record(kind=kind, location=str(path), url=page_url, object_url=object_url, expires_at=expires_at,
                       item_id="", collected_at=expires_at - timedelta(days=14))])
    return path


def run_scrapy_without_file_override(*args: str, cwd: Path) -> Any:
    """``run_scrapy`` as a user whom file permissions bind: as root, the process
    drops the capabilities that let root ignore them (``setpriv``)."""
    import shutil as _shutil

    from tests.utils import run_scrapy

    if os.geteuid() != 0:
        return run_scrapy(*args, cwd=cwd)
    setpriv = _shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file permissions cannot be made to apply")
    import subprocess
    import sys

    from tests.utils import ROOT

    drop = "-dac_override,-dac_read_search,-fowner"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", sys.executable, "-m",
                           "scrapy.cmdline", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


@contextlib.contextmanager
def readonly_role(url: str):  # type: ignore[no-untyped-def]
    """The URL of a new PostgreSQL role that may only read the schema of ``url``
    (call it once the ledger's tables exist); the role is dropped afterwards."""
    import psycopg

    schema = url.rsplit("%3D", 1)[1]
    role = "gdpr_ro_" + uuid.uuid4().hex[:12]
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}")
    rest = POSTGRES_DSN.split("?")[0].split("://", 1)[1].split("@", 1)[-1]
    try:
        yield f"postgresql://{role}@{rest}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role} CASCADE")
            conn.execute(f"DROP ROLE {role}")

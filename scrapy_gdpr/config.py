"""Every ``GDPR_*`` setting, its default and its validation, in one place.

These are operational knobs only. Purposes, lawful bases, domains, terms, faces and
retention live in the policy file, which a privacy officer signs off.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings
    from scrapy.spiders import Spider

#: Defaults of every GDPR_* setting (documented in docs/settings.md).
DEFAULTS: dict[str, Any] = {
    "GDPR_ENABLED": True,
    "GDPR_POLICY": "policies/%(name)s.yaml",
    "GDPR_AUDIT_LOG": "gdpr-audit/%(name)s.jsonl",
    "GDPR_REPORT_DIR": "gdpr-reports",
    "GDPR_LEDGER": "sqlite:///gdpr-ledger.sqlite3",
    "GDPR_FACE_WORKERS": 0,  # 0 = one per CPU core
    "GDPR_FACE_QUEUE": 0,  # 0 = two images per worker in flight at most
    "GDPR_IMAGE_BYTES_FIELDS": ["image_bytes", "screenshot"],  # item fields holding image bytes
    "GDPR_ROBOTS_CACHE_SIZE": 100_000,
    "GDPR_OBJECTIONS": None,  # None = the objection list named in the policy
    "GDPR_PURGE_ON_OPEN": True,
    "GDPR_DNS_TIMEOUT": 10.0,
}


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class GdprConfig:
    """The parsed ``GDPR_*`` settings of one crawler."""

    enabled: bool
    policy: str
    audit_log: str | None
    report_dir: str | None
    ledger: str | None
    face_workers: int
    face_queue: int
    image_bytes_fields: tuple[str, ...]
    robots_cache_size: int
    objections: str | None
    purge_on_open: bool
    dns_timeout: float

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> GdprConfig:
        def get(name: str) -> Any:
            value = settings.get(name)
            return DEFAULTS[name] if value is None else value

        workers = settings.getint("GDPR_FACE_WORKERS", DEFAULTS["GDPR_FACE_WORKERS"]) or _cpu_count()
        queue = settings.getint("GDPR_FACE_QUEUE", DEFAULTS["GDPR_FACE_QUEUE"]) or 2 * workers
        if workers < 1 or queue < 1:
            raise ValueError("GDPR_FACE_WORKERS and GDPR_FACE_QUEUE must be positive (0 means automatic)")
        return cls(
            enabled=settings.getbool("GDPR_ENABLED", DEFAULTS["GDPR_ENABLED"]),
            policy=str(get("GDPR_POLICY")),
            audit_log=settings.get("GDPR_AUDIT_LOG", DEFAULTS["GDPR_AUDIT_LOG"]) or None,
            report_dir=_rooted(settings.get("GDPR_REPORT_DIR", DEFAULTS["GDPR_REPORT_DIR"])),
            ledger=_rooted_ledger(settings.get("GDPR_LEDGER", DEFAULTS["GDPR_LEDGER"])),
            face_workers=workers,
            face_queue=queue,
            image_bytes_fields=tuple(
                settings.getlist("GDPR_IMAGE_BYTES_FIELDS", DEFAULTS["GDPR_IMAGE_BYTES_FIELDS"])
            ),
            robots_cache_size=settings.getint("GDPR_ROBOTS_CACHE_SIZE", DEFAULTS["GDPR_ROBOTS_CACHE_SIZE"]),
            objections=settings.get("GDPR_OBJECTIONS") or None,
            purge_on_open=settings.getbool("GDPR_PURGE_ON_OPEN", DEFAULTS["GDPR_PURGE_ON_OPEN"]),
            dns_timeout=settings.getfloat("GDPR_DNS_TIMEOUT", DEFAULTS["GDPR_DNS_TIMEOUT"]),
        )

    def policy_path(self, spider: Spider | type[Spider] | None) -> Path:
        """The policy file for ``spider``: its class's ``gdpr_policy`` attribute, else GDPR_POLICY.

        A relative path is relative to the project root (the folder of ``scrapy.cfg``),
        so that ``scrapy crawl`` finds the same file from any sub-folder of the project.
        A project that runs from an egg (Scrapyd) reads a relative path from the egg
        (:mod:`scrapy_gdpr.egg`); raises ValueError when the egg has no such file.
        """
        # the class's attribute: a spider argument (``-a gdpr_policy=...``, or a
        # Scrapyd job's schedule.json parameter) sets only the instance's
        owner = spider if isinstance(spider, type) or spider is None else type(spider)
        template = getattr(owner, "gdpr_policy", None) or self.policy
        path = expand(template, spider)
        if not Path(path).expanduser().is_absolute():
            from scrapy_gdpr.egg import policy_from_egg

            in_egg = policy_from_egg(path)
            if in_egg is not None:
                return in_egg
        return from_project_root(path)

    def audit_log_path(self, spider: Spider | type[Spider] | None) -> Path | None:
        return from_project_root(expand(self.audit_log, spider)) if self.audit_log else None

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _rooted(value: Any) -> str | None:
    return str(from_project_root(str(value))) if value else None


def _rooted_ledger(value: Any) -> str | None:
    """A relative ``sqlite:///FILE`` ledger URL made absolute against the project root."""
    if not value:
        return None
    url = str(value)
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        return prefix + str(from_project_root(url[len(prefix) :]))
    return url


def project_root() -> Path | None:
    """The folder of the project's ``scrapy.cfg`` (searched from the current folder
    upwards, as Scrapy finds its project), or None outside a project.

    None as well for a project that runs from an egg (Scrapyd): the egg is its
    project folder, and a ``scrapy.cfg`` above the job's working folder belongs to
    something else; relative paths then resolve against the working folder."""
    from scrapy.utils.conf import closest_scrapy_cfg

    from scrapy_gdpr.egg import settings_archive

    if settings_archive() is not None:
        return None

    cfg = closest_scrapy_cfg()
    return Path(cfg).resolve().parent if cfg else None


def from_project_root(path: str | Path) -> Path:
    """``path`` made absolute: relative paths are relative to the project root, or to
    the current folder outside a project."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    root = project_root()
    return (root / p) if root is not None else Path.cwd() / p


def expand(template: str, spider: Spider | type[Spider] | None) -> str:
    """Expand ``%(name)s`` (and other spider attributes) as Scrapy does for FEEDS URIs."""
    if "%(" not in template:
        return template
    params: dict[str, Any] = {"name": getattr(spider, "name", "spider")}
    if spider is not None:
        params.update({k: v for k, v in vars(spider).items() if isinstance(v, (str, int, float))})
    return template % params

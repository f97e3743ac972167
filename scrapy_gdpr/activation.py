"""Whether scrapy-gdpr is really active in a crawl's settings, and saying so loudly
when a project looks configured for it but is not.

A project made by ``scrapy startproject`` has ``ADDONS = {}`` near the end of its
``settings.py``; ``ADDONS = {"scrapy_gdpr.Addon": 0}`` written above it is replaced
by the empty dict, and the crawl runs ungated. :func:`inactive_warning` catches that
(``scrapy crawl`` prints it, ``scrapy gdpr-check`` fails on it).
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scrapy.utils.conf import build_component_list
from scrapy.utils.misc import load_object

from scrapy_gdpr.config import DEFAULTS, project_root

if TYPE_CHECKING:
    from scrapy.settings import BaseSettings

logger = logging.getLogger(__name__)


def _enabled(settings: BaseSettings, name: str) -> list[Any]:
    try:
        paths = build_component_list(settings.getwithbase(name) if settings.get(f"{name}_BASE") is not None else settings.getdict(name))
    except (ValueError, TypeError):
        return []
    out = []
    for path in paths:
        try:
            out.append(load_object(path) if isinstance(path, str) else path)
        except (ImportError, NameError, ValueError, AttributeError):
            continue
    return out


def addon_active(settings: BaseSettings) -> bool:
    """Whether ``scrapy_gdpr.Addon`` is in ADDONS (and GDPR_ENABLED is not False)."""
    from scrapy_gdpr.addon import Addon

    if not settings.getbool("GDPR_ENABLED", DEFAULTS["GDPR_ENABLED"]):
        return False
    return any(isinstance(obj, type) and issubclass(obj, Addon) for obj in _enabled(settings, "ADDONS"))


def active_components(settings: BaseSettings) -> dict[str, bool]:
    """Each scrapy-gdpr component (by class path) and whether it is enabled in the
    settings without the add-on (components can be enabled alone)."""
    from scrapy_gdpr import addon

    out: dict[str, bool] = {}
    for name, components in (
        ("DOWNLOADER_MIDDLEWARES", addon.DOWNLOADER_MIDDLEWARES),
        ("SPIDER_MIDDLEWARES", addon.SPIDER_MIDDLEWARES),
        ("ITEM_PIPELINES", addon.ITEM_PIPELINES),
        ("EXTENSIONS", addon.EXTENSIONS),
    ):
        enabled = _enabled(settings, name)
        for cls in components:
            out[addon.component_path(cls)] = any(obj is cls for obj in enabled)
    return out


def gdpr_configured(settings: BaseSettings) -> list[str]:
    """Signs that the project means to use scrapy-gdpr: GDPR_* settings it set, and a
    policies/ folder at the project root."""
    signs = [
        name
        for name in sorted(DEFAULTS)
        if name != "GDPR_ENABLED" and (settings.getpriority(name) or 0) > 0 and settings.get(name) is not None
    ]
    root = project_root() or Path.cwd()
    if (root / "policies").is_dir():
        signs.append(f"the folder {root / 'policies'}")
    return signs


def settings_module_note(settings: BaseSettings) -> str:
    """When the project's settings module assigns ADDONS more than once, where (the
    ``scrapy startproject`` trap); else an empty string."""
    module = settings.get("SETTINGS_MODULE")
    if not module:
        return ""
    try:
        spec_file = sys.modules[module].__file__ if module in sys.modules else None
        if spec_file is None:
            import importlib.util

            spec = importlib.util.find_spec(module)
            spec_file = spec.origin if spec else None
        text = Path(spec_file).read_text(encoding="utf-8") if spec_file else ""
    except (ImportError, OSError, ValueError, UnicodeDecodeError):
        return ""
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if re.match(r"^ADDONS\s*=", line)]
    if len(lines) > 1:
        return (
            f"{spec_file} assigns ADDONS on lines {', '.join(map(str, lines))}; the last assignment replaces "
            'the others: put "scrapy_gdpr.Addon": 0 into that one dict'
        )
    return ""


def inactive_warning(settings: BaseSettings, spider: str = "") -> str:
    """A warning when the project is configured for scrapy-gdpr but the add-on (and
    every component) is inactive; else an empty string."""
    if not settings.getbool("GDPR_ENABLED", DEFAULTS["GDPR_ENABLED"]):
        return ""  # switched off on purpose (the add-on says so itself)
    if addon_active(settings) or any(active_components(settings).values()):
        return ""
    signs = gdpr_configured(settings)
    if not signs:
        return ""
    who = f" for spider {spider!r}" if spider else ""
    text = (
        f"scrapy-gdpr is NOT active{who}: this crawl has no request gate, no face stage and no retention, "
        f"although the project is set up for it ({', '.join(signs)}). Add \"scrapy_gdpr.Addon\": 0 to the "
        "ADDONS dict in settings.py (scrapy startproject writes 'ADDONS = {}': put it into that dict), "
        "then run 'scrapy gdpr-check'."
    )
    note = settings_module_note(settings)
    return f"{text} {note}" if note else text


def warn_if_inactive(settings: BaseSettings, spider: str = "") -> None:
    """Log (and print on stderr when the log does not go there) :func:`inactive_warning`."""
    text = inactive_warning(settings, spider)
    if not text:
        return
    from scrapy_gdpr.exitcodes import _log_reaches_stderr

    logger.warning("%(text)s", {"text": text})
    if not _log_reaches_stderr(settings, logging.WARNING):
        print(f"WARNING: {text}", file=sys.stderr, flush=True)

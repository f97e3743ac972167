"""Every dotted path the docs, the example project and setup.cfg name still resolves.

Settings name components by path (``ITEM_PIPELINES = {"scrapy_gdpr.stores.PostgresItemStore": 950}``),
so a path once documented is a public name: moving a module must not break it.
"""

from __future__ import annotations

import configparser
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOTTED = re.compile(r"\bscrapy_gdpr(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


def documented_paths() -> list[str]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    files += sorted(p for p in (ROOT / "example_project").rglob("*") if p.suffix in {".py", ".cfg", ".md"})
    found: set[str] = set()
    for path in files:
        found.update(m.group(0).rstrip(".") for m in DOTTED.finditer(path.read_text(encoding="utf-8")))
    return sorted(found)


def resolve(path: str) -> object:
    """Import the longest module prefix of ``path``, then look the rest up as attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as exc:
            if exc.name is None or not ".".join(parts[:cut]).startswith(exc.name):
                raise
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(path)


def test_the_docs_name_paths():
    paths = documented_paths()
    assert "scrapy_gdpr.Addon" in paths
    assert len(paths) > 40


@pytest.mark.parametrize("path", documented_paths())
def test_documented_path_resolves(path):
    assert resolve(path) is not None


def test_an_old_module_path_is_the_same_module():
    import scrapy_gdpr.gate.robots
    import scrapy_gdpr.robots

    assert scrapy_gdpr.robots is scrapy_gdpr.gate.robots
    assert resolve("scrapy_gdpr.images.GdprImagesPipeline") is resolve("scrapy_gdpr.media.pipelines.GdprImagesPipeline")


def test_an_unknown_path_still_fails():
    with pytest.raises(AttributeError):
        resolve("scrapy_gdpr.no_such_module.Thing")
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("scrapy_gdpr.no_such_module")
    with pytest.raises(AttributeError):
        resolve("scrapy_gdpr.gate.NoSuchMiddleware")


def test_entry_points_name_real_objects():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    entries = [line.split("=", 1) for line in cfg["options.entry_points"]["scrapy.commands"].strip().splitlines()]
    assert len(entries) >= 10
    for name, target in entries:
        module, _, attr = target.strip().partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert callable(command), name

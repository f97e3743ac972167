"""``scrapy gdpr-check`` in a fresh ``scrapy startproject``, broken and fixed."""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING

from tests.utils import DATA, run_scrapy

if TYPE_CHECKING:
    from pathlib import Path

VALID = DATA / "policies" / "valid.yaml"

SPIDER = """
import scrapy


class PagesSpider(scrapy.Spider):
    name = "pages"
    start_urls = ["http://127.0.0.1:9/"]

    def parse(self, response):
        yield {"url": response.url}


class OtherSpider(scrapy.Spider):
    name = "other"
    gdpr_policy = "policies/other.yaml"
"""


def startproject(tmp_path: Path) -> Path:
    """A project exactly as ``scrapy startproject`` makes it, plus spiders and policies."""
    result = run_scrapy("startproject", "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "demo"
    (root / "demo" / "spiders" / "pages.py").write_text(SPIDER, encoding="utf-8")
    (root / "policies").mkdir()
    shutil.copy(VALID, root / "policies" / "pages.yaml")
    shutil.copy(VALID, root / "policies" / "other.yaml")
    return root


def settings_file(root: Path) -> Path:
    return root / "demo" / "settings.py"


def readme_fix(root: Path) -> None:
    """What the README says: put the add-on into the ADDONS dict startproject wrote."""
    path = settings_file(root)
    text = path.read_text(encoding="utf-8")
    assert "\nADDONS = {}\n" in text  # what startproject writes
    path.write_text(text.replace("\nADDONS = {}\n", '\nADDONS = {"scrapy_gdpr.Addon": 0}\n'), encoding="utf-8")


def test_line_above_startprojects_empty_addons_is_caught(tmp_path):
    root = startproject(tmp_path)
    path = settings_file(root)
    # the mistake: the add-on line added above the 'ADDONS = {}' startproject wrote
    path.write_text('ADDONS = {"scrapy_gdpr.Addon": 0}\n' + path.read_text(encoding="utf-8"), encoding="utf-8")
    result = run_scrapy("gdpr-check", cwd=root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "spider pages: 1 problem(s)" in result.stdout
    assert "PROBLEM scrapy-gdpr: NOT active" in result.stdout
    assert f"{path.resolve()} assigns ADDONS on lines 1, " in result.stdout
    # and a crawl says so loudly, even with --nolog
    crawl = run_scrapy("crawl", "pages", "--nolog", "-s", "CLOSESPIDER_TIMEOUT=5", cwd=root)
    assert "scrapy-gdpr is NOT active for spider 'pages'" in crawl.stderr
    assert "put it into that dict" in crawl.stderr


def test_fixed_project_passes(tmp_path):
    root = startproject(tmp_path)
    readme_fix(root)
    result = run_scrapy("gdpr-check", cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "spider pages: OK" in lines and "spider other: OK" in lines
    assert "  ok      scrapy-gdpr: the add-on is active (scrapy_gdpr.Addon in ADDONS)" in lines
    assert f"  ok      policy: {(root / 'policies' / 'other.yaml').resolve()}: valid" in result.stdout
    assert "  ok      TELNETCONSOLE_ENABLED: off" in lines
    assert "  ok      REMOTE_CONTROL_ENABLED: off" in lines
    assert lines[-1] == "2 spider(s) checked: 0 problem(s), 0 warning(s)"
    # from a sub-folder, for one spider, as JSON
    result = run_scrapy("gdpr-check", "pages", "--format", "json", cwd=root / "demo" / "spiders")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is True and [s["spider"] for s in data["spiders"]] == ["pages"]


def test_problems_each_fail(tmp_path):
    root = startproject(tmp_path)
    readme_fix(root)
    (root / "policies" / "other.yaml").write_text(
        VALID.read_text(encoding="utf-8").replace("action: blur", "action: keep"), encoding="utf-8"
    )
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    with settings_file(root).open("a", encoding="utf-8") as fh:
        fh.write(f'\nIMAGES_STORE = "{tmp_path / "a-file" / "images"}"\n')
        fh.write('FEEDS = {"items.jsonl": {"format": "jsonlines", "item_filter": "scrapy.extensions.feedexport.ItemFilter"},'
                 ' "all.csv": {"format": "csv"}}\n')
        fh.write("TELNETCONSOLE_ENABLED = True\n")
    result = run_scrapy("gdpr-check", cwd=root)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "PROBLEM policy: " in out and "error: faces.action" in out
    assert f"PROBLEM IMAGES_STORE: {tmp_path / 'a-file'} is not a folder" in out
    assert "PROBLEM feed items.jsonl: sets its own item_filter" in out
    assert "ok      feed all.csv: exports stamped items" in out
    assert "WARNING TELNETCONSOLE_ENABLED: on" in out
    assert "PROBLEM ledger" not in out


def test_warnings_fail_only_with_strict(tmp_path):
    root = startproject(tmp_path)
    readme_fix(root)
    with settings_file(root).open("a", encoding="utf-8") as fh:
        fh.write("\nTELNETCONSOLE_ENABLED = True\n")
    assert run_scrapy("gdpr-check", cwd=root).returncode == 0
    strict = run_scrapy("gdpr-check", "--strict", cwd=root)
    assert strict.returncode == 1
    assert "0 problem(s), 2 warning(s)" in strict.stdout


def test_disabled_and_unknown_spider(tmp_path):
    root = startproject(tmp_path)
    readme_fix(root)
    result = run_scrapy("gdpr-check", "nope", cwd=root)
    assert result.returncode == 2
    assert "no spider named 'nope'" in result.stderr
    result = run_scrapy("gdpr-check", "pages", "-s", "GDPR_ENABLED=False", cwd=root)
    assert result.returncode == 1
    assert "switched off by GDPR_ENABLED = False" in result.stdout

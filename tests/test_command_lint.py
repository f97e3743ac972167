from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING

from tests.utils import DATA, run_scrapy

if TYPE_CHECKING:
    from pathlib import Path

POLICIES = DATA / "policies"
VALID = POLICIES / "valid.yaml"

SETTINGS = """
BOT_NAME = "proj"
SPIDER_MODULES = ["proj.spiders"]
ADDONS = {"scrapy_gdpr.Addon": 0}
GDPR_POLICY = "policies/%(name)s.yaml"
GDPR_AUDIT_LOG = "out/audit-%(name)s.jsonl"
GDPR_REPORT_DIR = "out/reports"
GDPR_LEDGER = "sqlite:///out/ledger.sqlite3"
"""

SPIDERS = '''
import scrapy


class AlphaSpider(scrapy.Spider):
    """Uses GDPR_POLICY: policies/alpha.yaml."""

    name = "alpha"
    start_urls = ["http://127.0.0.1:9/"]


class BetaSpider(scrapy.Spider):
    """Names its own policy file."""

    name = "beta"
    gdpr_policy = "policies/beta-policy.yaml"
    start_urls = ["http://127.0.0.1:9/"]


class GammaSpider(scrapy.Spider):
    """Not gated: not checked."""

    name = "gamma"
    custom_settings = {"GDPR_ENABLED": False}
'''


def make_project(tmp_path: Path, *, alpha: Path, beta: Path) -> Path:
    """A Scrapy project with spiders alpha (GDPR_POLICY), beta (gdpr_policy) and gamma (disabled)."""
    root = tmp_path / "project"
    (root / "proj" / "spiders").mkdir(parents=True)
    (root / "policies").mkdir()
    (root / "scrapy.cfg").write_text("[settings]\ndefault = proj.settings\n", encoding="utf-8")
    (root / "proj" / "__init__.py").write_text("", encoding="utf-8")
    (root / "proj" / "settings.py").write_text(SETTINGS, encoding="utf-8")
    (root / "proj" / "spiders" / "__init__.py").write_text("", encoding="utf-8")
    (root / "proj" / "spiders" / "spiders.py").write_text(SPIDERS, encoding="utf-8")
    shutil.copy(alpha, root / "policies" / "alpha.yaml")
    shutil.copy(beta, root / "policies" / "beta-policy.yaml")
    return root


def test_valid_policy():
    result = run_scrapy("gdpr-lint", str(VALID))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [f"{VALID}: OK", "1 policy checked: 0 error(s), 0 warning(s)"]


def test_invalid_policy_lists_every_finding():
    path = POLICIES / "invalid-many.yaml"
    result = run_scrapy("gdpr-lint", str(path), str(VALID))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: INVALID: 5 error(s), 1 warning(s)"
    errors = [line.strip() for line in lines if ": error: " in line]
    assert [e.split(": error: ")[0] for e in errors] == [f"{path}:{n}" for n in (3, 19, 40, 44, 47)]
    assert (
        f"  {path}:47: error: politeness.default_concurency: unknown key 'default_concurency' "
        "(fix: did you mean 'default_concurrency'?" in result.stdout
    )
    assert f"{VALID}: OK" in lines
    assert lines[-1] == "2 policies checked: 5 error(s), 1 warning(s)"


def test_missing_policy_fails(tmp_path):
    missing = tmp_path / "missing.yaml"
    result = run_scrapy("gdpr-lint", str(missing))
    assert result.returncode == 1
    assert f"{missing}: error: the policy file does not exist" in result.stdout


def test_warnings_pass_unless_strict():
    path = POLICIES / "warnings.yaml"
    result = run_scrapy("gdpr-lint", "--today", "2026-11-01", str(path))
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[0] == f"{path}: OK, 6 warning(s)"
    assert f"{path}:24: warning: purposes[0].review_due: the lawful-basis review is due on 2026-11-20" in result.stdout

    strict = run_scrapy("gdpr-lint", "--strict", "--today", "2026-11-01", str(path))
    assert strict.returncode == 1
    assert strict.stdout.splitlines()[0] == f"{path}: FAILED (--strict): 6 warning(s)"

    # the same file a month later: the review is overdue, an error
    later = run_scrapy("gdpr-lint", "--today", "2026-12-01", str(path))
    assert later.returncode == 1
    assert f"{path}:24: error: purposes[0].review_due: the lawful-basis review was due on 2026-11-20" in later.stdout


def test_json_output():
    path = POLICIES / "invalid-types.yaml"
    result = run_scrapy("gdpr-lint", "--format", "json", str(VALID), str(path))
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["strict"] is False
    valid, invalid = data["policies"]
    assert valid["valid"] is True and valid["policy_id"] == "test-gallery"
    assert valid["fingerprint"].startswith("sha256:") and valid["findings"] == []
    assert invalid["valid"] is False and invalid["errors"] == 4 and invalid["fingerprint"] is None
    assert invalid["findings"][0] == {
        "file": str(path),
        "line": 6,
        "path": "controller.name",
        "severity": "error",
        "message": "Input should be a valid string (got 123)",
        "fix": "write a text value (quote it if it looks like a number or true/false)",
    }


def test_usage_errors(tmp_path):
    result = run_scrapy("gdpr-lint", cwd=tmp_path)
    assert result.returncode == 2
    assert "not inside a Scrapy project" in result.stderr + result.stdout
    result = run_scrapy("gdpr-lint", "--today", "tomorrow", str(VALID), cwd=tmp_path)
    assert result.returncode == 2
    assert "--today must be a date" in result.stderr + result.stdout


def test_project_lints_every_spider(tmp_path):
    project = make_project(tmp_path, alpha=VALID, beta=POLICIES / "invalid-faces-keep.yaml")
    result = run_scrapy("gdpr-lint", cwd=project)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    # relative to the project root, named by its absolute path
    alpha = str(project.resolve() / "policies" / "alpha.yaml")
    beta = str(project.resolve() / "policies" / "beta-policy.yaml")
    assert f"{alpha} (spider alpha): OK" in lines
    assert f"{beta} (spider beta): INVALID: 1 error(s), 1 warning(s)" in lines
    assert f"  {beta}:40: error: faces.action: faces are set to be kept" in result.stdout
    assert "spider gamma: scrapy-gdpr is disabled" in result.stderr
    assert lines[-1] == "2 policies checked: 1 error(s), 1 warning(s)"

    shutil.copy(VALID, project / "policies" / "beta-policy.yaml")
    result = run_scrapy("gdpr-lint", cwd=project)
    assert result.returncode == 0, result.stdout
    assert f"{beta} (spider beta): OK" in result.stdout.splitlines()


def test_project_spiders_sharing_a_policy(tmp_path):
    project = make_project(tmp_path, alpha=VALID, beta=VALID)
    settings = project / "proj" / "settings.py"
    settings.write_text(settings.read_text().replace("policies/%(name)s.yaml", "policies/alpha.yaml"))
    spiders = project / "proj" / "spiders" / "spiders.py"
    spiders.write_text(spiders.read_text().replace('    gdpr_policy = "policies/beta-policy.yaml"\n', ""))
    result = run_scrapy("gdpr-lint", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == f"{project.resolve() / 'policies' / 'alpha.yaml'} (spiders alpha, beta): OK"

"""scrapy gdpr-terms, run as a user runs it (in a subprocess)."""

from __future__ import annotations

import hashlib
import re

from scrapy_gdpr.policy import load_policy
from tests.utils import ROOT, run_scrapy

OK_TEXT = "Terms of use\nAutomated access for search indexing is permitted.\nBe polite.\nIdentify yourself."
OK_FP = "sha256:" + hashlib.sha256(OK_TEXT.encode("utf-8")).hexdigest()


def test_prints_fingerprint_and_text(tmp_path, mockserver):
    # the default host serves tests/site/default/terms.html
    url = mockserver.url("/terms.html")
    result = run_scrapy("gdpr-terms", url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected_text = "Terms of use\nIndexing for search is permitted."
    expected_fp = "sha256:" + hashlib.sha256(expected_text.encode()).hexdigest()
    assert f"fingerprint: {expected_fp}" in result.stdout
    assert f"--- normalised text (2 lines) ---\n{expected_text}\n--- end ---" in result.stdout
    result = run_scrapy("gdpr-terms", "--no-text", url, cwd=tmp_path)
    assert result.stdout.strip().splitlines() == [f"url: {url}", f"fingerprint: {expected_fp}"]


def test_save_writes_snapshot_usable_in_a_policy(tmp_path, mockserver):
    # 127.0.0.1 with a Host header is not possible with a plain fetch; a route on the
    # default host serves the same file as terms-ok.test
    (tmp_path / "policies").mkdir()
    url = mockserver.url("/_/respond?body=" + _quote((ROOT / "tests/site/hosts/terms-ok/terms.html").read_text()))
    result = run_scrapy("gdpr-terms", url, "--save", "snapshots", cwd=tmp_path / "policies")
    assert result.returncode == 0, result.stderr
    assert f'  fingerprint: "{OK_FP}"' in result.stdout
    assert "  snapshot: snapshots/127.0.0.1.terms.txt" in result.stdout
    snapshot = tmp_path / "policies" / "snapshots" / "127.0.0.1.terms.txt"
    assert snapshot.read_text(encoding="utf-8") == OK_TEXT + "\n"
    # the printed lines paste into a policy that validates
    lines = re.findall(r"^  (fingerprint|snapshot): (.+)$", result.stdout, re.M)
    policy_text = (ROOT / "tests/data/policies/valid.yaml").read_text(encoding="utf-8")
    fp_line = '      fingerprint: "sha256:0000000000000000000000000000000000000000000000000000000000000000"'
    assert fp_line in policy_text
    policy_text = policy_text.replace(fp_line, "\n".join(f"      {k}: {v}" for k, v in lines))
    (tmp_path / "policies" / "p.yaml").write_text(policy_text, encoding="utf-8")
    policy = load_policy(tmp_path / "policies" / "p.yaml")
    assert policy.domains[0].terms.fingerprint == OK_FP
    assert policy.resolve_path(policy.domains[0].terms.snapshot) == snapshot


def test_errors_and_exit_codes(tmp_path, mockserver):
    result = run_scrapy("gdpr-terms", mockserver.url("/_/respond?status=503&body=down"), cwd=tmp_path)
    assert result.returncode == 1
    assert "answered HTTP 503" in result.stderr
    result = run_scrapy("gdpr-terms", "http://127.0.0.1:9/terms.html", cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot fetch" in result.stderr
    result = run_scrapy("gdpr-terms", "not-a-url", cwd=tmp_path)
    assert result.returncode == 2
    assert "not an absolute http(s) URL" in result.stderr


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def test_no_readable_text_is_an_error(tmp_path, mockserver):
    result = run_scrapy("gdpr-terms", mockserver.url("/_/respond?body=%25PDF-1.4%00%01&h=Content-Type:application/pdf"), cwd=tmp_path)
    assert result.returncode == 1
    assert "no readable text (application/pdf)" in result.stderr

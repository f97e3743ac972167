"""scrapy gdpr-terms, run as a user runs it (in a subprocess)."""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from typing import TYPE_CHECKING

import yaml

from scrapy_gdpr.policy import load_policy
from tests.conftest import MockServer
from tests.utils import ROOT, run_scrapy

if TYPE_CHECKING:
    from pathlib import Path

OK_TEXT = "Terms of use\nAutomated access for search indexing is permitted.\nBe polite.\nIdentify yourself."
OK_FP = "sha256:" + hashlib.sha256(OK_TEXT.encode("utf-8")).hexdigest()


def local_policy(tmp_path: Path, *hosts: str) -> str:
    """A policy listing the local test server (and ``hosts``) with allow_private_network,
    as a local test site must be listed for the crawl to reach it."""
    data = yaml.safe_load((ROOT / "tests/data/policies/valid.yaml").read_text(encoding="utf-8"))
    data["domains"] = [{"domain": h, "allow_private_network": True} for h in ("127.0.0.1", *hosts)]
    path = tmp_path / "local-policy.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


def test_prints_fingerprint_and_text(tmp_path, mockserver):
    # the default host serves tests/site/default/terms.html
    url = mockserver.url("/terms.html")
    result = run_scrapy("gdpr-terms", "--policy", local_policy(tmp_path), url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    expected_text = "Terms of use\nIndexing for search is permitted."
    expected_fp = "sha256:" + hashlib.sha256(expected_text.encode()).hexdigest()
    assert f"fingerprint: {expected_fp}" in result.stdout
    assert f"--- normalised text (2 lines) ---\n{expected_text}\n--- end ---" in result.stdout
    result = run_scrapy("gdpr-terms", "--no-text", "--policy", local_policy(tmp_path), url, cwd=tmp_path)
    assert result.stdout.strip().splitlines() == [f"url: {url}", f"fingerprint: {expected_fp}"]


def test_save_writes_snapshot_usable_in_a_policy(tmp_path, mockserver):
    # 127.0.0.1 with a Host header is not possible with a plain fetch; a route on the
    # default host serves the same file as terms-ok.test
    (tmp_path / "policies").mkdir()
    url = mockserver.url("/_/respond?body=" + _quote((ROOT / "tests/site/hosts/terms-ok/terms.html").read_text()))
    policy = local_policy(tmp_path)
    result = run_scrapy("gdpr-terms", url, "--save", "snapshots", "--policy", policy, cwd=tmp_path / "policies")
    assert result.returncode == 0, result.stderr
    assert f'  fingerprint: "{OK_FP}"' in result.stdout
    assert "  snapshot: snapshots/127.0.0.1.terms.txt" in result.stdout
    snapshot = tmp_path / "policies" / "snapshots" / "127.0.0.1.terms.txt"
    assert snapshot.read_text(encoding="utf-8") == OK_TEXT + "\n"
    # the printed lines paste into a policy that validates
    lines = re.findall(r"^  (fingerprint|snapshot): (.+)$", result.stdout, re.MULTILINE)
    policy_text = (ROOT / "tests/data/policies/valid.yaml").read_text(encoding="utf-8")
    fp_line = '      fingerprint: "sha256:0000000000000000000000000000000000000000000000000000000000000000"'
    assert fp_line in policy_text
    policy_text = policy_text.replace(fp_line, "\n".join(f"      {k}: {v}" for k, v in lines))
    (tmp_path / "policies" / "p.yaml").write_text(policy_text, encoding="utf-8")
    policy = load_policy(tmp_path / "policies" / "p.yaml")
    assert policy.domains[0].terms.fingerprint == OK_FP
    assert policy.resolve_path(policy.domains[0].terms.snapshot) == snapshot


def test_errors_and_exit_codes(tmp_path, mockserver):
    policy = local_policy(tmp_path)
    result = run_scrapy("gdpr-terms", "--policy", policy, mockserver.url("/_/respond?status=503&body=down"), cwd=tmp_path)
    assert result.returncode == 1
    assert "answered HTTP 503" in result.stderr
    assert "none_published" not in result.stderr
    result = run_scrapy("gdpr-terms", "--policy", policy, mockserver.url("/no-terms-here.html"), cwd=tmp_path)
    assert result.returncode == 1
    assert "answered HTTP 404" in result.stderr and "verdict: none_published" in result.stderr
    result = run_scrapy("gdpr-terms", "--policy", policy, "http://127.0.0.1:9/terms.html", cwd=tmp_path)
    assert result.returncode == 1
    assert "cannot fetch" in result.stderr
    result = run_scrapy("gdpr-terms", "not-a-url", cwd=tmp_path)
    assert result.returncode == 2
    assert "not an absolute http(s) URL" in result.stderr


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def test_no_readable_text_is_an_error(tmp_path, mockserver):
    url = mockserver.url("/_/respond?body=%25PDF-1.4%00%01&h=Content-Type:application/pdf")
    result = run_scrapy("gdpr-terms", "--policy", local_policy(tmp_path), url, cwd=tmp_path)
    assert result.returncode == 1
    assert "no readable text (application/pdf)" in result.stderr


# --------------------------------------------------------------------------- the crawl's network rules


def test_private_addresses_are_refused_at_every_hop(tmp_path, mockserver):
    policy = local_policy(tmp_path)
    port = mockserver.port
    cases = {
        # the local server itself, without a policy listing it
        mockserver.url("/terms.html"): (None, "127.0.0.1 is a loopback address"),
        f"http://[::ffff:127.0.0.1]:{port}/terms.html": (None, "::ffff:127.0.0.1 is a loopback (embedded in"),
        f"http://localhost:{port}/terms.html": (None, "localhost resolves to"),
        # a listed local site redirecting to the cloud metadata service
        mockserver.url("/_/respond?status=302&h=Location:http://169.254.169.254/latest/meta-data/"):
            (policy, "169.254.169.254 is a cloud metadata address"),
        mockserver.url("/_/respond?status=301&h=Location:http://metadata.google.internal/x"):
            (policy, "metadata.google.internal is a cloud metadata service"),
        # ... or to a loopback host the policy does not list
        mockserver.url(f"/_/respond?status=302&h=Location:http://localhost:{port}/terms.html"):
            (policy, "localhost is not a listed domain"),
        mockserver.url(f"/_/respond?status=302&h=Location:http://127.0.0.2:{port}/terms.html"):
            (policy, "127.0.0.2 is not a listed domain"),
    }
    for url, (policy_file, message) in cases.items():
        args = ["--policy", policy_file] if policy_file else []
        result = run_scrapy("gdpr-terms", *args, url, "--save", "snapshots", cwd=tmp_path)
        assert result.returncode == 1, (url, result.stdout)
        assert message in result.stderr, (url, result.stderr)
        assert "fingerprint:" not in result.stdout
        assert not (tmp_path / "snapshots").exists()  # nothing saved as the reviewed text


def test_redirects_within_the_rules_are_followed_and_bounded(tmp_path, mockserver):
    policy = local_policy(tmp_path)
    target = mockserver.url("/terms.html")
    hop = mockserver.url("/_/respond?status=302&h=Location:" + _quote(target))
    result = run_scrapy("gdpr-terms", "--policy", policy, "--no-text", hop, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"redirected to: {target}" in result.stdout
    site = tmp_path / "site"
    (site / "default").mkdir(parents=True)
    routes = {"/a": {"redirect": "/b"}, "/b": {"redirect": "/a"}}
    routes.update({f"/r{i}": {"redirect": f"/r{i + 1}"} for i in range(12)})
    (site / "default" / "_routes.json").write_text(json.dumps(routes))
    with MockServer(site=site) as server:
        loop = run_scrapy("gdpr-terms", "--policy", policy, server.url("/a"), cwd=tmp_path)
        chain = run_scrapy("gdpr-terms", "--policy", policy, server.url("/r0"), cwd=tmp_path)
    assert loop.returncode == 1 and "redirect loop at" in loop.stderr
    assert chain.returncode == 1 and "more than 10 redirects" in chain.stderr


def test_the_body_read_is_capped_after_decompression(tmp_path):
    from scrapy_gdpr.terms import MAX_SIZE

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(packer.compress(b"<p>" + b"a" * 1021) for _ in range(64 * 1024)) + packer.flush()
    assert len(bomb) < 500_000  # inflates to 64 MiB
    site = tmp_path / "site"
    folder = site / "default"
    folder.mkdir(parents=True)
    (folder / "bomb.gz").write_bytes(bomb)
    (folder / "huge.html").write_bytes(b"<p>" + b"a" * (MAX_SIZE + 10))
    gz = {"Content-Encoding": "gzip", "Content-Type": "text/html"}
    (folder / "_routes.json").write_text(json.dumps({"/bomb.html": {"file": "bomb.gz", "headers": gz}}))
    policy = local_policy(tmp_path)
    with MockServer(site=site) as server:
        bomb_result = run_scrapy("gdpr-terms", "--policy", policy, server.url("/bomb.html"), cwd=tmp_path)
        huge_result = run_scrapy("gdpr-terms", "--policy", policy, server.url("/huge.html"), cwd=tmp_path)
    assert bomb_result.returncode == 1
    assert f"the page is larger than {MAX_SIZE} bytes (after decompression)" in bomb_result.stderr
    assert huge_result.returncode == 1
    assert f"the page is larger than {MAX_SIZE} bytes" in huge_result.stderr

"""Deny lists named in the policy (``opt_out.deny_lists``): format, validation, the gate."""

from __future__ import annotations

import pytest

from scrapy_gdpr.denylist import read_deny_list
from scrapy_gdpr.status import StartupRefused
from tests.test_gate import crawl, hosts_requested, local, refusals, write_policy
from tests.utils import coroutine_test


def test_format(tmp_path):
    path = tmp_path / "deny.txt"
    path.write_bytes(
        "\ufeff# published list\r\n"
        "Example.ORG.\r\n"
        "   \n"
        "*.example.net   # wildcard: the domain and below\n"
        "bücher.example\n"
        "10.1.2.3\n"
        "example.org\n".encode()
    )
    domains, findings = read_deny_list(path, "opt_out.deny_lists[0]")
    assert findings == []
    assert domains == {"example.org": 2, "example.net": 4, "xn--bcher-kva.example": 5, "10.1.2.3": 6}


def test_malformed_lines_reported_with_file_and_line(tmp_path):
    path = tmp_path / "deny.txt"
    path.write_bytes(b"ok.example\nhttps://a.example/x\ntwo words.example\nbad_%.example\n\xff\xfe.example\n"
                     b"-lead.example\n*.\nfine.example # ok\n")
    domains, findings = read_deny_list(path, "opt_out.deny_lists[0]")
    assert domains == {"ok.example": 1, "fine.example": 8}
    assert [f.line for f in findings] == [2, 3, 4, 5, 6, 7]
    assert all(f.file == str(path) and f.path == "opt_out.deny_lists[0]" and f.fix for f in findings)
    assert "is a URL or path" in findings[0].message
    assert "not UTF-8" in findings[3].message
    assert str(findings[0]).startswith(f"{path}:2: error: opt_out.deny_lists[0]:")


def test_missing_file(tmp_path):
    domains, findings = read_deny_list(tmp_path / "nope.txt", "opt_out.deny_lists[0]")
    assert domains == {} and len(findings) == 1 and "cannot be read" in findings[0].message


@coroutine_test
async def test_listed_domains_never_contacted(tmp_path, logged_mockserver):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deny.txt").write_text("# excluded\ndeny-a.test\n", encoding="utf-8")
    (tmp_path / "more.txt").write_text("x.deny-b.test\n", encoding="utf-8")
    policy = write_policy(
        tmp_path,
        [local("deny-a.test", include_subdomains=True), local("deny-b.test", include_subdomains=True)],
        opt_out={"deny_lists": ["lists/deny.txt", "more.txt"]},
    )
    urls = {
        "a": logged_mockserver.url("/index.html", host="deny-a.test"),
        "sub-a": logged_mockserver.url("/index.html", host="www.deny-a.test"),
        "x-b": logged_mockserver.url("/index.html", host="x.deny-b.test"),
        "b": logged_mockserver.url("/index.html", host="deny-b.test"),
    }
    crawler = await crawl(tmp_path, policy, list(urls.values()))
    assert crawler.spider.failed == {urls[k]: "deny_list" for k in ("a", "sub-a", "x-b")}
    assert crawler.spider.seen == [urls["b"]]
    assert hosts_requested(logged_mockserver) == ["deny-b.test/index.html"]  # no contact at all
    assert crawler.stats.get_value("gdpr/blocked/deny_list") == 3
    lines = {r["url"]: r for r in refusals(tmp_path)}
    assert lines[urls["sub-a"]]["clause"].startswith("opt_out.deny_lists[0] (line ")
    assert f"{lists / 'deny.txt'}:2" in lines[urls["sub-a"]]["detail"]
    assert lines[urls["x-b"]]["clause"].startswith("opt_out.deny_lists[1]")


@coroutine_test
async def test_malformed_list_stops_the_crawl(tmp_path, logged_mockserver, capsys):
    (tmp_path / "deny.txt").write_text("ok.example\nhttp://bad.example/\n", encoding="utf-8")
    policy = write_policy(tmp_path, [local("deny-a.test")], opt_out={"deny_lists": ["deny.txt"]})
    with pytest.raises(StartupRefused):
        await crawl(tmp_path, policy, [logged_mockserver.url("/", host="deny-a.test")])
    assert logged_mockserver.requests() == []
    assert f"{tmp_path / 'deny.txt'}:2" in capsys.readouterr().err


def test_review_document_names_deny_lists_and_payment_required(tmp_path):
    from scrapy_gdpr.policy import load_policy
    from scrapy_gdpr.review import build_documents, render_notice_html, render_review_html, render_review_markdown

    (tmp_path / "deny.txt").write_text("example.org\n", encoding="utf-8")
    policy = load_policy(write_policy(tmp_path, [local("deny-a.test")],
                                      opt_out={"deny_lists": ["deny.txt"], "payment_required": False}))
    doc = build_documents(policy, [])
    assert doc["deny_lists"] == ["deny.txt"]
    row = next(s for s in doc["opt_out"] if s["key"] == "payment_required")
    assert row["honoured"] is False
    html, markdown = render_review_html(doc), render_review_markdown(doc)
    assert "deny.txt" in html and "deny.txt" in markdown
    assert "402 Payment Required" in html and "402 Payment Required" in markdown
    assert "Content-Signal (HTTP header or robots.txt)" in html
    assert "402" not in render_notice_html(doc)  # not honoured: not claimed on the public page
    policy = load_policy(write_policy(tmp_path, [local("deny-a.test")]))
    assert "402 Payment Required" in render_notice_html(build_documents(policy, []))


def test_lint_reports_malformed_lines(tmp_path):
    from tests.utils import run_scrapy

    (tmp_path / "deny.txt").write_text("ok.example\nnot a domain\n", encoding="utf-8")
    policy = write_policy(tmp_path, [local("deny-a.test")], opt_out={"deny_lists": ["deny.txt"]})
    result = run_scrapy("gdpr-lint", str(policy))
    assert result.returncode == 1
    assert f"{tmp_path / 'deny.txt'}:2: error: opt_out.deny_lists[0]: expected one domain" in result.stdout
    (tmp_path / "deny.txt").write_text("ok.example\n", encoding="utf-8")
    assert run_scrapy("gdpr-lint", str(policy)).returncode == 0


def test_not_a_regular_file(tmp_path):
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path):
        domains, findings = read_deny_list(path, "opt_out.deny_lists[0]")
        assert domains == {} and "not a regular file" in findings[0].message

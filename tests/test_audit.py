from __future__ import annotations

import json

from scrapy import Spider
from scrapy.exceptions import DropItem, IgnoreRequest
from scrapy.utils.test import get_crawler

from scrapy_gdpr.audit import AuditLog, Reason, drop, refuse
from scrapy_gdpr.runtime import get_runtime
from tests.utils import DATA


def _crawler(tmp_path):
    crawler = get_crawler(Spider, {
        "GDPR_POLICY": str(DATA / "policies" / "valid.yaml"),
        "GDPR_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
    })
    crawler.stats.open_spider()
    return crawler


def test_refuse_counts_audits_and_returns_scrapy_exception(tmp_path):
    crawler = _crawler(tmp_path)
    rt = get_runtime(crawler)
    exc = refuse(rt, "http://a.test/x", Reason.ROBOTS, clause="robots (line 3)", detail="Disallow: /x")
    assert isinstance(exc, IgnoreRequest) and exc.reason == "robots"
    item_exc = drop(rt, "http://a.test/y", Reason.OBJECTION, clause="objections.path", detail="listed")
    assert isinstance(item_exc, DropItem) and item_exc.reason == "objection"
    assert crawler.stats.get_value("gdpr/blocked/robots") == 1
    assert crawler.stats.get_value("gdpr/blocked/objection") == 1
    rt.audit.close()
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(x["kind"], x["reason"], x["url"]) for x in lines] == [
        ("request", "robots", "http://a.test/x"), ("item", "objection", "http://a.test/y"),
    ]
    for line in lines:
        assert {"time", "spider", "decision", "clause", "detail"} <= set(line)
        assert line["policy_fingerprint"] == rt.policy.fingerprint
    assert rt.refusals.counts == {"robots": 1, "objection": 1}


def test_audit_log_defaults_do_not_override(tmp_path):
    log = AuditLog(tmp_path / "a.jsonl", defaults={"policy_fingerprint": "sha256:x"})
    log.write({"decision": "purged"})
    log.write({"decision": "erased", "policy_fingerprint": "sha256:y"})
    log.close()
    fps = [json.loads(line)["policy_fingerprint"] for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert fps == ["sha256:x", "sha256:y"]

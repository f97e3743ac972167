"""Opt-out and terms with the whole add-on (the other gates included)."""

from __future__ import annotations

import hashlib
from typing import Any

import yaml
from scrapy.utils.test import get_crawler

from scrapy_gdpr.addon import Addon
from scrapy_gdpr.runtime import get_runtime
from tests.test_optout import CollectSpider, reserved
from tests.utils import DATA, coroutine_test

OK_TEXT = "Terms of use\nAutomated access for search indexing is permitted.\nBe polite.\nIdentify yourself."


@coroutine_test
async def test_addon_crawl_attaches_decisions_and_follows_nofollow(tmp_path, mockserver):
    host = "optout-xrobots.test"
    data: dict[str, Any] = yaml.safe_load((DATA / "policies" / "valid.yaml").read_text(encoding="utf-8"))
    data["purposes"][0]["signal_purposes"] = ["search", "ai-train"]
    data["domains"] = [{
        "domain": host,
        "allow_private_network": True,
        "terms": {"url": mockserver.url("/terms.html", host=host), "verdict": "permits",
                  "reviewed_on": "2026-10-01", "reviewed_by": "Dana Protection",
                  "fingerprint": "sha256:" + hashlib.sha256(OK_TEXT.encode()).hexdigest()},
    }]
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    settings = {
        "ADDONS": {Addon: 0},
        "GDPR_POLICY": str(policy),
        "GDPR_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "GDPR_REPORT_DIR": str(tmp_path / "reports"),
        "GDPR_LEDGER": f"sqlite:///{tmp_path / 'ledger.sqlite3'}",
        "DNS_RESOLVER": "tests.utils.LocalResolver",
    }
    urls = [mockserver.url(p, host=host) for p in ("/noindex.html", "/none.html")]
    crawler = get_crawler(CollectSpider, settings)
    await crawler.crawl_async(urls=urls, follow=True)
    results = crawler.spider.results
    assert reserved(results[urls[0]]) == {"search": "X-Robots-Tag: noindex"}
    assert reserved(results[urls[1]]) == {"search": "X-Robots-Tag: none"}
    # none = noindex + nofollow: the link on that page is not followed
    assert mockserver.url("/plain.html", host=host) not in results
    assert crawler.stats.get_value("gdpr/blocked/optout") == 1
    rows = get_runtime(crawler).report_sections["terms"]
    assert rows[0]["status"] == "ok: unchanged since review"

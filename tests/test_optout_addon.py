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


class ItemSpider(CollectSpider):
    def parse(self, response):
        yield from super().parse(response) or ()
        yield {"url": response.url}


@coroutine_test
async def test_addon_crawl_drops_items_an_rsl_licence_refuses_with_reason_license(tmp_path, mockserver):
    import json

    host = "rsl-link.test"
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
    # the page's Link header names a licence prohibiting ai-all: the item is dropped (license)
    urls = [mockserver.url("/header.html", host=host), mockserver.url("/cc.html", host=host)]
    crawler = get_crawler(ItemSpider, settings)
    await crawler.crawl_async(urls=urls)
    # the policy's one purpose needs search and ai-train (its signal purposes): refused as a whole
    text = (f'RSL http://{host}:{mockserver.port}/terms.rsl <content url="/"> does not license ai-train '
            f'(named by Link: <http://{host}:{mockserver.port}/terms.rsl>; rel="license")')
    assert reserved(crawler.spider.results[urls[0]]) == {"search": text, "ai-train": text}
    assert crawler.stats.get_value("gdpr/blocked/license") == 1
    assert crawler.stats.get_value("item_scraped_count") == 1  # cc.html: a licence link that is not RSL
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()]
    [dropped] = [a for a in lines if a.get("decision") == "refused" and a.get("reason") == "license"]
    assert dropped["kind"] == "item" and dropped["url"] == urls[0]
    assert dropped["clause"].startswith("purposes[0].signal_purposes")
    assert dropped["detail"].startswith("the licence of the source page refuses search (RSL ")

"""HTTP 402 Payment Required (pay-per-crawl): refused with its own reason, never retried."""

from __future__ import annotations

from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.spidermiddlewares.httperror import HttpError
from scrapy.utils.test import get_crawler

from scrapy_gdpr.addon import DOWNLOADER_MIDDLEWARES
from scrapy_gdpr.exceptions import PolicyViolation
from scrapy_gdpr.paywall import PaymentRequiredMiddleware
from tests.test_optout import CollectSpider, audit_lines, crawl_settings, write_policy
from tests.utils import coroutine_test

HOST = "paywall.test"


def settings(tmp_path, policy, **extra):
    # RETRY_HTTP_CODES lists 402: the refusal must still come first
    extra = {"RETRY_HTTP_CODES": [402, 503], **extra}
    return crawl_settings(tmp_path, policy, DOWNLOADER_MIDDLEWARES={PaymentRequiredMiddleware: 570},
                          RETRY_ENABLED=True, RETRY_TIMES=3, **extra)


def test_runs_before_retry():
    # process_response runs from the highest number down: 570 sees a 402 before RetryMiddleware (550)
    assert DOWNLOADER_MIDDLEWARES[PaymentRequiredMiddleware] > 550
    assert RetryMiddleware.__module__ == "scrapy.downloadermiddlewares.retry"


@coroutine_test
async def test_402_is_refused_once_never_retried(tmp_path, logged_mockserver):
    urls = {n: logged_mockserver.url(f"/{n}.html", host=HOST) for n in ("priced", "unpriced", "long-price", "ok")}
    crawler = get_crawler(CollectSpider, settings(tmp_path, write_policy(tmp_path)))
    await crawler.crawl_async(urls=list(urls.values()))
    failures = crawler.spider.failures
    assert set(failures) == {urls["priced"], urls["unpriced"], urls["long-price"]}
    assert set(crawler.spider.results) == {urls["ok"]}
    for url in failures.values():
        assert isinstance(url, PolicyViolation) and url.reason == "payment_required"
    assert "crawler-price: USD 0.01" in str(failures[urls["priced"]])
    assert "crawler-price" not in str(failures[urls["unpriced"]])
    assert len(str(failures[urls["long-price"]])) < 400  # the price text is cut
    paths = [p for _, _, p in logged_mockserver.requests()]
    for name in ("priced", "unpriced", "long-price"):
        assert paths.count(f"/{name}.html") == 1  # never retried
    stats = crawler.stats.get_stats()
    assert stats["gdpr/blocked/payment_required"] == 3
    assert stats["gdpr/payment_required/priced"] == 2
    assert stats["gdpr/payment_required/unpriced"] == 1
    assert "retry/count" not in stats
    lines = [a for a in audit_lines(tmp_path) if a["decision"] == "refused"]
    assert {a["reason"] for a in lines} == {"payment_required"}
    assert all(a["clause"].startswith("opt_out.payment_required") for a in lines)


@coroutine_test
async def test_switch_off_leaves_402_to_scrapy(tmp_path, mockserver):
    url = mockserver.url("/unpriced.html", host=HOST)
    policy = write_policy(tmp_path, opt_out={"payment_required": False})
    crawler = get_crawler(CollectSpider, settings(tmp_path, policy, RETRY_HTTP_CODES=[503]))
    await crawler.crawl_async(urls=[url])
    assert crawler.stats.get_value("gdpr/blocked/payment_required") is None
    assert isinstance(crawler.spider.failures[url], HttpError)  # an ordinary 4xx answer
    assert crawler.spider.failures[url].response.status == 402

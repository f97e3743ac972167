"""Logs and caches expire per retention.logs and retention.caches: audit logs, reports,
LOG_FILE and Scrapy's HTTP cache, by gdpr-purge and at spider open; an HTTP cache
without retention.caches is refused at start-up."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
import scrapy
from scrapy.settings import Settings
from scrapy.utils.test import get_crawler

from scrapy_gdpr.addon import Addon
from scrapy_gdpr.ledger import open_ledger
from scrapy_gdpr.logpurge import (
    TEMP_SUFFIX,
    CacheRetentionError,
    LogPurgeResult,
    expire_audit_log,
    expire_crawl_log,
    expire_http_cache,
    update_settings,
)
from tests.utils import coroutine_test, retention_policy, run_scrapy
from tests.utils import retention_policy as write_policy

if TYPE_CHECKING:
    from pathlib import Path

NOW = datetime(2027, 6, 1, 12, 0, tzinfo=UTC)


def audit_line(moment: datetime, text: str) -> str:
    return json.dumps({"time": moment.isoformat(timespec="milliseconds"), "decision": text}) + "\n"


# --------------------------------------------------------------------------- audit logs and LOG_FILE


def test_audit_log_lines_expire_in_place(tmp_path):
    log = tmp_path / "audit.jsonl"
    log.write_text(audit_line(NOW - timedelta(days=40), "old") + "not json, kept\n"
                   + audit_line(NOW - timedelta(days=10), "recent") + '{"time": "torn', encoding="utf-8")
    inode = log.stat().st_ino
    appender = log.open("a", encoding="utf-8")  # a crawl writing the log meanwhile
    assert expire_audit_log(log, NOW - timedelta(days=30), dry_run=True) == 1
    assert "old" in log.read_text(encoding="utf-8")
    assert expire_audit_log(log, NOW - timedelta(days=30)) == 1
    appender.write("\n" + audit_line(NOW, "written after"))
    appender.close()
    text = log.read_text(encoding="utf-8")
    assert log.stat().st_ino == inode
    assert '"old"' not in text and "not json, kept" in text and '"recent"' in text and '"written after"' in text
    assert '{"time": "torn' in text  # a torn last line is never judged


def test_audit_log_rewrite_streams_a_large_file_and_cleans_a_killed_runs_temp(tmp_path):
    log = tmp_path / "audit.jsonl"
    old, new = audit_line(NOW - timedelta(days=40), "old"), audit_line(NOW, "new")
    with log.open("w", encoding="utf-8") as fh:
        for i in range(200_000):
            fh.write(old if i % 2 else new)
    (tmp_path / ("audit.jsonl" + TEMP_SUFFIX)).write_bytes(b"left by a killed run")
    assert expire_audit_log(log, NOW - timedelta(days=30)) == 100_000
    with log.open(encoding="utf-8") as fh:
        assert sum(1 for _ in fh) == 100_000
    assert '"old"' not in log.read_text(encoding="utf-8")
    assert not (tmp_path / ("audit.jsonl" + TEMP_SUFFIX)).exists()


def test_crawl_log_records_expire_with_their_continuation_lines(tmp_path):
    log = tmp_path / "crawl.log"

    def stamp(moment: datetime) -> str:
        return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")  # Scrapy logs local time

    log.write_text(
        f"{stamp(NOW - timedelta(days=40))} [scrapy.core.engine] INFO: Spider opened (Zoë's page)\n"
        f"{stamp(NOW - timedelta(days=40))} [scrapy.core.scraper] ERROR: Spider error\n"
        'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: jane@example.org\n'
        f"{stamp(NOW - timedelta(days=2))} [scrapy.core.engine] INFO: Spider opened\n"
        "a continuation line of a recent record\n", encoding="utf-8")
    result = LogPurgeResult()
    expire_crawl_log(log, NOW - timedelta(days=30), Settings(), result=result)
    text = log.read_text(encoding="utf-8")
    assert result.log_lines == 5  # two records, one with a three-line traceback
    assert "Zoë" not in text and "jane@example.org" not in text and "Traceback" not in text
    assert text.count("Spider opened") == 1 and "a continuation line of a recent record" in text


def test_undated_crawl_log_goes_whole_once_old(tmp_path):
    log = tmp_path / "crawl.log"
    log.write_text("INFO: no time here\n", encoding="utf-8")
    settings = Settings({"LOG_FORMAT": "%(levelname)s: %(message)s"})
    result = LogPurgeResult()
    expire_crawl_log(log, datetime.now(UTC) - timedelta(days=1), settings, result=result)
    assert log.exists() and result.log_files_removed == 0
    old = time.time() - 3 * 86400
    os.utime(log, (old, old))
    expire_crawl_log(log, datetime.now(UTC) - timedelta(days=1), settings, result=result)
    assert not log.exists() and result.log_files_removed == 1


# --------------------------------------------------------------------------- the HTTP cache


class PagesSpider(scrapy.Spider):
    name = "cached"

    def __init__(self, urls=(), **kw):  # type: ignore[no-untyped-def]
        super().__init__(**kw)
        self.start_urls = list(urls)

    def parse(self, response):  # type: ignore[no-untyped-def]
        yield {"url": response.url}


@pytest.mark.parametrize("storage", ["scrapy.extensions.httpcache.FilesystemCacheStorage",
                                     "scrapy.extensions.httpcache.DbmCacheStorage"])
@coroutine_test
async def test_http_cache_entries_expire(tmp_path, mockserver, storage):
    cache = tmp_path / "httpcache"
    settings = {"HTTPCACHE_ENABLED": True, "HTTPCACHE_DIR": str(cache), "HTTPCACHE_STORAGE": storage,
                "HTTPCACHE_DBM_MODULE": "dbm.dumb"}
    crawler = get_crawler(PagesSpider, settings)
    await crawler.crawl_async(urls=[mockserver.url("/index.html"), mockserver.url("/page.html")])
    assert crawler.stats.get_value("httpcache/store") == 2
    s = Settings(settings)
    now = datetime.now(UTC)

    def pages_held() -> bool:
        held = b"".join(p.read_bytes() for p in cache.glob("**/*") if p.is_file()).lower()
        return b"<html" in held

    assert pages_held()
    assert expire_http_cache(s, now - timedelta(days=7)) == 0
    assert expire_http_cache(s, now + timedelta(seconds=1), dry_run=True) == 2
    assert expire_http_cache(s, now + timedelta(seconds=1), spider="other") == 0
    assert expire_http_cache(s, now + timedelta(seconds=1), spider="cached") == 2
    assert expire_http_cache(s, now + timedelta(seconds=1)) == 0
    # a DBM database is written afresh: no page is left in its free space
    assert not pages_held()


def test_http_cache_without_retention_caches_refused(tmp_path):
    policy = retention_policy(tmp_path)  # no retention.caches
    settings = Settings({"HTTPCACHE_ENABLED": True, "GDPR_POLICY": str(policy),
                         "GDPR_AUDIT_LOG": str(tmp_path / "a.jsonl")})
    crawler = get_crawler(PagesSpider, {"GDPR_POLICY": str(policy), "GDPR_AUDIT_LOG": str(tmp_path / "a.jsonl")})
    with pytest.raises(CacheRetentionError, match=r"sets no retention.caches.*HTTPCACHE_ENABLED = False"):
        update_settings(settings, crawler)


def test_http_cache_capped_at_retention_caches_and_unpurgeable_storage_refused(tmp_path):
    policy = write_policy(tmp_path, caches="P2D")
    crawler = get_crawler(PagesSpider, {"GDPR_POLICY": str(policy), "GDPR_AUDIT_LOG": str(tmp_path / "a.jsonl")})
    settings = Settings({"HTTPCACHE_ENABLED": True, "HTTPCACHE_EXPIRATION_SECS": 10 * 86400})
    update_settings(settings, crawler)
    assert settings.getint("HTTPCACHE_EXPIRATION_SECS") == 2 * 86400
    settings = Settings({"HTTPCACHE_ENABLED": True, "HTTPCACHE_EXPIRATION_SECS": 3600})
    update_settings(settings, crawler)
    assert settings.getint("HTTPCACHE_EXPIRATION_SECS") == 3600
    settings = Settings({"HTTPCACHE_ENABLED": True, "HTTPCACHE_STORAGE": "tests.test_logpurge.PagesSpider"})
    with pytest.raises(CacheRetentionError, match="cannot be purged"):
        update_settings(settings, crawler)


def test_http_cache_without_retention_caches_stops_scrapy_crawl(tmp_path):
    policy = retention_policy(tmp_path)
    spider = tmp_path / "spider.py"
    spider.write_text(
        "import scrapy\n"
        "class S(scrapy.Spider):\n"
        "    name = 's'\n"
        "    custom_settings = {'ADDONS': {'scrapy_gdpr.addon.Addon': 0}, 'HTTPCACHE_ENABLED': True}\n"
        "    start_urls = ['http://127.0.0.1:9/']\n"
        "    def parse(self, response):\n"
        "        yield {}\n", encoding="utf-8")
    proc = run_scrapy("runspider", str(spider), "-s", f"GDPR_POLICY={policy}",
                      "-s", f"GDPR_LEDGER=sqlite:///{tmp_path / 'l.sqlite3'}", cwd=tmp_path)
    assert proc.returncode == 3  # start-up refused (docs/operations.md)
    assert "Traceback" not in proc.stderr
    assert "retention.caches" in proc.stderr and "Spider opened" not in proc.stderr


# --------------------------------------------------------------------------- gdpr-purge and purge at open


def _seed(tmp_path: Path, spider: str, moment: datetime) -> dict[str, Path]:
    paths = {"audit": tmp_path / "audit" / f"{spider}.jsonl", "report": tmp_path / "reports" / f"{spider}-old.html",
             "log": tmp_path / "crawl.log"}
    paths["audit"].parent.mkdir(parents=True, exist_ok=True)
    paths["audit"].write_text(audit_line(moment, "old refusal of https://people.test/jane"), encoding="utf-8")
    paths["report"].parent.mkdir(parents=True, exist_ok=True)
    paths["report"].write_text("<html>old report</html>", encoding="utf-8")
    os.utime(paths["report"], (moment.timestamp(), moment.timestamp()))
    local = moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    paths["log"].write_text(f"{local} [scrapy.core.engine] INFO: old line about jane\n", encoding="utf-8")
    return paths


def test_gdpr_purge_expires_logs_reports_log_file_and_cache(tmp_path):
    policy = write_policy(tmp_path, logs="P30D", caches="P7D")
    old = datetime.now(UTC) - timedelta(days=20)
    paths = _seed(tmp_path, "pages", old)
    entry = tmp_path / "httpcache" / "pages" / "ab" / "ab12"
    entry.mkdir(parents=True)
    (entry / "meta").write_text(repr({"url": "https://people.test/jane", "timestamp": old.timestamp()}))
    (entry / "pickled_meta").write_bytes(b"x")
    (entry / "response_body").write_text("<html>Jane</html>")
    common = ["--policy", str(policy), "--spider", "pages", "--ledger", f"sqlite:///{tmp_path / 'l.sqlite3'}",
              "-s", f"GDPR_AUDIT_LOG={tmp_path / 'audit' / '%(name)s.jsonl'}",
              "-s", f"GDPR_REPORT_DIR={tmp_path / 'reports'}", "-s", f"LOG_FILE={paths['log']}",
              "-s", f"HTTPCACHE_DIR={tmp_path / 'httpcache'}", "-s", "HTTPCACHE_ENABLED=True"]
    # 20 days old: the cache (P7D) has expired, logs and reports (P30D) have not
    open_ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}").close()  # a crawl created it (purge never does)
    proc = run_scrapy("gdpr-purge", *common, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "1 HTTP cache entries" in proc.stdout and not entry.exists()
    assert "jane" in paths["audit"].read_text() and paths["report"].exists() and "jane" in paths["log"].read_text()
    # 40 days on: all of it
    later = (datetime.now(UTC) + timedelta(days=20)).isoformat()
    proc = run_scrapy("gdpr-purge", "--now", later, *common, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "jane" not in paths["audit"].read_text()
    assert not paths["report"].exists()
    assert "jane" not in paths["log"].read_text()
    assert "1 crawl log line(s), 0 crawl log file(s), 1 report file(s)" in proc.stdout


def test_gdpr_purge_without_a_policy_says_logs_were_not_purged(tmp_path):
    open_ledger(f"sqlite:///{tmp_path / 'l.sqlite3'}").close()  # a crawl created it (purge never does)
    proc = run_scrapy("gdpr-purge", "--ledger", f"sqlite:///{tmp_path / 'l.sqlite3'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "logs and caches not purged: no policy" in proc.stderr


@coroutine_test
async def test_purge_at_spider_open_expires_the_spiders_logs(tmp_path):
    policy = write_policy(tmp_path, logs="P30D", caches="P7D")
    paths = _seed(tmp_path, "cached", datetime.now(UTC) - timedelta(days=45))
    other = tmp_path / "reports" / "someone-else-old.html"
    other.write_text("x")
    os.utime(other, (0, 0))
    # a fixed name: get_crawler() applies the add-on before the spider exists
    settings = {"ADDONS": {Addon: 0}, "GDPR_POLICY": str(policy), "GDPR_AUDIT_LOG": str(paths["audit"]),
                "GDPR_REPORT_DIR": str(tmp_path / "reports"), "GDPR_LEDGER": f"sqlite:///{tmp_path / 'l.sqlite3'}",
                "LOG_FILE": str(paths["log"]), "HTTPCACHE_ENABLED": True, "HTTPCACHE_DIR": str(tmp_path / "cache")}
    old_entry = tmp_path / "cache" / "cached" / "ab" / "ab12"
    old_entry.mkdir(parents=True)
    (old_entry / "meta").write_text(repr({"timestamp": time.time() - 8 * 86400}))
    (old_entry / "pickled_meta").write_bytes(b"x")
    crawler = get_crawler(PagesSpider, settings)
    assert crawler.settings.getint("HTTPCACHE_EXPIRATION_SECS") == 7 * 86400
    await crawler.crawl_async(urls=[])
    assert not old_entry.exists()
    assert crawler.stats.get_value("gdpr/retention/purged/cache_entries") == 1
    audit = paths["audit"].read_text(encoding="utf-8")
    assert "jane" not in audit and "crawl_started" in audit
    assert not paths["report"].exists() and other.exists()  # another spider's reports follow its own policy
    assert "old line about jane" not in paths["log"].read_text(encoding="utf-8")
    assert crawler.stats.get_value("gdpr/retention/purged/audit_lines") == 1
    assert crawler.stats.get_value("gdpr/retention/purged/reports") == 1


def test_gdpr_purge_in_a_project_uses_each_spiders_policy(tmp_path):
    from tests.test_command_lint import make_project

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    alpha = write_policy(tmp_path / "a", logs="P30D", caches="P7D")
    beta = write_policy(tmp_path / "b", logs="P90D", caches="P60D")
    root = make_project(tmp_path, alpha=alpha, beta=beta)
    settings = root / "proj" / "settings.py"
    settings.write_text(settings.read_text() + 'LOG_FILE = "out/crawl.log"\nHTTPCACHE_DIR = "cache"\n', encoding="utf-8")
    out = root / "out"
    out.mkdir()
    forty = datetime.now(UTC) - timedelta(days=40)
    for name in ("alpha", "beta"):
        (out / f"audit-{name}.jsonl").write_text(audit_line(forty, f"{name} old"), encoding="utf-8")
        entry = root / ".scrapy" / "cache" / name / "ab" / "ab12"
        entry.mkdir(parents=True)
        (entry / "meta").write_text(repr({"timestamp": forty.timestamp()}))
        (entry / "pickled_meta").write_bytes(b"x")
    (out / "audit-purge.jsonl").write_text(audit_line(forty, "purge old"), encoding="utf-8")
    (out / "crawl.log").write_text(
        forty.astimezone().strftime("%Y-%m-%d %H:%M:%S") + " [x] INFO: old\n", encoding="utf-8")
    open_ledger("sqlite:///out/ledger.sqlite3", base=root).close()  # a crawl created it (purge never does)
    proc = run_scrapy("gdpr-purge", cwd=root)
    assert proc.returncode == 0, proc.stderr
    # alpha (P30D) expired, beta (P90D) kept; shared files per the shortest period
    assert (out / "audit-alpha.jsonl").read_text() == ""
    assert "beta old" in (out / "audit-beta.jsonl").read_text()
    assert "purge old" not in (out / "audit-purge.jsonl").read_text() and "[x] INFO: old" not in (out / "crawl.log").read_text()
    assert not (root / ".scrapy" / "cache" / "alpha" / "ab" / "ab12").exists()
    assert (root / ".scrapy" / "cache" / "beta" / "ab" / "ab12").exists()
    # a gated spider whose policy cannot be loaded: said, exit status 1, the rest done
    (root / "policies" / "beta-policy.yaml").unlink()
    proc = run_scrapy("gdpr-purge", cwd=root)
    assert proc.returncode == 1 and "logs and caches of spider beta not purged" in proc.stderr


@coroutine_test
async def test_dbm_cache_purged_at_spider_open(tmp_path):
    import dbm.dumb

    policy = write_policy(tmp_path, caches="P7D")
    cache = tmp_path / "cache"
    cache.mkdir()
    with dbm.dumb.open(str(cache / "cached.db"), "c") as db:
        db["old_data"] = b"<html>Jane's page</html>"
        db["old_time"] = str(time.time() - 8 * 86400)
        db["new_data"] = b"<html>fresh</html>"
        db["new_time"] = str(time.time())
    settings = {"ADDONS": {Addon: 0}, "GDPR_POLICY": str(policy), "GDPR_AUDIT_LOG": str(tmp_path / "a.jsonl"),
                "GDPR_REPORT_DIR": str(tmp_path / "reports"), "GDPR_LEDGER": f"sqlite:///{tmp_path / 'l.sqlite3'}",
                "HTTPCACHE_ENABLED": True, "HTTPCACHE_DIR": str(cache),
                "HTTPCACHE_STORAGE": "scrapy.extensions.httpcache.DbmCacheStorage", "HTTPCACHE_DBM_MODULE": "dbm.dumb"}
    crawler = get_crawler(PagesSpider, settings)
    await crawler.crawl_async(urls=[])
    assert crawler.stats.get_value("gdpr/retention/purged/cache_entries") == 1
    with dbm.dumb.open(str(cache / "cached.db"), "r") as db:  # the middleware closed it after the purge
        assert sorted(db.keys()) == [b"new_data", b"new_time"]
    assert b"Jane" not in b"".join(p.read_bytes() for p in cache.iterdir())

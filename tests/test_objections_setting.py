"""``GDPR_OBJECTIONS`` adds a list to the policy's objection list and never replaces it."""

from __future__ import annotations

from scrapy_gdpr.ledger import open_ledger
from scrapy_gdpr.objections import append_objection
from scrapy_gdpr.runtime import get_runtime
from tests.test_gate import crawl, hosts_requested, local, refusals, write_policy
from tests.utils import coroutine_test, run_scrapy


@coroutine_test
async def test_policy_objection_list_applies_when_setting_names_another(tmp_path, logged_mockserver):
    """The reviewed policy's list (objections.txt next to the policy) still blocks with
    GDPR_OBJECTIONS pointing at an empty list, e.g. one passed on a command line."""
    url = logged_mockserver.url("/people/jane.html", host="gate-a.test")
    append_objection(tmp_path / "objections.txt", "url", url)
    empty = tmp_path / "elsewhere" / "objections.txt"
    empty.parent.mkdir()
    empty.write_text("", encoding="utf-8")
    policy = write_policy(tmp_path, [local("gate-a.test")])
    crawler = await crawl(tmp_path, policy, [url], settings={"GDPR_OBJECTIONS": str(empty)})
    assert crawler.spider.failed == {url: "objection"}
    assert hosts_requested(logged_mockserver) == []
    [line] = refusals(tmp_path)
    assert line["clause"].startswith("objections.path")


@coroutine_test
async def test_both_lists_apply(tmp_path, logged_mockserver):
    in_policy = logged_mockserver.url("/people/jane.html", host="gate-a.test")
    in_setting = logged_mockserver.url("/people/john.html", host="gate-a.test")
    free = logged_mockserver.url("/index.html", host="gate-a.test")
    append_objection(tmp_path / "objections.txt", "url", in_policy)
    shared = tmp_path / "shared" / "objections.txt"
    append_objection(shared, "url", in_setting)
    policy = write_policy(tmp_path, [local("gate-a.test")])
    crawler = await crawl(tmp_path, policy, [in_policy, in_setting, free], settings={"GDPR_OBJECTIONS": str(shared)})
    assert crawler.spider.failed == {in_policy: "objection", in_setting: "objection"}
    assert hosts_requested(logged_mockserver) == ["gate-a.test/index.html"]
    clauses = {line["url"]: line["clause"] for line in refusals(tmp_path)}
    assert clauses[in_policy].startswith("objections.path")
    assert clauses[in_setting] == "GDPR_OBJECTIONS setting"
    section = get_runtime(crawler).report_sections["gate"]["objections"]
    assert section["path"] == str(tmp_path / "objections.txt")
    assert section["added_by_setting"] == [{"path": str(shared), "entries_at_start": 1}]


@coroutine_test
async def test_setting_naming_the_policy_list_reads_it_once(tmp_path, logged_mockserver):
    url = logged_mockserver.url("/people/jane.html", host="gate-a.test")
    append_objection(tmp_path / "objections.txt", "url", url)
    policy = write_policy(tmp_path, [local("gate-a.test")])
    crawler = await crawl(tmp_path, policy, [url], settings={"GDPR_OBJECTIONS": str(tmp_path / "objections.txt")})
    assert crawler.spider.failed == {url: "objection"}
    [line] = refusals(tmp_path)
    assert line["clause"].startswith("objections.path")


def test_erase_with_a_policy_writes_to_the_policy_list(tmp_path):
    """An erasure goes to the list every crawl under the policy reads, not to a list
    only crawls with the same settings read."""
    policy = write_policy(tmp_path, [local("gate-a.test")])
    other = tmp_path / "other.txt"
    open_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}").close()  # a crawl created it (erasure never does)
    proc = run_scrapy("gdpr-erase", "--url", "https://gate-a.test/jane", "--policy", str(policy),
                      "--ledger", f"sqlite:///{tmp_path / 'ledger.sqlite3'}", "-s", f"GDPR_OBJECTIONS={other}",
                      "--receipt-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "url https://gate-a.test/jane" in (tmp_path / "objections.txt").read_text(encoding="utf-8")
    assert not other.exists()

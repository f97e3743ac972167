from __future__ import annotations

import json
import re
import subprocess
from datetime import date
from typing import TYPE_CHECKING, Any

import pytest

from scrapy_gdpr.policy import load_policy
from scrapy_gdpr.review import build_documents, render_notice_html, render_review_html, render_review_markdown
from tests.utils import DATA, chromium_path, require_service, run_scrapy

if TYPE_CHECKING:
    from pathlib import Path

POLICIES = DATA / "policies"
VALID = POLICIES / "valid.yaml"
WARNINGS = POLICIES / "warnings.yaml"


def report(tmp_path: Path, policy: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / "out"
    result = run_scrapy("gdpr-report", str(policy), "--out", str(out), *extra)
    return result, out


def text_of(html: str) -> str:
    """The visible text, roughly: tags removed, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#x27;", "'").replace("&quot;", '"')


def test_report_writes_every_document(tmp_path):
    result, out = report(tmp_path, VALID)
    assert result.returncode == 0, result.stderr
    names = ["test-gallery-review.html", "test-gallery-review.md", "test-gallery-crawler-info.html",
             "test-gallery-crawler-info.json", "test-gallery-review.json"]
    assert result.stdout.splitlines() == [str(out / n) for n in names]
    assert all((out / n).stat().st_size > 1000 for n in names)
    fingerprint = load_policy(VALID).fingerprint

    review = text_of((out / "test-gallery-review.html").read_text(encoding="utf-8"))
    for expected in (
        "Example Research Ltd", "1 Example Street, Exampletown", "Dana Protection",
        "Index public gallery pages so people can find them",
        "Legitimate interests of the controller", "Art. 6(1)(f)", "LIA-2026-004", "2099-10-01",
        "bystanders", "site authors", "self image",
        "30 days", "14 days", "1 year", "7 days",
        f"file {VALID.resolve()}", f"Fingerprint {fingerprint}",
        "http://127.0.0.1/terms.html", "permits", "Dana Protection on 2026-10-01", "/private/",
        "Faces found in images are blurred beyond recognition before the image is stored.",
        "No Art. 9 condition is documented",
        "X-Robots-Tag", "TDMRep", "Content-Signal", "Content-Usage",
        ".cn", ".no", "objections.txt", "Checklist of open items", "Sign-off",
    ):
        assert expected in review, expected

    md = (out / "test-gallery-review.md").read_text(encoding="utf-8")
    assert md.startswith("# Policy review: Test gallery crawl\n")
    assert f"- Fingerprint: `{fingerprint}`" in md and f"- File: `{VALID.resolve()}`" in md
    assert "| Stored images | **14 days** | `retention.images` = `P14D` |" in md
    assert "## 7. Checklist of open items" in md

    notice = text_of((out / "test-gallery-crawler-info.html").read_text(encoding="utf-8"))
    for expected in (
        "About GdprTestBot, the web crawler of Example Research Ltd",
        "GdprTestBot/1.0 (+http://127.0.0.1/crawler-info.html)",
        "User-agent: GdprTestBot Disallow: /",
        "noai", "noimageai", "tdm-reservation: 1", "Content-Signal:", "Content-Usage:",
        "No identity document is needed, and there is no time limit",
        "dpo@example.org", "Faces found in images are blurred", "because it is in our legitimate interests",
        "Images: 14 days",
    ):
        assert expected.lower() in notice.lower(), expected

    # the machine-readable description beside the page, linked from it
    page = (out / "test-gallery-crawler-info.html").read_text(encoding="utf-8")
    assert "<a rel='alternate' type='application/json' href='test-gallery-crawler-info.json'>" in page
    described = json.loads((out / "test-gallery-crawler-info.json").read_text(encoding="utf-8"))
    assert described["format"] == "scrapy-gdpr-crawler-description/1"
    assert described["product_token"] == "GdprTestBot"
    assert described["user_agent"] == "GdprTestBot/1.0 (+http://127.0.0.1/crawler-info.html)"
    assert described["information_page"] == "http://127.0.0.1/crawler-info.html"
    assert described["contact"]["email"] == "dpo@example.org"
    assert described["robots_txt"]["product_tokens"][0] == {
        "token": "GdprTestBot", "fetches": True, "purposes": [p["id"] for p in described["purposes"]]}
    assert {s["key"] for s in described["signals"] if s["honoured"]} >= {
        "x_robots_tag", "meta_robots", "tdmrep", "content_signal", "content_usage", "image_metadata",
        "content_credentials", "payment_required", "rsl"}
    assert described["policy_fingerprint"] == fingerprint

    data = json.loads((out / "test-gallery-review.json").read_text(encoding="utf-8"))
    assert data["policy"] == {"id": "test-gallery", "title": "Test gallery crawl", "file": str(VALID.resolve()),
                              "fingerprint": fingerprint, "version": 1}
    assert data["record"]["controller"]["name"] == "Example Research Ltd"
    assert {r["key"]: r["words"] for r in data["record"]["retention"]}["retention.images"] == "14 days"
    assert data["notice"]["product_token"] == "GdprTestBot"
    # the margin as the redaction applies it: small faces get a wider one
    assert data["handling"]["faces"]["margin"] == 0.25
    assert data["handling"]["faces"]["margin_words"] == "25% of the face size (50% for faces under 40 px high)"
    for name in ("test-gallery-review.html", "test-gallery-review.md"):
        assert "(50% for faces under 40 px high)" in (out / name).read_text(encoding="utf-8"), name


def test_documents_use_no_external_resources(tmp_path):
    result, out = report(tmp_path, WARNINGS, "--today", "2026-11-01")
    assert result.returncode == 0, result.stderr
    for name in ("news-archive-review.html", "news-archive-crawler-info.html"):
        html = (out / name).read_text(encoding="utf-8")
        assert html.startswith("<!doctype html>")
        assert "@media print" in html
        for pattern in (r"<script", r"<link", r"<img", r"\bsrc=", r"@import", r"url\("):
            assert not re.search(pattern, html, re.IGNORECASE), (name, pattern)


def test_checklist_lists_open_items(tmp_path):
    result, out = report(tmp_path, WARNINGS, "--today", "2026-11-01")
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "news-archive-review.json").read_text(encoding="utf-8"))
    items = {(i["kind"], i["path"]): i for i in data["checklist"]}
    assert items[("warning", "purposes[0].review_due")]["line"] == 24
    assert ("warning", "purposes[0].lawful_basis") in items  # LIA missing
    assert ("warning", "purposes[1]") in items  # DPIA missing where biometric data may be processed
    assert ("warning", "domains[0].terms") in items  # fingerprint missing
    assert ("warning", "domains[1]") in items  # no terms review
    assert ("check", "domains[0].terms.conditions") in items
    assert ("check", "dpo") in items and items[("check", "dpo")]["line"] is None
    assert ("check", "transfers[0].reference") in items
    assert [i["kind"] for i in data["checklist"]] == sorted(
        (i["kind"] for i in data["checklist"]), key=["error", "warning", "review", "check"].index
    )
    review = text_of((out / "news-archive-review.html").read_text(encoding="utf-8"))
    assert "9 open item(s)" in review
    assert "purposes[0].review_due : the lawful-basis review is due on 2026-11-20" in review
    assert "standard contractual clauses (Art. 46(2)(c))" in review
    assert "Faces found in images are pixelated" in review
    assert "Records of type ArticleItem 1 year" in review
    assert "not crawled no fingerprint of the reviewed terms is recorded" in review
    md = (out / "news-archive-review.md").read_text(encoding="utf-8")
    assert "- [ ] **warning** line 24 `purposes[0].review_due`: the lawful-basis review is due on 2026-11-20" in md


def test_reviews_due_soon_are_listed(tmp_path):
    # a review due in 60 days is not a lint warning yet, but is on the checklist
    policy = load_policy(VALID)
    doc = build_documents(policy, [], today=date(2099, 8, 2))
    [item] = [i for i in doc["checklist"] if i["kind"] == "review"]
    assert item["path"] == "purposes[0].review_due" and "(in 60 days)" in item["text"]


def test_format_option(tmp_path):
    result, out = report(tmp_path, VALID, "--format", "md")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "test-gallery-crawler-info.html", "test-gallery-crawler-info.json", "test-gallery-review.json",
        "test-gallery-review.md"
    ]
    result, _ = report(tmp_path, VALID, "--format", "pdf")
    assert result.returncode == 2 and "--format" in result.stderr + result.stdout


def test_invalid_policy_writes_nothing(tmp_path):
    bad = POLICIES / "invalid-many.yaml"
    result, out = report(tmp_path, bad)
    assert result.returncode == 1
    assert f"{bad}:40: error: faces.action: faces are set to be kept" in result.stderr
    assert f"{bad}: invalid policy (5 error(s)); no report written" in result.stderr
    assert result.stdout == ""
    assert not out.exists()


def test_missing_policy_and_usage(tmp_path):
    result, _out = report(tmp_path, tmp_path / "missing.yaml")
    assert result.returncode == 1 and "the policy file does not exist" in result.stderr
    result = run_scrapy("gdpr-report", cwd=tmp_path)
    assert result.returncode == 2


def test_default_output_folder_is_gdpr_report_dir(tmp_path):
    result = run_scrapy("gdpr-report", str(VALID), "-s", "GDPR_REPORT_DIR=reports-here", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "reports-here" / "test-gallery-review.html").exists()


def test_markdown_escapes_table_cells():
    policy = load_policy(WARNINGS, today=date(2026, 11, 1))
    doc = build_documents(policy, [])
    doc["record"]["recipients"][0]["name"] = "A | B <script>"
    md = render_review_markdown(doc)
    assert "A \\| B \\<script\\>" in md
    html = render_review_html(doc)
    assert "A | B &lt;script&gt;" in html and "<script>" not in html
    assert "<script" not in render_notice_html(doc)


@pytest.mark.requires_chromium
def test_documents_render_in_chromium(tmp_path):
    chromium = chromium_path()
    if chromium is None:
        require_service("chromium", "set GDPR_TEST_CHROMIUM or install chromium")
    from PIL import Image, ImageStat

    result, out = report(tmp_path, WARNINGS, "--today", "2026-11-01")
    assert result.returncode == 0, result.stderr
    for name in ("news-archive-review.html", "news-archive-crawler-info.html"):
        png = tmp_path / f"{name}.png"
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--screenshot={png}", "--window-size=1000,1400",
             (out / name).resolve().as_uri()],
            capture_output=True, timeout=120, check=False,
        )
        assert png.exists(), name
        with Image.open(png) as image:
            gray = image.convert("L")
            stat = ImageStat.Stat(gray)
            # mostly white paper with dark text on it: not blank, not an error page
            assert 200 < stat.mean[0] < 254, (name, stat.mean)
            assert stat.stddev[0] > 20, (name, stat.stddev)
            assert gray.getextrema()[0] < 60, name


def test_faces_kept_under_art9_are_described_truthfully():
    text = VALID.read_text(encoding="utf-8").replace("action: blur", "action: keep") + (
        "special_categories:\n  biometric:\n    condition: archiving_research_statistics\n    reference: DPIA-7\n"
        "    reviewed_by: Dana Protection\n    reviewed_on: 2026-10-01\n"
    )
    from scrapy_gdpr.policy import validate_policy_text

    policy, findings = validate_policy_text(text, "keep.yaml", today=date(2026, 11, 1))
    assert policy is not None
    doc = build_documents(policy, findings, today=date(2026, 11, 1))
    assert doc["handling"]["faces"]["words"] == "Faces found in images are kept unredacted."
    assert doc["handling"]["faces"]["art9"].startswith("Faces are kept under Art. 9(2)(j)")
    notice = text_of(render_notice_html(doc))
    assert "Faces found in images are kept unredacted." in notice
    assert "Art. 9(2)(j)" in notice and "No face template" not in notice
    review = text_of(render_review_html(doc))
    assert "archiving in the public interest" in review and "DPIA-7" in review
    assert "purposes[0] : biometric data may be processed but no DPIA reference is recorded" in review


def test_today_option_is_stated(tmp_path):
    result, out = report(tmp_path, WARNINGS, "--today", "2026-11-01")
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "news-archive-review.json").read_text(encoding="utf-8"))
    assert data["checked_as_of"] == "2026-11-01"
    assert data["generated_on"] == date.today().isoformat()
    assert "dates checked as of 2026-11-01" in (out / "news-archive-review.md").read_text(encoding="utf-8")


def test_processing_record_over_a_period(tmp_path):
    from scrapy_gdpr.ledger import open_ledger

    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    with open_ledger(ledger_url):
        pass  # an empty, initialised ledger
    audit = tmp_path / "audit.jsonl"
    audit.write_text(
        json.dumps({"time": "2026-06-01T10:00:00.000+00:00", "spider": "valid", "url": "", "decision": "crawl_started"})
        + "\n"
        + json.dumps({"time": "2026-06-01T10:00:01.000+00:00", "spider": "valid", "url": "http://a.test/x",
                      "decision": "refused", "reason": "robots"})
        + "\n",
        encoding="utf-8",
    )
    result, out = report(
        tmp_path, DATA / "policies" / "valid.yaml",
        "--since", "2026-01-01", "--until", "2026-12-31", "--ledger", ledger_url, "--audit-log", str(audit),
    )
    assert result.returncode == 0, result.stderr
    md = (out / "test-gallery-processing-record.md").read_text(encoding="utf-8")
    assert "2026-01-01" in md and "Crawls started: 1" in md and "robots 1" in md
    data = json.loads((out / "test-gallery-processing-record.json").read_text(encoding="utf-8"))
    assert data["period"]["since"].startswith("2026-01-01")
    assert "<table>" in (out / "test-gallery-processing-record.html").read_text(encoding="utf-8")
    bad, _ = report(tmp_path, DATA / "policies" / "valid.yaml", "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr


def _policy_with_domains(domains_yaml: str) -> Any:
    from scrapy_gdpr.policy import validate_policy_text

    text = VALID.read_text(encoding="utf-8")
    start = text.index("domains:\n")
    end = text.index("jurisdictions:\n")
    text = text[:start] + domains_yaml + text[end:]
    policy, findings = validate_policy_text(text, "domains.yaml", today=date(2026, 11, 1))
    assert policy is not None, findings
    return policy


TERMS = """    terms:
      url: http://{host}/terms.html
      verdict: permits
      reviewed_on: 2026-10-01
      reviewed_by: Dana Protection
      fingerprint: "sha256:0000000000000000000000000000000000000000000000000000000000000000"
"""


def test_domains_every_request_to_which_is_refused_are_not_badged_crawled():
    hosts = ["127.0.0.1", "10.0.0.5", "localhost", "169.254.169.254", "shop.example.cn", "example.org"]
    domains = "domains:\n" + "".join(f"  - domain: {h}\n" + TERMS.format(host=h) for h in hosts)
    domains += "  - domain: 192.168.1.10\n    allow_private_network: true\n" + TERMS.format(host="192.168.1.10")
    policy = _policy_with_domains(domains)
    doc = build_documents(policy, [], today=date(2026, 11, 1))
    by_domain = {d["domain"]: d for d in doc["domains"]}
    assert {d: v["crawled"] for d, v in by_domain.items()} == {
        "127.0.0.1": False, "10.0.0.5": False, "localhost": False, "169.254.169.254": False,
        "shop.example.cn": False, "example.org": True, "192.168.1.10": True,
    }
    assert "127.0.0.1 is a loopback address and allow_private_network is not set" in by_domain["127.0.0.1"]["status"]
    assert "10.0.0.5 is a private address" in by_domain["10.0.0.5"]["status"]
    assert "cloud metadata" in by_domain["169.254.169.254"]["status"]
    assert ".cn is an excluded top-level domain" in by_domain["shop.example.cn"]["status"]
    # listed in the checklist too
    warned = {i["path"] for i in doc["checklist"] if i["kind"] == "warning"}
    assert {"domains[0]", "domains[1]", "domains[2]", "domains[3]", "domains[4]"} <= warned
    assert "domains[5]" not in warned and "domains[6]" not in warned
    # the HTML badge says what the gate does
    review = render_review_html(doc)
    section = review.split("<h3>127.0.0.1</h3>", 1)[1].split("<h3>", 1)[0]
    assert "not crawled</span>" in section and "'tag yes'" not in section
    ok = review.split("<h3>example.org</h3>", 1)[1].split("<h3>", 1)[0]
    assert "<span class='tag yes'>crawled</span>" in ok


def _project(tmp_path: Path, settings: str) -> Path:
    project = tmp_path / "project"
    (project / "proj").mkdir(parents=True)
    (project / "scrapy.cfg").write_text("[settings]\ndefault = proj.settings\n", encoding="utf-8")
    (project / "proj" / "__init__.py").write_text("", encoding="utf-8")
    (project / "proj" / "settings.py").write_text(settings, encoding="utf-8")
    return project


@pytest.mark.parametrize(("settings", "on"), [
    ("BOT_NAME = 'proj'\n", False),
    ("BOT_NAME = 'proj'\nTELNETCONSOLE_ENABLED = True\n", True),
])
def test_review_states_the_console_the_project_settings_give(tmp_path, settings, on):
    project = _project(tmp_path, settings)
    result = run_scrapy("gdpr-report", str(VALID), "--out", str(tmp_path / "out"), cwd=project)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "out" / "test-gallery-review.json").read_text(encoding="utf-8"))
    telnet = {c["setting"]: c for c in data["consoles"]}["TELNETCONSOLE_ENABLED"]
    assert telnet["enabled"] is on
    review = text_of((tmp_path / "out" / "test-gallery-review.html").read_text(encoding="utf-8"))
    checklist = {i["path"] for i in data["checklist"]}
    if on:
        assert "Scrapy's telnet console is switched ON by the project's settings (TELNETCONSOLE_ENABLED)" in review
        assert "settings.TELNETCONSOLE_ENABLED" in checklist
    else:
        assert "Scrapy's telnet console is switched off" in review
        assert "settings.TELNETCONSOLE_ENABLED" not in checklist
    assert "Scrapy's remote-control console is switched off." not in review  # the old fixed sentence
    assert "Scrapy's remote-control server is switched off" in review


def test_pages_statement_matches_the_item_gate():
    # the item gate drops an item when ANY of the crawl's opt-out purposes is reserved
    policy = load_policy(WARNINGS, today=date(2026, 11, 1))
    doc = build_documents(policy, [], today=date(2026, 11, 1))
    pages = " ".join(doc["handling"]["pages"])
    assert "reserve every purpose" not in pages
    assert ("Nothing is kept from a page whose opt-out signals reserve any of this crawl's purposes "
            "(search indexing, input to AI answers (retrieval, grounding))") in pages
    # the gate lets a listed domain's reviewed terms page through wherever it is published
    measures = " ".join(doc["record"]["security_measures"])
    assert "the reviewed terms page of each listed domain, wherever it is published" in measures


def test_review_names_an_objection_list_the_settings_add(tmp_path):
    project = _project(tmp_path, "BOT_NAME = 'proj'\nGDPR_OBJECTIONS = 'elsewhere/objections.txt'\n")
    result = run_scrapy("gdpr-report", str(VALID), "--out", str(tmp_path / "out"), cwd=project)
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "out" / "test-gallery-review.json").read_text(encoding="utf-8"))
    assert data["objections"]["setting"] == "elsewhere/objections.txt"
    assert "settings.GDPR_OBJECTIONS" in {i["path"] for i in data["checklist"] if i["kind"] == "warning"}
    review = text_of((tmp_path / "out" / "test-gallery-review.html").read_text(encoding="utf-8"))
    assert "The project's settings also name an objection list: GDPR_OBJECTIONS = elsewhere/objections.txt" in review
    md = (tmp_path / "out" / "test-gallery-review.md").read_text(encoding="utf-8")
    assert "`GDPR_OBJECTIONS = elsewhere/objections.txt`" in md


def test_review_says_when_expired_data_is_deleted():
    from scrapy.settings import Settings

    policy = load_policy(VALID)
    default = " ".join(build_documents(policy, [], settings=Settings())["record"]["security_measures"])
    assert "what has expired is deleted at the start of every crawl and whenever scrapy gdpr-purge runs" in default
    off = Settings()
    off.set("GDPR_PURGE_ON_OPEN", False, "project")
    doc = build_documents(policy, [], settings=off)
    measures = " ".join(doc["record"]["security_measures"])
    assert "deleted when scrapy gdpr-purge runs, which must be scheduled" in measures
    assert "settings.GDPR_PURGE_ON_OPEN" in {i["path"] for i in doc["checklist"] if i["kind"] == "check"}


def test_the_margin_words_need_no_opencv():
    """The review document and the compliance report (written at the end of every crawl)
    state the small-face margin without importing OpenCV, which a crawl without images
    never loads."""
    import sys

    from tests.utils import ROOT

    code = ("import sys\nfrom scrapy_gdpr.documents.vocabulary import margin_words\n"
            "print(margin_words(0.25)); print(margin_words(0.6)); print(margin_words(0.0))\n"
            "print('cv2' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "25% of the face size (50% for faces under 40 px high)", "60% of the face size", "0% of the face size", "False"]

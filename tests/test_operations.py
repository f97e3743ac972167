"""Safe in operation: real ``scrapy crawl`` runs in a project, in subprocesses.

Consoles off, exit statuses and finish reasons a scheduler can act on, the INFO
close summary, start-up refusals without tracebacks in every log mode, and a
policy path that works from any sub-folder of the project.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.utils import DATA, free_port, run_scrapy, write_policy

if TYPE_CHECKING:
    from pathlib import Path

SETTINGS = """
BOT_NAME = "ops"
SPIDER_MODULES = ["ops.spiders"]
ADDONS = {{"scrapy_gdpr.Addon": 0}}
GDPR_POLICY = "policies/ops.yaml"
GDPR_AUDIT_LOG = "out/audit-%(name)s.jsonl"
GDPR_REPORT_DIR = "out/reports"
GDPR_LEDGER = "sqlite:///out/ledger.sqlite3"
TELNETCONSOLE_PORT = [{port}, {port}]
LOG_LEVEL = "INFO"
"""

SPIDERS = '''
import socket

import scrapy

BASE = {base!r}
TELNET_PORT = {port}


def telnet_open():
    try:
        with socket.create_connection(("127.0.0.1", TELNET_PORT), timeout=2):
            return True
    except OSError:
        return False


class OkSpider(scrapy.Spider):
    name = "ok"
    start_urls = [BASE + "/index.html"]

    def parse(self, response):
        self.logger.info("TELNET-PROBE %s", "open" if telnet_open() else "closed")
        yield {{"url": response.url}}


class BlockedSpider(scrapy.Spider):
    """Every request refused: the host is not in the policy."""

    name = "blocked"
    start_urls = ["http://unlisted.invalid/", "http://unlisted.invalid/other"]

    def parse(self, response):
        yield {{"url": response.url}}


class DroppedSpider(scrapy.Spider):
    """The page is fetched, but the only item has no provenance and is dropped."""

    name = "dropped"

    async def start(self):
        yield scrapy.Request(BASE + "/index.html", callback=self.parse)
        yield {{"url": "from nowhere"}}

    def parse(self, response):
        return None


class KeepPhoto:
    """Writes the checked bytes the item holds at the end (JSON feeds cannot carry bytes)."""

    def process_item(self, item):
        with open("out/photo.out", "wb") as fh:
            fh.write(item["image_bytes"])
        return item


class PhotoSpider(scrapy.Spider):
    """Image bytes through the face stage, its detector built on first use."""

    name = "photo"
    start_urls = [BASE + "/index.html"]
    custom_settings = {{"ITEM_PIPELINES": {{KeepPhoto: 900}}}}

    def parse(self, response):
        with open({image!r}, "rb") as fh:
            yield {{"url": response.url, "image_bytes": fh.read()}}


class FacesSpider(scrapy.Spider):
    """Image bytes while the face model cannot be loaded."""

    name = "faces"
    start_urls = [BASE + "/index.html"]
    # the detector, built in a worker on first use, fails as with a damaged model file
    custom_settings = {{"EXTENSIONS": {{"tests.utils.BrokenFaceModel": 0}}}}

    def parse(self, response):
        with open({image!r}, "rb") as fh:
            yield {{"url": response.url, "image_bytes": fh.read()}}
'''


def make_project(tmp_path: Path, mockserver, *, extra_settings: str = "") -> Path:
    root = tmp_path / "project"
    (root / "ops" / "spiders").mkdir(parents=True)
    (root / "policies").mkdir()
    (root / "scrapy.cfg").write_text("[settings]\ndefault = ops.settings\n", encoding="utf-8")
    (root / "ops" / "__init__.py").write_text("", encoding="utf-8")
    port = free_port()
    (root / "ops" / "settings.py").write_text(SETTINGS.format(port=port) + extra_settings, encoding="utf-8")
    (root / "ops" / "spiders" / "__init__.py").write_text("", encoding="utf-8")
    image = str(DATA / "images" / "face-baseline.jpg")
    (root / "ops" / "spiders" / "spiders.py").write_text(
        SPIDERS.format(base=mockserver.url("").rstrip("/"), port=port, image=image), encoding="utf-8"
    )
    write_policy(root / "policies" / "ops.yaml", mockserver, ["127.0.0.1"])
    return root


def crawl(project: Path, spider: str, *args: str, cwd: Path | None = None):
    return run_scrapy("crawl", spider, *args, cwd=cwd or project, timeout=240)


# --------------------------------------------------------------------------- consoles, summary, ok


def test_ok_crawl_console_off_summary_and_exit_0(tmp_path, mockserver):
    project = make_project(tmp_path, mockserver)
    result = crawl(project, "ok")
    log = result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "Telnet console listening" not in log
    assert "TELNET-PROBE closed" in log
    assert "'finish_reason': 'finished'" in log
    assert "'gdpr/exit_status': 0" in log
    assert "[scrapy_gdpr.status] INFO: GDPR crawl summary: 1 response(s) fetched, 1 item(s) stored" in log
    # the robots.txt and terms fetches are counted apart, and not in the summary
    internal = re.search(r"'gdpr/internal/responses': (\d+)", log)
    received = re.search(r"'response_received_count': (\d+)", log)
    assert internal and received, log[-3000:]
    assert int(internal.group(1)) >= 2 and int(received.group(1)) == int(internal.group(1)) + 1
    # a media pipeline without its store is not needed, and not a warning
    assert "Disabled" not in log and "GdprFilesPipeline" not in log, log


@pytest.mark.parametrize(
    "extra_settings",
    [
        'EXTENSIONS = {"scrapy.extensions.corestats.CoreStats": None}\n',
        'STATS_CLASS = "scrapy.statscollectors.DummyStatsCollector"\n',
    ],
    ids=["without-corestats", "dummy-stats"],
)
def test_summary_counts_the_spiders_responses_without_kept_stats(tmp_path, mockserver, extra_settings):
    """When the stats keep no ``response_received_count`` (CoreStats switched off, or a
    stats collector that keeps nothing), the status extension counts the spider's
    responses itself, without the internal robots.txt and terms fetches."""
    project = make_project(tmp_path, mockserver, extra_settings=extra_settings)
    result = crawl(project, "ok")
    log = result.stderr
    assert result.returncode == 0, log[-3000:]
    assert "'response_received_count'" not in log
    assert "[scrapy_gdpr.status] INFO: GDPR crawl summary: 1 response(s) fetched" in log


def test_console_stays_on_when_the_project_switches_it_on(tmp_path, mockserver):
    project = make_project(tmp_path, mockserver, extra_settings="TELNETCONSOLE_ENABLED = True\n")
    result = crawl(project, "ok")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Telnet console listening" in result.stderr
    assert "TELNET-PROBE open" in result.stderr


def test_remote_consoles_helper():
    from scrapy.settings import Settings

    from scrapy_gdpr.addon import Addon, remote_consoles, telnet_console_enabled

    off = {"TELNETCONSOLE_ENABLED": False, "REMOTE_CONTROL_ENABLED": False}
    assert remote_consoles(Settings()) == off  # Scrapy's defaults say on; the add-on switches them off
    project = Settings({"TELNETCONSOLE_ENABLED": True}, priority="project")
    assert telnet_console_enabled(project) is True
    assert telnet_console_enabled(Settings({"TELNETCONSOLE_ENABLED": True}, priority="default")) is False
    cmdline = Settings()
    cmdline.set("REMOTE_CONTROL_ENABLED", "1", "cmdline")
    assert remote_consoles(cmdline)["REMOTE_CONTROL_ENABLED"] is True
    # after the add-on applied its settings the answer is the same
    from scrapy.utils.test import get_crawler

    crawler = get_crawler(settings_dict={"ADDONS": {Addon: 0}, "GDPR_POLICY": str(DATA / "policies" / "valid.yaml"),
                                         "GDPR_AUDIT_LOG": "", "GDPR_REPORT_DIR": ""})
    crawler._apply_settings()
    assert crawler.settings.getbool("TELNETCONSOLE_ENABLED") is False
    assert remote_consoles(crawler.settings) == off


# --------------------------------------------------------------------------- policy path


def test_crawl_from_a_sub_folder_finds_the_policy(tmp_path, mockserver):
    project = make_project(tmp_path, mockserver)
    sub = project / "ops" / "spiders"
    result = crawl(project, "ok", cwd=sub)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"GDPR policy {project.resolve() / 'policies' / 'ops.yaml'} loaded" in result.stderr
    # audit log, reports and ledger go to the project too, not into the sub-folder
    assert (project / "out" / "audit-ok.jsonl").exists()
    assert (project / "out" / "ledger.sqlite3").exists()
    assert not (sub / "out").exists()


def test_a_crawl_with_nolog_prints_nothing_not_even_the_face_models(tmp_path, mockserver):
    """``--nolog`` (or cron, which mails what a job prints): a crawl whose face stage
    builds its detector prints nothing, not MediaPipe's own start-up lines either."""
    project = make_project(tmp_path, mockserver)
    result = crawl(project, "photo", "--nolog")
    assert result.returncode == 0, result.stderr[-3000:]
    checked = (project / "out" / "photo.out").read_bytes()
    original = (DATA / "images" / "face-baseline.jpg").read_bytes()
    assert checked[:3] == b"\xff\xd8\xff" and checked != original  # the face stage's rendition
    assert result.stderr == "" and result.stdout == "", result.stderr


def test_missing_policy_names_the_absolute_path(tmp_path, mockserver):
    project = make_project(tmp_path, mockserver)
    (project / "policies" / "ops.yaml").unlink()
    result = crawl(project, "ok", "--nolog", cwd=project / "ops")
    assert result.returncode == 3
    expected = f"{project.resolve() / 'policies' / 'ops.yaml'}: error: the policy file does not exist"
    assert expected in result.stderr
    assert "relative to the project folder" in result.stderr


# --------------------------------------------------------------------------- start-up refused


@pytest.mark.parametrize(
    "mode",
    [[], ["--nolog"], ["-s", "LOG_FILE=LOGFILE"], ["-s", "LOG_LEVEL=ERROR"], ["-s", "LOG_LEVEL=CRITICAL"],
     ["-s", "TWISTED_REACTOR=twisted.internet.epollreactor.EPollReactor"]],
    ids=["default", "nolog", "logfile", "error", "critical", "twisted-reactor"],
)
def test_invalid_policy_is_printed_cleanly_in_every_log_mode(tmp_path, mockserver, mode):
    project = make_project(tmp_path, mockserver)
    policy = project / "policies" / "ops.yaml"
    policy.write_text(policy.read_text(encoding="utf-8").replace("action: blur", "action: keep"), encoding="utf-8")
    logfile = tmp_path / "crawl.log"
    args = [a.replace("LOGFILE", str(logfile)) for a in mode]
    result = crawl(project, "ok", *args)
    assert result.returncode == 3, result.stderr[-3000:]
    err = result.stderr
    assert "Traceback" not in err and "never retrieved" not in err
    assert err.count("scrapy-gdpr refused to start the crawl of spider 'ok': 1 problem(s)") == 1, err
    assert f"{policy.resolve()}:" in err and "error: faces.action: faces are set to be kept" in err
    assert "scrapy gdpr-lint --explain KEY" in err and "policy.schema.json" in err
    assert "docs/policy.md" not in err
    if mode and "LOG_FILE" in mode[-1]:
        assert "refused to start the crawl" in logfile.read_text(encoding="utf-8")


def test_invalid_gdpr_setting_refuses_start(tmp_path, mockserver):
    project = make_project(tmp_path, mockserver)
    result = crawl(project, "ok", "--nolog", "-s", "GDPR_FACE_WORKERS=-3")
    assert result.returncode == 3
    assert "GDPR_FACE_WORKERS and GDPR_FACE_QUEUE must be positive" in result.stderr
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- crawls that must not look successful


def test_every_request_refused_exits_4(tmp_path, mockserver):
    project = make_project(tmp_path, mockserver)
    result = crawl(project, "blocked")
    log = result.stderr
    assert result.returncode == 4, log[-3000:]
    assert "'finish_reason': 'gdpr_blocked'" in log
    assert "'gdpr/exit_status': 4" in log
    assert "nothing could be fetched: all 2 request(s) were refused" in log
    assert "  domain: 2, e.g. http://unlisted.invalid/" in log
    assert "    fix: list the domain" in log


def test_every_item_dropped_exits_4(tmp_path, mockserver):
    project = make_project(tmp_path, mockserver)
    result = crawl(project, "dropped")
    assert result.returncode == 4, result.stderr[-3000:]
    assert "'finish_reason': 'gdpr_blocked'" in result.stderr
    assert "every item was dropped (1)" in result.stderr


def test_face_stage_unavailable_exits_5(tmp_path, mockserver):
    project = make_project(tmp_path, mockserver)
    result = crawl(project, "faces")
    assert result.returncode == 5, result.stderr[-3000:]
    assert "'finish_reason': 'gdpr_faces_unavailable'" in result.stderr
    assert "the face stage could not check 1 image(s), not stored" in result.stderr


def test_runspider_exits_with_the_status_too(tmp_path, mockserver):
    project = make_project(tmp_path, mockserver)
    spider_file = tmp_path / "one.py"
    spider_file.write_text(
        "import scrapy\n\n"
        "class One(scrapy.Spider):\n"
        "    name = 'one'\n"
        "    start_urls = ['http://unlisted.invalid/']\n",
        encoding="utf-8",
    )
    result = run_scrapy("runspider", str(spider_file), "--nolog", "-s", 'ADDONS={"scrapy_gdpr.Addon": 0}',
                        "-s", f"GDPR_POLICY={project / 'policies' / 'ops.yaml'}",
                        "-s", f"GDPR_AUDIT_LOG={tmp_path / 'a.jsonl'}", "-s", f"GDPR_REPORT_DIR={tmp_path / 'r'}",
                        "-s", f"GDPR_LEDGER=sqlite:///{tmp_path / 'l.sqlite3'}", cwd=tmp_path, timeout=240)
    assert result.returncode == 4, result.stderr[-3000:]


def test_crawl_without_the_addon_keeps_scrapys_exit_status(tmp_path, mockserver):
    project = make_project(tmp_path, mockserver)
    settings = project / "ops" / "settings.py"
    settings.write_text(settings.read_text(encoding="utf-8").replace('"scrapy_gdpr.Addon": 0', "")
                        .replace("GDPR_POLICY", "# GDPR_POLICY"), encoding="utf-8")
    (project / "policies" / "ops.yaml").unlink()
    (project / "policies").rmdir()
    result = crawl(project, "blocked")
    # no add-on: Scrapy's own behaviour (network errors are not a failed start)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "scrapy-gdpr is NOT active" in result.stderr  # GDPR_* settings are there


def test_crawl_outside_a_project_is_a_usage_error(tmp_path):
    result = run_scrapy("crawl", "x", cwd=tmp_path)
    assert result.returncode == 2
    assert "only available from within a Scrapy project" in result.stderr


def test_unwritable_audit_log_refuses_start(tmp_path, mockserver):
    project = make_project(tmp_path, mockserver)
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    result = crawl(project, "ok", "--nolog", "-s", f"GDPR_AUDIT_LOG={tmp_path / 'a-file' / 'audit.jsonl'}")
    assert result.returncode == 3, result.stderr[-3000:]
    assert "GDPR_AUDIT_LOG cannot be opened" in result.stderr
    assert "Traceback" not in result.stderr

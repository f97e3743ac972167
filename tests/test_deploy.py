"""The scheduling examples under deploy/: each parses, and the cron line's command
really runs, through flock, against a tiny project."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.utils import ROOT, write_policy

DEPLOY = ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------- Kubernetes


def test_kubernetes_cronjob_never_overlaps_and_never_retries():
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "cronjob.yaml").read_text(encoding="utf-8")))
    assert len(docs) == 1
    job = docs[0]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "CronJob")
    spec = job["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert len(spec["schedule"].split()) == 5
    job_spec = spec["jobTemplate"]["spec"]
    assert job_spec["backoffLimit"] == 0
    pod = job_spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["command"][0].endswith("/deploy/run-crawl.sh")
    assert container["command"][1] == "news"
    # every $(VAR) in args is defined in the container's env (Kubernetes expands only those)
    env = {e["name"] for e in container.get("env", [])}
    for arg in container.get("args", []):
        if "$(" in arg:
            assert arg.split("$(", 1)[1].split(")", 1)[0] in env


# --------------------------------------------------------------------------- systemd


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text(encoding="utf-8"))
    return parser


def test_systemd_units_parse_and_never_restart():
    service = _unit(DEPLOY / "systemd" / "scrapy-gdpr@.service")
    timer = _unit(DEPLOY / "systemd" / "scrapy-gdpr@.timer")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"].get("Restart", "no") == "no"
    assert service["Service"]["ExecStart"].split()[0].endswith("/deploy/run-crawl.sh")
    assert service["Service"]["ExecStart"].split()[1] == "%i"
    assert timer["Timer"]["OnCalendar"]
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the units are checked as INI files above")
    project = tmp_path / "project"
    project.mkdir()
    text = (DEPLOY / "systemd" / "scrapy-gdpr@.service").read_text(encoding="utf-8")
    text = text.replace("/srv/crawls/deploy", str(DEPLOY)).replace("/srv/crawls/project", str(project))
    (tmp_path / "scrapy-gdpr@news.service").write_text(text, encoding="utf-8")
    shutil.copy(DEPLOY / "systemd" / "scrapy-gdpr@.timer", tmp_path / "scrapy-gdpr@news.timer")
    result = subprocess.run(
        [analyze, "verify", "--man=no", "./scrapy-gdpr@news.service", "./scrapy-gdpr@news.timer"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    # verify exits 0 on an unknown value too; it says so on stderr
    assert (result.returncode, result.stderr.strip()) == (0, ""), result.stderr


# --------------------------------------------------------------------------- cron

SPIDER = """
import os

from scrapy import Request, Spider


class NewsSpider(Spider):
    name = "news"

    async def start(self):
        yield Request(os.environ["NEWS_URL"])

    def parse(self, response):
        yield {"url": response.url, "text": response.text[:40]}
"""


@pytest.fixture
def project(tmp_path, mockserver) -> Path:
    """A tiny Scrapy project under the add-on, crawling the local test site."""
    root = tmp_path / "project"
    (root / "tiny" / "spiders").mkdir(parents=True)
    (root / "scrapy.cfg").write_text("[settings]\ndefault = tiny.settings\n", encoding="utf-8")
    (root / "tiny" / "__init__.py").write_text("", encoding="utf-8")
    (root / "tiny" / "spiders" / "__init__.py").write_text("", encoding="utf-8")
    (root / "tiny" / "spiders" / "news.py").write_text(SPIDER, encoding="utf-8")
    (root / "tiny" / "settings.py").write_text(
        'BOT_NAME = "tiny"\nSPIDER_MODULES = ["tiny.spiders"]\nADDONS = {"scrapy_gdpr.Addon": 0}\n'
        'FEEDS = {"output/%(name)s.jsonl": {"format": "jsonlines"}}\nRETRY_ENABLED = False\n',
        encoding="utf-8",
    )
    (root / "policies").mkdir()
    write_policy(root / "policies" / "news.yaml", mockserver, ["127.0.0.1"])
    return root


def cron_lines() -> tuple[dict[str, str], list[str]]:
    env: dict[str, str] = {}
    jobs: list[str] = []
    for line in (DEPLOY / "cron" / "scrapy-gdpr.cron").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        first = line.split(None, 1)[0]
        if "=" in first and not first[0].isdigit() and first[0] != "*":
            name, value = line.split("=", 1)
            env[name.strip()] = value.strip()
        else:
            jobs.append(line)
    return env, jobs


def test_cron_file_parses():
    env, jobs = cron_lines()
    assert env["SHELL"] == "/bin/sh"
    assert {"GDPR_PAGE_COMMAND", "GDPR_NOTIFY_COMMAND", "MAILTO", "PATH"} <= set(env)
    assert len(jobs) == 2
    for job in jobs:
        fields = job.split(None, 6)
        assert len(fields) == 7  # five time fields, the user (/etc/cron.d), the command
        assert all(f.replace("*", "").replace("/", "").replace(",", "").replace("-", "").isdigit() or f == "*"
                   for f in fields[:5])
        assert " flock " in f" {fields[6]} "
    crawl, purge = jobs
    assert "run-crawl.sh news" in crawl and "flock -n" in crawl
    assert "gdpr-purge" in purge
    # the purge takes the crawl's lock: it never runs while the crawl does
    lock = crawl.split("flock", 1)[1].split()[3]
    assert lock in purge


def cron_command(tmp_path: Path, project: Path) -> tuple[str, dict[str, str]]:
    """The cron file's crawl line and environment, with its paths pointed at the tiny project."""
    env, jobs = cron_lines()
    command = jobs[0].split(None, 6)[6]
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    for old, new in (("/srv/crawls/project", str(project)), ("/srv/crawls/deploy", str(DEPLOY)),
                     ("/run/lock", str(tmp_path)), ("/var/log/crawls", str(logs))):
        command = command.replace(old, new)
    hooks = tmp_path / "hooks.txt"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$0 $*" >> {hooks}\n', encoding="utf-8")
    hook.chmod(0o755)
    for name in ("page", "notify"):
        (tmp_path / name).symlink_to(hook)
    env.update({
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "GDPR_PAGE_COMMAND": str(tmp_path / "page"),
        "GDPR_NOTIFY_COMMAND": str(tmp_path / "notify"),
        "PYTHONPATH": str(ROOT),
    })
    env.pop("MAILTO")
    return command, env


def hooks_called(tmp_path: Path) -> list[str]:
    path = tmp_path / "hooks.txt"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [line.replace(str(tmp_path) + "/", "") for line in lines]


def lock_held(lock: Path) -> bool:
    """Whether a process holds ``lock``, read from /proc/locks: probing with flock would
    take the lock for a moment, and a run starting in that moment would be refused."""
    try:
        inode = lock.stat().st_ino
    except FileNotFoundError:
        return False
    return any(line.split()[5].endswith(f":{inode}") for line in Path("/proc/locks").read_text().splitlines()
               if len(line.split()) > 5)


@pytest.mark.slow
def test_cron_line_runs_the_crawl_and_a_second_run_is_refused_while_it_holds_the_lock(tmp_path, project, mockserver):
    command, env = cron_command(tmp_path, project)
    lock = tmp_path / "scrapy-gdpr-news.lock"
    slow = {**env, "NEWS_URL": mockserver.url("/_/respond?body=slow&delay=4")}
    first = subprocess.Popen(["/bin/sh", "-c", command], env=slow, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not lock_held(lock):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run(["/bin/sh", "-c", command], env=slow, capture_output=True, text=True,
                                timeout=60, check=False)
        assert second.returncode == 75  # flock -E 75: not started
        _out, err = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, err
    log = (tmp_path / "logs" / "news.log").read_text(encoding="utf-8")
    assert log.count("Spider opened") == 1  # the second run never started a crawl
    assert "exit status 0" in log
    lines = (project / "output" / "news.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and '"gdpr"' in lines[0]  # stored, stamped
    assert hooks_called(tmp_path) == []
    assert not lock_held(lock)  # released when the crawl ended


@pytest.mark.slow
def test_cron_line_passes_on_a_blocked_crawl_once_and_notifies(tmp_path, project, mockserver):
    command, env = cron_command(tmp_path, project)
    blocked = {**env, "NEWS_URL": mockserver.url("/page.html", host="unlisted.test")}
    result = subprocess.run(["/bin/sh", "-c", command], env=blocked, capture_output=True, text=True,
                            timeout=180, check=False)
    assert result.returncode == 4, result.stderr
    assert "compliance-blocked (exit 4): not retried" in result.stderr
    assert hooks_called(tmp_path) == ["notify news 4"]
    log = (tmp_path / "logs" / "news.log").read_text(encoding="utf-8")
    assert log.count("Spider opened") == 1  # run once, not in a loop


@pytest.mark.parametrize(("status", "hook"), [(0, None), (1, None), (3, "page"), (4, "notify"), (5, "page")])
def test_run_crawl_passes_each_exit_status_on_and_alerts(tmp_path, status, hook):
    """The wrapper's own rule, with a stand-in for scrapy that exits with ``status``."""
    scrapy = tmp_path / "scrapy"
    scrapy.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {tmp_path}/args\nexit {status}\n", encoding="utf-8")
    scrapy.chmod(0o755)
    _, env = cron_command(tmp_path, tmp_path)
    env["SCRAPY"] = str(scrapy)
    result = subprocess.run([str(DEPLOY / "run-crawl.sh"), "news", "-s", "X=a b"], env=env, capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == status
    assert (tmp_path / "args").read_text(encoding="utf-8").splitlines() == ["crawl", "news", "-s", "X=a b"]
    assert hooks_called(tmp_path) == ([f"{hook} news {status}"] if hook else [])
    assert (result.stderr == "") == (status == 0)


def test_run_crawl_without_a_spider_is_a_usage_error():
    result = subprocess.run([str(DEPLOY / "run-crawl.sh")], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_settings_on_the_command_line_are_refused_only_for_scrapyd_jobs(monkeypatch):
    """By hand, -s GDPR_POLICY=... is the operator's own choice; under Scrapyd it is refused."""
    import types

    from scrapy.settings import Settings

    from scrapy_gdpr import scheduling

    settings = Settings()
    settings.set("GDPR_POLICY", "/elsewhere.yaml", priority="cmdline")
    settings.set("LOG_LEVEL", "DEBUG", priority="cmdline")
    settings.set("GDPR_OBJECTIONS", "/o.txt", priority="project")
    assert scheduling.scheduler_overrides(settings) == ["GDPR_POLICY"]
    assert scheduling.scheduler_refusal(settings) is None  # not a Scrapyd job
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name="scrapyd.runner")  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert scheduling.under_scrapyd()

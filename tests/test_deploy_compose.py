"""deploy/compose/docker-compose.yml: the several-machines example parses and says what
docs/several-machines.md says (``docker compose config`` too, where Docker is installed)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.utils import ROOT

COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yml"


def test_compose_file_parses_and_wires_the_shared_state():
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = doc["services"]
    assert set(services) == {"redis", "postgres", "worker"}
    assert "--appendonly" in services["redis"]["command"]  # the queue survives a restart
    worker = services["worker"]
    env = worker["environment"]
    assert env["GDPR_STATE_URL"].startswith("redis://redis:")
    assert env["GDPR_LEDGER"].startswith("postgresql://") and "@postgres:" in env["GDPR_LEDGER"]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["restart"] == "no"  # exit 3/4 are never retried in a loop
    assert worker["stop_signal"] == "SIGINT"
    command = " ".join(worker["command"])
    assert "scrapy crawl" in command and "scrapy-gdpr[redis,postgres]" in command


def test_compose_urls_are_accepted_by_the_state():
    from scrapy_gdpr.shared.state import open_state

    env = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]["worker"]["environment"]
    state = open_state(env["GDPR_STATE_URL"])  # parses the URL; connects only when used
    assert state.shared
    state.close()


def test_docker_compose_config_accepts_it():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode != 0:
        pytest.skip("docker compose is not installed; the file is checked as YAML above")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr

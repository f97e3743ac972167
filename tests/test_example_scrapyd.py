"""`make demo-scrapyd`: the example crawl as a Scrapyd job, through the script the
target runs (a local Scrapyd on a free port, the egg built with its policy files,
schedule.json, the job's items, log and ledger). Uses the example site's fixed port
8760, as tests/test_example.py does."""

from __future__ import annotations

import importlib.util
import json
import socket
import sqlite3
import subprocess
import sys

import pytest

from tests.utils import ROOT

pytest.importorskip("scrapyd")

PORT = 8760  # the example policy's terms URLs name this port


@pytest.mark.slow
def test_demo_scrapyd_runs_the_example_crawl_as_a_scrapyd_job(tmp_path):
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", PORT)) == 0:
            pytest.fail(f"port {PORT} is taken: stop the running example site (make demo) first")
    home = tmp_path / "scrapyd"
    result = subprocess.run(
        [sys.executable, str(ROOT / "example_project" / "demo_scrapyd.py"), "--home", str(home)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "The job finished with exit status 0." in out, out
    assert "policy files included" in out

    (log_path,) = (home / "logs" / "example" / "gallery").glob("*.log")
    job = log_path.stem
    log = log_path.read_text(encoding="utf-8")
    assert f"job log:                              {log_path}" in out
    # the relative GDPR_POLICY was read from the egg; the objection list deployed in it applies
    assert "copied from the project's egg" in log
    assert "GDPR objection list deployed in the project's egg: 1 entries" in log
    assert f"GDPR objection list {home / 'policies' / 'objections.txt'}: 0 entries" in log
    assert "GDPR purge:" in log

    # Scrapyd's items_dir export: stamped, and recorded in the ledger in Scrapyd's folder
    items_path = home / "items" / "example" / "gallery" / f"{job}.jl"
    items = [json.loads(line) for line in items_path.read_text(encoding="utf-8").splitlines()]
    assert items and all(item["gdpr"]["policy_id"] == "example-gallery" for item in items)
    urls = {item["url"] for item in items}
    assert f"http://127.0.0.1:{PORT}/gallery/street.html" in urls
    assert f"http://127.0.0.1:{PORT}/people/jane.html" not in urls  # the objection deployed in the egg
    with sqlite3.connect(home / "output" / "ledger.sqlite3") as db:
        lines = db.execute("SELECT COUNT(*) FROM ledger_records WHERE kind = 'feed_line' AND location = ?",
                           (str(items_path.resolve()),)).fetchone()[0]
    assert lines == len(items)
    assert f"ledger:                               {home / 'output' / 'ledger.sqlite3'}" in out

    if importlib.util.find_spec("spidermon") is None:
        return  # the example project runs its monitors when the spidermon extra is installed
    # the monitors ran in the job, and the script printed them
    for name in ("images stored unchecked", "retention", "refusals", "items stored"):
        assert f"[Spidermon] GDPR: {name}/" in log
        assert any(line.startswith(f"  GDPR: {name}/") and line.endswith("... OK") for line in out.splitlines()), out
    assert (home / "output" / "metrics" / "scrapy_gdpr_gallery.prom").is_file()

"""A purge SIGKILLed at every step loses nothing unexpired, and a re-run finishes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from scrapy_gdpr.audit import AuditLog
from scrapy_gdpr.ledger import open_ledger
from scrapy_gdpr.retention import purge, read_manifest
from tests.retention_support import add_object, feed_ids, page_item, write_stamped_feed
from tests.utils import ROOT

if TYPE_CHECKING:
    from collections.abc import Callable

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SCRIPT = """
import sys
from pathlib import Path
from scrapy_gdpr.audit import AuditLog
from scrapy_gdpr.ledger import open_ledger, parse_ts
from scrapy_gdpr.retention import purge
from tests.test_purge_crash import kill_at_step
audit = AuditLog(Path(sys.argv[3]))
on_step = kill_at_step(int(sys.argv[4])) if len(sys.argv) > 4 else None
with open_ledger(sys.argv[1]) as led:
    purge(led, parse_ts(sys.argv[2]), audit=audit, on_step=on_step)
audit.close()
"""
FILES = {"a.jsonl": "jsonlines", "b.csv": "csv", "c.xml": "xml", "d.json": "json"}


def _build(folder: Path) -> tuple[str, dict[str, set[str]], list[Path], list[Path]]:
    ledger = f"sqlite:///{folder / 'ledger.sqlite3'}"
    live: dict[str, set[str]] = {}
    with open_ledger(ledger) as led:
        for n, (name, fmt) in enumerate(FILES.items()):
            items = []
            for i in range(6):
                expired = name == "c.xml" or i % 2 == 0
                when = NOW - timedelta(hours=i + 1) if expired else NOW + timedelta(days=i + 1)
                items.append(page_item(f"https://people.test/{n}/{i}", when))
            write_stamped_feed(folder / name, fmt, items, ledger=led)
            live[name] = {it["gdpr"]["item_id"] for it in items if it["gdpr"]["expires_at"] > "2026-06-01T12:00:00Z"}
        gone = [add_object(led, folder / "img", f"full/{i}.jpg", f"https://people.test/0/{i}",
                           f"https://cdn.test/{i}.jpg", NOW - timedelta(minutes=i + 1)) for i in range(3)]
        kept = [add_object(led, folder / "img", "full/live.jpg", "https://people.test/0/1", "https://cdn.test/l.jpg",
                           NOW + timedelta(days=1))]
    return ledger, live, gone, kept


def kill_at_step(n: int) -> Callable[[str], None]:
    """A purge ``on_step`` hook that SIGKILLs this process at the ``n``-th durable step."""
    seen = 0

    def on_step(what: str) -> None:
        nonlocal seen
        seen += 1
        if seen >= n:
            os.kill(os.getpid(), signal.SIGKILL)

    return on_step


def _run(ledger: str, folder: Path, kill_after: int | None) -> int:
    """Run the purge in a forked child process (modules already loaded, so each run
    takes milliseconds); :func:`kill_at_step` makes it SIGKILL itself."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            audit = AuditLog(folder / "audit.jsonl")
            with open_ledger(ledger) as led:
                purge(led, NOW, audit=audit, on_step=kill_at_step(kill_after) if kill_after is not None else None)
            audit.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return -9
    assert os.WEXITSTATUS(status) == 0
    return 0


def test_purge_killed_in_a_fresh_interpreter(tmp_path):
    """The same hook in a separate interpreter, as cron would run it."""
    ledger, live, gone, kept = _build(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", SCRIPT, ledger, NOW.isoformat(), str(tmp_path / "audit.jsonl")]
    proc = subprocess.run([*args, "3"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == -9, proc.stderr
    _check_nothing_live_lost(tmp_path, live, kept)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, ledger, NOW.isoformat(), str(tmp_path / "audit.jsonl")],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    _check_finished(tmp_path, ledger, live, gone, kept)


def _check_nothing_live_lost(folder: Path, live: dict[str, set[str]], kept: list[Path]) -> None:
    for name, fmt in FILES.items():
        present = set(feed_ids(folder / name, fmt))  # also proves the file still parses
        assert live[name] <= present, name
    assert all(p.exists() for p in kept)


def _check_finished(folder: Path, ledger: str, live: dict[str, set[str]], gone: list[Path], kept: list[Path]) -> None:
    for name, fmt in FILES.items():
        assert set(feed_ids(folder / name, fmt)) == live[name], name
        manifest = read_manifest(folder / name)
        if live[name]:
            assert manifest is not None and manifest["item_count"] == len(live[name])
        else:
            assert not (folder / name).exists() and manifest is None
    assert not any(p.exists() for p in gone)
    assert all(p.exists() for p in kept)
    with open_ledger(ledger) as led:
        assert led.count_expired(NOW) == 0
        assert {r.item_id for r in led.all(["feed_line"])} == set().union(*live.values())
    assert not list(folder.glob(".*.gdpr-tmp"))


@pytest.fixture
def fast_tmp(tmp_path):
    """tmpfs when there is one: the loop runs dozens of purges and fsync on a busy disk
    is slow; the order of operations being tested is the same."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir=shm, prefix="gdpr-crash-") as folder:
        yield Path(folder)


def test_purge_killed_at_every_step(fast_tmp):
    tmp_path = fast_tmp
    kills = 0
    n = 0
    while True:
        n += 1
        folder = tmp_path / f"run{n}"
        folder.mkdir()
        ledger, live, gone, kept = _build(folder)
        code = _run(ledger, folder, kill_after=n)
        if code == 0:  # past the last step: the purge ran to the end
            _check_finished(folder, ledger, live, gone, kept)
            break
        kills += 1
        _check_nothing_live_lost(folder, live, kept)
        assert _run(ledger, folder, kill_after=None) == 0
        _check_finished(folder, ledger, live, gone, kept)
        assert n < 200
    # every file rewrite, manifest write, file removal and object deletion was a kill point
    assert kills >= 20


def test_every_durable_step_is_reported(tmp_path):
    """The steps the kill test stops at, by name: every kind of step a purge makes."""
    ledger, live, gone, kept = _build(tmp_path)
    steps: list[str] = []
    with open_ledger(ledger) as led:
        purge(led, NOW, on_step=steps.append)
    assert {"temp written", "renamed", "removed", "before manifest", "before manifest removal",
            "feed file done", "object removed"} <= set(steps)
    assert steps.count("object removed") == len(gone)
    _check_finished(tmp_path, ledger, live, gone, kept)

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING, Self

import pytest

from tests.utils import ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


class MockServer:
    """``python -m tests.mockserver`` in a subprocess; ``url(path, host=None)`` builds URLs."""

    def __init__(self, site: Path | None = None, log: Path | None = None) -> None:
        self.site = site
        self.log = log
        self.proc: subprocess.Popen[str] | None = None
        self.base = ""
        self.port = 0

    def __enter__(self) -> Self:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if self.log is not None:
            env["MOCKSERVER_LOG"] = str(self.log)
        args = [sys.executable, "-u", "-m", "tests.mockserver"]
        if self.site is not None:
            args.append(str(self.site))
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        assert self.proc.stdout is not None
        self.base = self.proc.stdout.readline().strip()
        self.port = int(self.base.rsplit(":", 1)[1])
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def url(self, path: str = "/", host: str | None = None) -> str:
        """``url("/a", host="robots-503.test")`` -> ``http://robots-503.test:<port>/a``."""
        if host is None:
            return self.base + path
        return f"http://{host}:{self.port}{path}"

    def requests(self) -> list[tuple[float, str, str]]:
        """What the server was asked for: (time, host, path) tuples, when logging."""
        if self.log is None or not self.log.exists():
            return []
        out = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            t, host, path = line.split(" ", 2)
            out.append((float(t), host, path))
        return out


@pytest.fixture(scope="session")
def mockserver() -> Iterator[MockServer]:
    with MockServer() as server:
        yield server


@pytest.fixture
def logged_mockserver(tmp_path: Path) -> Iterator[MockServer]:
    """A fresh server per test that logs every request it receives."""
    with MockServer(log=tmp_path / "requests.log") as server:
        yield server


@pytest.fixture(autouse=True, scope="session")
def _local_resolver() -> None:
    """Resolve ``*.test`` to 127.0.0.1 inside the test process's reactor."""
    from twisted.internet import reactor

    from tests.utils import LocalResolver

    LocalResolver(reactor, 1000, 10).install_on_reactor()


#: Fixtures (and fixture parameters) that connect to a service, with the marker a
#: test using them must carry, so that ``-m "not requires_postgres"`` and CI's
#: selection see every such test.
SERVICE_FIXTURES: dict[tuple[str, str | None], str] = {
    ("pg_table", None): "requires_postgres",
    ("ledger_url", "postgresql"): "requires_postgres",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = []
    for item in items:
        names = getattr(item, "fixturenames", ())
        params = getattr(getattr(item, "callspec", None), "params", {})
        for (fixture, param), marker in SERVICE_FIXTURES.items():
            uses = fixture in names and (param is None or params.get(fixture) == param)
            if uses and item.get_closest_marker(marker) is None:
                unmarked.append(f"{item.nodeid} uses {fixture} but is not marked {marker}")
    if unmarked:
        raise pytest.UsageError("\n".join(unmarked))

"""Run the example crawl through a local Scrapyd, as a scheduled crawl runs:
serve the example site, start Scrapyd on a free local port in its own folder,
build the project's egg (``python setup.py bdist_egg``: the code and, as
``data_files``, the policy files), deploy it (``addversion.json``), schedule the
gallery spider (``schedule.json``), wait for the job, say where its items, log and
ledger are, and stop Scrapyd.

    python demo_scrapyd.py [--port 8760] [--home FOLDER]

Used by ``make demo-scrapyd``. Scrapyd's folder (its configuration, eggs, logs,
items_dir, and the job's working folder, where the crawl writes its ledger, audit
log and reports) is ``example_project/output/scrapyd/`` unless ``--home`` names
another; it is replaced on each run. Exits with the job's exit status.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import serve

PROJECT = "example"
SPIDER = "gallery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call(base: str, path: str, fields: list[tuple[str, str]] | None = None,
         egg: bytes | None = None) -> dict[str, Any]:
    """GET (no fields) or a multipart POST to Scrapyd's JSON API."""
    if fields is None:
        request = urllib.request.Request(base + path)  # noqa: S310 - the local Scrapyd
    else:
        boundary = uuid.uuid4().hex
        body = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in fields
        )
        if egg is not None:
            body += (f'--{boundary}\r\nContent-Disposition: form-data; name="egg"; filename="{PROJECT}.egg"\r\n'
                     "Content-Type: application/octet-stream\r\n\r\n").encode() + egg + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        request = urllib.request.Request(base + path, data=body, method="POST",  # noqa: S310 - the local Scrapyd
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the local Scrapyd
        answer: dict[str, Any] = json.loads(response.read())
    if answer.get("status") != "ok":
        raise RuntimeError(f"Scrapyd answered {path}: {answer}")
    return answer


def build_egg(work: Path) -> bytes:
    """The project's egg, built from a copy of the project (the source tree stays clean)."""
    src = work / "src"
    src.mkdir()
    shutil.copy2(HERE / "setup.py", src / "setup.py")
    shutil.copytree(HERE / PROJECT, src / PROJECT, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(HERE / "policies", src / "policies")
    subprocess.run(  # noqa: S603 - fixed arguments
        [sys.executable, "setup.py", "-q", "bdist_egg", "-d", str(work / "dist")], cwd=src,
        check=True, capture_output=True, text=True, timeout=300)
    (egg,) = (work / "dist").glob("*.egg")
    return egg.read_bytes()


def start_scrapyd(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    (home / "scrapyd.conf").write_text(
        "[scrapyd]\n"
        f"bind_address = 127.0.0.1\nhttp_port = {port}\n"
        f"eggs_dir = {home / 'eggs'}\nlogs_dir = {home / 'logs'}\nitems_dir = {home / 'items'}\n"
        f"dbs_dir = {home / 'dbs'}\npoll_interval = 0.5\nmax_proc = 1\n",
        encoding="utf-8",
    )
    with (home / "scrapyd.out").open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "scrapyd", "--nodaemon", "--pidfile="], cwd=home,
                                stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"Scrapyd did not start: see {home / 'scrapyd.out'}")
        try:
            call(base, "/daemonstatus.json")
            return proc, base
        except OSError:
            if time.monotonic() > deadline:
                proc.terminate()
                raise RuntimeError(f"Scrapyd did not answer on {base}: see {home / 'scrapyd.out'}") from None
            time.sleep(0.3)


def wait_for(base: str, job: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = call(base, f"/listjobs.json?project={PROJECT}")
        if any(j["id"] == job for j in jobs["finished"]):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the job {job} did not finish in {timeout:.0f} s")


def job_status(home: Path, job: str, log: str) -> int:
    """The job's exit status: Scrapyd logs a non-zero one (``Process died: exitstatus=N``)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = (home / "scrapyd.out").read_text(encoding="utf-8", errors="replace")
        for line in out.splitlines():
            if job in line and ("Process finished" in line or "Process died" in line):
                found = re.search(r"exitstatus=(\d+)", line)
                return int(found.group(1)) if found else 0
        time.sleep(0.3)
    found = re.search(r"exit status (\d+) \(", log)
    return int(found.group(1)) if found else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8760, help="the example site's port (the policy names 8760)")
    parser.add_argument("--home", type=Path, default=HERE / "output" / "scrapyd", help="Scrapyd's folder")
    args = parser.parse_args()
    home = args.home.resolve()
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)

    servers = serve.serve(args.port)
    print(f"Serving the example site on http://127.0.0.1:{args.port}/ (and 127.0.0.2-6)")
    proc = None
    try:
        proc, base = start_scrapyd(home)
        print(f"Scrapyd listening on {base}, in {home}")
        with tempfile.TemporaryDirectory(prefix="example-egg-") as work:
            egg = build_egg(Path(work))
        answer = call(base, "/addversion.json", [("project", PROJECT), ("version", "1")], egg=egg)
        print(f"Deployed the egg ({len(egg):,} bytes, policy files included): {answer['spiders']} spider(s)")
        job = call(base, "/schedule.json", [("project", PROJECT), ("spider", SPIDER),
                                            ("base", f"http://127.0.0.1:{args.port}")])["jobid"]
        print(f"Scheduled job {job}; waiting for it ...", flush=True)
        wait_for(base, job)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        for server in servers:
            server.shutdown()
            server.server_close()

    log_path = home / "logs" / PROJECT / SPIDER / f"{job}.log"
    log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
    status = job_status(home, job, log)
    summary = next((line for line in log.splitlines() if "GDPR crawl summary:" in line), "")
    print(f"\nThe job finished with exit status {status}.")
    if summary:
        print("  " + summary.split("] ", 1)[-1].split(": ", 1)[-1])
    # the job's working folder is Scrapyd's folder: the project's relative paths resolve there
    print("\nWhere everything is:")
    print(f"  items (Scrapyd's items_dir, stamped): {home / 'items' / PROJECT / SPIDER / f'{job}.jl'}")
    print(f"  job log:                              {log_path}")
    print(f"  ledger:                               {home / 'output' / 'ledger.sqlite3'}")
    print(f"  audit log:                            {home / 'output' / 'audit' / f'{SPIDER}.jsonl'}")
    print(f"  images (faces blurred):               {home / 'output' / 'images'}")
    print(f"  compliance reports:                   {home / 'output' / 'reports'}")
    print(f"  metrics (node-exporter textfile):     {home / 'output' / 'metrics' / f'scrapy_gdpr_{SPIDER}.prom'}")
    print(f"  objection list on this host:          {home / 'policies' / 'objections.txt'} "
          "(the list deployed in the egg applies as well)")
    print(f"  Scrapyd's own log:                    {home / 'scrapyd.out'}")
    monitors = [line.split("[Spidermon] ", 1)[1] for line in log.splitlines()
                if "[Spidermon] GDPR:" in line]
    if monitors:
        print("\nMonitors (Spidermon):")
        for line in monitors:
            print(f"  {line}")
        print("  (the example site has a host whose robots.txt answers 503 and a partner whose terms changed\n"
              "  since their review: those two monitors fail on purpose; the job log says why)")
    return status


if __name__ == "__main__":
    sys.exit(main())

"""A local HTTP server for the tests: ``python -m tests.mockserver [SITE_DIR]``.

It binds 127.0.0.1 on a free port and prints ``http://127.0.0.1:<port>`` on its first
line of output (Scrapy's own pattern). It serves virtual hosts by the Host header:

* ``<name>.test`` serves ``SITE_DIR/hosts/<name>/``; any other host serves
  ``SITE_DIR/default/``.
* A file ``_routes.json`` in a host's folder overrides paths:
  ``{"/robots.txt": {"status": 503, "body": "...", "headers": {"Retry-After": "5"},
  "delay": 2.5, "redirect": "/other"}}``. ``{"sequence": [route, route, ...]}``
  answers the n-th request for that host and path with the n-th route (the last
  one repeats), e.g. a robots.txt that fails once, then recovers.
* ``/_/respond?status=..&body=..&delay=..&h=Name:Value&h=...`` answers anything.
* Every request is appended to ``SITE_DIR/../_requests.log`` when that variable
  ``MOCKSERVER_LOG`` names a file: ``<time> <host> <path>`` per line, so tests can
  check what was (not) fetched and when.

Tests resolve ``*.test`` to 127.0.0.1 with :class:`tests.utils.LocalResolver`.
"""

from __future__ import annotations

import json
import mimetypes
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

SITE = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("site")).resolve()
LOG = os.environ.get("MOCKSERVER_LOG")
_log_lock = threading.Lock()
_seq_lock = threading.Lock()
_seq_counts: dict[tuple[str, str], int] = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mockserver"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _host(self) -> str:
        return (self.headers.get("Host") or "").split(":")[0].lower()

    def _root(self) -> Path:
        host = self._host()
        if host.endswith(".test"):
            return SITE / "hosts" / host[: -len(".test")]
        return SITE / "default"

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "text/html; charset=utf-8")
        for name, value in headers.items():
            for v in value if isinstance(value, list) else [value]:
                self.send_header(name, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        if LOG:
            with _log_lock, Path(LOG).open("a", encoding="utf-8") as fh:
                fh.write(f"{time.time():.3f} {self._host()} {self.path}\n")
        if path == "/_/respond":
            q = parse_qs(parts.query)
            delay = float(q.get("delay", ["0"])[0])
            if delay:
                time.sleep(delay)
            headers: dict[str, list[str]] = {}
            for h in q.get("h", []):
                name, _, value = h.partition(":")
                headers.setdefault(name.strip(), []).append(value.strip())
            self._send(int(q.get("status", ["200"])[0]), q.get("body", [""])[0].encode(), headers, head)  # type: ignore[arg-type]
            return
        root = self._root()
        routes_file = root / "_routes.json"
        if routes_file.is_file():
            routes = json.loads(routes_file.read_text(encoding="utf-8"))
            route = routes.get(path)
            if route is not None:
                if "sequence" in route:
                    with _seq_lock:
                        n = _seq_counts.get((self._host(), path), 0)
                        _seq_counts[(self._host(), path)] = n + 1
                    steps = route["sequence"]
                    route = steps[min(n, len(steps) - 1)]
                self._route(route, root, head)
                return
        target = (root / path.lstrip("/")).resolve()
        if target.is_dir():
            target = target / "index.html"
        if path == "/terms.html" and not target.is_file():
            # every virtual host has terms of use: the default site's, unless it has its own
            root, target = SITE / "default", SITE / "default" / "terms.html"
        if not str(target).startswith(str(root.resolve())) or not target.is_file():
            self._send(404, b"<html><body>Not found</body></html>", head=head)
            return
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if ctype.startswith("text/"):
            ctype += "; charset=utf-8"
        headers = {"Content-Type": ctype}
        sidecar = target.with_name(target.name + ".headers.json")
        if sidecar.is_file():
            headers.update(json.loads(sidecar.read_text(encoding="utf-8")))
        self._send(200, target.read_bytes(), headers, head)

    def _route(self, route: dict[str, object], root: Path, head: bool) -> None:
        delay = float(route.get("delay", 0))  # type: ignore[arg-type]
        if delay:
            time.sleep(delay)
        if route.get("drop"):
            # close the connection without an answer
            self.close_connection = True
            self.connection.shutdown(2)
            return
        headers = dict(route.get("headers", {}))  # type: ignore[call-overload]
        if "redirect" in route:
            headers["Location"] = str(route["redirect"])
            self._send(int(route.get("status", 301)), b"", headers, head)  # type: ignore[call-overload]
            return
        if "file" in route:
            body = (root / str(route["file"])).read_bytes()
        elif "repeat" in route:
            # {"repeat": ["# filler\n", 30000], "body": "Disallow: /\n"}: a large body
            text, count = route["repeat"]  # type: ignore[misc]
            body = (str(text) * int(count) + str(route.get("body", ""))).encode()
        else:
            body = str(route.get("body", "")).encode()
        self._send(int(route.get("status", 200)), body, headers, head)  # type: ignore[call-overload]


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("MOCKSERVER_PORT", "0"))), Handler)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

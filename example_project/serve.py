"""Serve the example website on 127.0.0.1-127.0.0.6, so the example crawl runs offline.

    python serve.py [--port 8760]

Each address is its own "site" (virtual host by the Host header's address):
``site/<address>/``. ``{PORT}`` in HTML pages is replaced by the port, so pages can
link across the sites. ``_routes.json`` in a site's folder overrides answers per
path (status, headers, body), and ``<file>.headers.json`` adds response headers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mimetypes
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

SITE = Path(__file__).resolve().parent / "site"
ADDRESSES = [f"127.0.0.{i}" for i in range(1, 7)]


def make_handler(port: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "example-site"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str], head: bool) -> None:
            self.send_response(status)
            headers.setdefault("Content-Type", "text/html; charset=utf-8")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self.do_GET(head=True)

        def do_GET(self, head: bool = False) -> None:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            root = SITE / host if host in ADDRESSES else SITE / "127.0.0.1"
            path = unquote(urlsplit(self.path).path)
            routes = root / "_routes.json"
            if routes.is_file():
                route = json.loads(routes.read_text(encoding="utf-8")).get(path)
                if route is not None:
                    self._send(route.get("status", 200), route.get("body", "").encode(), dict(route.get("headers", {})), head)
                    return
            target = (root / path.lstrip("/")).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.is_relative_to(root.resolve()) or not target.is_file() or target.name.endswith(".headers.json"):
                self._send(404, b"<!doctype html><title>Not found</title><p>Not found</p>", {}, head)
                return
            ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            body = target.read_bytes()
            if ctype in ("text/html", "text/plain"):
                body = body.replace(b"{PORT}", str(port).encode())
                ctype += "; charset=utf-8"
            headers = {"Content-Type": ctype}
            sidecar = target.with_name(target.name + ".headers.json")
            if sidecar.is_file():
                headers.update(json.loads(sidecar.read_text(encoding="utf-8")))
            self._send(200, body, headers, head)

    return Handler


def serve(port: int) -> list[ThreadingHTTPServer]:
    """Serve the site on every address; port 0 takes a free port on the first address
    and the same port on the others (``servers[0].server_port``)."""
    servers: list[ThreadingHTTPServer] = []
    try:
        for address in ADDRESSES:
            server = ThreadingHTTPServer((address, port), BaseHTTPRequestHandler)
            port = server.server_port
            server.RequestHandlerClass = make_handler(port)
            server.daemon_threads = True
            servers.append(server)
    except OSError:
        for server in servers:
            server.server_close()
        raise
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8760)
    args = parser.parse_args()
    serve(args.port)
    print(f"Example site on http://127.0.0.1:{args.port}/ (and 127.0.0.2-6); Ctrl+C stops it", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()


if __name__ == "__main__":
    main()

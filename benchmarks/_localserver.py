"""A minimal local HTTP/1.1 server for the benchmarks: GET with keep-alive, nothing else.

A benchmark runs it in a subprocess (``serve(respond)`` prints the port it listens
on, then serves until killed), so that the server's CPU time is not the crawl's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

#: path -> (status line, content type, body), e.g. (b"200 OK", b"text/html", b"...")
Responder = Callable[[bytes], tuple[bytes, bytes, bytes]]


class _HttpProtocol(asyncio.Protocol):
    def __init__(self, respond: Responder) -> None:
        self.respond = respond

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            parts = head.split(b"\r\n", 1)[0].split(b" ")
            status, ctype, body = self.respond(parts[1] if len(parts) > 1 else b"/")
            self.transport.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype + b"\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\nConnection: keep-alive\r\n\r\n" + body
            )


def serve(respond: Responder) -> None:
    """Listen on 127.0.0.1 (a free port, printed on the first line of stdout) forever."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _HttpProtocol(respond), "127.0.0.1", 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    asyncio.run(run())

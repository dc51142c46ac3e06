"""A minimal, fast ``matomo.php`` stand-in for the benchmarks: asyncio on loopback, HTTP/1.1 keep-alive.

It validates nothing (``tests/matomo_standin.py`` does that, and costs a ``parse_qsl`` per hit): it only counts.

- ``POST /matomo.php`` with a JSON body ``{"requests": [...]}`` (Bulk Tracking API, as otel-matomo sends) counts
  ``len(requests)`` hits; any other ``POST``/``GET`` to ``matomo.php`` (one form-encoded hit, as asgi-matomo and
  flask-matomo2 send) counts one hit. The answer is ``{"status":"success","tracked":N,"invalid":0}``.
- ``GET /stats`` answers the counters as JSON; ``GET /reset`` zeroes them.

Run: ``python benchmarks/standin.py PORT``; an outage is simulated by stopping the process (connection refused)
and starting it again on the same port.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys


class Counters:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        """HTTP requests to matomo.php."""
        self.hits = 0
        self.bulk_requests = 0
        self.batch_sizes: list[int] = []
        """Hits in each bulk request, in arrival order."""
        self.errors = 0

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "requests": self.requests,
                "hits": self.hits,
                "bulk_requests": self.bulk_requests,
                "batch_sizes": self.batch_sizes,
                "errors": self.errors,
            }
        ).encode()


COUNTERS = Counters()


def _response(status: str, body: bytes, keep_alive: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode() + body


class MatomoProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1")
            lines = head.split("\r\n")
            method, target, version = ([*lines[0].split(" "), "", "", ""])[:3]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            keep_alive = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
            self.transport.write(self.handle(method, target, headers, body, keep_alive))
            if not keep_alive:
                self.transport.close()
                self.transport = None

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes, keep_alive: bool) -> bytes:
        path = target.partition("?")[0]
        if path == "/stats":
            return _response("200 OK", COUNTERS.as_json(), keep_alive)
        if path == "/reset":
            COUNTERS.reset()
            return _response("200 OK", b"{}", keep_alive)
        if not path.endswith(("/matomo.php", "/piwik.php")):
            return _response("404 Not Found", b'{"status":"error"}', keep_alive)
        if "chunked" in headers.get("transfer-encoding", ""):
            COUNTERS.errors += 1  # nobody sends chunked bodies here; count it rather than parse it
            return _response("400 Bad Request", b'{"status":"error"}', False)
        hits = 1
        if method == "POST" and body[:1] == b"{":
            try:
                hits = len(json.loads(body)["requests"])
            except (ValueError, KeyError, TypeError):
                COUNTERS.errors += 1
                return _response("400 Bad Request", b'{"status":"error"}', keep_alive)
            COUNTERS.bulk_requests += 1
            COUNTERS.batch_sizes.append(hits)
        COUNTERS.requests += 1
        COUNTERS.hits += hits
        answer = b'{"status":"success","tracked":%d,"invalid":0}' % hits
        return _response("200 OK", answer, keep_alive)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MatomoProtocol, "127.0.0.1", port, reuse_address=True, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0))

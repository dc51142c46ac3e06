"""A local stand-in for ``matomo.php`` that validates bulk requests the way Matomo 5 does.

Its rules are the ones the real Matomo showed (``tests/real_matomo`` checks them against it): an item without
``?`` is dropped silently, ``cip`` and a ``cdt`` older than 24 h need a valid token, an unknown site or a malformed
``cid`` makes the item invalid, a "secure only" token is refused inside bulk bodies (Matomo bug #22910), and
``invalid_indices`` only comes back for a Super User's token. It can be switched down, slow, failing or
malformed to exercise the exporter's failure paths.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

SUPERUSER_TOKEN = "a" * 32
WRITE_TOKEN = "b" * 32
SECURE_ONLY_TOKEN = "c" * 32
_CID = re.compile(r"[0-9a-f]{16}")


class _QuickServer(ThreadingHTTPServer):
    """Quiet about clients that gave up on a slow answer, as the exporter should."""

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@dataclass
class Behaviour:
    """What the next answers look like; change it while the server runs."""

    status: int = 200
    delay: float = 0.0
    body: bytes | None = None
    """A fixed answer body instead of Matomo's JSON (to test malformed answers)."""
    retry_after: str | None = None
    fail_next: int = 0
    """Answer the next N requests with ``status`` then go back to 200."""


@dataclass
class Received:
    """One bulk request as it arrived."""

    path: str
    query: str
    body: dict[str, object]
    answer_status: int
    arrived: float
    """``time.monotonic()`` when the request arrived."""


@dataclass
class MatomoStandIn:
    """A threaded HTTP server on loopback answering bulk tracking requests."""

    sites: set[int] = field(default_factory=lambda: {1, 2})
    behaviour: Behaviour = field(default_factory=Behaviour)
    received: list[Received] = field(default_factory=list)
    tracked: list[dict[str, str]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """The base URL (without ``matomo.php``)."""
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> MatomoStandIn:
        """Listen (again, on the same port after :meth:`stop`)."""
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                standin._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _QuickServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: connections are refused, as when Matomo is down."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for_hits(self, count: int, timeout: float = 10.0) -> list[dict[str, str]]:
        """Wait until ``count`` hits were tracked; return them all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.tracked) >= count:
                    return list(self.tracked)
            time.sleep(0.02)
        with self._lock:
            raise AssertionError(f"expected {count} hits, got {len(self.tracked)}: {self.tracked}")

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        arrived = time.monotonic()
        length = int(handler.headers.get("Content-Length", "0"))
        raw = handler.rfile.read(length)
        path, _, query = handler.path.partition("?")
        behaviour = self.behaviour
        if behaviour.delay:
            time.sleep(behaviour.delay)
        status, answer = self._answer(raw, path, behaviour)
        with self._lock:
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"unparsable": raw.decode("utf-8", "replace")}
            self.received.append(Received(path, query, body, status, arrived))
        payload = behaviour.body if behaviour.body is not None and status == 200 else json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        if behaviour.retry_after is not None and status != 200:
            handler.send_header("Retry-After", behaviour.retry_after)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _answer(self, raw: bytes, path: str, behaviour: Behaviour) -> tuple[int, dict[str, object]]:
        if behaviour.fail_next > 0:
            behaviour.fail_next -= 1
            status = behaviour.status
            if behaviour.fail_next == 0:
                behaviour.status = 200
            return status, {"status": "error", "tracked": 0}
        if behaviour.status != 200:
            return behaviour.status, {"status": "error", "tracked": 0}
        if not path.endswith("/matomo.php"):
            return 404, {"status": "error", "message": "not found"}
        try:
            body = json.loads(raw)
            items = body["requests"]
        except (ValueError, KeyError, TypeError):
            return 400, {"status": "error", "message": "Invalid bulk request"}
        token = body.get("token_auth")
        tracked, invalid = 0, []
        # Matomo silently drops items with no query part, so indices refer to the remaining items.
        kept = [item for item in items if isinstance(item, str) and "?" in item]
        for index, item in enumerate(kept):
            params = dict(parse_qsl(item.partition("?")[2], keep_blank_values=True))
            if self._valid(params, token):
                tracked += 1
                if params.get("rec") == "1":
                    with self._lock:
                        self.tracked.append(params)
            else:
                invalid.append(index)
        answer: dict[str, object] = {"status": "success", "tracked": tracked, "invalid": len(invalid)}
        if token == SUPERUSER_TOKEN:
            answer["invalid_indices"] = invalid
        return 200, answer

    def _valid(self, params: dict[str, str], token: object) -> bool:
        authenticated = token in (SUPERUSER_TOKEN, WRITE_TOKEN)
        if token == SECURE_ONLY_TOKEN:
            return False
        if not params.get("idsite", "").isdigit() or int(params["idsite"]) not in self.sites:
            return False
        if "cid" in params and not _CID.fullmatch(params["cid"]):
            return False
        if "cip" in params and not authenticated:
            return False
        cdt = params.get("cdt", "")
        return not (cdt.isdigit() and int(cdt) < time.time() - 86400 and not authenticated)

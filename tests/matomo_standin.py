"""A local stand-in for ``matomo.php`` that validates bulk requests the way Matomo 5 does.

Its rules are the ones the real Matomo 5.3.1 showed (``tests/real_matomo/test_standin_fidelity.py`` sends the
same bulk bodies to both and compares the answers):

- a string item is kept only when it has a non-empty query part (``?`` and something after it); other strings
  are dropped silently, which shifts the indices of the later items; JSON-object items are kept as parameters;
- ``cip`` and a ``cdt`` older than 24 h need a token that authenticates (Super User or write access); any other
  token, wrong, view-only or "secure only", is never checked for hits that need none: they are tracked;
- a "secure only" token never authenticates inside a bulk body (Matomo bug #22910): its ``cip``/old ``cdt`` hits
  are refused, the others tracked;
- an unknown or missing ``idsite``, and a non-empty ``cid`` that is not exactly 16 characters (any characters:
  Matomo checks the length only), make the item invalid;
- ``invalid_indices`` only comes back for a Super User's token, and only when some item was kept;
- a body that is not a bulk request (not JSON, or no ``requests``) gets HTTP 400 with Matomo's HTML notice.

It can be switched down, slow, failing or malformed to exercise the exporter's failure paths.
"""

from __future__ import annotations

import calendar
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

SUPERUSER_TOKEN = "a" * 32
WRITE_TOKEN = "b" * 32
SECURE_ONLY_TOKEN = "c" * 32
_CID_LENGTH = 16
_OLD_CDT_S = 86400
_NOT_BULK = (
    b"This resource is part of Matomo. Keep full control of your data with the leading free and open source "
    b"web analytics & conversion optimisation platform.<br>\nThis file is the endpoint for the Matomo tracking API."
)
"""What Matomo answers (HTTP 400, text/html) to a POST that is not a bulk request."""


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
    refuse: Callable[[dict[str, str]], bool] | None = None
    """Answer HTTP 500 to any batch holding a hit this accepts, as Matomo does for some hit shapes."""
    drop_after_record: bool = False
    """Record the batch, then close the connection without an answer (a proxy or a crash between the two)."""
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
        content_type = "application/json"
        with self._lock:
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"unparsable": raw.decode("utf-8", "replace")}
            self.received.append(Received(path, query, body, status, arrived))
        if behaviour.drop_after_record:
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if behaviour.body is not None and status == 200:
            payload = behaviour.body
        elif isinstance(answer, bytes):
            payload, content_type = answer, "text/html; charset=UTF-8"
        else:
            payload = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        if behaviour.retry_after is not None and status != 200:
            handler.send_header("Retry-After", behaviour.retry_after)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _answer(self, raw: bytes, path: str, behaviour: Behaviour) -> tuple[int, dict[str, object] | bytes]:
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
        except ValueError:
            return 400, _NOT_BULK
        if not isinstance(body, dict) or "requests" not in body:
            return 400, _NOT_BULK
        token = body.get("token_auth")
        items = body["requests"] if isinstance(body["requests"], list) else []
        tracked, invalid = 0, []
        # Matomo silently drops string items with no query, so indices refer to the remaining items.
        kept = [params for params in map(_params, items) if params is not None]
        if behaviour.refuse is not None and any(map(behaviour.refuse, kept)):
            return 500, {"status": "error", "tracked": 0}
        if any(_custom_action_without_plugin(params) for params in kept):
            # Matomo 5: "Request was meant for a plugin which is no longer activated" rolls the batch back.
            return 500, {"status": "error", "tracked": 0}
        for index, params in enumerate(kept):
            if self._valid(params, token):
                tracked += 1
                if params.get("rec") == "1":
                    with self._lock:
                        self.tracked.append(params)
            else:
                invalid.append(index)
        answer: dict[str, object] = {"status": "success", "tracked": tracked, "invalid": len(invalid)}
        if token == SUPERUSER_TOKEN and kept:  # with nothing to track, Matomo never checks the token
            answer["invalid_indices"] = invalid
        return 200, answer

    def _valid(self, params: dict[str, str], token: object) -> bool:
        # Only these authenticate; a "secure only" token never does in a bulk body (Matomo bug #22910), and a
        # token is only checked when a hit needs one.
        authenticated = token in (SUPERUSER_TOKEN, WRITE_TOKEN)
        if not params.get("idsite", "").isdigit() or int(params["idsite"]) not in self.sites:
            return False
        cid = params.get("cid", "")
        if cid not in ("", "0") and len(cid.encode()) != _CID_LENGTH:
            return False
        if "cip" in params and not authenticated:
            return False
        cdt = _unix_seconds(params.get("cdt", ""))
        return not (cdt is not None and cdt < time.time() - _OLD_CDT_S and not authenticated)


def _params(item: object) -> dict[str, str] | None:
    """An item's parameters; ``None`` for one Matomo drops (a string without a query)."""
    if isinstance(item, str):
        query = item.partition("?")[2].partition("#")[0]
        return dict(parse_qsl(query, keep_blank_values=True)) if query else None
    if isinstance(item, dict):
        return {str(key): str(value) for key, value in item.items()}
    return {}


def _unix_seconds(cdt: str) -> float | None:
    """``cdt`` as Matomo reads it: Unix seconds or ``YYYY-MM-DD HH:MM:SS`` UTC."""
    if cdt.isdigit():
        return int(cdt)
    try:
        return calendar.timegm(time.strptime(cdt, "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return None


def _custom_action_without_plugin(params: dict[str, str]) -> bool:
    """``ca=1`` on a hit that is neither an event nor a content interaction (a goal or ecommerce hit, say):
    Matomo 5.3.1 finds no plugin for it and answers the whole bulk request with HTTP 500."""
    is_event = bool(params.get("e_c")) and bool(params.get("e_a"))
    return params.get("ca") == "1" and not is_event and not params.get("c_n")

"""Real servers on loopback for end-to-end tests: uvicorn for ASGI apps (the demo's), werkzeug for WSGI apps."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import make_server

from otel_matomo.cli._serving import free_port, serve_asgi

__all__ = ["free_port", "serve_asgi", "serve_wsgi", "wait_until"]


@contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """Serve a WSGI app under werkzeug's threaded server."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def wait_until(condition: Callable[[], object], message: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.02)

"""The example apps, instrumented in code, for servers started as subprocesses (gunicorn, uvicorn, granian).

Each attribute is built on first access, in the process that imports it: ``tests.e2e.frameworks_apps:flask``
under gunicorn ``--preload`` is built (and its ``TracerProvider`` created) in the master, before the fork;
without ``--preload`` and under uvicorn/granian workers, in every worker. The exporter is configured by the
``OTEL_EXPORTER_MATOMO_*`` environment only, as a deployment would.

Every response says which process served it and which span recorded it (``X-Served-By: <pid> <span id>``), so
that a test can tell which worker each hit came from (a hit's ``rand`` is its span id).
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace

_apps: dict[str, Any] = {}


def _served_by() -> str:
    return f"{os.getpid()} {trace.get_current_span().get_span_context().span_id:016x}"


def _flask() -> Any:
    import flask_app
    from flask import Response

    app = flask_app.create_app()
    flask_app.instrument(app)

    @app.after_request
    def served_by(response: Response) -> Response:
        response.headers["X-Served-By"] = _served_by()
        return response

    return app


def _asgi_served_by(app: Any) -> Any:
    """Pure ASGI middleware inside the instrumentation (the server span is current), adding X-Served-By."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_with_header(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-served-by", _served_by().encode())]}
            await send(message)

        await app(scope, receive, send_with_header)

    return wrapped


def _fastapi() -> Any:
    import fastapi_app

    app = fastapi_app.create_app()
    app.add_middleware(_PureAsgi, wrap=_asgi_served_by)
    fastapi_app.instrument(app)
    return app


def _starlette() -> Any:
    import starlette_app

    app = starlette_app.create_app()
    app.add_middleware(_PureAsgi, wrap=_asgi_served_by)
    starlette_app.instrument(app)
    return app


class _PureAsgi:
    """Adapter so that ``add_middleware`` takes a function wrapping an ASGI app."""

    def __init__(self, app: Any, wrap: Any) -> None:
        self._app = wrap(app)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)


_FACTORIES = {"flask": _flask, "fastapi": _fastapi, "starlette": _starlette}


def __getattr__(name: str) -> Any:
    if name not in _FACTORIES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _apps:
        _apps[name] = _FACTORIES[name]()
    return _apps[name]

"""``request_hook``: hands otel-matomo the request headers it needs without OpenTelemetry's header capture.

OpenTelemetry's capture (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST``) runs on the request path:
the ASGI middleware decodes every request header, matches each against every configured pattern and sets the
matches as span attributes, a share of a small application's throughput that the benchmarks show (row (b1) of
``benchmarks/RESULTS.md``). A :class:`~otel_matomo.MatomoSpanProcessor` needs those headers only later,
on its worker thread, so the hook only keeps a reference to what the server already built (the ASGI scope's list
of byte pairs) or copies the few ``HTTP_*`` values it needs (a WSGI environ), keyed by span id; the processor
takes it in ``on_end`` and decodes it off the request path (``otel_matomo._request.decode_raw_headers``).

Without a processor (a ``BatchSpanProcessor`` around the exporter sees only finished spans), the hook sets the
same span attributes as OpenTelemetry's capture, for :data:`~otel_matomo.REQUEST_HEADERS` alone.

Under ``opentelemetry-instrument`` no one has to pass it: ``otel_matomo.autoconfig.pre_instrument`` installs the
processor and gives the hook to the instrumentors that take one (``otel_matomo._instrumentors``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import Span

from otel_matomo._names import HEADER_ATTRIBUTE_PREFIX, REQUEST_HEADERS
from otel_matomo._ratelimit import RateLimitedLog
from otel_matomo._request import decode_raw_headers
from otel_matomo._types import RawHeaders

_log = RateLimitedLog(logging.getLogger("otel_matomo"))

_ENVIRON_KEYS: tuple[tuple[str, str], ...] = tuple(
    ("HTTP_" + name.upper().replace("-", "_"), name) for name in REQUEST_HEADERS
)
"""WSGI environ key -> header name, for every header in ``REQUEST_HEADERS`` (``Host`` is ``HTTP_HOST``)."""

_MAX_PENDING = 8192
"""Requests in flight whose headers wait for their span's end. Past it (spans that never end, or a processor
that is not on this provider) the hook sets span attributes instead, so that memory stays bounded and nothing
is lost."""


class _Pending:
    """Span id -> the request's raw headers, from the hook until the processor's ``on_end`` takes them."""

    __slots__ = ("headers", "processors")

    def __init__(self) -> None:
        self.headers: dict[int, RawHeaders] = {}
        self.processors = 0
        """Live ``MatomoSpanProcessor`` instances: only they take from ``headers``."""


_pending = _Pending()


def request_hook(span: Span, request: object) -> None:
    """Give otel-matomo the request headers it needs; pass it as the instrumentation's request hook.

    One function for every instrumentation: ``FastAPIInstrumentor.instrument_app(app,
    server_request_hook=request_hook)``, the ASGI ``OpenTelemetryMiddleware(app, server_request_hook=...)``
    (an ASGI scope), ``FlaskInstrumentor().instrument_app(app, request_hook=request_hook)`` and the WSGI
    middleware's ``request_hook`` (a WSGI environ), Django's and Falcon's ``request_hook`` (a request object).
    It replaces ``configure_header_capture()`` for request headers. Never raises.
    """
    try:
        if not span.is_recording():
            return
        raw = _raw_headers(request)
        if raw is None:
            return
        if _pending.processors and len(_pending.headers) < _MAX_PENDING:
            _pending.headers[span.get_span_context().span_id] = raw
            return
        span.set_attributes(
            {
                HEADER_ATTRIBUTE_PREFIX + name.replace("-", "_"): (line,)
                for name, line in decode_raw_headers(raw).items()
            }
        )
    except Exception:  # noqa: BLE001 - never into the application
        _log.log(logging.ERROR, "request-hook", "otel-matomo: failed in request_hook", exc_info=True)


def take(span_id: int) -> RawHeaders | None:
    """The raw headers the hook kept for ``span_id``, forgotten here (the processor's ``on_end``)."""
    return _pending.headers.pop(span_id, None)


def peek(span_id: int) -> RawHeaders | None:
    """The raw headers the hook kept for a span that still runs (tracked at its start)."""
    return _pending.headers.get(span_id)


def add_processor() -> None:
    """A processor now takes the headers the hook keeps."""
    _pending.processors += 1


def remove_processor() -> None:
    """A processor shut down: once none is left, the hook sets span attributes again."""
    _pending.processors = max(_pending.processors - 1, 0)
    if not _pending.processors:
        _pending.headers.clear()


def _raw_headers(request: object) -> RawHeaders | None:
    """The headers of an ASGI scope, a WSGI environ, or a framework request wrapping either."""
    if not isinstance(request, Mapping):
        carrier = getattr(request, "scope", None) or getattr(request, "META", None) or getattr(request, "env", None)
        if not isinstance(carrier, Mapping):
            return None
        request = carrier
    headers: Any = request.get("headers")
    if isinstance(headers, (list, tuple)) and "type" in request:
        return headers  # an ASGI scope: the server's own list, never changed once the request started
    if "REQUEST_METHOD" in request:
        return {name: value for key, name in _ENVIRON_KEYS if type(value := request.get(key)) is str}
    return None

"""SDK spans -> :class:`HttpRequest`: what the exporter and the span processor read out of a ``ReadableSpan``."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util.types import Attributes

from otel_matomo import _nested
from otel_matomo._request import http_request_from_span_data
from otel_matomo._types import HttpRequest, RawHeaders, SpanEvent


def read_span(span: ReadableSpan, raw_headers: RawHeaders | None = None) -> HttpRequest | None:
    """The request an SDK server span recorded; ``None`` for other spans. A live span has no end yet.
    ``raw_headers``: those ``otel_matomo.request_hook`` kept for the span (``MatomoSpanProcessor``). Tracking
    facts that nested spans read before carry (``_nested``) are added to the server span's own."""
    if span.kind is not SpanKind.SERVER:
        if _nested.waiting():
            _nested.collect(span)  # a nested span's tracking facts, for its server span (read later)
        return None
    context = span.context
    scope = span.instrumentation_scope
    span_id = context.span_id if context is not None else 0
    attributes = _plain(span.attributes)
    events: list[SpanEvent] = [(event.name, event.timestamp, event.attributes or {}) for event in span.events]
    if _nested.waiting() and (facts := _nested.take(span_id)) is not None:
        attributes, events = _nested.merged(attributes, events, facts)
    return http_request_from_span_data(
        name=span.name,
        attributes=attributes,
        start_ns=span.start_time or 0,
        end_ns=span.end_time,
        span_id=span_id,
        events=events,
        failed=span.status.status_code is StatusCode.ERROR,
        raw_headers=raw_headers,
        scope=scope.name if scope is not None else "",
    )


def _plain(attributes: Attributes | None) -> Mapping[str, object]:
    """The attributes as a plain dict: the SDK hands a read-only view of its ``BoundedAttributes``, whose every
    lookup (and every miss, by a raised ``KeyError``) runs Python code; its ``copy()`` is one C-level dict copy."""
    if not attributes:
        return {}
    copy = getattr(attributes, "copy", None)
    plain = copy() if copy is not None else None
    return plain if isinstance(plain, dict) else dict(attributes)

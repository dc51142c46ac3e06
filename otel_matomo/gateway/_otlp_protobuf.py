"""OTLP/HTTP protobuf (``application/x-protobuf``) -> the gateway's span records, through opentelemetry-proto's
generated messages, one span at a time after a linear pass over the wire format (``_otlp_wire``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_matomo._names import ATTRIBUTE_PREFIX
from otel_matomo.gateway._otlp_limits import DecodeLimits
from otel_matomo.gateway._otlp_records import (
    STATUS_ERROR,
    MalformedPayload,
    OverLimit,
    SpanRecord,
    TraceRequest,
    Unusable,
    record,
)
from otel_matomo.gateway._otlp_wire import Scan


def decode_protobuf(body: bytes, limits: DecodeLimits) -> TraceRequest:
    """Decode a protobuf ``ExportTraceServiceRequest``; raises :class:`MalformedPayload` when it is not one,
    ``RequestTooLarge`` when it is over the decoded-size estimate or ``max_spans``.

    The wire pass (``_otlp_wire``) first refuses a request over a whole-request limit and finds each span; then
    each resource and each span is parsed alone, so that protobuf never holds more than one span, and a span over
    a per-span limit is counted as rejected without being parsed. Parsing a span alone gives what parsing the
    whole request gave for it, and the resource's parts are joined first, which is protobuf's merge.
    """
    decoded = TraceRequest()
    scopes: dict[tuple[int, int], str] = {}
    for plan in Scan(body, limits).plan():
        if plan.problem:
            if plan.spans:
                decoded.rejections[f"from a resource {plan.problem}"] += len(plan.spans)
            continue
        resource = _proto_attributes(
            _parse(Resource, b"".join(body[start:end] for start, end in plan.resource)).attributes
        )
        for place in plan.spans:
            try:
                if place.problem:
                    raise OverLimit(place.problem)
                scope = _scope_name(body, place.scope, scopes)
                decoded.spans.append(_record(_parse(Span, body[place.start : place.end]), resource, scope))
            except Unusable as unusable:
                decoded.rejections[unusable.reason] += 1
    return decoded


def _scope_name(body: bytes, place: tuple[int, int] | None, parsed: dict[tuple[int, int], str]) -> str:
    """The name of the instrumentation scope at ``place``, parsed once for all its spans (``parsed``)."""
    if place is None:
        return ""
    if place not in parsed:
        parsed[place] = _parse(InstrumentationScope, body[place[0] : place[1]]).name
    return parsed[place]


def _record(span: Span, resource: dict[str, object], scope: str) -> SpanRecord:
    return record(
        name=span.name,
        kind=span.kind,
        attributes=_proto_attributes(span.attributes),
        span_id=span.span_id,
        start=span.start_time_unix_nano,
        end=span.end_time_unix_nano,
        resource=resource,
        events=tuple(
            (event.name, event.time_unix_nano, _proto_attributes(event.attributes))
            for event in span.events
            if event.name.startswith(ATTRIBUTE_PREFIX)
        ),
        failed=span.status.code == STATUS_ERROR,
        scope=scope,
    )


_Parsed = TypeVar("_Parsed", Resource, Span, InstrumentationScope)


def _parse(message: type[_Parsed], data: bytes) -> _Parsed:
    try:
        return message.FromString(data)
    except DecodeError as error:
        raise MalformedPayload(f"the body is not a protobuf ExportTraceServiceRequest ({error})") from None


def _proto_attributes(attributes: Iterable[KeyValue]) -> dict[str, object]:
    result: dict[str, object] = {}
    for attribute in attributes:
        value = _proto_value(attribute.value)
        if value is not None:
            result[attribute.key] = value
    return result


def _proto_value(value: AnyValue) -> object:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return tuple(item for item in map(_proto_value, value.array_value.values) if item is not None)
    if which == "kvlist_value":
        return {entry.key: _proto_value(entry.value) for entry in value.kvlist_value.values}
    return getattr(value, which)

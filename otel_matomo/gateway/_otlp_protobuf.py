"""OTLP/HTTP protobuf (``application/x-protobuf``) -> the gateway's span records, through opentelemetry-proto's
generated ``ExportTraceServiceRequest``."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_matomo._names import ATTRIBUTE_PREFIX
from otel_matomo.gateway._otlp_records import STATUS_ERROR, MalformedPayload, TraceRequest, Unusable, record


def decode_protobuf(body: bytes) -> TraceRequest:
    """Decode a protobuf ``ExportTraceServiceRequest``; raises :class:`MalformedPayload` when it is not one."""
    message = ExportTraceServiceRequest()
    try:
        message.ParseFromString(body)
    except DecodeError as error:
        raise MalformedPayload(f"the body is not a protobuf ExportTraceServiceRequest ({error})") from None
    decoded = TraceRequest()
    for resource_spans in message.resource_spans:
        resource = _proto_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                try:
                    decoded.spans.append(
                        record(
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
                            scope=scope_spans.scope.name,
                        )
                    )
                except Unusable as unusable:
                    decoded.rejections[unusable.reason] += 1
    return decoded


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

"""OTLP/HTTP trace payloads -> plain span records, and the answers OTLP clients expect. Pure: no I/O.

Both encodings of ``ExportTraceServiceRequest`` become the same :class:`SpanRecord` list, so the rest of the
gateway never knows which one arrived. Two kinds of problems are told apart, because OTLP answers them
differently: a payload whose structure is broken is refused whole (:class:`MalformedPayload`, HTTP 400, which
clients do not retry), while a single span that cannot be used (no span id, no start time) is only counted
and reported back in ``partial_success``, so one bad span never costs the rest of its batch.

OTLP/JSON is not the generic protobuf JSON mapping: ids are hex strings, not base64, and 64-bit integers may be
JSON strings or numbers (the Node.js exporter sends numbers for ``intValue``, strings for times).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_matomo._names import ATTRIBUTE_PREFIX
from otel_matomo._request import http_request_from_span_data
from otel_matomo._types import HttpRequest, SpanEvent

SPAN_KIND_SERVER = 2
_SPAN_KINDS = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_MAX_UINT64 = 2**64 - 1
_SERVICE_NAME = "service.name"


class Encoding(enum.Enum):
    """The two OTLP/HTTP encodings; an answer always uses the encoding of its request."""

    PROTOBUF = "application/x-protobuf"
    JSON = "application/json"

    @classmethod
    def of(cls, content_type: str | None) -> Encoding | None:
        """The encoding a ``Content-Type`` header names (parameters such as ``charset`` ignored), else ``None``."""
        media_type = (content_type or "").partition(";")[0].strip().lower()
        for encoding in cls:
            if encoding.value == media_type:
                return encoding
        return None


class MalformedPayload(ValueError):
    """The body is not an ``ExportTraceServiceRequest`` in the announced encoding; the message says why."""


class PayloadTooLarge(ValueError):
    """The body, once decompressed, exceeds the configured limit."""


"""Only the events of the tracking API are kept: exception events and the like would only cost memory."""
_STATUS_ERROR = 2
"""``Status.code`` ERROR in OTLP."""


@dataclass(frozen=True)
class SpanRecord:
    """One span as the gateway needs it, whatever encoding carried it."""

    name: str
    kind: int
    attributes: Mapping[str, object]
    start_ns: int
    end_ns: int
    span_id: int
    resource: Mapping[str, object] = field(default_factory=dict)
    """The attributes of the resource that produced the span (``service.name`` selects the Matomo site)."""
    events: tuple[SpanEvent, ...] = ()
    """The span's ``matomo.*`` events (facts an application tracked with ``otel_matomo.tracking`` or its kin)."""
    failed: bool = False
    """The span's status is ERROR."""

    @property
    def service_name(self) -> str | None:
        """The resource's ``service.name``, when it has one."""
        name = self.resource.get(_SERVICE_NAME)
        return name if isinstance(name, str) and name else None


@dataclass
class TraceRequest:
    """A decoded export request: the usable spans, and why the others were not usable."""

    spans: list[SpanRecord] = field(default_factory=list)
    rejections: Counter[str] = field(default_factory=Counter)
    """Reason -> number of spans, for ``partial_success``."""


class _Unusable(Exception):
    """One span cannot be used; the payload around it may still be fine."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing to produce more than ``limit`` bytes.

    Decompression is incremental with ``max_length``, so a gzip bomb costs at most ``limit`` bytes of memory
    before it is refused. Several concatenated gzip members (which ``gzip`` tools produce) are one body.
    """
    output = bytearray()
    pending = body
    while pending:
        decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        chunk = pending
        try:
            while chunk:
                output += decompressor.decompress(chunk, limit + 1 - len(output))
                if len(output) > limit:
                    raise PayloadTooLarge(f"the body decompresses to more than {limit} bytes")
                chunk = decompressor.unconsumed_tail
        except zlib.error as error:
            raise MalformedPayload(f"the body is not valid gzip ({error})") from None
        if not decompressor.eof:
            raise MalformedPayload("the gzip body is truncated")
        pending = decompressor.unused_data
    return bytes(output)


def decode(body: bytes, encoding: Encoding) -> TraceRequest:
    """Decode an ``ExportTraceServiceRequest``; raises :class:`MalformedPayload` when it is not one."""
    try:
        return _decode_protobuf(body) if encoding is Encoding.PROTOBUF else _decode_json(body)
    except RecursionError:
        raise MalformedPayload("the payload is nested too deeply") from None


def http_request_of(span: SpanRecord) -> HttpRequest | None:
    """The request view of a SERVER span (through the one reader of attribute names), else ``None``."""
    if span.kind != SPAN_KIND_SERVER:
        return None
    return http_request_from_span_data(
        span.name, span.attributes, span.start_ns, span.end_ns, span.span_id, span.events, failed=span.failed
    )


def export_response(encoding: Encoding, rejections: Mapping[str, int]) -> bytes:
    """The body of a 200 answer: ``partial_success`` only when spans were rejected, as the OTLP spec asks."""
    rejected = sum(rejections.values())
    message = "; ".join(f"{count} {reason}" for reason, count in sorted(rejections.items()) if count)
    if encoding is Encoding.JSON:
        answer: dict[str, object] = {}
        if rejected:
            # OTLP/JSON writes int64 as a decimal string.
            answer["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": f"rejected spans: {message}"}
        return json.dumps(answer).encode()
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = f"rejected spans: {message}"
    return response.SerializeToString()


class StatusCode(enum.IntEnum):
    """The gRPC status codes that OTLP/HTTP error bodies carry (``google.rpc.Status.code``)."""

    INVALID_ARGUMENT = 3
    RESOURCE_EXHAUSTED = 8
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


def status_body(encoding: Encoding, code: StatusCode, message: str) -> bytes:
    """An error answer's body: a ``google.rpc.Status`` in the request's encoding, as OTLP/HTTP requires.

    opentelemetry-proto does not ship ``google.rpc.Status``; its two scalar fields are encoded by hand
    (field 1 ``code`` varint, field 2 ``message`` length-delimited) rather than pulling in googleapis protos.
    """
    if encoding is Encoding.JSON:
        return json.dumps({"code": int(code), "message": message}).encode()
    text = message.encode()
    return b"\x08" + _varint(int(code)) + b"\x12" + _varint(len(text)) + text


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _record(
    *,
    name: str,
    kind: int,
    attributes: dict[str, object],
    span_id: bytes,
    start: int,
    end: int,
    resource: dict[str, object],
    events: tuple[SpanEvent, ...] = (),
    failed: bool = False,
) -> SpanRecord:
    """Checks shared by both encodings: what a hit cannot do without."""
    if len(span_id) != 8 or not any(span_id):
        raise _Unusable("without a valid spanId (8 bytes, 16 hex digits in JSON)")
    if start <= 0:
        raise _Unusable("without a startTimeUnixNano")
    return SpanRecord(
        name=name,
        kind=kind,
        attributes=attributes,
        start_ns=start,
        # A missing end leaves a zero duration rather than a negative one.
        end_ns=end if end >= start else start,
        span_id=int.from_bytes(span_id, "big"),
        resource=resource,
        events=events,
        failed=failed,
    )


# --- protobuf ---------------------------------------------------------------------------------------------------


def _decode_protobuf(body: bytes) -> TraceRequest:
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
                        _record(
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
                            failed=span.status.code == _STATUS_ERROR,
                        )
                    )
                except _Unusable as unusable:
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


# --- JSON -------------------------------------------------------------------------------------------------------


def _decode_json(body: bytes) -> TraceRequest:
    try:
        data = json.loads(body)
    except ValueError as error:  # includes UnicodeDecodeError and too-long integers
        raise MalformedPayload(f"the body is not JSON ({error})") from None
    if not isinstance(data, dict):
        raise MalformedPayload("the body is not a JSON object")
    decoded = TraceRequest()
    for i, resource_spans in enumerate(_objects(data, "resourceSpans", "")):
        where = f"resourceSpans[{i}]"
        resource_object = resource_spans.get("resource", {})
        if not isinstance(resource_object, dict):
            raise MalformedPayload(f"{where}.resource is not an object")
        try:
            resource = _json_attributes(resource_object.get("attributes"))
        except _Unusable:
            raise MalformedPayload(f"{where}.resource.attributes is not a list of key/value objects") from None
        for j, scope_spans in enumerate(_objects(resource_spans, "scopeSpans", where)):
            for span in _objects(scope_spans, "spans", f"{where}.scopeSpans[{j}]"):
                try:
                    decoded.spans.append(_json_span(span, resource))
                except _Unusable as unusable:
                    decoded.rejections[unusable.reason] += 1
    return decoded


def _objects(container: dict[str, object], key: str, where: str) -> list[dict[str, object]]:
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise MalformedPayload(f"{where + '.' if where else ''}{key} is not a list of objects")
    return value


def _json_span(span: dict[str, object], resource: dict[str, object]) -> SpanRecord:
    name = span.get("name", "")
    return _record(
        name=name if isinstance(name, str) else "",
        kind=_json_kind(span.get("kind")),
        attributes=_json_attributes(span.get("attributes")),
        span_id=_json_id(span.get("spanId")),
        start=_json_time(span.get("startTimeUnixNano"), "startTimeUnixNano"),
        end=_json_time(span.get("endTimeUnixNano"), "endTimeUnixNano"),
        resource=resource,
        events=_json_events(span.get("events")),
        failed=_json_failed(span.get("status")),
    )


def _json_events(events: object) -> tuple[SpanEvent, ...]:
    """The ``matomo.*`` events; anything malformed among them is skipped, never the span."""
    if not isinstance(events, list):
        return ()
    kept = []
    for event in events:
        if not isinstance(event, dict):
            continue
        name = event.get("name")
        if not isinstance(name, str) or not name.startswith(ATTRIBUTE_PREFIX):
            continue
        try:
            kept.append(
                (name, _json_time(event.get("timeUnixNano"), "timeUnixNano"), _json_attributes(event.get("attributes")))
            )
        except _Unusable:
            continue
    return tuple(kept)


def _json_failed(status: object) -> bool:
    """``{"code": 2}`` or, from generic protobuf JSON printers, ``{"code": "STATUS_CODE_ERROR"}``."""
    code = status.get("code") if isinstance(status, dict) else None
    return code in (_STATUS_ERROR, "STATUS_CODE_ERROR")


def _json_kind(kind: object) -> int:
    """OTLP/JSON says integers; the enum's name is what generic protobuf JSON printers write."""
    if isinstance(kind, int) and not isinstance(kind, bool):
        return kind
    if isinstance(kind, str):
        return _SPAN_KINDS.get(kind, 0)
    return 0


def _json_id(span_id: object) -> bytes:
    if isinstance(span_id, str) and len(span_id) == 16:
        try:
            return bytes.fromhex(span_id)
        except ValueError:
            pass
    return b""


def _json_time(value: object, key: str) -> int:
    """Nanoseconds; a missing time is 0, which :func:`_record` judges, as it does protobuf's default."""
    if value is None:
        return 0
    number = _json_integer(value)
    if number is None or not 0 <= number <= _MAX_UINT64:
        raise _Unusable(f"without a valid {key} (nanoseconds as a string or number)")
    return number


def _json_integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _json_attributes(attributes: object) -> dict[str, object]:
    if attributes is None:
        return {}
    if not isinstance(attributes, list):
        raise _Unusable("with attributes that are not a list of key/value objects")
    result: dict[str, object] = {}
    for attribute in attributes:
        if not isinstance(attribute, dict) or not isinstance(attribute.get("key"), str):
            raise _Unusable("with attributes that are not a list of key/value objects")
        value = _json_value(attribute.get("value"))
        if value is not None:
            result[attribute["key"]] = value
    return result


def _json_value(value: object) -> object:
    """An ``AnyValue``; a value of the wrong type is dropped, as request.py drops a malformed attribute."""
    if not isinstance(value, dict):
        return None
    if "stringValue" in value:
        text = value["stringValue"]
        return text if isinstance(text, str) else None
    if "boolValue" in value:
        flag = value["boolValue"]
        return flag if isinstance(flag, bool) else None
    if "intValue" in value:
        return _json_integer(value["intValue"])
    if "doubleValue" in value:
        return _json_double(value["doubleValue"])
    if "arrayValue" in value:
        array = value["arrayValue"]
        items = array.get("values", []) if isinstance(array, dict) else None
        if not isinstance(items, list):
            return None
        return tuple(item for item in map(_json_value, items) if item is not None)
    if "kvlistValue" in value:
        kvlist = value["kvlistValue"]
        entries = kvlist.get("values") if isinstance(kvlist, dict) else None
        if not isinstance(entries, list):
            return None
        return {
            entry["key"]: _json_value(entry.get("value"))
            for entry in entries
            if isinstance(entry, dict) and isinstance(entry.get("key"), str)
        }
    if "bytesValue" in value:
        encoded = value["bytesValue"]
        try:
            return base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else None
        except binascii.Error:
            return None
    return None


def _json_double(value: object) -> float | None:
    """Protobuf JSON writes doubles as numbers, or as the strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None

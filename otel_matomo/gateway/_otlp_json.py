"""OTLP/JSON (``application/json``) -> the gateway's span records.

OTLP/JSON is not the generic protobuf JSON mapping: ids are hex strings, not base64, and 64-bit integers may be
JSON strings or numbers (the Node.js exporter sends numbers for ``intValue``, strings for times). Generic
protobuf JSON printers' spellings (enum names, ``"NaN"``) are accepted too. A value of the wrong type is dropped,
as ``_request`` drops a malformed attribute; a broken structure refuses the payload.

Limits (``_otlp_limits``): ``json.loads`` builds the whole tree in one call, 8 to 10 times the body in Python
objects for a real request and 20 times for ``{},`` repeated, so the decoded size is estimated first from counts
of the bytes that make objects, lists, members and strings (C-speed ``bytes.count``, over-counting what strings
hold), and the request refused above the budget. Then the spans are counted, and the per-span limits checked as
each value is converted: on what the gateway reads (the span, its attributes, its ``matomo.*`` events, its
resource), while the memory bound covers the rest.
"""

from __future__ import annotations

import base64
import binascii
import json

from otel_matomo._names import ATTRIBUTE_PREFIX
from otel_matomo._types import SpanEvent
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

_SPAN_KINDS = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_MAX_UINT64 = 2**64 - 1


_COSTS = ((b"{", 160), (b"[", 64), (b",", 40), (b'"', 25))
"""Estimated bytes, once loaded, per byte that opens an object or a list, separates members or items (each one
an object, a number or a string), or quotes a string (two per string; keys are shared, values are not)."""


def decode_json(body: bytes, limits: DecodeLimits) -> TraceRequest:
    """Decode an OTLP/JSON ``ExportTraceServiceRequest``; raises :class:`MalformedPayload` when it is not one,
    ``RequestTooLarge`` when it is over the decoded-size estimate or ``max_spans``."""
    if _estimate(body) > limits.max_decoded:
        raise limits.too_large_decoded()
    try:
        data = json.loads(body, object_hook=_same)
    except ValueError as error:  # includes UnicodeDecodeError and too-long integers
        raise MalformedPayload(f"the body is not JSON ({error})") from None
    if not isinstance(data, dict):
        raise MalformedPayload("the body is not a JSON object")
    batches = _span_lists(data, limits)
    if sum(len(spans) for _, _, spans in batches) > limits.max_spans:
        raise limits.too_many_spans()
    decoded = TraceRequest()
    for resource, scope, spans in batches:
        for span in spans:
            try:
                if isinstance(resource, OverLimit):
                    raise OverLimit(f"from a resource {resource.reason}")
                decoded.spans.append(_json_span(span, resource, scope, limits))
            except Unusable as unusable:
                decoded.rejections[unusable.reason] += 1
    return decoded


def _estimate(body: bytes) -> int:
    """Bytes ``json.loads`` would build from ``body``, from C-speed counts, never under (measured: 15 MB of
    ``1000,`` take 142 MB): the text it decodes first (4 bytes a character once one needs 4), and per byte of
    :data:`_COSTS`."""
    text = len(body) if body.isascii() else 4 * len(body)
    return text + sum(body.count(byte) * cost for byte, cost in _COSTS)


def _same(value: dict[str, object]) -> dict[str, object]:
    """``json.loads``' object hook, to let other threads run: the C parser holds the GIL for the whole body (0.3 s
    for 9 MB, during which the gateway answered no one), while a Python call per object lets the interpreter hand
    the GIL over every few milliseconds, for no measurable cost."""
    return value


def _span_lists(
    data: dict[str, object], limits: DecodeLimits
) -> list[tuple[dict[str, object] | OverLimit, str, list[dict[str, object]]]]:
    """Each list of spans with its resource's attributes and its instrumentation scope's name; a broken structure
    raises, before any span is read."""
    found = []
    for i, resource_spans in enumerate(_objects(data, "resourceSpans", "")):
        resource = _json_resource(resource_spans, i, limits)
        for j, scope_spans in enumerate(_objects(resource_spans, "scopeSpans", f"resourceSpans[{i}]")):
            scope = _json_scope(scope_spans.get("scope"))
            found.append((resource, scope, _objects(scope_spans, "spans", f"resourceSpans[{i}].scopeSpans[{j}]")))
    return found


def _json_resource(resource_spans: dict[str, object], i: int, limits: DecodeLimits) -> dict[str, object] | OverLimit:
    """The resource's attributes, or why they are over a limit (then its spans are rejected)."""
    resource_object = resource_spans.get("resource", {})
    if not isinstance(resource_object, dict):
        raise MalformedPayload(f"resourceSpans[{i}].resource is not an object")
    try:
        return _json_attributes(resource_object.get("attributes"), limits)
    except OverLimit as over:
        return over
    except Unusable:
        raise MalformedPayload(f"resourceSpans[{i}].resource.attributes is not a list of key/value objects") from None


def _objects(container: dict[str, object], key: str, where: str) -> list[dict[str, object]]:
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise MalformedPayload(f"{where + '.' if where else ''}{key} is not a list of objects")
    return value


def _json_scope(scope: object) -> str:
    """The instrumentation scope's name; an unusable one is no name, which only makes ``client.address`` unread."""
    name = scope.get("name") if isinstance(scope, dict) else None
    return name if isinstance(name, str) else ""


def _json_span(span: dict[str, object], resource: dict[str, object], scope: str, limits: DecodeLimits) -> SpanRecord:
    name = span.get("name", "")
    for many in (span.get("events"), span.get("links")):
        if isinstance(many, list) and len(many) > limits.max_attributes:
            raise OverLimit(limits.too_many_attributes)
    return record(
        name=_json_string(name, limits) if isinstance(name, str) else "",
        kind=_json_kind(span.get("kind")),
        attributes=_json_attributes(span.get("attributes"), limits),
        span_id=_json_id(span.get("spanId")),
        start=_json_time(span.get("startTimeUnixNano"), "startTimeUnixNano"),
        end=_json_time(span.get("endTimeUnixNano"), "endTimeUnixNano"),
        resource=resource,
        events=_json_events(span.get("events"), limits),
        failed=_json_failed(span.get("status")),
        scope=scope,
    )


def _json_events(events: object, limits: DecodeLimits) -> tuple[SpanEvent, ...]:
    """The ``matomo.*`` events; anything malformed among them is skipped, never the span (over a limit, it is)."""
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
            time = _json_time(event.get("timeUnixNano"), "timeUnixNano")
            kept.append((_json_string(name, limits), time, _json_attributes(event.get("attributes"), limits)))
        except OverLimit:
            raise
        except Unusable:
            continue
    return tuple(kept)


def _json_failed(status: object) -> bool:
    """``{"code": 2}`` or, from generic protobuf JSON printers, ``{"code": "STATUS_CODE_ERROR"}``."""
    code = status.get("code") if isinstance(status, dict) else None
    return code in (STATUS_ERROR, "STATUS_CODE_ERROR")


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
        raise Unusable(f"without a valid {key} (nanoseconds as a string or number)")
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


def _json_attributes(attributes: object, limits: DecodeLimits) -> dict[str, object]:
    if attributes is None:
        return {}
    if not isinstance(attributes, list):
        raise Unusable("with attributes that are not a list of key/value objects")
    if len(attributes) > limits.max_attributes:
        raise OverLimit(limits.too_many_attributes)
    result: dict[str, object] = {}
    for attribute in attributes:
        if not isinstance(attribute, dict) or not isinstance(attribute.get("key"), str):
            raise Unusable("with attributes that are not a list of key/value objects")
        value = _json_value(attribute.get("value"), limits)
        if value is not None:
            result[_json_string(attribute["key"], limits)] = value
    return result


def _json_string(text: str, limits: DecodeLimits) -> str:
    """``text``, when its UTF-8 form is within ``max_string_length`` (encoded only when it could be over)."""
    if (
        len(text) * 4 > limits.max_string_length
        and len(text.encode("utf-8", "surrogatepass")) > limits.max_string_length
    ):
        raise OverLimit(limits.too_long_string)
    return text


def _json_value(value: object, limits: DecodeLimits) -> object:
    """An ``AnyValue``; a value of the wrong type is dropped, as ``_request`` drops a malformed attribute."""
    if not isinstance(value, dict):
        return None
    if "stringValue" in value:
        text = value["stringValue"]
        return _json_string(text, limits) if isinstance(text, str) else None
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
        if len(items) > limits.max_array_length:
            raise OverLimit(limits.too_long_array)
        return tuple(item for item in (_json_value(item, limits) for item in items) if item is not None)
    if "kvlistValue" in value:
        kvlist = value["kvlistValue"]
        entries = kvlist.get("values") if isinstance(kvlist, dict) else None
        if not isinstance(entries, list):
            return None
        if len(entries) > limits.max_attributes:
            raise OverLimit(limits.too_many_attributes)
        return {
            _json_string(entry["key"], limits): _json_value(entry.get("value"), limits)
            for entry in entries
            if isinstance(entry, dict) and isinstance(entry.get("key"), str)
        }
    if "bytesValue" in value:
        encoded = value["bytesValue"]
        try:
            decoded = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else None
        except binascii.Error:
            return None
        if decoded is not None and len(decoded) > limits.max_string_length:
            raise OverLimit(limits.too_long_string)
        return decoded
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

"""OTLP/JSON (``application/json``) -> the gateway's span records.

OTLP/JSON is not the generic protobuf JSON mapping: ids are hex strings, not base64, and 64-bit integers may be
JSON strings or numbers (the Node.js exporter sends numbers for ``intValue``, strings for times). Generic
protobuf JSON printers' spellings (enum names, ``"NaN"``) are accepted too. A value of the wrong type is dropped,
as ``_request`` drops a malformed attribute; a broken structure refuses the payload.
"""

from __future__ import annotations

import base64
import binascii
import json

from otel_matomo._names import ATTRIBUTE_PREFIX
from otel_matomo._types import SpanEvent
from otel_matomo.gateway._otlp_records import STATUS_ERROR, MalformedPayload, SpanRecord, TraceRequest, Unusable, record

_SPAN_KINDS = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_MAX_UINT64 = 2**64 - 1


def decode_json(body: bytes) -> TraceRequest:
    """Decode an OTLP/JSON ``ExportTraceServiceRequest``; raises :class:`MalformedPayload` when it is not one."""
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
        except Unusable:
            raise MalformedPayload(f"{where}.resource.attributes is not a list of key/value objects") from None
        for j, scope_spans in enumerate(_objects(resource_spans, "scopeSpans", where)):
            scope = _json_scope(scope_spans.get("scope"))
            for span in _objects(scope_spans, "spans", f"{where}.scopeSpans[{j}]"):
                try:
                    decoded.spans.append(_json_span(span, resource, scope))
                except Unusable as unusable:
                    decoded.rejections[unusable.reason] += 1
    return decoded


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


def _json_span(span: dict[str, object], resource: dict[str, object], scope: str) -> SpanRecord:
    name = span.get("name", "")
    return record(
        name=name if isinstance(name, str) else "",
        kind=_json_kind(span.get("kind")),
        attributes=_json_attributes(span.get("attributes")),
        span_id=_json_id(span.get("spanId")),
        start=_json_time(span.get("startTimeUnixNano"), "startTimeUnixNano"),
        end=_json_time(span.get("endTimeUnixNano"), "endTimeUnixNano"),
        resource=resource,
        events=_json_events(span.get("events")),
        failed=_json_failed(span.get("status")),
        scope=scope,
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


def _json_attributes(attributes: object) -> dict[str, object]:
    if attributes is None:
        return {}
    if not isinstance(attributes, list):
        raise Unusable("with attributes that are not a list of key/value objects")
    result: dict[str, object] = {}
    for attribute in attributes:
        if not isinstance(attribute, dict) or not isinstance(attribute.get("key"), str):
            raise Unusable("with attributes that are not a list of key/value objects")
        value = _json_value(attribute.get("value"))
        if value is not None:
            result[attribute["key"]] = value
    return result


def _json_value(value: object) -> object:
    """An ``AnyValue``; a value of the wrong type is dropped, as ``_request`` drops a malformed attribute."""
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

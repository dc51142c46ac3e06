"""Decoding with a budget (issue 17): whole-request limits refuse a request before it is built, per-span limits
reject one span and keep the others, in both encodings, and the protobuf pass stops where its limit is reached.

Bodies are the recorded fastify request of ``test_gateway_otlp`` with one thing changed, encoded by protobuf's
own JSON parser for the protobuf side, or built byte by byte where protobuf's encoder cannot make them.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import gc
import json
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_matomo._settings import Settings
from otel_matomo.gateway import _otlp
from otel_matomo.gateway._config import GatewayConfig
from otel_matomo.gateway._otlp import Encoding, decode
from otel_matomo.gateway._otlp_limits import DEFAULT_LIMITS, DecodeLimits, RequestTooLarge
from otel_matomo.gateway._otlp_records import MalformedPayload
from otel_matomo.gateway._otlp_wire import Scan
from otel_matomo.gateway._server import Gateway
from tests.unit.test_gateway_otlp import as_json, fastify_payload, server_span, to_protobuf

PREFIX = "OTEL_MATOMO_GATEWAY_"
SMALL = dataclasses.replace(DEFAULT_LIMITS, max_spans=4, max_attributes=20, max_string_length=100, max_array_length=3)


def encode(payload: dict[str, Any], encoding: Encoding) -> bytes:
    return as_json(payload) if encoding is Encoding.JSON else to_protobuf(payload)


def with_spans(count: int) -> dict[str, Any]:
    """The fastify request with ``count`` copies of its server span (distinct ids), the internal span removed."""
    payload = fastify_payload()
    span = server_span(payload)
    spans = [{**copy.deepcopy(span), "spanId": f"{i + 1:016x}"} for i in range(count)]
    payload["resourceSpans"][0]["scopeSpans"] = [{"spans": spans}]
    return payload


def _varint(number: int) -> bytes:
    out = bytearray()
    while number > 0x7F:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    return bytes([*out, number])


def field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def request_of(spans: bytes) -> bytes:
    return field(1, field(2, spans))


# --- the whole request -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", list(Encoding))
def test_more_spans_than_the_limit_refuse_the_request_naming_the_option(encoding: Encoding) -> None:
    assert len(decode(encode(with_spans(4), encoding), encoding, SMALL).spans) == 4

    with pytest.raises(RequestTooLarge, match=rf"more than 4 spans \({PREFIX}MAX_SPANS\); send smaller batches"):
        decode(encode(with_spans(5), encoding), encoding, SMALL)


def test_the_protobuf_pass_stops_at_the_first_span_over_the_limit() -> None:
    scan = Scan(request_of(field(2, b"") * 100_000), SMALL)

    with pytest.raises(RequestTooLarge):
        scan.plan()

    assert scan.spans == SMALL.max_spans + 1  # not 100,000: the rest of the body was never read


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        (Encoding.PROTOBUF, request_of(field(2, field(9, b"") * 20_000))),  # empty attributes, 2 bytes each
        (Encoding.JSON, b'{"resourceSpans":[' + b"{}," * 20_000 + b"{}]}"),  # json.loads: 64 bytes per 3
        (Encoding.JSON, b'{"x":[' + b"1000," * 20_000 + b"1]}"),  # 36 bytes per 5, which no object hook sees
    ],
)
def test_a_body_that_would_take_too_much_memory_is_refused_before_it_is_built(encoding: Encoding, body: bytes) -> None:
    limits = dataclasses.replace(DEFAULT_LIMITS, max_body_size=len(body))

    with pytest.raises(RequestTooLarge, match=rf"once decoded \(8 times {PREFIX}MAX_BODY_SIZE\)"):
        decode(body, encoding, limits)


def test_json_text_that_python_stores_in_4_bytes_a_character_is_estimated_so() -> None:
    ascii_body = b'{"x": "' + b"a" * 10_000 + b'"}'
    limits = dataclasses.replace(DEFAULT_LIMITS, max_body_size=len(ascii_body) // 2)  # a budget of 4 times

    assert decode(ascii_body, Encoding.JSON, limits).spans == []
    with pytest.raises(RequestTooLarge):  # one emoji makes json.loads' str 4 bytes a character
        decode(ascii_body.replace(b"aaaa", "\U0001f600".encode(), 1), Encoding.JSON, limits)


def test_the_protobuf_pass_stops_where_the_budget_runs_out() -> None:
    body = request_of(field(2, field(9, b"") * 100_000))
    scan = Scan(body, dataclasses.replace(DEFAULT_LIMITS, max_body_size=1000))

    with pytest.raises(RequestTooLarge):
        scan.plan()

    assert -100 < scan.budget < 0  # charged field by field: it stopped at the first one over


# --- one span ----------------------------------------------------------------------------------------------------


def _break(span: dict[str, Any], limit: str) -> None:
    """Make ``span`` break ``limit`` (of :data:`SMALL`)."""
    text = {"stringValue": "x"}
    if limit == "MAX_ATTRIBUTES":
        span["attributes"] += [{"key": f"extra.{i}", "value": text} for i in range(20)]
    elif limit == "MAX_STRING_LENGTH":
        span["attributes"].append({"key": "url.path", "value": {"stringValue": "/" + "a" * 100}})
    elif limit == "MAX_ARRAY_LENGTH":
        span["attributes"].append({"key": "list", "value": {"arrayValue": {"values": [text] * 4}}})
    elif limit == "events":
        span["events"] = [{"name": "exception", "timeUnixNano": "1"}] * 21
    elif limit == "map":
        entries = [{"key": f"k{i}", "value": text} for i in range(21)]
        span["attributes"].append({"key": "map", "value": {"kvlistValue": {"values": entries}}})


@pytest.mark.parametrize("encoding", list(Encoding))
@pytest.mark.parametrize(
    ("limit", "reason"),
    [
        ("MAX_ATTRIBUTES", "with more than 20 attributes, events or links (OTEL_MATOMO_GATEWAY_MAX_ATTRIBUTES)"),
        ("events", "with more than 20 attributes, events or links (OTEL_MATOMO_GATEWAY_MAX_ATTRIBUTES)"),
        ("map", "with more than 20 attributes, events or links (OTEL_MATOMO_GATEWAY_MAX_ATTRIBUTES)"),
        ("MAX_STRING_LENGTH", "with a string longer than 100 bytes (OTEL_MATOMO_GATEWAY_MAX_STRING_LENGTH)"),
        ("MAX_ARRAY_LENGTH", "with an array of more than 3 values (OTEL_MATOMO_GATEWAY_MAX_ARRAY_LENGTH)"),
    ],
)
def test_a_span_over_a_per_span_limit_is_rejected_alone(encoding: Encoding, limit: str, reason: str) -> None:
    payload = with_spans(3)
    _break(payload["resourceSpans"][0]["scopeSpans"][0]["spans"][1], limit)

    decoded = decode(encode(payload, encoding), encoding, SMALL)

    assert [span.span_id for span in decoded.spans] == [1, 3]
    assert decoded.rejections == {reason: 1}


@pytest.mark.parametrize("encoding", list(Encoding))
def test_a_resource_over_a_limit_rejects_its_spans_and_no_other(encoding: Encoding) -> None:
    payload = with_spans(2)
    crowded = json.loads(json.dumps(payload["resourceSpans"][0]))
    crowded["resource"]["attributes"] += [{"key": f"k8s.{i}", "value": {"stringValue": "x"}} for i in range(20)]
    payload["resourceSpans"].append(crowded)

    decoded = decode(encode(payload, encoding), encoding, SMALL)

    assert len(decoded.spans) == 2
    [(reason, count)] = decoded.rejections.items()
    assert (count, reason.startswith("from a resource"), reason.endswith(f"({PREFIX}MAX_ATTRIBUTES)")) == (2, 1, 1)


def test_a_long_string_in_a_tracked_json_event_rejects_its_span_where_a_malformed_event_is_skipped() -> None:
    payload = with_spans(1)
    event = {"name": "matomo.event", "timeUnixNano": "1", "attributes": []}
    [span] = payload["resourceSpans"][0]["scopeSpans"][0]["spans"]
    span["events"] = [{**event, "attributes": [{"key": "matomo.event.category", "value": {"stringValue": "c" * 101}}]}]

    assert decode(as_json(payload), Encoding.JSON, SMALL).rejections == {
        "with a string longer than 100 bytes (OTEL_MATOMO_GATEWAY_MAX_STRING_LENGTH)": 1
    }
    span["events"] = [{**event, "timeUnixNano": "soon"}]
    assert len(decode(as_json(payload), Encoding.JSON, SMALL).spans) == 1


def test_the_default_limits_take_a_real_request_whole() -> None:
    for encoding in Encoding:
        decoded = decode(encode(fastify_payload(), encoding), encoding)
        assert (len(decoded.spans), decoded.rejections) == (2, {})


# --- protobuf as protobuf reads it -------------------------------------------------------------------------------


def test_a_resource_given_in_two_parts_is_merged_as_protobuf_merges_it() -> None:
    part = field(1, field(1, b"service.name") + field(2, field(1, b"shop")))
    other = field(1, field(1, b"host.name") + field(2, field(1, b"web-1")))
    span = field(2, (7).to_bytes(8, "big")) + b"\x39" + (10**18).to_bytes(8, "little")
    body = field(1, field(1, part) + field(2, field(2, span)) + field(1, other))

    [decoded] = decode(body, Encoding.PROTOBUF).spans

    whole = ExportTraceServiceRequest.FromString(body).resource_spans[0].resource  # protobuf's own merge
    assert dict(decoded.resource) == {kv.key: kv.value.string_value for kv in whole.attributes}
    assert dict(decoded.resource) == {"service.name": "shop", "host.name": "web-1"}


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (request_of(field(2, b"\x4a\x05\x0a\x01")), "runs past its message"),
        (request_of(field(2, b"\x0b")), "wire type 3"),
        (request_of(field(2, b"\x30")) + b"\x01", "runs past its message"),  # a varint's value outside its span
        (request_of(field(2, b"\x00\x00")), "field number 0"),
        (request_of(field(2, b"\x30" + b"\xff" * 11)), "varint longer than 10 bytes"),
        (b"\x0a\x05", "runs past"),
    ],
)
def test_malformed_wire_format_is_refused_with_where(body: bytes, detail: str) -> None:
    with pytest.raises(MalformedPayload, match=rf"not a protobuf ExportTraceServiceRequest \(.*{detail}"):
        decode(body, Encoding.PROTOBUF)


def test_protobuf_nested_deeper_than_protobuf_allows_is_malformed() -> None:
    value = field(1, b"x")
    for _ in range(120):
        value = field(5, field(1, value))  # an array holding an array ...
    body = request_of(field(2, field(9, field(1, b"deep") + field(2, value))))

    with pytest.raises(MalformedPayload, match="nested too deeply"):
        decode(body, Encoding.PROTOBUF)


# --- the gateway's answers ---------------------------------------------------------------------------------------


def _post(gateway: Gateway, body: bytes, encoding: Encoding) -> tuple[int, bytes]:
    """One request through the ASGI application, without a server."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "path": "/v1/traces",
        "method": "POST",
        "headers": [(b"content-type", encoding.value.encode())],
    }
    asyncio.run(gateway(scope, receive, send))
    return sent[0]["status"], sent[1]["body"]


@pytest.fixture
def small_gateway() -> Any:
    settings = Settings.from_env({}, endpoint="http://127.0.0.1:9", site_id=1, visitor_id_secret="s" * 32)
    config = GatewayConfig.from_env({f"{PREFIX}MAX_SPANS": "4", f"{PREFIX}MAX_STRING_LENGTH": "100"})
    gateway = Gateway(config, settings)
    yield gateway
    gateway.close()


def test_the_gateway_answers_413_resource_exhausted_naming_the_option(small_gateway: Gateway) -> None:
    status, body = _post(small_gateway, as_json(with_spans(5)), Encoding.JSON)

    assert status == 413
    assert json.loads(body) == {
        "code": 8,
        "message": f"the request holds more than 4 spans ({PREFIX}MAX_SPANS); send smaller batches",
    }


def test_the_gateway_reports_a_span_over_a_limit_in_partial_success(small_gateway: Gateway) -> None:
    payload = with_spans(2)
    span = payload["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["kind"] = 1  # an internal span: no hit is made, so nothing waits for the (absent) Matomo
    payload["resourceSpans"][0]["scopeSpans"][0]["spans"][1] = {**span, "name": "n" * 101}

    status, body = _post(small_gateway, as_json(payload), Encoding.JSON)

    assert status == 200
    assert json.loads(body) == {
        "partialSuccess": {
            "rejectedSpans": "1",
            "errorMessage": f"rejected spans: 1 with a string longer than 100 bytes ({PREFIX}MAX_STRING_LENGTH)",
        }
    }


def test_the_limits_are_options_with_defaults() -> None:
    assert DecodeLimits.of(GatewayConfig()) == DEFAULT_LIMITS
    assert (DEFAULT_LIMITS.max_spans, DEFAULT_LIMITS.max_attributes) == (10_000, 128)
    assert (DEFAULT_LIMITS.max_string_length, DEFAULT_LIMITS.max_array_length) == (65_536, 1_024)
    assert DecodeLimits.of(GatewayConfig.from_env({f"{PREFIX}MAX_ARRAY_LENGTH": "7"})).max_array_length == 7


# --- the garbage collector -----------------------------------------------------------------------------------------


def test_decoding_pauses_the_collector_and_restores_it(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []

    def decode_json(body: bytes, limits: DecodeLimits) -> Any:
        seen.append(gc.isenabled())
        raise MalformedPayload("no")

    monkeypatch.setattr(_otlp, "decode_json", decode_json)
    assert gc.isenabled()

    with pytest.raises(MalformedPayload):
        decode(b"{}", Encoding.JSON)

    assert (seen, gc.isenabled()) == ([False], True)


def test_concurrent_decodes_restore_the_collector_once_and_only_if_it_was_on() -> None:
    pause = _otlp._CollectorPause()
    with pause:
        with pause:
            assert not gc.isenabled()
        assert not gc.isenabled()  # the other decode still runs
    assert gc.isenabled()

    gc.disable()
    try:
        with pause:
            pass
        assert not gc.isenabled()  # an application that turned it off keeps it off
    finally:
        gc.enable()

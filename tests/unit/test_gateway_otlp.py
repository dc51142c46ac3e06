"""OTLP payload decoding and answers (``otel_matomo.gateway.otlp``): pure, no server.

The JSON payload below is what a real fastify 5 app (``@fastify/otel`` + ``@opentelemetry/instrumentation-http``
0.301, exporter-trace-otlp-http) sent for ``GET /items/7?color=red&x=a%20b`` with captured headers, trimmed to
the attributes that matter. Its protobuf twin is made by protobuf's own JSON parser, so the two decoders are
checked against an independent encoder rather than against each other.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
import time
import zlib
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_matomo.gateway._otlp import (
    Encoding,
    PayloadTooLarge,
    StatusCode,
    decode,
    export_response,
    gunzip,
    http_request_of,
    status_body,
)
from otel_matomo.gateway._otlp_records import MalformedPayload, SpanRecord

SERVER_SPAN_ID = "2016a8876acbf3c0"


def fastify_payload() -> dict[str, Any]:
    """A fresh copy of the recorded fastify export request."""
    return copy.deepcopy(_FASTIFY)


_FASTIFY: dict[str, Any] = {
    "resourceSpans": [
        {
            "resource": {
                "attributes": [
                    {"key": "service.name", "value": {"stringValue": "fastify-shop"}},
                    {"key": "process.pid", "value": {"intValue": 3635}},
                    {
                        "key": "process.command_args",
                        "value": {
                            "arrayValue": {"values": [{"stringValue": "/usr/bin/node"}, {"stringValue": "app.js"}]}
                        },
                    },
                    {"key": "telemetry.sdk.language", "value": {"stringValue": "nodejs"}},
                ],
                "droppedAttributesCount": 0,
            },
            "scopeSpans": [
                {
                    "scope": {"name": "@fastify/otel", "version": "0.21.2"},
                    "spans": [
                        {
                            "traceId": "7e22986958b0dc987118bcaf4a65cac7",
                            "spanId": "7d9d368d1af9085a",
                            "parentSpanId": SERVER_SPAN_ID,
                            "name": "request",
                            "kind": 1,
                            "startTimeUnixNano": "1795832717305000000",
                            "endTimeUnixNano": "1795832717307907248",
                            "attributes": [
                                {"key": "fastify.root", "value": {"stringValue": "@fastify/otel"}},
                                {"key": "http.request.method", "value": {"stringValue": "GET"}},
                                {"key": "url.path", "value": {"stringValue": "/items/7?color=red&x=a%20b"}},
                                {"key": "http.route", "value": {"stringValue": "/items/:id"}},
                                {"key": "http.response.status_code", "value": {"intValue": 200}},
                            ],
                            "droppedAttributesCount": 0,
                            "events": [],
                            "status": {"code": 0},
                            "links": [],
                            "flags": 257,
                        }
                    ],
                },
                {
                    "scope": {"name": "@opentelemetry/instrumentation-http", "version": "0.301.0"},
                    "spans": [
                        {
                            "traceId": "7e22986958b0dc987118bcaf4a65cac7",
                            "spanId": SERVER_SPAN_ID,
                            "name": "GET /items/:id",
                            "kind": 2,
                            "startTimeUnixNano": "1795832717302000000",
                            "endTimeUnixNano": "1795832717313568890",
                            "attributes": [
                                {"key": "http.request.method", "value": {"stringValue": "GET"}},
                                {"key": "url.scheme", "value": {"stringValue": "http"}},
                                {"key": "server.address", "value": {"stringValue": "shop.fastify.test"}},
                                {"key": "network.peer.address", "value": {"stringValue": "127.0.0.1"}},
                                {"key": "network.peer.port", "value": {"intValue": 37050}},
                                {"key": "network.protocol.version", "value": {"stringValue": "1.1"}},
                                {"key": "user_agent.original", "value": {"stringValue": "TestUA/1.0"}},
                                {"key": "url.path", "value": {"stringValue": "/items/7"}},
                                {"key": "url.query", "value": {"stringValue": "color=red&x=a+b"}},
                                {"key": "client.address", "value": {"stringValue": "203.0.113.50"}},
                                {"key": "server.port", "value": {"intValue": 80}},
                                {
                                    "key": "http.request.header.referer",
                                    "value": {"arrayValue": {"values": [{"stringValue": "https://www.google.com/"}]}},
                                },
                                {
                                    "key": "http.request.header.accept-language",
                                    "value": {"arrayValue": {"values": [{"stringValue": "fr-FR,fr;q=0.8"}]}},
                                },
                                {
                                    "key": "http.request.header.x-forwarded-for",
                                    "value": {"arrayValue": {"values": [{"stringValue": "203.0.113.50"}]}},
                                },
                                {
                                    "key": "http.request.header.host",
                                    "value": {"arrayValue": {"values": [{"stringValue": "shop.fastify.test"}]}},
                                },
                                {"key": "http.response.status_code", "value": {"intValue": 200}},
                                {"key": "http.route", "value": {"stringValue": "/items/:id"}},
                            ],
                            "droppedAttributesCount": 0,
                            "events": [],
                            "status": {"code": 0},
                            "links": [],
                            "flags": 257,
                        }
                    ],
                },
            ],
        }
    ]
}

EXPECTED_SERVER_ATTRIBUTES = {
    "http.request.method": "GET",
    "url.scheme": "http",
    "server.address": "shop.fastify.test",
    "network.peer.address": "127.0.0.1",
    "network.peer.port": 37050,
    "network.protocol.version": "1.1",
    "user_agent.original": "TestUA/1.0",
    "url.path": "/items/7",
    "url.query": "color=red&x=a+b",
    "client.address": "203.0.113.50",
    "server.port": 80,
    "http.request.header.referer": ("https://www.google.com/",),
    "http.request.header.accept-language": ("fr-FR,fr;q=0.8",),
    "http.request.header.x-forwarded-for": ("203.0.113.50",),
    "http.request.header.host": ("shop.fastify.test",),
    "http.response.status_code": 200,
    "http.route": "/items/:id",
}


def to_protobuf(payload: dict[str, Any]) -> bytes:
    """OTLP/JSON -> protobuf with protobuf's JSON parser; hex ids (OTLP/JSON) become base64 (proto3 JSON)."""

    def proto3_json(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: base64.b64encode(bytes.fromhex(value)).decode()
                if key in ("traceId", "spanId", "parentSpanId")
                else proto3_json(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [proto3_json(item) for item in node]
        return node

    return json_format.ParseDict(proto3_json(payload), ExportTraceServiceRequest()).SerializeToString()


def as_json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def server_span(payload: dict[str, Any]) -> dict[str, Any]:
    span: dict[str, Any] = payload["resourceSpans"][0]["scopeSpans"][1]["spans"][0]
    return span


# --- decoding ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", list(Encoding))
def test_the_recorded_fastify_request_decodes_to_plain_records(encoding: Encoding) -> None:
    payload = fastify_payload()
    body = as_json(payload) if encoding is Encoding.JSON else to_protobuf(payload)

    decoded = decode(body, encoding)

    assert not decoded.rejections
    internal, server = decoded.spans
    assert (internal.kind, internal.name) == (1, "request")
    assert server == SpanRecord(
        name="GET /items/:id",
        kind=2,
        attributes=EXPECTED_SERVER_ATTRIBUTES,
        start_ns=1795832717302000000,
        end_ns=1795832717313568890,
        span_id=int(SERVER_SPAN_ID, 16),
        resource={
            "service.name": "fastify-shop",
            "process.pid": 3635,
            "process.command_args": ("/usr/bin/node", "app.js"),
            "telemetry.sdk.language": "nodejs",
        },
        scope="@opentelemetry/instrumentation-http",
    )
    assert server.service_name == "fastify-shop"


def test_json_accepts_every_spelling_the_otlp_json_mapping_allows() -> None:
    payload = fastify_payload()
    span = server_span(payload)
    span["kind"] = "SPAN_KIND_SERVER"  # generic protobuf JSON printers write enum names
    span["startTimeUnixNano"] = 1795832717302000000  # a number instead of a string
    span["endTimeUnixNano"] = 1795832717313568890.0  # a float, as a JavaScript number would be parsed
    span["attributes"] = [
        {"key": "int-as-string", "value": {"intValue": "-42"}},
        {"key": "int-as-number", "value": {"intValue": 7}},
        {"key": "double", "value": {"doubleValue": 0.5}},
        {"key": "double-as-string", "value": {"doubleValue": "Infinity"}},
        {"key": "bool", "value": {"boolValue": True}},
        {"key": "bytes", "value": {"bytesValue": base64.b64encode(b"\x00\x01").decode()}},
        {"key": "kvlist", "value": {"kvlistValue": {"values": [{"key": "a", "value": {"stringValue": "b"}}]}}},
        {"key": "empty-array", "value": {"arrayValue": {}}},
        {"key": "empty", "value": {}},
        {"key": "wrong-type", "value": {"intValue": "seven"}},
        {"key": "string-not-string", "value": {"stringValue": 7}},
    ]

    [_, decoded] = decode(as_json(payload), Encoding.JSON).spans

    assert decoded.kind == 2
    assert decoded.start_ns == 1795832717302000000
    assert decoded.attributes == {
        "int-as-string": -42,
        "int-as-number": 7,
        "double": 0.5,
        "double-as-string": float("inf"),
        "bool": True,
        "bytes": b"\x00\x01",
        "kvlist": {"a": "b"},
        "empty-array": (),
    }


@pytest.mark.parametrize("encoding", list(Encoding))
def test_unusable_spans_are_counted_and_the_others_kept(encoding: Encoding) -> None:
    payload = fastify_payload()
    spans = payload["resourceSpans"][0]["scopeSpans"][1]["spans"]
    good = spans[0]
    no_id = {**good, "spanId": "0000000000000000"}
    short_id = {**good, "spanId": "abcd"}
    no_start = {**good, "spanId": "0102030405060708"}
    del no_start["startTimeUnixNano"]
    spans[:] = [no_id, good, short_id, no_start]
    if encoding is Encoding.PROTOBUF:
        spans.remove(short_id)  # protobuf's JSON parser refuses a short id outright; bytes are never "short" there

    decoded = decode(as_json(payload) if encoding is Encoding.JSON else to_protobuf(payload), encoding)

    assert [span.span_id for span in decoded.spans if span.kind == 2] == [int(SERVER_SPAN_ID, 16)]
    assert decoded.rejections == {
        "without a valid spanId (8 bytes, 16 hex digits in JSON)": 2 if encoding is Encoding.JSON else 1,
        "without a startTimeUnixNano": 1,
    }


def test_json_span_with_a_bad_time_or_attribute_list_is_rejected_alone() -> None:
    payload = fastify_payload()
    spans = payload["resourceSpans"][0]["scopeSpans"][1]["spans"]
    good = spans[0]
    spans[:] = [
        {**good, "startTimeUnixNano": "yesterday"},
        {**good, "endTimeUnixNano": "-1"},
        {**good, "attributes": {"http.request.method": "GET"}},
        {**good, "attributes": [{"value": {"stringValue": "no key"}}]},
        good,
    ]

    decoded = decode(as_json(payload), Encoding.JSON)

    assert len([span for span in decoded.spans if span.kind == 2]) == 1
    assert decoded.rejections == {
        "without a valid startTimeUnixNano (nanoseconds as a string or number)": 1,
        "without a valid endTimeUnixNano (nanoseconds as a string or number)": 1,
        "with attributes that are not a list of key/value objects": 2,
    }


def test_a_missing_end_time_gives_a_zero_duration() -> None:
    payload = fastify_payload()
    del server_span(payload)["endTimeUnixNano"]

    [_, span] = decode(as_json(payload), Encoding.JSON).spans

    assert span.end_ns == span.start_ns


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "the body is not JSON"),
        (b"\xff\xfe\x00", "the body is not JSON"),
        (b"[]", "the body is not a JSON object"),
        (b'{"resourceSpans": {}}', "resourceSpans is not a list of objects"),
        (b'{"resourceSpans": [1]}', "resourceSpans is not a list of objects"),
        (b'{"resourceSpans": [{"resource": []}]}', "resourceSpans[0].resource is not an object"),
        (
            b'{"resourceSpans": [{"resource": {"attributes": 1}}]}',
            "resourceSpans[0].resource.attributes is not a list of key/value objects",
        ),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [null]}]}]}', "resourceSpans[0].scopeSpans[0].spans is not"),
        (b'{"n": ' + b"9" * 5000 + b"}", "the body is not JSON"),
    ],
)
def test_malformed_json_is_refused_with_the_reason(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedPayload, match=reason.replace("[", r"\[").replace("]", r"\]")):
        decode(body, Encoding.JSON)


def test_deeply_nested_json_is_refused_not_a_crash() -> None:
    value: dict[str, Any] = {"stringValue": "x"}
    for _ in range(150):
        value = {"arrayValue": {"values": [value]}}
    payload = fastify_payload()
    server_span(payload)["attributes"] = [{"key": "deep", "value": value}]
    body = b'{"resourceSpans": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    with pytest.raises(MalformedPayload):
        decode(body, Encoding.JSON)
    decoded = decode(as_json(payload), Encoding.JSON)  # 450 levels: deep, but legal
    assert len(decoded.spans) == 2


@pytest.mark.parametrize("body", [b"\xff\xff\xff", b"\x0a\x05\x0a\x03", b"\x0a\xff\xff\xff\xff\x0f"])
def test_malformed_protobuf_is_refused_with_the_reason(body: bytes) -> None:
    with pytest.raises(MalformedPayload, match="not a protobuf ExportTraceServiceRequest"):
        decode(body, Encoding.PROTOBUF)


def test_empty_requests_are_valid_and_empty() -> None:
    assert decode(b"", Encoding.PROTOBUF).spans == []
    assert decode(b"{}", Encoding.JSON).spans == []
    assert decode(b'{"resourceSpans": []}', Encoding.JSON).spans == []


# --- the request view -------------------------------------------------------------------------------------------


def test_only_server_spans_are_requests() -> None:
    internal, server = decode(as_json(fastify_payload()), Encoding.JSON).spans

    assert http_request_of(internal) is None  # although @fastify/otel gives it a method, a path and a route
    request = http_request_of(server)
    assert request is not None
    assert (request.method, request.route, request.path, request.query) == (
        "GET",
        "/items/:id",
        "/items/7",
        "color=red&x=a+b",
    )
    assert request.host == "shop.fastify.test"
    assert request.referrer == "https://www.google.com/"
    assert request.accept_language == "fr-FR,fr;q=0.8"


# --- gzip -------------------------------------------------------------------------------------------------------


def test_gzip_bodies_are_decompressed_including_concatenated_members() -> None:
    assert gunzip(gzip.compress(b"hello"), limit=5) == b"hello"
    assert gunzip(gzip.compress(b"hel") + gzip.compress(b"lo"), limit=5) == b"hello"


def test_a_gzip_bomb_is_refused_after_at_most_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)  # 64 MiB in about 64 KB
    started = time.monotonic()

    with pytest.raises(PayloadTooLarge):
        gunzip(bomb, limit=1024 * 1024)

    assert time.monotonic() - started < 1.0  # stopped early, not after inflating everything
    with pytest.raises(PayloadTooLarge):
        gunzip(gzip.compress(b"x" * 101), limit=100)


@pytest.mark.parametrize("members", [1_000, 20_000])
def test_gzip_work_is_linear_in_the_number_of_members(members: int, monkeypatch: pytest.MonkeyPatch) -> None:
    fed: list[int] = []
    real = zlib.decompressobj

    class Counting:
        """zlib's decompressor, counting the input bytes handed to it: the work a copy of the rest would show."""

        def __init__(self, **options: Any) -> None:
            self._inner = real(**options)

        def decompress(self, data: Any, max_length: int = 0) -> bytes:
            fed.append(len(data))
            return self._inner.decompress(data, max_length)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    monkeypatch.setattr(zlib, "decompressobj", Counting)
    body = gzip.compress(b"", mtime=0) * (members - 1) + gzip.compress(b"end", mtime=0)

    assert gunzip(body, limit=10) == b"end"
    assert sum(fed) <= 4 * len(body)  # copying the rest once per member fed 10,000 times the body for 20,000


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not gzip at all", "not valid gzip"),
        (gzip.compress(b"hello")[:-6], "truncated"),
        (zlib.compress(b"hello"), "not valid gzip"),
    ],
)
def test_broken_gzip_is_malformed(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedPayload, match=reason):
        gunzip(body, limit=1000)


# --- answers ----------------------------------------------------------------------------------------------------


def test_full_success_has_no_partial_success() -> None:
    assert json.loads(export_response(Encoding.JSON, {})) == {}
    assert export_response(Encoding.PROTOBUF, {}) == b""


def test_partial_success_counts_and_explains_the_rejected_spans() -> None:
    rejections = {"without a valid spanId": 2, "from service.name 'x'": 1}

    answer = json.loads(export_response(Encoding.JSON, rejections))
    response = ExportTraceServiceResponse.FromString(export_response(Encoding.PROTOBUF, rejections))

    message = "rejected spans: 1 from service.name 'x'; 2 without a valid spanId"
    assert answer == {"partialSuccess": {"rejectedSpans": "3", "errorMessage": message}}
    assert (response.partial_success.rejected_spans, response.partial_success.error_message) == (3, message)


def _google_rpc_status() -> Any:
    """google.rpc.Status, built from its descriptor: an independent decoder for the hand-encoded bytes."""
    file = descriptor_pb2.FileDescriptorProto(name="test_status.proto", package="google.rpc", syntax="proto3")
    message = file.message_type.add(name="Status")
    message.field.add(name="code", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32, label=1)
    message.field.add(name="message", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING, label=1)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))


@pytest.mark.parametrize("message", ["bad", "a longer reason, é, " * 20])
def test_error_bodies_are_google_rpc_status_in_the_request_encoding(message: str) -> None:
    status = _google_rpc_status().FromString(status_body(Encoding.PROTOBUF, StatusCode.INVALID_ARGUMENT, message))

    assert (status.code, status.message) == (3, message)
    assert json.loads(status_body(Encoding.JSON, StatusCode.UNAUTHENTICATED, message)) == {
        "code": 16,
        "message": message,
    }


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [
        ("application/x-protobuf", Encoding.PROTOBUF),
        ("application/json", Encoding.JSON),
        ("Application/JSON; charset=utf-8", Encoding.JSON),
        ("application/protobuf", None),
        ("text/plain", None),
        ("", None),
        (None, None),
    ],
)
def test_content_types(content_type: str | None, encoding: Encoding | None) -> None:
    assert Encoding.of(content_type) is encoding


@pytest.mark.parametrize("encoding", list(Encoding))
def test_tracking_events_and_an_error_status_reach_the_request(encoding: Encoding) -> None:
    # A back end in another language tracks an event the way otel_matomo.tracking does: a span event.
    payload = fastify_payload()
    span = server_span(payload)
    span["attributes"] = [a for a in span["attributes"] if a["key"] != "http.response.status_code"]
    span["status"] = {"code": 2}
    span["events"] = [
        {
            "name": "matomo.event",
            "timeUnixNano": "1795832717310000000",
            "attributes": [
                {"key": "matomo.event.category", "value": {"stringValue": "Cart"}},
                {"key": "matomo.event.action", "value": {"stringValue": "add"}},
                {"key": "matomo.event.value", "value": {"doubleValue": 2.5}},
            ],
        },
        {"name": "exception", "timeUnixNano": "1795832717311000000", "attributes": []},
    ]
    body = as_json(payload) if encoding is Encoding.JSON else to_protobuf(payload)

    request = http_request_of(decode(body, encoding).spans[1])

    assert request is not None
    assert request.status == 500
    [fact] = request.tracking.facts
    assert (fact.kind, fact.time_ns) == ("matomo.event", 1795832717310000000)
    assert dict(fact.attributes) == {
        "matomo.event.category": "Cart",
        "matomo.event.action": "add",
        "matomo.event.value": 2.5,
    }

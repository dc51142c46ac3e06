"""OTLP/HTTP as the traces receiver speaks it: which encoding a request announces, its gzip body, which decoder
reads it, and the answers OTLP clients expect. Pure: no I/O (decoding only pauses the garbage collector).

Both encodings (``_otlp_protobuf``, ``_otlp_json``) become the same span records (``_otlp_records``), so the
rest of the gateway never knows which one arrived.
"""

from __future__ import annotations

import enum
import gc
import json
import threading
import zlib
from collections.abc import Mapping

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_matomo._request import http_request_from_span_data
from otel_matomo._types import HttpRequest
from otel_matomo.gateway._otlp_json import decode_json
from otel_matomo.gateway._otlp_limits import DEFAULT_LIMITS, DecodeLimits
from otel_matomo.gateway._otlp_protobuf import decode_protobuf
from otel_matomo.gateway._otlp_records import SPAN_KIND_SERVER, MalformedPayload, SpanRecord, TraceRequest

# _server imports the records from here with the rest of the protocol: an alias is mypy's explicit re-export.

_FIRST_PIECE = 64
"""Bytes of input a gzip member is first fed (an empty member takes 20); doubled while the member goes on."""


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


class PayloadTooLarge(ValueError):
    """The body, once decompressed, exceeds the configured limit."""


def gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing to produce more than ``limit`` bytes, in time linear in the body.

    Decompression is incremental with ``max_length``, so a gzip bomb costs at most ``limit`` bytes of memory
    before it is refused. Several concatenated gzip members (which ``gzip`` tools produce) are one body. Input is
    fed from a view in slices that start small and double while a member goes on: zlib copies what it did not use
    (``unused_data``) when a member ends, and feeding it the whole rest of the body made a body of many tiny
    members cost quadratic time (100,000 empty members, 2 MB, took 5 s of CPU).
    """
    output = bytearray()
    view = memoryview(body)
    position = 0
    while position < len(view):
        decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        piece = _FIRST_PIECE
        try:
            while not decompressor.eof and position < len(view):
                chunk: bytes | memoryview = view[position : position + piece]
                position += len(chunk)
                while chunk:
                    output += decompressor.decompress(chunk, limit + 1 - len(output))
                    if len(output) > limit:
                        raise PayloadTooLarge(f"the body decompresses to more than {limit} bytes")
                    chunk = decompressor.unconsumed_tail
                piece *= 2
        except zlib.error as error:
            raise MalformedPayload(f"the body is not valid gzip ({error})") from None
        if not decompressor.eof:
            raise MalformedPayload("the gzip body is truncated")
        position -= len(decompressor.unused_data)
    return bytes(output)


def decode(body: bytes, encoding: Encoding, limits: DecodeLimits = DEFAULT_LIMITS) -> TraceRequest:
    """Decode an ``ExportTraceServiceRequest`` within ``limits``; raises :class:`MalformedPayload` when it is not
    one, ``RequestTooLarge`` when it is over a whole-request limit (a span over a per-span limit is only
    rejected, see ``_otlp_limits``)."""
    try:
        with _COLLECTOR_PAUSED:
            return decode_protobuf(body, limits) if encoding is Encoding.PROTOBUF else decode_json(body, limits)
    except RecursionError:
        raise MalformedPayload("the payload is nested too deeply") from None


class _CollectorPause:
    """No cyclic garbage collection while any thread decodes.

    A decoded request holds no reference cycles, yet each of its hundreds of thousands of fresh dicts counts
    towards the collector's thresholds, and the full collections they set off walk every object alive, holding
    the GIL: decoding a 9 MB OTLP/JSON body stopped every other thread for up to 0.25 s at a time (0.06 s without
    them) and took twice as long. Counted, so that concurrent decodes restore the collector once, and only if it
    was on.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if not self._holders:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._holders += 1

    def __exit__(self, *_exception: object) -> None:
        with self._lock:
            self._holders -= 1
            if not self._holders and self._was_enabled:
                gc.enable()


_COLLECTOR_PAUSED = _CollectorPause()


def http_request_of(span: SpanRecord) -> HttpRequest | None:
    """The request view of a SERVER span (through the one reader of attribute names), else ``None``."""
    if span.kind != SPAN_KIND_SERVER:
        return None
    return http_request_from_span_data(
        span.name,
        span.attributes,
        span.start_ns,
        span.end_ns,
        span.span_id,
        span.events,
        failed=span.failed,
        scope=span.scope,
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

"""Gateway decoding under hostile bodies: CPU time and peak memory of ``gunzip`` + ``decode`` for one body.

Each case runs in a fresh interpreter; once its body is built, the kernel's peak RSS mark is reset
(``/proc/self/clear_refs``), and the figure printed is the peak during decoding minus the RSS just before it: what
one request adds to a running gateway. The outcome is what the gateway would answer: the number of spans kept
and rejected, or the exception that becomes 400 or 413.

Cases (``--size`` sets the hostile bodies' size, 15 MB by default, under the default 16 MiB body limit):

- ``normal-protobuf`` / ``normal-json``: 512 HTTP server spans with 17 attributes, what an SDK sends.
- ``empty-spans``: protobuf, the body filled with empty spans (2 bytes each).
- ``empty-attributes``: protobuf, spans of 100 attributes with distinct 3-byte keys and no value.
- ``repeated-scalar``: protobuf, one span whose ``kind`` is given 7.5 million times (the wire pass's worst case:
  one step per 2 bytes, each costing no memory).
- ``json-objects``: ``{"resourceSpans":[{},{},...]}``, which ``json.loads`` inflates about 20 times.
- ``json-numbers`` / ``json-strings``: an unknown member holding a list of ``1000`` or ``"ab"`` filling the body:
  objects ``json.loads`` builds that no hook sees.
- ``dense-protobuf`` / ``dense-json``: valid SERVER spans of 128 attributes with distinct 3-byte keys and a
  one-character value, as many as fit under the decoded-size budget (5,000 and 1,450): the most a request can
  make the gateway build.
- ``gzip-members``: a gzip body of 100,000 empty members (2 MB).
- ``gzip-bomb``: 1 GB of zeros in about 1 MB of gzip.

Run alone: ``python benchmarks/gateway_decoding.py [--size BYTES] [CASE ...]``. To measure another tree (the
code before a change), put it first on the path: ``PYTHONPATH=/path/to/tree python benchmarks/...``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import zlib

LIMIT = 16 * 1024 * 1024
CASES = (
    "normal-protobuf",
    "normal-json",
    "empty-spans",
    "empty-attributes",
    "repeated-scalar",
    "json-objects",
    "json-numbers",
    "json-strings",
    "dense-protobuf",
    "dense-json",
    "gzip-members",
    "gzip-bomb",
)


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if not number:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _request(spans: bytes) -> bytes:
    """An ExportTraceServiceRequest around already-encoded span fields: one resource, one scope."""
    return _field(1, _field(2, spans))


def _normal_payload() -> dict[str, object]:
    attributes = {
        "http.request.method": "GET",
        "url.scheme": "https",
        "url.path": "/products/42",
        "url.query": "color=red",
        "server.address": "shop.example.com",
        "server.port": 443,
        "network.peer.address": "203.0.113.7",
        "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        "http.response.status_code": 200,
        "http.route": "/products/:id",
        "network.protocol.version": "1.1",
        "client.address": "203.0.113.7",
        "network.peer.port": 50123,
        "http.request.header.referer": ["https://www.example.org/"],
        "http.request.header.accept-language": ["fr-FR,fr;q=0.8"],
        "http.request.header.host": ["shop.example.com"],
        "url.full": "https://shop.example.com/products/42?color=red",
    }

    def value(item: object) -> dict[str, object]:
        if isinstance(item, list):
            return {"arrayValue": {"values": [value(one) for one in item]}}
        return {"intValue": item} if isinstance(item, int) else {"stringValue": item}

    spans = [
        {
            "traceId": f"{i:032x}",
            "spanId": f"{i + 1:016x}",
            "name": "GET /products/:id",
            "kind": 2,
            "startTimeUnixNano": str(1_795_832_717_302_000_000 + i),
            "endTimeUnixNano": str(1_795_832_717_313_000_000 + i),
            "attributes": [{"key": key, "value": value(item)} for key, item in attributes.items()],
        }
        for i in range(512)
    ]
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": spans}]}]}


def _normal_protobuf() -> bytes:
    import base64

    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    payload = json.loads(json.dumps(_normal_payload()))
    for span in payload["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        for key in ("traceId", "spanId"):
            span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    return json_format.ParseDict(payload, ExportTraceServiceRequest()).SerializeToString()


def _empty_attributes(size: int) -> bytes:
    keys = (bytes((33 + i // 8836, 33 + i // 94 % 94, 33 + i % 94)) for i in range(100))
    span = b"".join(_field(9, _field(1, key)) for key in keys)
    return _request(_field(2, span) * (size // (len(span) + 3)))


def _dense_keys() -> list[str]:
    return [chr(33 + i // 94) + chr(33 + i % 94) + "k" for i in range(128)]


def _dense_protobuf(spans: int) -> bytes:
    attributes = b"".join(_field(9, _field(1, key.encode()) + _field(2, _field(1, b"x"))) for key in _dense_keys())
    return _request(
        b"".join(
            _field(
                2,
                _field(2, (i + 1).to_bytes(8, "big"))
                + b"\x30\x02\x39"
                + (10**18 + i).to_bytes(8, "little")
                + attributes,
            )
            for i in range(spans)
        )
    )


def _dense_json(spans: int) -> bytes:
    attributes = [{"key": key, "value": {"stringValue": "x"}} for key in _dense_keys()]
    payload = [
        {"spanId": f"{i + 1:016x}", "kind": 2, "startTimeUnixNano": str(10**18 + i), "attributes": attributes}
        for i in range(spans)
    ]
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": payload}]}]}).encode()


def _gzip_bomb() -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1 << 20)
    return b"".join(compressor.compress(block) for _ in range(1024)) + compressor.flush()


def build(case: str, size: int) -> tuple[bytes, str, bool]:
    """The body, its encoding's name and whether it is gzipped."""
    if case == "normal-protobuf":
        return _normal_protobuf(), "PROTOBUF", False
    if case == "normal-json":
        return json.dumps(_normal_payload()).encode(), "JSON", False
    if case == "empty-spans":
        return _request(b"\x12\x00" * (size // 2)), "PROTOBUF", False
    if case == "empty-attributes":
        return _empty_attributes(size), "PROTOBUF", False
    if case == "repeated-scalar":
        return _request(_field(2, b"\x30\x01" * (size // 2))), "PROTOBUF", False
    if case == "json-objects":
        return b'{"resourceSpans":[' + b"{}," * (size // 3) + b"{}]}", "JSON", False
    if case == "json-numbers":
        return b'{"x":[' + b"1000," * (size // 5) + b"1]}", "JSON", False
    if case == "json-strings":
        return b'{"x":[' + b'"ab",' * (size // 5) + b"1]}", "JSON", False
    if case == "dense-protobuf":
        return _dense_protobuf(5_000), "PROTOBUF", False
    if case == "dense-json":
        return _dense_json(1_450), "JSON", False
    if case == "gzip-members":
        return gzip.compress(b"", mtime=0) * 100_000, "PROTOBUF", True
    if case == "gzip-bomb":
        return _gzip_bomb(), "PROTOBUF", True
    raise SystemExit(f"unknown case {case!r}: one of {', '.join(CASES)}")


def measure(case: str, size: int) -> dict[str, object]:
    """Decode one body in this process (a fresh one: see :func:`main`) and say what it cost."""
    import time

    from otel_matomo.gateway import _otlp

    body, encoding, gzipped = build(case, size)
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")  # resets VmHWM, the peak RSS, so that building the body does not count
    before = _status_kib("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    try:
        plain = _otlp.gunzip(body, LIMIT) if gzipped else body
        decoded = _otlp.decode(plain, _otlp.Encoding[encoding])
        outcome = f"{len(decoded.spans)} spans, {sum(decoded.rejections.values())} rejected"
    except ValueError as error:
        outcome = f"{type(error).__name__}: {str(error)[:90]}"
    return {
        "case": case,
        "body": len(body),
        "wall_s": round(time.perf_counter() - started, 3),
        "cpu_s": round(time.process_time() - cpu, 3),
        "peak_growth_mb": round((_status_kib("VmHWM") - before) / 1024, 1),
        "outcome": outcome,
    }


def _status_kib(name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=15_000_000, help="hostile body size in bytes")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.size)))
        return
    import otel_matomo

    print(f"otel_matomo from {otel_matomo.__file__}")
    print(f"| case | body bytes | wall s | CPU s | peak RSS growth MB | outcome |\n|{'---|' * 6}")
    for case in args.cases:
        command = [sys.executable, __file__, "--one", case, "--size", str(args.size)]
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        print("| " + " | ".join(str(value) for value in result.values()) + " |", flush=True)


if __name__ == "__main__":
    main()

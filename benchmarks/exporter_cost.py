"""Exporter cost: microseconds per span to filter, translate and encode one export batch (span -> bulk JSON).

The spans are real: every span recorded in ``tests/fixtures/spans/*.json`` (FastAPI, raw ASGI, Flask under
wsgiref and werkzeug, raw WSGI; old, new and dup semantic conventions; page views, API posts, 404s, 500s,
requests without optional headers, repeated headers), rebuilt as SDK ``ReadableSpan`` objects with their
recorded attributes, given fresh span ids and increasing times, and repeated up to the batch size. The recorded
page views carry ``DNT: 1`` and ``Sec-GPC: 1``, which otel-matomo honours by making no hit; those two headers are
removed so that every server span pays the full translation cost (the worst case, and what most traffic does).

The main figure is for a batch of the recorded visitors, as real traffic has several requests per visitor
(otel-matomo caches per-visitor work: the visitor id, the forwarding walk, query redaction); ``distinct`` is the
worst case, every span from a visitor and at a page that no cache holds.

Run alone: ``python benchmarks/exporter_cost.py [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import pstats
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from otel_matomo import MatomoSpanExporter
from otel_matomo._bulk import encode_bulk

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "spans"
TOKEN = "0123456789abcdef0123456789abcdef"
BATCH = 512


def _load(server_only: bool) -> list[dict[str, Any]]:
    records = []
    for path in sorted(FIXTURES.glob("*.json")):
        for span in json.loads(path.read_text()):
            if span["kind"] == "SERVER" or not server_only:
                records.append(span)
    if not records:
        raise SystemExit(f"no recorded spans under {FIXTURES}")
    return records


def build_spans(count: int = BATCH, *, server_only: bool = True) -> list[ReadableSpan]:
    """``count`` ReadableSpans with the recorded attributes, in the order a BatchSpanProcessor hands them."""
    records = _load(server_only)
    resource = Resource.create({"service.name": "bench"})
    start = 1_795_831_493_000_000_000
    spans = []
    for index in range(count):
        record = records[index % len(records)]
        duration = record["end_time"] - record["start_time"]
        begin = start + index * 1_000_000
        spans.append(
            ReadableSpan(
                name=record["name"],
                context=SpanContext(
                    trace_id=0x9DBA423F65BD3DBB0DF3F81ED8606CDA + index,
                    span_id=0x100000000 + index,
                    is_remote=False,
                    trace_flags=TraceFlags(TraceFlags.SAMPLED),
                ),
                kind=SpanKind[record["kind"]],
                attributes=_attributes(record["attributes"]),
                start_time=begin,
                end_time=begin + duration,
                resource=resource,
                # The scope says whether client.address (the peer in the new conventions) was read from the socket.
                instrumentation_scope=InstrumentationScope(record["scope"], record["scope_version"]),
            )
        )
    return spans


_OPT_OUT = ("http.request.header.dnt", "http.request.header.sec_gpc")


def _attributes(recorded: dict[str, Any]) -> dict[str, Any]:
    # The SDK stores sequence attributes as tuples.
    return {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in recorded.items()
        if key not in _OPT_OUT
    }


_DISTINCT_BATCHES = 24
_VISITOR_KEYS = ("client.address", "net.peer.ip", "network.peer.address")


def distinct_visitors(spans: Sequence[ReadableSpan], salt: int) -> list[ReadableSpan]:
    """The same spans, each from a client (address, user agent) and at a page (query) no other span has: the
    worst case for otel-matomo's per-visitor caches, which real traffic (several requests per visitor) beats."""
    unique = []
    for index, span in enumerate(spans):
        n = salt * len(spans) + index
        attributes = dict(span.attributes or {})
        for key in _VISITOR_KEYS:
            if key in attributes:
                attributes[key] = f"198.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        for key in ("http.request.header.x_forwarded_for",):
            if key in attributes:
                attributes[key] = (f"198.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",)
        for key in ("user_agent.original", "http.user_agent"):
            if key in attributes:
                attributes[key] = f"{attributes[key]} build/{n}"
        for key in ("url.query", "http.target", "http.url"):
            value = attributes.get(key)
            if isinstance(value, str):
                separator = "&" if "?" in value or key == "url.query" else "?"
                attributes[key] = f"{value}{separator}v={n}"
        unique.append(
            ReadableSpan(
                name=span.name,
                context=span.context,
                kind=span.kind,
                attributes=attributes,
                start_time=span.start_time,
                end_time=span.end_time,
                resource=span.resource,
            )
        )
    return unique


def make_exporter() -> MatomoSpanExporter:
    # The endpoint is never contacted: only translate() and encode_bulk() run.
    return MatomoSpanExporter(endpoint="http://127.0.0.1:9/", site_id=1, token_auth=TOKEN)


def translate_and_encode(exporter: MatomoSpanExporter, spans: Sequence[ReadableSpan]) -> bytes:
    """What ``export`` does before the HTTP request: filter + translate, then the bulk JSON body."""
    return encode_bulk(exporter.translate(spans), TOKEN)


def time_per_batch(function: Callable[[], object], *, min_time: float) -> float:
    """Median seconds per call over calls run for at least ``min_time`` (after one warm-up call)."""
    function()
    samples = []
    began = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        function()
        samples.append(time.perf_counter() - t0)
        if time.perf_counter() - began >= min_time and len(samples) >= 3:
            break
    return statistics.median(samples)


def measure(rounds: int, min_time: float) -> dict[str, Any]:
    """Median over ``rounds`` of the median time per batch; figures in microseconds per span."""
    exporter = make_exporter()
    server = build_spans(BATCH, server_only=True)
    mixed = build_spans(BATCH, server_only=False)
    hits = exporter.translate(server)
    if not hits:
        raise SystemExit(f"translate() made no hit out of {BATCH} server spans: {exporter.stats}")
    body = encode_bulk(hits, TOKEN)
    mixed_hits = len(exporter.translate(mixed))
    # Batches of distinct visitors, cycled: 12,288 visitors, three times the largest cache, so that every call
    # meets only visitors the caches have forgotten.
    pool = [distinct_visitors(server, salt) for salt in range(_DISTINCT_BATCHES)]
    turn = itertools.count()
    cases: dict[str, Callable[[], object]] = {
        "translate+encode": lambda: translate_and_encode(exporter, server),
        "distinct": lambda: translate_and_encode(exporter, pool[next(turn) % _DISTINCT_BATCHES]),
        "translate": lambda: exporter.translate(server),
        "encode": lambda: encode_bulk(hits, TOKEN),
        "mixed": lambda: translate_and_encode(exporter, mixed),
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, function in cases.items():  # interleaved
            samples[name].append(time_per_batch(function, min_time=min_time))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    exporter.shutdown()
    return {
        "batch": BATCH,
        "hits": len(hits),
        "us_per_span": medians["translate+encode"] / BATCH * 1e6,
        "us_per_span_translate": medians["translate"] / BATCH * 1e6,
        "us_per_span_encode": medians["encode"] / BATCH * 1e6,
        "ms_per_batch": medians["translate+encode"] * 1e3,
        "mixed_us_per_span": medians["mixed"] / BATCH * 1e6,
        "distinct_us_per_span": medians["distinct"] / BATCH * 1e6,
        "mixed_us_per_hit": medians["mixed"] / max(mixed_hits, 1) * 1e6,
        "mixed_hits": mixed_hits,
        "body_bytes": len(body),
        "rounds": rounds,
    }


def profile(seconds: float, top: int = 15) -> list[tuple[str, float, float, int]]:
    """cProfile of translate+encode; the ``top`` functions by own time: (name, own %, cumulative %, calls)."""
    exporter = make_exporter()
    spans = build_spans(BATCH, server_only=True)
    translate_and_encode(exporter, spans)
    profiler = cProfile.Profile()
    deadline = time.perf_counter() + seconds
    batches = 0
    profiler.enable()
    while time.perf_counter() < deadline:
        translate_and_encode(exporter, spans)
        batches += 1
    profiler.disable()
    exporter.shutdown()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in entries.values()) or 1.0
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in entries.items():
        where = filename.replace(str(ROOT) + "/", "")
        if "site-packages/" in where:
            where = where.split("site-packages/", 1)[1]
        elif where.startswith("/") and "/lib/python" in where:
            where = "stdlib/" + where.split("/lib/python", 1)[1].split("/", 1)[1]
        name = f"{where}:{line}({function})" if line else function
        rows.append((name, own / total * 100, cumulative / total * 100, calls // max(batches, 1)))
    rows.sort(key=lambda row: row[1], reverse=True)
    return rows[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds per case and round")
    parser.add_argument("--profile", action="store_true", help="also print the cProfile top functions")
    args = parser.parse_args()
    result = measure(args.rounds, args.min_time)
    print(json.dumps(result, indent=2))
    if args.profile:
        print(f"{'own %':>6} {'cum %':>6} {'calls/batch':>11}  function")
        for name, own, cumulative, calls in profile(3.0, top=25):
            print(f"{own:6.1f} {cumulative:6.1f} {calls:11d}  {name}")


if __name__ == "__main__":
    main()

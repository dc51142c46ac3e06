"""Golden output: the exact hits and the exact bulk request bodies, byte for byte, against a recorded file.

A safety net for restructuring the package (issue 15): for every span recorded in ``tests/fixtures/spans`` and
for spans made here with the tracking API, under several settings, the hits each server span becomes, what the
exporter counts for it, and the bulk body POSTed to matomo.php for each source's batch must stay exactly what
``tests/fixtures/golden_hits.json`` holds. The same batches go through the OTLP gateway, in OTLP/JSON and
protobuf, and must POST the same bodies.

Only public entry points are used (``MatomoSpanExporter.translate``/``export``/``stats``, the gateway's ASGI app,
the tracking API, the dry-run logger); the POST is caught at httpx's transport, below any otel-matomo code. What
is taken from otel_matomo is named in :func:`_entry_points` alone: re-point it if a name moves.

Nothing depends on the clock or on chance: ``cdt``, ``pf_srv`` and the daily visitor id come from span times
(recorded in the fixtures, fixed here); ``rand`` from span ids (recorded, or from a counting id generator);
``cid`` from a fixed ``visitor_id_secret`` (or the one derived from the fixed token). The SDK stamps span events
with the wall clock, and a tracked fact's ``cdt`` is its event's time, so the built spans' event times are
replaced by fixed ones. The stand-in Matomo always answers that every hit was tracked, so no retry, backoff
jitter or ``Retry-After`` date is ever reached.

Regenerate only when a change of output is intended, and review the diff::

    python tests/unit/test_golden_hits.py --regenerate
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from itertools import zip_longest
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags


def _entry_points() -> SimpleNamespace:
    """Everything this test takes from otel_matomo: the one place to re-point when a module or name moves."""
    import otel_matomo  # Settings, MatomoSpanExporter and the tracking API (track_*, set_*, EcommerceItem ...)
    from otel_matomo.gateway import Gateway, GatewayConfig

    return SimpleNamespace(
        Settings=otel_matomo.Settings,
        Exporter=otel_matomo.MatomoSpanExporter,
        Gateway=Gateway,
        GatewayConfig=GatewayConfig,
        api=otel_matomo,
        dry_run_logger="otel_matomo.hits",  # dry-run mode logs each hit there, as JSON (documented in the README)
    )


ROOT = Path(__file__).resolve().parent.parent
SPANS = ROOT / "fixtures" / "spans"
GOLDEN = ROOT / "fixtures" / "golden_hits.json"
TOKEN = "0123456789abcdef0123456789abcdef"
SECRET = "golden-visitor-id-secret-0123456"
ENDPOINT = "https://matomo.example/"
BUILT = "built"
"""The source name of the spans made here with the tracking API."""

VARIANTS: dict[str, dict[str, Any]] = {
    # The defaults, with a token: the visitor id secret is derived from it; DNT/GPC page views are opted out.
    "defaults": {"token_auth": TOKEN},
    "privacy": {
        "token_auth": TOKEN,
        "visitor_id_secret": SECRET,
        "anonymize_ip": 2,
        "visitor_id": "stable",
        "honor_gpc": False,
        "honor_dnt": False,
    },
    "events": {
        "token_auth": TOKEN,
        "visitor_id_secret": SECRET,
        "event_routes": ["/api/*", "/search"],
        "event_category": "Backend",
        "error_page_titles": True,
        "exclude_status": ["5xx"],
        "honor_gpc": False,
        "honor_dnt": False,
    },
    "bots_dimensions": {
        "token_auth": TOKEN,
        "visitor_id_secret": SECRET,
        "track_bots": True,
        "skip_synthetic": True,
        "dimensions": {1: "http.route", 2: "http.response.status_code", 3: "enduser.role", 4: "url.scheme"},
        "error_page_titles": False,
        "honor_gpc": False,
        "honor_dnt": False,
    },
    "redact": {
        "token_auth": TOKEN,
        "visitor_id_secret": SECRET,
        "redact_query_params": ["q", "ref", "x", "page", "token", "session"],
        "exclude_paths": ["/boom", "/health*"],
        "exclude_methods": ["OPTIONS", "HEAD", "DELETE"],
        "anonymize_ip": 3,
        "honor_gpc": False,
        "honor_dnt": True,
    },
    # The fixtures' peer is 127.0.0.1; with the proxies trusted, the walk goes down X-Forwarded-For.
    "proxies": {
        "token_auth": TOKEN,
        "visitor_id_secret": SECRET,
        "trusted_proxies": ["127.0.0.1", "10.0.0.0/8", "203.0.113.0/24"],
        "visitor_id": "daily",
        "anonymize_ip": 1,
        "honor_gpc": False,
        "honor_dnt": False,
    },
    "forwarded": {
        "token_auth": TOKEN,
        "visitor_id_secret": SECRET,
        "trusted_proxies": ["127.0.0.0/8", "::1"],
        "forwarded_header": "forwarded",
        "honor_gpc": False,
        "honor_dnt": False,
    },
    # No token: no cip and no token_auth in the body; no proxy trusted: the peer is the visitor.
    "no_token": {"visitor_id_secret": SECRET, "trusted_proxies": [], "honor_dnt": False},
    # Dry run: no endpoint, each hit logged as JSON instead of POSTed.
    "dry_run": {
        "dry_run": True,
        "visitor_id_secret": SECRET,
        "visitor_id": "daily",
        "honor_gpc": False,
        "honor_dnt": False,
    },
}


def _settings(variant: str) -> Any:
    options = VARIANTS[variant]
    endpoint = {} if options.get("dry_run") else {"endpoint": ENDPOINT, "site_id": 3}
    return _entry_points().Settings.from_env(environ={}, **endpoint, **options)


# --- the spans --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Source:
    """One export batch: a fixture file's spans in recorded order, or the built spans."""

    labels: tuple[str, ...]
    spans: tuple[ReadableSpan, ...]


def _from_record(record: dict[str, Any]) -> ReadableSpan:
    """A recorded span as the SDK hands it to an exporter (attribute lists become tuples, as in the SDK)."""
    trace_id = int(record["trace_id"], 16)
    parent = record["parent_span_id"]
    return ReadableSpan(
        name=record["name"],
        context=SpanContext(trace_id, int(record["span_id"], 16), False, TraceFlags(TraceFlags.SAMPLED)),
        parent=SpanContext(trace_id, int(parent, 16), False) if parent else None,
        resource=Resource(record["resource"]),
        attributes=BoundedAttributes(attributes=record["attributes"], immutable=True),
        # The recorded exception events carry no time; they are no tracking facts, so any time will do.
        events=[Event(event["name"], event["attributes"], record["start_time"]) for event in record["events"]],
        kind=SpanKind[record["kind"]],
        status=Status(StatusCode[record["status_code"]], record["status_description"]),
        start_time=record["start_time"],
        end_time=record["end_time"],
        instrumentation_scope=InstrumentationScope(record["scope"], record["scope_version"]),
    )


class _CountingIds(IdGenerator):
    def __init__(self) -> None:
        self._spans = 0
        self._traces = 0

    def generate_span_id(self) -> int:
        self._spans += 1
        return 0x601D_0000_0000_0000 + self._spans

    def generate_trace_id(self) -> int:
        self._traces += 1
        return 0x601D_0000_0000_0000_0000_0000_0000_0000 + self._traces


UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
BUILT_START_NS = 1_714_564_800_000_000_000  # 2024-05-01 12:00:00 UTC


def _attributes(
    path: str = "/checkout", query: str = "step=2", method: str = "POST", route: str | None = "/checkout", **extra: Any
) -> dict[str, Any]:
    """A request as the stable HTTP conventions record it, behind one proxy (10.0.0.5), with captured headers."""
    recorded: dict[str, Any] = {
        "http.request.method": method,
        "url.scheme": "https",
        "url.path": path,
        "http.response.status_code": 200,
        "user_agent.original": UA,
        "network.peer.address": "10.0.0.5",
        "http.request.header.host": ("shop.example",),
        "http.request.header.referer": ("https://shop.example/cart?session=s3cr3t&utm_campaign=spring",),
        "http.request.header.accept_language": ("de-DE,de;q=0.9",),
        "http.request.header.x_forwarded_for": ("203.0.113.195",),
    }
    if query:
        recorded["url.query"] = query
    if route is not None:
        recorded["http.route"] = route
    recorded.update(extra)
    return recorded


def _built_cases() -> list[tuple[str, dict[str, Any], Callable[[Any], None]]]:
    """(label, span attributes, tracking calls made while the request runs)."""
    api = _entry_points().api
    items = [
        api.EcommerceItem("SKU-BOOTS", "Boots", "Shoes", 49.9),
        api.EcommerceItem("SKU-SOCKS", price=4.95, quantity=2),
    ]

    def everything(api: Any) -> None:
        api.set_user_id("alice@example.com")
        api.set_page_title("Checkout")
        api.set_custom_dimension(1, "gold")
        api.track_event("Checkout", "pay", value=64.8)
        api.track_goal(2, revenue=64.8)
        api.track_order("A-1001", 64.8, items, subtotal=59.8, tax=4.5, shipping=5, discount=4.5)
        api.track_content_impression("Thanks banner", piece="thanks.png")
        api.track_cart_update(0, [])

    return [
        ("event", _attributes(), lambda api: api.track_event("Checkout", "pay", "card", 64.8)),
        ("event-minimal", _attributes(), lambda api: api.track_event("Video", "play")),
        ("goal", _attributes(), lambda api: api.track_goal(2, revenue=64.8)),
        ("goal-no-revenue", _attributes(), lambda api: api.track_goal(7)),
        (
            "order",
            _attributes(),
            lambda api: api.track_order("A-1001", 64.8, items, subtotal=59.8, tax=4.5, shipping=5, discount=4.5),
        ),
        ("cart-update", _attributes(path="/cart", route="/cart"), lambda api: api.track_cart_update(54.85, items)),
        (
            "content-impression",
            _attributes(method="GET", path="/", query="", route="/"),
            lambda api: api.track_content_impression("Banner", piece="summer.png", target="https://shop.example/sale"),
        ),
        (
            "product-view",
            _attributes(method="GET", path="/products/SKU-BOOTS", query="", route="/products/{sku}"),
            lambda api: api.track_product_view("SKU-BOOTS", "Boots", "Shoes", 49.9),
        ),
        (
            "product-view-sku-only",
            _attributes(method="GET", path="/products/SKU-SOCKS", query="", route="/products/{sku}"),
            lambda api: api.track_product_view("SKU-SOCKS"),
        ),
        (
            "site-search",
            _attributes(method="GET", path="/search", query="q=red+shoes&cat=Shoes", route="/search"),
            lambda api: api.track_site_search("red shoes", "Shoes", 12),
        ),
        (
            "site-search-nothing-found",
            _attributes(method="GET", path="/search", query="q=%C3%A9t%C3%A9", route="/search"),
            lambda api: api.track_site_search("été", results_count=0),
        ),
        (
            "title-dimensions-user",
            _attributes(method="GET", path="/account", query="", route="/account", **{"enduser.role": "admin"}),
            lambda api: (
                api.set_page_title("Mon compte \u2013 réglages"),
                api.set_custom_dimension(1, "gold"),
                api.set_custom_dimension(4, "x" * 300),
                api.set_user_id("alice@example.com"),
            ),
        ),
        ("everything", _attributes(**{"enduser.role": "buyer"}), everything),
        ("skip", _attributes(), lambda api: (api.track_event("Checkout", "pay"), api.skip_tracking())),
        (
            "api-order",
            _attributes(path="/api/orders", query="", route="/api/orders"),
            lambda api: (api.track_order("A-9", 5.0), api.set_custom_dimension(2, "api")),
        ),
        (
            "error-with-title",
            _attributes(
                method="GET",
                path="/missing",
                query="token=abc&page=2",
                route=None,
                **{"http.response.status_code": 404},
            ),
            lambda api: api.set_page_title("Not found"),
        ),
        (
            "error-redacted",
            _attributes(
                method="GET",
                path="/gone/é",
                query="token=abc&q=1&utm_source=mail",
                route=None,
                **{"http.response.status_code": 410},
            ),
            lambda api: api.track_event("Errors", "gone"),
        ),
        (
            "synthetic-bot",
            _attributes(method="GET", path="/", query="", route="/", **{"user_agent.synthetic.type": "bot"}),
            lambda api: api.track_event("Bots", "visit"),
        ),
        (
            "ipv6-hints-size",
            _attributes(
                method="GET",
                path="/items/9",
                query="",
                route="/items/{id}",
                **{
                    "network.peer.address": "2001:db8:85a3::8a2e:370:7334",
                    "http.response.body.size": 5120,
                    "http.request.header.sec_ch_ua": ('"Chromium";v="126", "Not-A.Brand";v="99"',),
                    "http.request.header.sec_ch_ua_full_version_list": ('"Chromium";v="126.0.6478.126"',),
                    "http.request.header.sec_ch_ua_mobile": ("?1",),
                    "http.request.header.sec_ch_ua_platform": ('"Android"',),
                    "http.request.header.sec_ch_ua_platform_version": ('"14.0.0"',),
                    "http.request.header.sec_ch_ua_model": ('"Pixel 8"',),
                    "http.request.header.forwarded": ('for="[2001:db8::1]:4711";proto=https;host=shop.example',),
                },
            ),
            lambda api: api.track_content_impression("Teaser"),
        ),
        (
            "slash-redirect",
            _attributes(
                method="GET",
                path="/checkout",
                query="",
                **{"http.response.status_code": 308, "http.response.header.location": ("/checkout/",)},
            ),
            lambda api: api.track_event("Never", "sent"),
        ),
    ]


def _fixed_event_times(span: ReadableSpan) -> ReadableSpan:
    """The span with its events one second apart from its start: the SDK stamps them with the wall clock."""
    assert span.start_time is not None
    events = [
        Event(event.name, event.attributes, span.start_time + (index + 1) * 1_000_000_000 + 250_000_000)
        for index, event in enumerate(span.events)
    ]
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=BoundedAttributes(attributes=dict(span.attributes or {}), immutable=True),
        events=events,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _built_source() -> Source:
    """Server spans made by the SDK with the tracking API called from a nested span, as an application does."""
    api = _entry_points().api
    memory = InMemorySpanExporter()
    provider = TracerProvider(id_generator=_CountingIds(), resource=Resource({"service.name": "golden-built"}))
    provider.add_span_processor(api.TrackingProcessor())
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("golden")
    cases = _built_cases()
    for index, (_, attributes, calls) in enumerate(cases):
        start = BUILT_START_NS + index * 7_300_000_000
        name = f"{attributes['http.request.method']} {attributes.get('http.route') or attributes['url.path']}"
        span = tracer.start_span(name, kind=SpanKind.SERVER, attributes=attributes, start_time=start)
        with trace.use_span(span, end_on_exit=False), tracer.start_as_current_span("handler"):
            calls(api)
        span.end(end_time=start + 123_456_789 + index * 1_000_000)
    provider.shutdown()
    servers = [span for span in memory.get_finished_spans() if span.kind is SpanKind.SERVER]
    assert len(servers) == len(cases)
    return Source(tuple(label for label, _, _ in cases), tuple(_fixed_event_times(span) for span in servers))


@functools.cache
def _sources() -> dict[str, Source]:
    sources = {}
    for path in sorted(SPANS.glob("*.json")):
        records = json.loads(path.read_text())
        labels = tuple(record["request"]["label"] if record["request"] else record["name"] for record in records)
        sources[path.stem] = Source(labels, tuple(_from_record(record) for record in records))
    sources[BUILT] = _built_source()
    return sources


# --- a recording Matomo and the dry-run log ---------------------------------------------------------------------


class _Recorder:
    """Stands in for matomo.php at httpx's transport: records each request, answers that every hit was tracked;
    also keeps the dry-run log lines."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.posts: list[dict[str, str]] = []
        self.lines: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        post = {
            "method": request.method,
            "url": str(request.url),
            "content_type": request.headers.get("content-type", ""),
            "body": body.decode(),
        }
        with self._lock:
            self.posts.append(post)
        count = len(json.loads(body)["requests"])
        return httpx.Response(200, json={"status": "success", "tracked": count, "invalid": 0}, request=request)

    def wait(self, count: int, *, dry_run: bool, timeout: float = 10.0) -> None:
        """Until ``count`` POSTs (or dry-run log lines) arrived, or ``timeout`` seconds passed."""
        deadline = time.monotonic() + timeout
        while len(self.lines if dry_run else self.posts) < count and time.monotonic() < deadline:
            time.sleep(0.001)

    def take(self) -> dict[str, list[Any]]:
        """What was sent since the last call."""
        with self._lock:
            sent = {"posts": self.posts, "dry_run_log": self.lines}
            self.posts, self.lines = [], []
        return sent


class _LogLines(logging.Handler):
    def __init__(self, recorder: _Recorder) -> None:
        super().__init__(logging.DEBUG)
        self._recorder = recorder

    def emit(self, record: logging.LogRecord) -> None:
        with self._recorder._lock:
            self._recorder.lines.append(record.getMessage())


@contextlib.contextmanager
def _recording() -> Iterator[_Recorder]:
    recorder = _Recorder()
    logger = logging.getLogger(_entry_points().dry_run_logger)
    handler, level = _LogLines(recorder), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def handle_request(_transport: httpx.HTTPTransport, request: httpx.Request) -> httpx.Response:
        return recorder.handle(request)

    try:
        with mock.patch.object(httpx.HTTPTransport, "handle_request", handle_request):
            yield recorder
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# --- producing the output ---------------------------------------------------------------------------------------


def _stats(exporter: Any) -> dict[str, int]:
    return dataclasses.asdict(exporter.stats)


def produce(variant: str) -> dict[str, Any]:
    """Source -> each server span's hits and counts, and what the export of the whole batch sent."""
    ep = _entry_points()
    produced: dict[str, Any] = {}
    with _recording() as matomo:
        exporter = ep.Exporter(settings=_settings(variant))
        try:
            for name, source in _sources().items():
                spans = []
                for label, span in zip(source.labels, source.spans, strict=True):
                    if span.kind is not SpanKind.SERVER:
                        continue
                    hits = exporter.translate([span])
                    before = _stats(exporter)
                    result = exporter.export([span])
                    counted = {
                        key: value - before[key] for key, value in _stats(exporter).items() if value != before[key]
                    }
                    spans.append(
                        {
                            "span": f"{label} {span.context.span_id:016x}",
                            "hits": hits,
                            "counted": counted,
                            "export": result.name,
                        }
                    )
                matomo.take()
                result = exporter.export(source.spans)
                produced[name] = {"spans": spans, "batch": {"export": result.name, **matomo.take()}}
        finally:
            exporter.shutdown()
    return produced


def _any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    return {"arrayValue": {"values": [_any_value(item) for item in value]}}


def _key_values(attributes: Any) -> list[dict[str, Any]]:
    return [{"key": key, "value": _any_value(value)} for key, value in (attributes or {}).items()]


_OTLP_STATUS = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}


def otlp_json(spans: tuple[ReadableSpan, ...]) -> dict[str, Any]:
    """The spans as an OTLP/JSON ``ExportTraceServiceRequest`` (hex ids, 64-bit integers as strings)."""
    encoded = []
    for span in spans:
        assert span.context is not None
        item: dict[str, Any] = {
            "traceId": f"{span.context.trace_id:032x}",
            "spanId": f"{span.context.span_id:016x}",
            "name": span.name,
            "kind": span.kind.value + 1,  # the SDK counts from INTERNAL = 0, OTLP from UNSPECIFIED = 0
            "startTimeUnixNano": str(span.start_time),
            "endTimeUnixNano": str(span.end_time),
            "attributes": _key_values(span.attributes),
            "events": [
                {"timeUnixNano": str(event.timestamp), "name": event.name, "attributes": _key_values(event.attributes)}
                for event in span.events
            ],
            "status": {"code": _OTLP_STATUS[span.status.status_code]},
        }
        if span.parent is not None:
            item["parentSpanId"] = f"{span.parent.span_id:016x}"
        encoded.append(item)
    resource = spans[0].resource.attributes if spans else {}
    # Every source's spans come from one instrumentation, whose name the gateway reads as an SDK would send it.
    scope = {"name": spans[0].instrumentation_scope.name} if spans and spans[0].instrumentation_scope else {}
    scope_spans = {"scope": scope, "spans": encoded}
    return {"resourceSpans": [{"resource": {"attributes": _key_values(resource)}, "scopeSpans": [scope_spans]}]}


def otlp_protobuf(payload: dict[str, Any]) -> bytes:
    """OTLP/JSON -> protobuf through protobuf's JSON parser: its hex ids are base64 in proto3 JSON."""

    def proto3(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: base64.b64encode(bytes.fromhex(value)).decode()
                if key in ("traceId", "spanId", "parentSpanId")
                else proto3(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [proto3(item) for item in node]
        return node

    return json_format.ParseDict(proto3(payload), ExportTraceServiceRequest()).SerializeToString()


async def _post(app: Any, body: bytes, content_type: str) -> tuple[int, bytes]:
    """One ``POST /v1/traces`` straight into the ASGI app."""
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    answer: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        answer.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/traces",
        "raw_path": b"/v1/traces",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 4318),
    }
    await app(scope, receive, send)
    return answer[0]["status"], b"".join(message.get("body", b"") for message in answer[1:])


def produce_gateway(variant: str, encoding: str) -> dict[str, Any]:
    """Source -> what the gateway sent for the source's batch, received as one OTLP export request.

    One gateway serves every source; its sender delivers in the background, so each source's hits (as many as the
    exporter makes of the batch) are awaited before the next source is posted.
    """
    ep = _entry_points()
    settings = _settings(variant)
    produced: dict[str, Any] = {}
    with _recording() as matomo:
        exporter = ep.Exporter(settings=settings)
        gateway = ep.Gateway(ep.GatewayConfig(), settings)
        try:
            for name, source in _sources().items():
                payload = otlp_json(source.spans)
                if encoding == "json":
                    body, content_type = json.dumps(payload).encode(), "application/json"
                else:
                    body, content_type = otlp_protobuf(payload), "application/x-protobuf"
                hits = len([hit for hit in exporter.translate(source.spans) if _deliverable(hit, settings)])
                status, answer = asyncio.run(_post(gateway, body, content_type))
                assert status == 200, answer
                if hits:
                    matomo.wait(hits if settings.dry_run else 1, dry_run=settings.dry_run)
                produced[name] = matomo.take()
        finally:
            gateway.close()
            exporter.shutdown()
        late = matomo.take()
        assert late == {"posts": [], "dry_run_log": []}, f"sent after the last source was taken: {late}"
    return produced


# --- comparing --------------------------------------------------------------------------------------------------


def _hit_difference(expected: dict[str, str], produced: dict[str, str]) -> list[str]:
    lines = []
    for key in dict.fromkeys([*expected, *produced]):
        if key not in produced:
            lines.append(f"  - {key}: golden {expected[key]!r}, now absent")
        elif key not in expected:
            lines.append(f"  + {key}: now {produced[key]!r}, absent from golden")
        elif expected[key] != produced[key]:
            lines.append(f"  ~ {key}: golden {expected[key]!r}\n  {' ' * len(key)}     now {produced[key]!r}")
    if not lines and list(expected) != list(produced):
        lines.append(f"  parameter order: golden {list(expected)}\n                   now {list(produced)}")
    return lines


def _body_difference(expected: str, produced: str) -> list[str]:
    try:
        expected_items, produced_items = json.loads(expected)["requests"], json.loads(produced)["requests"]
    except (ValueError, KeyError, TypeError):
        expected_items = produced_items = []
    for index, (golden, now) in enumerate(zip_longest(expected_items, produced_items)):
        if golden != now:
            golden_params = dict(item.split("=", 1) for item in (golden or "?")[1:].split("&") if "=" in item)
            now_params = dict(item.split("=", 1) for item in (now or "?")[1:].split("&") if "=" in item)
            return [
                f"  item #{index}:",
                f"  golden {golden!r}",
                f"  now    {now!r}",
                *_hit_difference(golden_params, now_params),
            ]
    at = next(
        (i for i, (a, b) in enumerate(zip(expected, produced, strict=False)) if a != b),
        min(len(expected), len(produced)),
    )
    return [
        f"  first differing byte at {at} (golden {len(expected)} characters, now {len(produced)}):",
        f"  golden ...{expected[max(at - 60, 0) : at + 60]!r}",
        f"  now    ...{produced[max(at - 60, 0) : at + 60]!r}",
    ]


def _sent_difference(where: str, expected: dict[str, Any], produced: dict[str, Any]) -> str | None:
    if expected["dry_run_log"] != produced["dry_run_log"]:
        for index, (golden, now) in enumerate(zip_longest(expected["dry_run_log"], produced["dry_run_log"])):
            if golden != now:
                return f"{where}: dry-run log line #{index}\n  golden {golden!r}\n  now    {now!r}"
    if len(expected["posts"]) != len(produced["posts"]):
        return f"{where}: {len(expected['posts'])} POSTs in golden, {len(produced['posts'])} now"
    for index, (golden, now) in enumerate(zip(expected["posts"], produced["posts"], strict=True)):
        if golden != now:
            if golden["body"] == now["body"]:
                return f"{where}: POST #{index}\n  golden {golden}\n  now    {now}"
            return "\n".join(
                [f"{where}: bulk body of POST #{index} differs", *_body_difference(golden["body"], now["body"])]
            )
    return None


def first_difference(expected: dict[str, Any], produced: dict[str, Any], variant: str) -> str | None:
    """A readable account of the first difference, or ``None`` when the output is the golden one exactly."""
    for name in dict.fromkeys([*expected, *produced]):
        where = f"variant {variant!r}, source {name!r}"
        if name not in produced or name not in expected:
            return f"{where}: {'no longer produced' if name in expected else 'not in the golden file'}"
        golden_source, source = expected[name], produced[name]
        for index, (golden, now) in enumerate(zip_longest(golden_source.get("spans", []), source.get("spans", []))):
            if json.dumps(golden) == json.dumps(now):  # parameter order counts too
                continue
            if golden is None or now is None:
                only = "now" if golden is None else "in golden"
                return f"{where}: span #{index} {(golden or now)['span']!r} only {only}"
            span = f"{where}, span #{index} {golden['span']!r}"
            for number, (golden_hit, hit) in enumerate(zip_longest(golden["hits"], now["hits"])):
                if golden_hit is None or hit is None:
                    extra = "now" if golden_hit is None else "in golden only"
                    return f"{span}: hit #{number} {extra}: {golden_hit or hit}"
                if list(golden_hit.items()) != list(hit.items()):
                    return "\n".join([f"{span}, hit #{number}:", *_hit_difference(golden_hit, hit)])
            golden_rest = {key: value for key, value in golden.items() if key != "hits"}
            now_rest = {key: value for key, value in now.items() if key != "hits"}
            return f"{span}:\n  golden {json.dumps(golden_rest)}\n  now    {json.dumps(now_rest)}"
        golden_export = golden_source["batch"].get("export")
        export = source["batch"].get("export", golden_export)
        if golden_export != export:
            return f"{where}: the batch export returned {export}, golden {golden_export}"
        difference = _sent_difference(f"{where}, batch", golden_source["batch"], source["batch"])
        if difference:
            return difference
    return None


@functools.cache
def _golden() -> dict[str, Any]:
    if not GOLDEN.exists():
        pytest.fail(f"{GOLDEN} is missing: run python tests/unit/test_golden_hits.py --regenerate", pytrace=False)
    return json.loads(GOLDEN.read_text(encoding="utf-8"))


# --- the tests --------------------------------------------------------------------------------------------------


def test_golden_was_made_with_these_variants() -> None:
    assert _golden()["variants"] == json.loads(json.dumps(VARIANTS)), "VARIANTS changed: regenerate the golden file"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_exporter_output_is_the_golden_one(variant: str) -> None:
    golden, produced = _golden()["output"][variant], produce(variant)
    difference = first_difference(golden, produced, variant)
    if difference:
        pytest.fail(f"output differs from {GOLDEN.name}:\n{difference}", pytrace=False)
    assert json.dumps(produced) == json.dumps(golden)  # whatever the readable comparison does not look at


def _deliverable(hit: dict[str, str], settings: Any) -> bool:
    """Whether the gateway's buffer keeps ``hit``: without a token Matomo refuses a ``cdt`` older than 24 hours,
    so such hits are dropped (``expired``) instead of sent."""
    return settings.token_auth is not None or settings.dry_run or time.time() - int(hit["cdt"]) < 86_400 - 60


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gateway_sends_the_golden_bodies(variant: str, encoding: str) -> None:
    """The gateway is given each source's spans as one OTLP export request, and must POST what the exporter does
    (but for hits Matomo would refuse for their age: the recorded spans are older than a day)."""
    golden = {
        name: {"batch": {"posts": source["batch"]["posts"], "dry_run_log": source["batch"]["dry_run_log"]}}
        for name, source in _golden()["output"][variant].items()
    }
    if variant == "no_token":
        hits = [
            hit for source in _golden()["output"][variant].values() for span in source["spans"] for hit in span["hits"]
        ]
        assert hits, "the variant has hits"
        assert not any(_deliverable(hit, _settings(variant)) for hit in hits), "every recorded span is a day old"
        golden = {name: {"batch": {"posts": [], "dry_run_log": []}} for name in golden}
    produced = {name: {"batch": sent} for name, sent in produce_gateway(variant, encoding).items()}
    difference = first_difference(golden, produced, f"{variant} (gateway, OTLP/{encoding})")
    if difference:
        pytest.fail(f"gateway output differs from {GOLDEN.name}:\n{difference}", pytrace=False)
    assert json.dumps(produced) == json.dumps(golden)


def test_golden_exercises_the_translation() -> None:
    """A regenerated golden file must still cover what it was made to cover."""
    output = _golden()["output"]
    parameters = {
        key
        for variant in output.values()
        for source in variant.values()
        for span in source["spans"]
        for hit in span["hits"]
        for key in hit
    }
    assert parameters >= {
        "action_name", "pf_srv", "urlref", "ua", "uadata", "lang", "uid", "cip", "bots", "bw_bytes", "dimension1",
        "dimension2", "dimension3", "dimension4", "e_c", "e_a", "e_n", "e_v", "ca", "idgoal", "revenue", "ec_id",
        "ec_items", "ec_st", "ec_tx", "ec_sh", "ec_dt", "c_n", "c_p", "c_t", "search", "search_cat", "search_count",
        "_pks", "_pkn", "_pkc", "_pkp",
    }  # fmt: skip
    counted = {
        key
        for variant in output.values()
        for source in variant.values()
        for span in source["spans"]
        for key in span["counted"]
    }
    assert counted >= {"requests", "excluded", "opted_out", "synthetic", "skipped", "tracked", "batches"}
    fixture_spans = sum(len(source["spans"]) for name, source in output["defaults"].items() if name != BUILT)
    assert fixture_spans == 60
    assert len(output["defaults"][BUILT]["spans"]) == len(_built_cases())
    assert any(source["batch"]["dry_run_log"] for source in output["dry_run"].values())


# --- regeneration -----------------------------------------------------------------------------------------------


def regenerate() -> None:
    started = time.perf_counter()
    golden = {
        "about": "Exact hits and bulk bodies; made by `python tests/unit/test_golden_hits.py --regenerate`.",
        "variants": VARIANTS,
        "output": {variant: produce(variant) for variant in VARIANTS},
    }
    GOLDEN.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    output = golden["output"]
    spans = sum(len(source["spans"]) for variant in output.values() for source in variant.values())
    hits = sum(
        len(span["hits"]) for variant in output.values() for source in variant.values() for span in source["spans"]
    )
    took = time.perf_counter() - started
    print(f"wrote {GOLDEN}: {len(VARIANTS)} variants, {spans} span runs, {hits} hits, {took:.1f} s")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python tests/unit/test_golden_hits.py --regenerate")
    regenerate()

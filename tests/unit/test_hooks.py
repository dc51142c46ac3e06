"""``otel_matomo.request_hook``: the request headers a hit needs, without OpenTelemetry's header capture.

With a ``MatomoSpanProcessor`` the hook keeps the raw headers by span id and the processor takes them at the
span's end; without one it sets the same span attributes as the capture. Either way the hit is the one the
capture gives, nothing is kept past the span's end, the bound holds, and nothing raises into the application.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import falcon
import falcon.testing
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind
from starlette.requests import Request as StarletteRequest

from otel_matomo import REQUEST_HEADERS, MatomoSpanExporter, MatomoSpanProcessor, Settings, request_hook
from otel_matomo import _hooks as hooks
from otel_matomo._names import HEADER_ATTRIBUTE_PREFIX
from otel_matomo._request import decode_raw_headers
from otel_matomo._spans import read_span
from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn

SECRET = "hooks-visitor-secret-0123456789"
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
REFERER = "https://www.example.org/search?q=boots"

SCOPE_HEADERS = [
    (b"host", b"shop.example"),
    (b"user-agent", UA.encode()),
    (b"accept-language", b"en-GB,en;q=0.9"),
    (b"referer", REFERER.encode()),
    (b"cookie", b"session=secret"),
    (b"x-forwarded-for", b"203.0.113.7"),
    (b"x-forwarded-for", b"198.51.100.2"),
]
ENVIRON = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/items/7",
    "HTTP_HOST": "shop.example",
    "HTTP_USER_AGENT": UA,
    "HTTP_ACCEPT_LANGUAGE": "en-GB,en;q=0.9",
    "HTTP_REFERER": REFERER,
    "HTTP_COOKIE": "session=secret",
    "wsgi.input": object(),
}
DECODED = {
    "host": "shop.example",
    "accept-language": "en-GB,en;q=0.9",
    "referer": REFERER,
    "x-forwarded-for": "203.0.113.7, 198.51.100.2",
}
SERVER_ATTRIBUTES = {
    "http.method": "GET",
    "http.scheme": "http",
    "http.target": "/items/7",
    "http.route": "/items/{item_id}",
    "http.status_code": 200,
    "net.peer.ip": "127.0.0.1",
    "http.user_agent": UA,
}


def scope(headers: list[tuple[bytes, bytes]] = SCOPE_HEADERS) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/items/7", "headers": headers}


@pytest.fixture(autouse=True)
def no_processor_left() -> Iterator[None]:
    yield
    assert hooks._pending.processors == 0, "a test left a processor running"
    assert not hooks._pending.headers


def finished_span(provider: TracerProvider, request: object, **attributes: Any) -> None:
    """One server span as an instrumentation makes it: start, hook, status, end."""
    span = provider.get_tracer("test").start_span(
        "GET /items/{item_id}", kind=SpanKind.SERVER, attributes={**SERVER_ATTRIBUTES, **attributes}
    )
    request_hook(span, request)
    span.end()


def header_attributes(span: ReadableSpan) -> dict[str, object]:
    return {key: value for key, value in (span.attributes or {}).items() if key.startswith(HEADER_ATTRIBUTE_PREFIX)}


# --- decoding ----------------------------------------------------------------------------------------------


def test_asgi_headers_decode_to_the_needed_ones_with_repeated_lines_joined() -> None:
    assert decode_raw_headers(SCOPE_HEADERS) == DECODED


def test_asgi_values_that_are_not_utf8_are_kept_byte_for_byte_and_odd_items_skipped() -> None:
    raw: list[Any] = [(b"referer", b"https://x.example/caf\xe9"), (b"dnt", "1"), (b"sec-gpc", b"  "), (b"dnt", b"1")]
    assert decode_raw_headers(raw) == {"referer": "https://x.example/café", "dnt": "1"}


def test_wsgi_values_are_read_as_the_server_joined_them() -> None:
    kept = hooks._raw_headers(ENVIRON)
    assert kept == {"host": "shop.example", "accept-language": "en-GB,en;q=0.9", "referer": REFERER}
    assert decode_raw_headers(kept or {}) == kept


def test_every_header_otel_matomo_reads_has_its_environ_key() -> None:
    environ = {"REQUEST_METHOD": "GET"} | {key: f"v-{name}" for key, name in hooks._ENVIRON_KEYS}
    assert hooks._raw_headers(environ) == {name: f"v-{name}" for name in REQUEST_HEADERS}


@pytest.mark.parametrize(
    ("request_object", "expected"),
    [
        (scope(), SCOPE_HEADERS),
        (StarletteRequest(scope()), SCOPE_HEADERS),
        (SimpleNamespace(META=ENVIRON), "environ"),  # Django's HttpRequest (a real one needs Django's settings)
        (falcon.Request({**falcon.testing.create_environ(), **ENVIRON}), "environ"),
        ({"type": "lifespan"}, None),
        ({"headers": "not a list"}, None),
        (SimpleNamespace(), None),
        (None, None),
        (42, None),
    ],
    ids=["scope", "starlette", "django", "falcon", "lifespan", "odd-headers", "no-carrier", "none", "int"],
)
def test_the_hook_finds_the_headers_of_every_framework(request_object: object, expected: object) -> None:
    raw = hooks._raw_headers(request_object)
    if expected == "environ":
        assert raw == {"host": "shop.example", "accept-language": "en-GB,en;q=0.9", "referer": REFERER}
    else:
        assert raw == expected


# --- without a processor: span attributes, as the capture sets them -----------------------------------------


def test_without_a_processor_the_hook_sets_the_captured_attributes_and_the_hit_is_the_same() -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    finished_span(provider, scope())
    finished_span(provider, None)  # the same request, no headers on the span
    span, bare = spans.get_finished_spans()
    assert header_attributes(span) == {
        "http.request.header.host": ("shop.example",),
        "http.request.header.accept_language": ("en-GB,en;q=0.9",),
        "http.request.header.referer": (REFERER,),
        "http.request.header.x_forwarded_for": ("203.0.113.7, 198.51.100.2",),
    }
    from_attributes = read_span(span)
    assert not header_attributes(bare)
    from_raw = read_span(bare, SCOPE_HEADERS)
    assert from_attributes is not None
    assert from_raw is not None
    assert from_attributes.headers == from_raw.headers == DECODED
    exporter = MatomoSpanExporter(
        settings=Settings.from_env({}, endpoint="http://127.0.0.1:9", site_id=1, visitor_id_secret=SECRET)
    )
    (hit,) = exporter.translate([span])
    assert hit["urlref"] == REFERER
    assert hit["lang"] == "en-GB,en;q=0.9"
    assert hit["url"] == "http://shop.example/items/7"


def test_a_span_that_is_not_recorded_gets_nothing() -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    span = provider.get_tracer("test").start_span("GET /", kind=SpanKind.SERVER)
    request_hook(span, scope())
    span.end()
    assert not hooks._pending.headers


def test_the_hook_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="otel_matomo")
    request_hook(object(), scope())  # type: ignore[arg-type]
    assert "otel-matomo: failed in request_hook" in caplog.text


# --- with a processor: raw headers by span id, taken at the span's end --------------------------------------


@pytest.fixture
def processor(standin: MatomoStandIn) -> Iterator[MatomoSpanProcessor]:
    settings = Settings.from_env(
        {},
        endpoint=standin.url,
        site_id=1,
        token_auth=WRITE_TOKEN,
        visitor_id_secret=SECRET,
        schedule_delay=timedelta(milliseconds=50),
    )
    made = MatomoSpanProcessor(settings=settings)
    yield made
    made.shutdown()


def test_with_a_processor_the_headers_skip_the_span_and_reach_the_hit(
    processor: MatomoSpanProcessor, standin: MatomoStandIn
) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(spans))
    finished_span(provider, scope())
    finished_span(provider, ENVIRON, **{"http.target": "/items/8"})
    assert not hooks._pending.headers, "on_end took what the hook kept"
    assert processor.force_flush(5000)
    first, second = standin.wait_for_hits(2)
    assert all(not header_attributes(span) for span in spans.get_finished_spans())
    assert (first["urlref"], first["lang"], first["url"]) == (REFERER, "en-GB,en;q=0.9", "http://shop.example/items/7")
    assert first["cip"] == "198.51.100.2"  # X-Forwarded-For from the loopback proxy: its right-most address
    assert (second["urlref"], second["url"]) == (REFERER, "http://shop.example/items/8")


def test_past_the_bound_the_hook_sets_attributes_and_nothing_is_lost(
    processor: MatomoSpanProcessor, standin: MatomoStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hooks, "_MAX_PENDING", 1)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    running = [
        tracer.start_span("GET /items/{item_id}", kind=SpanKind.SERVER, attributes=SERVER_ATTRIBUTES) for _ in range(3)
    ]
    for span in running:
        request_hook(span, scope())
    assert len(hooks._pending.headers) == 1
    assert sum(1 for span in running if header_attributes(span)) == 2  # type: ignore[arg-type]
    for span in running:
        span.end()
    assert processor.force_flush(5000)
    hits = standin.wait_for_hits(3)
    assert [hit["urlref"] for hit in hits] == [REFERER] * 3
    assert not hooks._pending.headers


def test_after_the_processor_shuts_down_the_hook_sets_attributes_again(standin: MatomoStandIn) -> None:
    settings = Settings.from_env({}, endpoint=standin.url, site_id=1, token_auth=WRITE_TOKEN)
    processor = MatomoSpanProcessor(settings=settings)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    span = provider.get_tracer("test").start_span("GET /", kind=SpanKind.SERVER, attributes=SERVER_ATTRIBUTES)
    request_hook(span, scope())
    processor.shutdown()
    assert not hooks._pending.headers, "nobody is left to take them"
    later = provider.get_tracer("test").start_span("GET /", kind=SpanKind.SERVER, attributes=SERVER_ATTRIBUTES)
    request_hook(later, scope())
    assert header_attributes(later)  # type: ignore[arg-type]
    span.end()
    later.end()

"""Real FastAPI (uvicorn) and Flask (werkzeug) apps, instrumented by OpenTelemetry, driven by real HTTP requests;
the exporter sends through a BatchSpanProcessor (or the MatomoSpanProcessor) to the local matomo.php stand-in, and
the exact hits are checked: the same hits whether the request headers come from OpenTelemetry's capture or from
``otel_matomo.request_hook``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import fastapi_app
import flask_app
import pytest
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_matomo import MatomoSpanExporter, MatomoSpanProcessor, configure_header_capture, request_hook
from tests.e2e.frameworks_support import SECRET, browse, expected_hits, stable
from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn
from tests.servers import serve_asgi, serve_wsgi

Hook = Callable[[Any, Any], None] | None


@dataclass(frozen=True)
class Stack:
    name: str
    instrument: Callable[[TracerProvider, Hook], Any]
    serve: Callable[[Any], AbstractContextManager[str]]
    item_route: str
    redirect_status: int


def _fastapi(provider: TracerProvider, hook: Hook) -> Any:
    app = fastapi_app.create_app()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, server_request_hook=hook)
    return app


def _flask(provider: TracerProvider, hook: Hook) -> Any:
    app = flask_app.create_app()
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider, request_hook=hook)
    return app


STACKS = [
    Stack("fastapi-uvicorn", _fastapi, serve_asgi, "/items/{item_id}", 307),
    Stack("flask-werkzeug", _flask, serve_wsgi, "/items/<int:item_id>", 302),
]


@dataclass(frozen=True)
class SetUp:
    name: str
    processor: bool
    """``MatomoSpanProcessor``, or ``BatchSpanProcessor(MatomoSpanExporter)``."""
    hook: bool
    """``request_hook`` instead of OpenTelemetry's request-header capture."""


SET_UPS = [
    SetUp("exporter-capture", processor=False, hook=False),
    SetUp("exporter-hook", processor=False, hook=True),
    SetUp("processor-capture", processor=True, hook=False),
    SetUp("processor-hook", processor=True, hook=True),
]


@pytest.fixture(params=SET_UPS, ids=lambda set_up: set_up.name)
def set_up(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> SetUp:
    chosen: SetUp = request.param
    monkeypatch.delenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", raising=False)
    monkeypatch.delenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", raising=False)
    # The documented in-code calls, into the monkeypatched environment.
    configure_header_capture(request_headers=not chosen.hook)
    return chosen


@pytest.fixture(params=STACKS, ids=lambda stack: stack.name)
def shop(request: pytest.FixtureRequest, standin: MatomoStandIn, set_up: SetUp) -> Iterator[tuple[str, Stack]]:
    stack: Stack = request.param
    options: dict[str, Any] = {"endpoint": standin.url, "site_id": 1, "token_auth": WRITE_TOKEN}
    options["visitor_id_secret"] = SECRET
    provider = TracerProvider()
    if set_up.processor:
        provider.add_span_processor(MatomoSpanProcessor(schedule_delay=timedelta(milliseconds=50), **options))
    else:
        provider.add_span_processor(BatchSpanProcessor(MatomoSpanExporter(**options), schedule_delay_millis=50))
    with stack.serve(stack.instrument(provider, request_hook if set_up.hook else None)) as base_url:
        yield base_url, stack
    provider.shutdown()


def test_every_request_becomes_the_exact_hit(shop: tuple[str, Stack], standin: MatomoStandIn) -> None:
    base_url, stack = shop
    started = int(time.time())
    browse(base_url)
    hits = standin.wait_for_hits(5)
    finished = int(time.time())

    expected = expected_hits(1, f"GET {stack.item_route}")
    assert [stable(hit) for hit in hits] == expected
    for hit in hits:
        assert started <= int(hit["cdt"]) <= finished
        assert 0 <= int(hit["pf_srv"]) < 5000
    assert len({hit["rand"] for hit in hits}) == 5
    bodies = [received.body for received in standin.received]
    assert all(body["token_auth"] == WRITE_TOKEN for body in bodies)
    assert all(WRITE_TOKEN not in received.path + received.query for received in standin.received)

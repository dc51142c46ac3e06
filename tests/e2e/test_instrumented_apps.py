"""Real FastAPI (uvicorn) and Flask (werkzeug) apps, instrumented by OpenTelemetry, driven by real HTTP requests;
the exporter sends through a BatchSpanProcessor to the local matomo.php stand-in, and the exact hits are checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import fastapi_app
import flask_app
import httpx
import pytest
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_matomo import MatomoSpanExporter, configure_header_capture
from otel_matomo.visitor import visitor_id
from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn
from tests.servers import serve_asgi, serve_wsgi

SECRET = "e2e-visitor-secret-0123456789"
DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
MOBILE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36"
)


@dataclass(frozen=True)
class Stack:
    name: str
    instrument: Callable[[TracerProvider], Any]
    serve: Callable[[Any], AbstractContextManager[str]]
    item_route: str
    redirect_status: int


def _fastapi(provider: TracerProvider) -> Any:
    app = fastapi_app.create_app()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app


def _flask(provider: TracerProvider) -> Any:
    app = flask_app.create_app()
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    return app


STACKS = [
    Stack("fastapi-uvicorn", _fastapi, serve_asgi, "/items/{item_id}", 307),
    Stack("flask-werkzeug", _flask, serve_wsgi, "/items/<int:item_id>", 302),
]


@pytest.fixture
def capture_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", raising=False)
    configure_header_capture()  # the documented in-code call, into the monkeypatched environment


@pytest.fixture(params=STACKS, ids=lambda stack: stack.name)
def shop(request: pytest.FixtureRequest, standin: MatomoStandIn, capture_headers: None) -> Iterator[tuple[str, Stack]]:
    stack: Stack = request.param
    exporter = MatomoSpanExporter(endpoint=standin.url, site_id=1, token_auth=WRITE_TOKEN, visitor_id_secret=SECRET)
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    with stack.serve(stack.instrument(provider)) as base_url:
        yield base_url, stack
    provider.shutdown()


def _browse(base_url: str) -> None:
    alice = {
        "Host": "shop.example",
        "User-Agent": DESKTOP,
        "Accept-Language": "en-GB,en;q=0.9",
        "X-Forwarded-For": "198.51.100.20",
    }
    bob = {
        "Host": "shop.example:8080",
        "User-Agent": MOBILE,
        "Accept-Language": "de-DE,de;q=0.9",
        "X-Forwarded-For": "203.0.113.66",
    }
    with httpx.Client(base_url=base_url) as client:
        steps: list[tuple[str, str, dict[str, str]]] = [
            (
                "GET",
                "/items/7?utm_source=newsletter&utm_campaign=autumn",
                {**alice, "Referer": "https://www.google.com/search?q=boots"},
            ),
            ("POST", "/api/cart", {**alice, "Referer": "http://shop.example/items/7"}),
            ("GET", "/items/500?color=red", {**alice, "Referer": "http://shop.example/items/7"}),
            ("GET", "/old-home", bob),
            ("GET", "/boom", bob),
        ]
        for method, path, headers in steps:
            client.request(method, path, headers=headers)
            time.sleep(0.002)  # distinct start times keep the expected order unambiguous


def test_every_request_becomes_the_exact_hit(shop: tuple[str, Stack], standin: MatomoStandIn) -> None:
    base_url, stack = shop
    started = int(time.time())
    _browse(base_url)
    hits = standin.wait_for_hits(5)
    finished = int(time.time())

    alice_id = visitor_id(SECRET.encode(), "198.51.100.20", DESKTOP)
    bob_id = visitor_id(SECRET.encode(), "203.0.113.66", MOBILE)
    common = {"idsite": "1", "rec": "1", "apiv": "1"}
    alice = {**common, "cid": alice_id, "cip": "198.51.100.20", "ua": DESKTOP, "lang": "en-GB,en;q=0.9"}
    bob = {**common, "cid": bob_id, "cip": "203.0.113.66", "ua": MOBILE, "lang": "de-DE,de;q=0.9"}
    expected = [
        {
            **alice,
            "action_name": f"GET {stack.item_route}",
            "url": "http://shop.example/items/7?utm_source=newsletter&utm_campaign=autumn",
            "urlref": "https://www.google.com/search?q=boots",
        },
        {
            **alice,
            "action_name": "POST /api/cart",
            "url": "http://shop.example/api/cart",
            "urlref": "http://shop.example/items/7",
        },
        {
            **alice,
            "action_name": "404/URL = %2Fitems%2F500%3Fcolor%3Dred/From = http%3A%2F%2Fshop.example%2Fitems%2F7",
            "url": "http://shop.example/items/500?color=red",
            "urlref": "http://shop.example/items/7",
        },
        {**bob, "action_name": "GET /old-home", "url": "http://shop.example:8080/old-home"},
        {**bob, "action_name": "500/URL = %2Fboom", "url": "http://shop.example:8080/boom"},
    ]
    volatile = {"cdt", "pf_srv", "rand"}
    assert [{k: v for k, v in hit.items() if k not in volatile} for hit in hits] == expected
    for hit in hits:
        assert started <= int(hit["cdt"]) <= finished
        assert 0 <= int(hit["pf_srv"]) < 5000
    assert len({hit["rand"] for hit in hits}) == 5
    bodies = [received.body for received in standin.received]
    assert all(body["token_auth"] == WRITE_TOKEN for body in bodies)
    assert all(WRITE_TOKEN not in received.path + received.query for received in standin.received)

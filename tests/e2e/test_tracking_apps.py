"""The tracking API in real instrumented apps - FastAPI under uvicorn, Flask and Django under werkzeug - driven by
real HTTP requests; the exact hits that reach the local ``matomo.php`` stand-in are checked, for both delivery
paths: ``BatchSpanProcessor(MatomoSpanExporter())`` beside a ``TrackingProcessor``, and ``MatomoSpanProcessor``.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from flask import Flask, jsonify
from flask import request as flask_request
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from otel_matomo import (
    EcommerceItem,
    MatomoSpanExporter,
    MatomoSpanProcessor,
    Settings,
    TrackingProcessor,
    configure_header_capture,
    set_custom_dimension,
    set_page_title,
    set_user_id,
    skip_tracking,
    track_cart_update,
    track_content_impression,
    track_event,
    track_goal,
    track_order,
    track_product_view,
    track_site_search,
)
from otel_matomo._types import ExportStats
from otel_matomo._visitor import visitor_id
from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn
from tests.servers import serve_asgi, serve_wsgi

SECRET = "e2e-tracking-visitor-secret-0123"
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
CLIENT = "198.51.100.20"
BROWSER = {
    "Host": "shop.example",
    "User-Agent": UA,
    "Accept-Language": "en-GB,en;q=0.9",
    "X-Forwarded-For": CLIENT,
}
VISITOR = {
    "idsite": "1",
    "rec": "1",
    "apiv": "1",
    "cid": visitor_id(SECRET.encode(), CLIENT, UA),
    "cip": CLIENT,
    "ua": UA,
    "lang": "en-GB,en;q=0.9",
}
BOOTS = EcommerceItem("SKU-BOOTS", "Boots", "Shoes", 49.9, 1)
SOCKS = EcommerceItem("SKU-SOCKS", "Socks", "Shoes", 4.95, 2)
ITEMS_JSON = '[["SKU-BOOTS","Boots","Shoes",49.9,1],["SKU-SOCKS","Socks","Shoes",4.95,2]]'


@dataclass
class Delivery:
    """A TracerProvider that delivers to the stand-in, by one of the two documented paths."""

    provider: TracerProvider
    stats: Any

    def flush(self) -> None:
        assert self.provider.force_flush(10_000)

    def totals(self) -> ExportStats:
        result: ExportStats = self.stats()
        return result


def _settings(standin: MatomoStandIn) -> Settings:
    return Settings.from_env(
        {},
        endpoint=standin.url,
        site_id=1,
        token_auth=WRITE_TOKEN,
        visitor_id_secret=SECRET,
        schedule_delay=timedelta(milliseconds=50),
    )


@pytest.fixture
def capture_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", raising=False)
    configure_header_capture()


@pytest.fixture(params=["exporter", "exporter-alone", "processor"])
def delivery(request: pytest.FixtureRequest, standin: MatomoStandIn, capture_headers: None) -> Iterator[Delivery]:
    """``exporter-alone``: no TrackingProcessor, so the exporter moves nested spans' facts (the README's minimum)."""
    provider = TracerProvider()
    if request.param.startswith("exporter"):
        exporter = MatomoSpanExporter(settings=_settings(standin))
        if request.param == "exporter":
            provider.add_span_processor(TrackingProcessor())
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
        yield Delivery(provider, lambda: exporter.stats)
    else:
        processor = MatomoSpanProcessor(settings=_settings(standin))
        provider.add_span_processor(processor)
        yield Delivery(provider, lambda: processor.stats)
    provider.shutdown()


def _hits(standin: MatomoStandIn, delivery: Delivery, count: int) -> list[dict[str, str]]:
    """Exactly ``count`` hits, once everything was flushed; the volatile ``cdt``, ``pf_srv`` and ``rand`` checked
    here and removed."""
    hits = [dict(hit) for hit in standin.wait_for_hits(count)]
    delivery.flush()
    time.sleep(0.1)
    assert len(standin.tracked) == count, standin.tracked
    page_rand = ""
    for hit in hits:
        assert abs(int(hit.pop("cdt")) - time.time()) < 60
        rand = hit.pop("rand")
        if hit.get("ca") == "1" or "idgoal" in hit:  # an extra hit (goals and ecommerce carry no ca=1)
            assert rand.startswith(f"{page_rand}-"), (page_rand, rand)
        else:
            page_rand = rand
            assert 0 <= int(hit.pop("pf_srv")) < 10_000
    return hits


# --- FastAPI: a dependency sets the user, the handler tracks from a nested span and from a thread ----------------


def _fastapi_shop(provider: TracerProvider) -> Any:
    app = FastAPI()
    tracer = provider.get_tracer("shop")

    async def current_user(request: Request) -> str | None:
        """The documented pattern: the dependency that authenticates also tells Matomo who it is."""
        user = request.headers.get("x-user")
        if user:
            set_user_id(user)
        return user

    def plan(request: Request) -> None:
        """A sync dependency: FastAPI runs it in its thread pool, with the request's context."""
        set_custom_dimension(1, request.headers.get("x-plan", "free"))

    @app.post("/checkout/{cart_id}", dependencies=[Depends(plan)])
    async def checkout(cart_id: str, user: str | None = Depends(current_user)) -> dict[str, str]:
        with tracer.start_as_current_span("charge card"):
            track_event("Checkout", "pay", name=cart_id, value=59.8)
            track_goal(2, revenue=64.8)
        await asyncio.to_thread(
            track_order, f"A-{cart_id}", 64.8, [BOOTS, SOCKS], subtotal=59.8, tax=9.55, shipping=5.0, discount=0
        )
        return {"order": f"A-{cart_id}", "user": user or ""}

    @app.get("/products/{sku}")
    def product(sku: str) -> dict[str, str]:
        track_product_view(sku, "Boots", "Shoes", 49.9)
        set_page_title("Boots - Shop")
        track_content_impression("Related products", piece="socks", target="/products/SKU-SOCKS")
        return {"sku": sku}

    @app.get("/internal/warmup")
    async def warmup() -> dict[str, bool]:
        skip_tracking()
        return {"warm": True}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app


def test_fastapi_dependency_nested_span_and_thread(delivery: Delivery, standin: MatomoStandIn) -> None:
    with serve_asgi(_fastapi_shop(delivery.provider)) as base_url, httpx.Client(base_url=base_url) as client:
        client.get("/internal/warmup", headers=BROWSER).raise_for_status()
        client.post(
            "/checkout/c-7",
            headers={**BROWSER, "X-User": "alice@example.com", "X-Plan": "gold", "Referer": "http://shop.example/cart"},
        ).raise_for_status()
        hits = _hits(standin, delivery, 4)
        client.get("/products/SKU-BOOTS", headers=BROWSER).raise_for_status()
        hits += _hits(standin, delivery, 6)[4:]

    shopper = {
        **VISITOR,
        "url": "http://shop.example/checkout/c-7",
        "urlref": "http://shop.example/cart",
        "uid": "alice@example.com",
        "dimension1": "gold",
    }
    assert hits == [
        {**shopper, "action_name": "POST /checkout/{cart_id}"},
        {**shopper, "ca": "1", "e_c": "Checkout", "e_a": "pay", "e_n": "c-7", "e_v": "59.8"},
        {**shopper, "idgoal": "2", "revenue": "64.8"},
        {
            **shopper,
            "idgoal": "0",
            "ec_id": "A-c-7",
            "revenue": "64.8",
            "ec_items": ITEMS_JSON,
            "ec_st": "59.8",
            "ec_tx": "9.55",
            "ec_sh": "5",
            "ec_dt": "0",
        },
        {
            **VISITOR,
            "url": "http://shop.example/products/SKU-BOOTS",
            "action_name": "Boots - Shop",
            "_pks": "SKU-BOOTS",
            "_pkn": "Boots",
            "_pkc": "Shoes",
            "_pkp": "49.9",
        },
        {
            **VISITOR,
            "url": "http://shop.example/products/SKU-BOOTS",
            "ca": "1",
            "c_n": "Related products",
            "c_p": "socks",
            "c_t": "/products/SKU-SOCKS",
        },
    ]
    totals = delivery.totals()
    assert (totals.requests, totals.skipped, totals.tracked, totals.invalid) == (2, 1, 6, 0)


# --- Flask: a site search, and a cart update computed in a worker thread -----------------------------------------


def _flask_shop(provider: TracerProvider) -> Any:
    app = Flask("tracking_shop")
    pool = ThreadPoolExecutor(2)

    @app.get("/search")
    def search() -> Any:
        keyword = flask_request.args.get("q", "")
        results = ["SKU-BOOTS", "SKU-SOCKS", "SKU-LACES"] if "boots" in keyword else []
        track_site_search(keyword, category=flask_request.args.get("cat"), results_count=len(results))
        return jsonify(results)

    @app.post("/cart")
    def cart() -> Any:
        def price_cart() -> float:
            total = round(BOOTS.price * 2, 2)
            track_cart_update(total, [EcommerceItem("SKU-BOOTS", "Boots", "Shoes", 49.9, 2)])
            return total

        # A thread of our own sees the request only through a copy of its context.
        total = pool.submit(contextvars.copy_context().run, price_cart).result()
        return jsonify({"total": total})

    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    return app


def test_flask_site_search_and_cart_update(delivery: Delivery, standin: MatomoStandIn) -> None:
    with serve_wsgi(_flask_shop(delivery.provider)) as base_url, httpx.Client(base_url=base_url) as client:
        client.get("/search", params={"q": "red boots", "cat": "Shoes"}, headers=BROWSER).raise_for_status()
        hits = _hits(standin, delivery, 1)
        client.get("/search", params={"q": "unobtainium"}, headers=BROWSER).raise_for_status()
        hits += _hits(standin, delivery, 2)[1:]
        client.post("/cart", headers={**BROWSER, "Referer": "http://shop.example/search"}).raise_for_status()
        hits += _hits(standin, delivery, 4)[2:]

    cart = {**VISITOR, "url": "http://shop.example/cart", "urlref": "http://shop.example/search"}
    assert hits == [
        {
            **VISITOR,
            "url": "http://shop.example/search?q=red+boots&cat=Shoes",
            "action_name": "GET /search",
            "search": "red boots",
            "search_cat": "Shoes",
            "search_count": "3",
        },
        {
            **VISITOR,
            "url": "http://shop.example/search?q=unobtainium",
            "action_name": "GET /search",
            "search": "unobtainium",
            "search_cat": "",
            "search_count": "0",
        },
        {**cart, "action_name": "POST /cart"},
        {
            **cart,
            "idgoal": "0",
            "revenue": "99.8",
            "ec_items": '[["SKU-BOOTS","Boots","Shoes",49.9,2]]',
        },
    ]
    totals = delivery.totals()
    assert (totals.requests, totals.tracked, totals.invalid) == (3, 4, 0)


# --- Django: a view tracking an event and a custom dimension -------------------------------------------------------


def article(request: Any, slug: str) -> Any:
    from django.http import JsonResponse

    set_custom_dimension(2, "premium" if request.headers.get("x-subscriber") else "anonymous")
    track_event("Article", "read", name=slug)
    if request.GET.get("share"):
        track_event("Article", "share", name=slug, value=1)
    return JsonResponse({"article": slug})


def _django_urlpatterns() -> list[Any]:
    from django.urls import path

    return [path("articles/<slug:slug>", article)]


urlpatterns: list[Any] = []
"""This module is Django's URLconf during the Django test (filled then)."""


@pytest.fixture
def django_app(delivery: Delivery) -> Iterator[Any]:
    django = pytest.importorskip("django")
    pytest.importorskip("opentelemetry.instrumentation.django")
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings
    from opentelemetry.instrumentation.django import DjangoInstrumentor

    if not settings.configured:
        # The example app's settings module, as importing examples/django_app would choose; this test only
        # overrides the URLconf and middleware below, so other Django tests in this process see what they expect.
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app")
    django.setup()
    urlpatterns[:] = _django_urlpatterns()
    instrumentor = DjangoInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    with override_settings(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], MIDDLEWARE=[], DEBUG=False):
        instrumentor.instrument(tracer_provider=delivery.provider)
        try:
            yield WSGIHandler()
        finally:
            instrumentor.uninstrument()


def test_django_view_event_and_custom_dimension(django_app: Any, delivery: Delivery, standin: MatomoStandIn) -> None:
    with serve_wsgi(django_app) as base_url, httpx.Client(base_url=base_url) as client:
        client.get("/articles/otel-and-matomo", headers={**BROWSER, "X-Subscriber": "1"}).raise_for_status()
        hits = _hits(standin, delivery, 2)
        client.get("/articles/server-side", params={"share": "1"}, headers=BROWSER).raise_for_status()
        hits += _hits(standin, delivery, 5)[2:]

    first = {**VISITOR, "url": "http://shop.example/articles/otel-and-matomo", "dimension2": "premium"}
    second = {**VISITOR, "url": "http://shop.example/articles/server-side?share=1", "dimension2": "anonymous"}
    route = hits[0]["action_name"]  # Django's http.route has no leading slash: "GET articles/<slug:slug>"
    assert route.startswith("GET ")
    assert "articles/<slug:slug>" in route
    assert hits == [
        {**first, "action_name": route},
        {**first, "ca": "1", "e_c": "Article", "e_a": "read", "e_n": "otel-and-matomo"},
        {**second, "action_name": route},
        {**second, "ca": "1", "e_c": "Article", "e_a": "read", "e_n": "server-side"},
        {**second, "ca": "1", "e_c": "Article", "e_a": "share", "e_n": "server-side", "e_v": "1"},
    ]
    totals = delivery.totals()
    assert (totals.requests, totals.tracked, totals.invalid) == (2, 5, 0)


# --- two requests of one trace at once (a gateway fanning out with one traceparent) -------------------------------


class _EndWatcher(SpanProcessor):
    """Sets an event when the server span of a given path ends."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ended = threading.Event()

    def on_end(self, span: ReadableSpan) -> None:
        attributes = span.attributes or {}
        if span.kind is SpanKind.SERVER and self.path in str(attributes.get("url.path", attributes.get("http.target"))):
            self.ended.set()


def _fan_out_app(provider: TracerProvider, watcher: _EndWatcher) -> Any:
    app = FastAPI()
    tracer = provider.get_tracer("fan-out")
    state: dict[str, asyncio.Event] = {}

    def started() -> asyncio.Event:
        return state.setdefault("second started", asyncio.Event())

    @app.get("/first")
    async def first() -> dict[str, bool]:
        track_event("First", "start")
        await started().wait()
        with tracer.start_as_current_span("while the second runs"):
            track_event("First", "nested, while the second runs")
        await asyncio.to_thread(watcher.ended.wait, 10)
        with tracer.start_as_current_span("after the second ended"):
            track_event("First", "nested, after the second ended")
        return {"ok": True}

    @app.get("/second")
    async def second() -> dict[str, bool]:
        track_event("Second", "start")
        started().set()
        return {"ok": True}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app


def test_two_requests_of_one_trace_keep_their_own_facts(delivery: Delivery, standin: MatomoStandIn) -> None:
    watcher = _EndWatcher("/second")
    delivery.provider.add_span_processor(watcher)
    traceparent = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    with (
        serve_asgi(_fan_out_app(delivery.provider, watcher)) as base_url,
        httpx.Client(base_url=base_url, timeout=20) as client,
        ThreadPoolExecutor(2) as pool,
    ):
        first = pool.submit(client.get, "/first", headers={**BROWSER, **traceparent})
        time.sleep(0.2)
        second = pool.submit(client.get, "/second", headers={**BROWSER, **traceparent})
        second.result().raise_for_status()
        first.result().raise_for_status()
        standin.wait_for_hits(2)
        delivery.flush()
        time.sleep(0.1)
        hits = list(standin.tracked)
    by_page = sorted((hit["url"], hit.get("e_c", ""), hit.get("e_a", "")) for hit in hits if hit.get("ca") == "1")
    assert by_page == [
        ("http://shop.example/first", "First", "nested, after the second ended"),
        ("http://shop.example/first", "First", "nested, while the second runs"),
        ("http://shop.example/first", "First", "start"),
        ("http://shop.example/second", "Second", "start"),
    ]

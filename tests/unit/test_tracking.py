"""``otel_matomo.tracking``: each call puts its documented attribute or event on the request's server span, from
wherever in the request it is called, does nothing outside a request, and validates its arguments (``ValueError``
in development, a counted and logged skip in production).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

import otel_matomo
from otel_matomo import _diagnostics as diagnostics
from otel_matomo import _names as names
from otel_matomo import tracking
from otel_matomo._delivery import MatomoSpanProcessor
from otel_matomo._ratelimit import RateLimitedLog
from otel_matomo._settings import Settings
from otel_matomo.tracking import (
    EcommerceItem,
    TrackingProcessor,
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

BOOTS = EcommerceItem("SKU-BOOTS", "Boots", "Shoes", 49.9, 1)
SOCKS = EcommerceItem("SKU-SOCKS", quantity=3)
HTTP = {"http.request.method": "GET", "url.path": "/shop", "url.scheme": "https"}


class Recorder:
    """A TracerProvider with the TrackingProcessor (or another processor) and an in-memory exporter."""

    def __init__(self, *, tracking_processor: bool = True) -> None:
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider()
        if tracking_processor:
            self.provider.add_span_processor(TrackingProcessor())
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracer = self.provider.get_tracer("test")

    @contextmanager
    def request(self, name: str = "GET /shop", **kwargs: Any) -> Iterator[trace.Span]:
        """A current SERVER span, like the one HTTP server instrumentation starts."""
        with self.tracer.start_as_current_span(name, kind=SpanKind.SERVER, attributes=HTTP, **kwargs) as span:
            yield span

    def finished(self, name: str = "GET /shop") -> ReadableSpan:
        spans = [span for span in self.memory.get_finished_spans() if span.name == name]
        assert len(spans) == 1, spans
        return spans[0]

    def server_span(self) -> ReadableSpan:
        spans = [span for span in self.memory.get_finished_spans() if span.kind is SpanKind.SERVER]
        assert len(spans) == 1, spans
        return spans[0]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recording = Recorder()
    yield recording
    recording.provider.shutdown()


@pytest.fixture
def strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_MATOMO_STRICT", "true")


@pytest.fixture
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.flags.dev_mode:
        pytest.skip("the test process runs in Python's development mode, where tracking is always strict")
    monkeypatch.delenv("OTEL_EXPORTER_MATOMO_STRICT", raising=False)
    # A fresh rate limiter, so that this test's warning is not held back by an earlier test's.
    monkeypatch.setattr(tracking, "_log", RateLimitedLog(logging.getLogger("otel_matomo")))


def tracking_attributes(span: ReadableSpan) -> dict[str, Any]:
    """The attributes the tracking API sets (namespaced ``matomo.*`` plus ``enduser.id``)."""
    return {
        key: value for key, value in (span.attributes or {}).items() if key.startswith("matomo.") or key == "enduser.id"
    }


def events(span: ReadableSpan) -> list[tuple[str, dict[str, Any]]]:
    return [(event.name, dict(event.attributes or {})) for event in span.events]


# --- each call, its attribute or event ----------------------------------------------------------------------------

EVENT_CASES: list[tuple[str, Callable[[], None], str, dict[str, Any]]] = [
    (
        "event, all arguments",
        lambda: track_event("Shop", "add to cart", name="boots", value=2),
        "matomo.event",
        {
            "matomo.event.category": "Shop",
            "matomo.event.action": "add to cart",
            "matomo.event.name": "boots",
            "matomo.event.value": 2.0,
        },
    ),
    (
        "event, category and action only",
        lambda: track_event("Shop", "view"),
        "matomo.event",
        {"matomo.event.category": "Shop", "matomo.event.action": "view"},
    ),
    (
        "event, value zero and negative",
        lambda: track_event("Shop", "refund", value=-12.5),
        "matomo.event",
        {"matomo.event.category": "Shop", "matomo.event.action": "refund", "matomo.event.value": -12.5},
    ),
    ("goal", lambda: track_goal(3), "matomo.goal", {"matomo.goal.id": 3}),
    (
        "goal with revenue",
        lambda: track_goal(4, revenue=9.5),
        "matomo.goal",
        {"matomo.goal.id": 4, "matomo.goal.revenue": 9.5},
    ),
    (
        "order, all arguments",
        lambda: track_order("A-1001", 159.7, [BOOTS, SOCKS], subtotal=149.7, tax=10, shipping=5.0, discount=5),
        "matomo.ecommerce.order",
        {
            "matomo.ecommerce.order_id": "A-1001",
            "matomo.ecommerce.revenue": 159.7,
            "matomo.ecommerce.items": '[["SKU-BOOTS","Boots","Shoes",49.9,1],["SKU-SOCKS","","",0.0,3]]',
            "matomo.ecommerce.subtotal": 149.7,
            "matomo.ecommerce.tax": 10.0,
            "matomo.ecommerce.shipping": 5.0,
            "matomo.ecommerce.discount": 5.0,
        },
    ),
    (
        "order, no items",
        lambda: track_order("A-1002", 10),
        "matomo.ecommerce.order",
        {"matomo.ecommerce.order_id": "A-1002", "matomo.ecommerce.revenue": 10.0, "matomo.ecommerce.items": "[]"},
    ),
    (
        "order, items from a generator",
        lambda: track_order("A-1003", 49.9, (item for item in [BOOTS])),
        "matomo.ecommerce.order",
        {
            "matomo.ecommerce.order_id": "A-1003",
            "matomo.ecommerce.revenue": 49.9,
            "matomo.ecommerce.items": '[["SKU-BOOTS","Boots","Shoes",49.9,1]]',
        },
    ),
    (
        "cart update",
        lambda: track_cart_update(99.8, [EcommerceItem("SKU-BOOTS", "Boots", "Shoes", 49.9, 2)]),
        "matomo.ecommerce.cart_update",
        {"matomo.ecommerce.revenue": 99.8, "matomo.ecommerce.items": '[["SKU-BOOTS","Boots","Shoes",49.9,2]]'},
    ),
    (
        "emptied cart",
        lambda: track_cart_update(0, []),
        "matomo.ecommerce.cart_update",
        {"matomo.ecommerce.revenue": 0.0, "matomo.ecommerce.items": "[]"},
    ),
    (
        "content impression",
        lambda: track_content_impression("Spring sale", piece="/img/spring.png", target="/sale"),
        "matomo.content_impression",
        {
            "matomo.content.name": "Spring sale",
            "matomo.content.piece": "/img/spring.png",
            "matomo.content.target": "/sale",
        },
    ),
    (
        "content impression, name only",
        lambda: track_content_impression("Newsletter box"),
        "matomo.content_impression",
        {"matomo.content.name": "Newsletter box"},
    ),
]


@pytest.mark.parametrize(
    ("call", "name", "attributes"), [case[1:] for case in EVENT_CASES], ids=[c[0] for c in EVENT_CASES]
)
def test_each_fact_is_a_span_event_on_the_server_span(
    recorder: Recorder, strict: None, call: Callable[[], None], name: str, attributes: dict[str, Any]
) -> None:
    with recorder.request():
        call()
    span = recorder.server_span()
    assert events(span) == [(name, attributes)]
    assert tracking_attributes(span) == {}
    assert name in names.TRACKING_EVENTS


ATTRIBUTE_CASES: list[tuple[str, Callable[[], None], dict[str, Any]]] = [
    (
        "product view",
        lambda: track_product_view("SKU-BOOTS", "Boots", "Shoes", 49.9),
        {
            "matomo.product.sku": "SKU-BOOTS",
            "matomo.product.name": "Boots",
            "matomo.product.category": "Shoes",
            "matomo.product.price": 49.9,
        },
    ),
    ("product view, sku only", lambda: track_product_view("SKU-BOOTS"), {"matomo.product.sku": "SKU-BOOTS"}),
    (
        "site search",
        lambda: track_site_search("red boots", category="Shoes", results_count=12),
        {"matomo.search.keyword": "red boots", "matomo.search.category": "Shoes", "matomo.search.results_count": 12},
    ),
    (
        "site search without results",
        lambda: track_site_search("unobtainium", results_count=0),
        {"matomo.search.keyword": "unobtainium", "matomo.search.results_count": 0},
    ),
    ("site search, keyword only", lambda: track_site_search("boots"), {"matomo.search.keyword": "boots"}),
    ("user id", lambda: set_user_id("alice@example.com"), {"enduser.id": "alice@example.com"}),
    ("custom dimension", lambda: set_custom_dimension(3, "gold"), {"matomo.dimension.3": "gold"}),
    ("page title", lambda: set_page_title("Checkout - step 2"), {"matomo.page_title": "Checkout - step 2"}),
    ("skip", skip_tracking, {"matomo.skip": True}),
]


@pytest.mark.parametrize(
    ("call", "attributes"), [case[1:] for case in ATTRIBUTE_CASES], ids=[case[0] for case in ATTRIBUTE_CASES]
)
def test_each_request_property_is_a_span_attribute_on_the_server_span(
    recorder: Recorder, strict: None, call: Callable[[], None], attributes: dict[str, Any]
) -> None:
    with recorder.request():
        call()
    span = recorder.server_span()
    assert tracking_attributes(span) == attributes
    assert events(span) == []


def test_facts_keep_call_order_and_carry_their_own_time(recorder: Recorder) -> None:
    with recorder.request():
        track_event("A", "first")
        track_goal(1)
        track_order("O-1", 1.0)
        track_cart_update(1.0, [])
        track_content_impression("C")
        track_event("A", "last")
    span = recorder.server_span()
    assert [name for name, _ in events(span)] == [
        "matomo.event",
        "matomo.goal",
        "matomo.ecommerce.order",
        "matomo.ecommerce.cart_update",
        "matomo.content_impression",
        "matomo.event",
    ]
    times = [event.timestamp for event in span.events]
    assert times == sorted(times)
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.start_time <= times[0]
    assert times[-1] <= span.end_time


def test_attribute_calls_overwrite_earlier_ones(recorder: Recorder) -> None:
    with recorder.request():
        set_page_title("first")
        set_page_title("second")
        set_custom_dimension(1, "a")
        set_custom_dimension(1, "b")
        set_custom_dimension(2, "c")
        set_user_id("u1")
        set_user_id("u2")
    assert tracking_attributes(recorder.server_span()) == {
        "matomo.page_title": "second",
        "matomo.dimension.1": "b",
        "matomo.dimension.2": "c",
        "enduser.id": "u2",
    }


def test_dimension_values_are_cut_to_250_characters(recorder: Recorder) -> None:
    with recorder.request():
        set_custom_dimension(1, "x" * 249 + "yz")
        set_custom_dimension(2, "é" * 250)
    attributes = tracking_attributes(recorder.server_span())
    assert attributes["matomo.dimension.1"] == "x" * 249 + "y"
    assert attributes["matomo.dimension.2"] == "é" * 250


def test_the_calls_are_exported_by_the_package() -> None:
    calls = [name for name in vars(tracking) if name.startswith(("track_", "set_", "skip_"))]
    assert len(calls) == 11, calls
    for name in [*calls, "EcommerceItem", "TrackingProcessor"]:
        assert name in otel_matomo.__all__
        assert getattr(otel_matomo, name) is getattr(tracking, name)


# --- where the call is made -------------------------------------------------------------------------------------


def test_from_a_nested_internal_span(recorder: Recorder) -> None:
    with (
        recorder.request(),
        recorder.tracer.start_as_current_span("service", kind=SpanKind.INTERNAL),
        recorder.tracer.start_as_current_span("repository"),
    ):
        track_event("Shop", "nested")
        set_user_id("bob")
    span = recorder.server_span()
    assert events(span) == [("matomo.event", {"matomo.event.category": "Shop", "matomo.event.action": "nested"})]
    assert tracking_attributes(span) == {"enduser.id": "bob"}
    for name in ("service", "repository"):
        nested = recorder.finished(name)
        assert nested.events == () or list(nested.events) == []
        assert tracking_attributes(nested) == {}


def test_from_a_nested_client_span(recorder: Recorder) -> None:
    with recorder.request(), recorder.tracer.start_as_current_span("POST payments", kind=SpanKind.CLIENT):
        track_goal(7)
    assert events(recorder.server_span()) == [("matomo.goal", {"matomo.goal.id": 7})]


def test_from_asyncio_to_thread(recorder: Recorder) -> None:
    async def handler() -> None:
        with recorder.request(), recorder.tracer.start_as_current_span("work"):
            await asyncio.to_thread(track_event, "Thread", "to_thread")
            await asyncio.to_thread(set_custom_dimension, 4, "from a thread")

    asyncio.run(handler())
    span = recorder.server_span()
    assert events(span) == [("matomo.event", {"matomo.event.category": "Thread", "matomo.event.action": "to_thread"})]
    assert tracking_attributes(span) == {"matomo.dimension.4": "from a thread"}


def test_from_a_copied_context_in_a_thread(recorder: Recorder) -> None:
    with recorder.request(), recorder.tracer.start_as_current_span("work"):
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(track_goal, 5, 12.0))
        thread.start()
        thread.join()
        with ThreadPoolExecutor(1) as pool:
            pool.submit(contextvars.copy_context().run, track_site_search, "boots").result()
    span = recorder.server_span()
    assert events(span) == [("matomo.goal", {"matomo.goal.id": 5, "matomo.goal.revenue": 12.0})]
    assert tracking_attributes(span) == {"matomo.search.keyword": "boots"}


def test_from_an_asyncio_task(recorder: Recorder) -> None:
    async def side_work() -> None:
        await asyncio.sleep(0)
        with recorder.tracer.start_as_current_span("side work"):
            track_content_impression("Banner")

    async def handler() -> None:
        with recorder.request():
            await asyncio.gather(asyncio.create_task(side_work()), asyncio.create_task(side_work()))

    asyncio.run(handler())
    assert events(recorder.server_span()) == [
        ("matomo.content_impression", {"matomo.content.name": "Banner"}),
        ("matomo.content_impression", {"matomo.content.name": "Banner"}),
    ]


def test_a_thread_without_the_context_tracks_nothing_and_raises_nothing(recorder: Recorder, strict: None) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            track_event("Thread", "no context")
            track_event("", "")  # invalid, but outside any request: nothing to validate for
        except BaseException as error:
            errors.append(error)

    with recorder.request():
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    assert errors == []
    assert events(recorder.server_span()) == []


def test_concurrent_requests_each_get_their_own_facts(recorder: Recorder) -> None:
    barrier = threading.Barrier(8)

    def serve(number: int) -> None:
        with recorder.request(f"GET /r{number}"), recorder.tracer.start_as_current_span(f"work {number}"):
            barrier.wait()
            track_event("Request", str(number))
            set_custom_dimension(1, str(number))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(serve, range(8)))
    for number in range(8):
        span = recorder.finished(f"GET /r{number}")
        assert events(span) == [
            ("matomo.event", {"matomo.event.category": "Request", "matomo.event.action": str(number)})
        ]
        assert tracking_attributes(span) == {"matomo.dimension.1": str(number)}


def test_two_requests_of_one_trace_served_at_once_keep_their_own_facts(recorder: Recorder) -> None:
    """A fan-out with one ``traceparent``: two requests of one trace, interleaved in one event loop, each in its
    own task (as every ASGI server serves them)."""
    upstream = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    parent = trace.set_span_in_context(NonRecordingSpan(upstream))
    second_started, second_ended = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        with recorder.tracer.start_as_current_span("GET /first", context=parent, kind=SpanKind.SERVER, attributes=HTTP):
            track_event("First", "direct")
            await second_started.wait()
            with recorder.tracer.start_as_current_span("db"):
                track_event("First", "nested")
            await second_ended.wait()
            with recorder.tracer.start_as_current_span("db"):
                track_event("First", "after the other request ended")

    async def second() -> None:
        with recorder.tracer.start_as_current_span(
            "GET /second", context=parent, kind=SpanKind.SERVER, attributes=HTTP
        ):
            second_started.set()
            await asyncio.sleep(0)
            with recorder.tracer.start_as_current_span("db"):
                track_event("Second", "nested")
        second_ended.set()

    async def serve() -> None:
        await asyncio.gather(first(), second())

    asyncio.run(serve())
    actions = {
        name: [event[1]["matomo.event.action"] for event in events(recorder.finished(name))]
        for name in ("GET /first", "GET /second")
    }
    assert actions == {"GET /first": ["direct", "nested", "after the other request ended"], "GET /second": ["nested"]}


def test_without_the_tracking_processor_a_nested_call_records_on_the_nested_span() -> None:
    """The exporter moves it to the server span (tests/unit/test_nested_tracking.py)."""
    recording = Recorder(tracking_processor=False)
    with recording.request():
        track_event("Shop", "direct")
        with recording.tracer.start_as_current_span("nested"):
            track_event("Shop", "nested")
    recording.provider.shutdown()
    assert events(recording.server_span()) == [
        ("matomo.event", {"matomo.event.category": "Shop", "matomo.event.action": "direct"})
    ]
    assert events(recording.finished("nested")) == [
        ("matomo.event", {"matomo.event.category": "Shop", "matomo.event.action": "nested"})
    ]


def test_matomo_span_processor_registers_server_spans_too() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(MatomoSpanProcessor(settings=Settings.from_env({}, dry_run=True)))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span("GET /shop", kind=SpanKind.SERVER, attributes=HTTP) as server,
        tracer.start_as_current_span("nested"),
    ):
        track_goal(9)
    provider.shutdown()
    finished = [
        span for span in memory.get_finished_spans() if span.context.span_id == server.get_span_context().span_id
    ]
    assert events(finished[0]) == [("matomo.goal", {"matomo.goal.id": 9})]


LEAK = (
    "bug: server spans are never removed from the trace-id registry, so every request's span (attributes, events "
    "and all) stays in memory for the life of the process. unregister() deletes only when "
    "`_server_spans.get(trace_id) is span`, but the SDK's Span.end() calls on_end(self._readable_span()), a new "
    "ReadableSpan object, so the identity test is never true (TrackingProcessor and MatomoSpanProcessor alike). "
    "Suggested fix: compare span ids instead: `entry = _server_spans.get(trace_id); if entry is not None and "
    "entry.context.span_id == span.context.span_id: del _server_spans[trace_id]`."
)


@pytest.mark.parametrize("processor", ["TrackingProcessor", "MatomoSpanProcessor"])
def test_a_server_span_is_forgotten_when_it_ends(processor: str) -> None:
    provider = TracerProvider()
    if processor == "TrackingProcessor":
        provider.add_span_processor(TrackingProcessor())
    else:
        provider.add_span_processor(MatomoSpanProcessor(settings=Settings.from_env({}, dry_run=True)))
    tracer = provider.get_tracer("test")
    started = []
    for _ in range(20):
        with (
            tracer.start_as_current_span("GET /shop", kind=SpanKind.SERVER, attributes=HTTP) as server,
            tracer.start_as_current_span("nested"),
        ):
            track_event("A", "b")
        started.append(server.get_span_context())
    provider.shutdown()
    assert [context for context in started if context.trace_id in tracking._by_trace] == []


def test_a_trace_of_client_and_internal_spans_registers_nothing(recorder: Recorder) -> None:
    before, server_before = dict(tracking._by_trace), tracking._server_span.get()
    with (
        recorder.tracer.start_as_current_span("job"),
        recorder.tracer.start_as_current_span("call", kind=SpanKind.CLIENT),
    ):
        assert tracking._by_trace == before
        assert tracking._server_span.get() is server_before, "a nested span is not a request's span"


# --- outside a request, after it, and when tracking is off ------------------------------------------------------

ALL_CALLS: list[Callable[[], None]] = [
    lambda: track_event("Shop", "view"),
    lambda: track_goal(1, revenue=2.0),
    lambda: track_order("O-9", 1.0, [BOOTS]),
    lambda: track_cart_update(1.0, [BOOTS]),
    lambda: track_product_view("SKU"),
    lambda: track_site_search("boots"),
    lambda: track_content_impression("Banner"),
    lambda: set_user_id("alice"),
    lambda: set_custom_dimension(1, "x"),
    lambda: set_page_title("Title"),
    skip_tracking,
]
INVALID_CALLS: list[Callable[[], None]] = [
    lambda: track_event("", ""),
    lambda: track_goal(0),
    lambda: track_order("", math.nan),
    lambda: track_cart_update(-math.inf, [None]),  # type: ignore[list-item]
    lambda: track_product_view(""),
    lambda: track_site_search("", results_count=-1),
    lambda: track_content_impression(""),
    lambda: set_user_id(""),
    lambda: set_custom_dimension(0, ""),
    lambda: set_page_title(""),
]


def test_outside_a_request_nothing_happens_and_nothing_raises(
    recorder: Recorder, strict: None, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(diagnostics, "_once", diagnostics.OnceLog(logging.getLogger("otel_matomo")))
    for call in ALL_CALLS + INVALID_CALLS:
        call()  # no span at all
    said = [record.getMessage() for record in caplog.records if "recorded nothing" in record.getMessage()]
    assert said == [
        "otel-matomo: track_event recorded nothing: no span is active (outside a request, or nothing "
        "traces the application)"
    ], "said once per process"


def test_in_spans_without_a_server_span_facts_stay_on_the_current_span(recorder: Recorder) -> None:
    """No server span to find: the call records on its own span, where a trace backend shows it and the
    exporter finds no server span to move it to (it says so)."""
    with recorder.tracer.start_as_current_span("a background job"), recorder.tracer.start_as_current_span("step"):
        track_goal(3)
    recorder.provider.force_flush()
    assert events(recorder.finished("step")) == [("matomo.goal", {"matomo.goal.id": 3})]
    assert events(recorder.finished("a background job")) == []


def test_with_a_non_recording_server_span_nothing_happens(strict: None) -> None:
    """A request the sampler dropped (the exporter path with trace sampling): tracking is off for it."""
    upstream = SpanContext(trace_id=1, span_id=2, is_remote=False, trace_flags=TraceFlags(0))
    before = dict(tracking.rejected)
    with trace.use_span(NonRecordingSpan(upstream)):
        for call in ALL_CALLS + INVALID_CALLS:
            call()  # strict mode: an invalid call that reached validation would raise
    assert dict(tracking.rejected) == before


def test_with_no_sdk_nothing_happens() -> None:
    tracer = trace.NoOpTracerProvider().get_tracer("test")
    before = dict(tracking.rejected)
    with tracer.start_as_current_span("GET /", kind=SpanKind.SERVER) as span:
        for call in ALL_CALLS:
            call()
    assert not span.is_recording()
    assert dict(tracking.rejected) == before


def test_after_the_server_span_ended_nothing_happens_and_nothing_raises(recorder: Recorder, strict: None) -> None:
    server = recorder.tracer.start_span("GET /shop", kind=SpanKind.SERVER, attributes=HTTP)
    with trace.use_span(server, end_on_exit=False):
        with recorder.tracer.start_as_current_span("nested"):
            track_event("Shop", "in time")
        server.end()
        for call in ALL_CALLS + INVALID_CALLS:
            call()  # the server span is still current, but ended
        with recorder.tracer.start_as_current_span("late nested span"):
            for call in ALL_CALLS:
                call()  # recorded on the late span, which the exporter cannot move to a hit sent already
    span = recorder.server_span()
    assert events(span) == [("matomo.event", {"matomo.event.category": "Shop", "matomo.event.action": "in time"})]
    assert tracking_attributes(span) == {}


def test_from_a_thread_that_outlives_the_request(recorder: Recorder, strict: None) -> None:
    done = threading.Event()
    errors: list[BaseException] = []

    def late() -> None:
        done.wait(5)
        try:
            track_event("Late", "after the response")
            track_goal(0)
        except BaseException as error:
            errors.append(error)

    with recorder.request():
        thread = threading.Thread(target=contextvars.copy_context().run, args=(late,))
        thread.start()
    done.set()
    thread.join()
    assert errors == []
    assert events(recorder.server_span()) == []


# --- validation -------------------------------------------------------------------------------------------------

INVALID: list[tuple[str, str, Callable[[], None]]] = [
    ("track_event", "empty category", lambda: track_event("", "add")),
    ("track_event", "blank category", lambda: track_event("   ", "add")),
    ("track_event", "empty action", lambda: track_event("Shop", "")),
    ("track_event", "category not a str", lambda: track_event(1, "add")),  # type: ignore[arg-type]
    ("track_event", "action None", lambda: track_event("Shop", None)),  # type: ignore[arg-type]
    ("track_event", "empty name", lambda: track_event("Shop", "add", name="")),
    ("track_event", "name not a str", lambda: track_event("Shop", "add", name=7)),  # type: ignore[arg-type]
    ("track_event", "value a str", lambda: track_event("Shop", "add", value="3")),  # type: ignore[arg-type]
    ("track_event", "value NaN", lambda: track_event("Shop", "add", value=math.nan)),
    ("track_event", "value infinite", lambda: track_event("Shop", "add", value=math.inf)),
    ("track_event", "value a bool", lambda: track_event("Shop", "add", value=True)),
    ("track_goal", "goal id 0", lambda: track_goal(0)),
    ("track_goal", "negative goal id", lambda: track_goal(-2)),
    ("track_goal", "goal id a str", lambda: track_goal("3")),  # type: ignore[arg-type]
    ("track_goal", "goal id a float", lambda: track_goal(3.0)),  # type: ignore[arg-type]
    ("track_goal", "goal id a bool", lambda: track_goal(True)),
    ("track_goal", "revenue a str", lambda: track_goal(1, revenue="9.99")),  # type: ignore[arg-type]
    ("track_goal", "revenue NaN", lambda: track_goal(1, revenue=math.nan)),
    ("track_order", "empty order id", lambda: track_order("", 10.0)),
    ("track_order", "order id an int", lambda: track_order(1001, 10.0)),  # type: ignore[arg-type]
    ("track_order", "revenue a str", lambda: track_order("O-1", "10")),  # type: ignore[arg-type]
    ("track_order", "revenue NaN", lambda: track_order("O-1", math.nan)),
    ("track_order", "revenue None", lambda: track_order("O-1", None)),  # type: ignore[arg-type]
    ("track_order", "tax a str", lambda: track_order("O-1", 10.0, tax="1")),  # type: ignore[arg-type]
    ("track_order", "shipping infinite", lambda: track_order("O-1", 10.0, shipping=math.inf)),
    ("track_order", "item a tuple", lambda: track_order("O-1", 10.0, [("SKU", "Boots", "", 1.0, 1)])),  # type: ignore[list-item]
    ("track_order", "item a dict", lambda: track_order("O-1", 10.0, [{"sku": "SKU"}])),  # type: ignore[list-item]
    ("track_order", "items None", lambda: track_order("O-1", 10.0, None)),  # type: ignore[arg-type]
    ("track_order", "items a single item", lambda: track_order("O-1", 10.0, BOOTS)),  # type: ignore[arg-type]
    ("track_order", "empty item sku", lambda: track_order("O-1", 10.0, [EcommerceItem("")])),
    ("track_order", "item sku an int", lambda: track_order("O-1", 10.0, [EcommerceItem(42)])),  # type: ignore[arg-type]
    ("track_order", "negative quantity", lambda: track_order("O-1", 10.0, [EcommerceItem("S", quantity=-1)])),
    ("track_order", "fractional quantity", lambda: track_order("O-1", 1.0, [EcommerceItem("S", quantity=1.5)])),  # type: ignore[arg-type]
    ("track_order", "item price a str", lambda: track_order("O-1", 1.0, [EcommerceItem("S", price="1")])),  # type: ignore[arg-type]
    ("track_order", "item price NaN", lambda: track_order("O-1", 1.0, [EcommerceItem("S", price=math.nan)])),
    (
        "track_order",
        "one bad item among good",
        lambda: track_order("O-1", 1.0, [BOOTS, EcommerceItem("S", quantity=-3)]),
    ),
    ("track_cart_update", "revenue a str", lambda: track_cart_update("1", [])),  # type: ignore[arg-type]
    ("track_cart_update", "negative quantity", lambda: track_cart_update(1.0, [EcommerceItem("S", quantity=-2)])),
    ("track_cart_update", "item not an EcommerceItem", lambda: track_cart_update(1.0, [object()])),  # type: ignore[list-item]
    ("track_product_view", "empty sku", lambda: track_product_view("")),
    ("track_product_view", "sku an int", lambda: track_product_view(5)),  # type: ignore[arg-type]
    ("track_product_view", "price a str", lambda: track_product_view("S", price="9")),  # type: ignore[arg-type]
    ("track_product_view", "empty category", lambda: track_product_view("S", category="")),
    ("track_site_search", "empty keyword", lambda: track_site_search("")),
    ("track_site_search", "negative count", lambda: track_site_search("boots", results_count=-1)),
    ("track_site_search", "count a str", lambda: track_site_search("boots", results_count="3")),  # type: ignore[arg-type]
    ("track_site_search", "count a float", lambda: track_site_search("boots", results_count=2.0)),  # type: ignore[arg-type]
    ("track_content_impression", "empty name", lambda: track_content_impression("")),
    ("track_content_impression", "piece not a str", lambda: track_content_impression("C", piece=3)),  # type: ignore[arg-type]
    ("set_user_id", "empty user id", lambda: set_user_id("")),
    ("set_user_id", "user id an int", lambda: set_user_id(42)),  # type: ignore[arg-type]
    ("set_user_id", "user id None", lambda: set_user_id(None)),  # type: ignore[arg-type]
    ("set_custom_dimension", "dimension id 0", lambda: set_custom_dimension(0, "x")),
    ("set_custom_dimension", "dimension id a str", lambda: set_custom_dimension("1", "x")),  # type: ignore[arg-type]
    ("set_custom_dimension", "empty value", lambda: set_custom_dimension(1, "")),
    ("set_custom_dimension", "value an int", lambda: set_custom_dimension(1, 5)),  # type: ignore[arg-type]
    ("set_page_title", "empty title", lambda: set_page_title("")),
    ("set_page_title", "title None", lambda: set_page_title(None)),  # type: ignore[arg-type]
]
INVALID_IDS = [f"{call}: {what}" for call, what, _ in INVALID]


@pytest.mark.parametrize(("call_name", "what", "call"), INVALID, ids=INVALID_IDS)
def test_strict_mode_raises_a_clear_value_error(
    recorder: Recorder, strict: None, call_name: str, what: str, call: Callable[[], None]
) -> None:
    before = tracking.rejected[call_name]
    with recorder.request(), pytest.raises(ValueError, match=rf"^otel_matomo\.{call_name}: ") as raised:
        call()
    assert raised.value.__cause__ is None  # the message says it all
    span = recorder.server_span()
    assert events(span) == []
    assert tracking_attributes(span) == {}
    assert tracking.rejected[call_name] == before


@pytest.mark.parametrize(("call_name", "what", "call"), INVALID, ids=INVALID_IDS)
def test_production_mode_skips_counts_and_logs(
    recorder: Recorder,
    lenient: None,
    caplog: pytest.LogCaptureFixture,
    call_name: str,
    what: str,
    call: Callable[[], None],
) -> None:
    before = tracking.rejected[call_name]
    caplog.set_level(logging.WARNING, logger="otel_matomo")
    with recorder.request():
        call()
        track_event("Still", "works")  # the request goes on, and later calls still track
    span = recorder.server_span()
    assert events(span) == [("matomo.event", {"matomo.event.category": "Still", "matomo.event.action": "works"})]
    assert tracking_attributes(span) == {}
    assert tracking.rejected[call_name] == before + 1
    warnings = [record for record in caplog.records if record.name == "otel_matomo"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert warnings[0].getMessage().startswith(f"otel-matomo: ignored {call_name}: ")


def test_production_warnings_are_rate_limited_but_every_skip_is_counted(
    recorder: Recorder, lenient: None, caplog: pytest.LogCaptureFixture
) -> None:
    before = tracking.rejected["track_goal"]
    caplog.set_level(logging.WARNING, logger="otel_matomo")
    with recorder.request():
        for _ in range(50):
            track_goal(0)
    assert tracking.rejected["track_goal"] == before + 50
    assert len([record for record in caplog.records if record.name == "otel_matomo"]) == 1


@pytest.mark.parametrize("value", ["true", "TRUE", "True", "1"])
def test_strict_variable_values(recorder: Recorder, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_MATOMO_STRICT", value)
    with recorder.request(), pytest.raises(ValueError, match="category must not be empty"):
        track_event("", "add")


@pytest.mark.parametrize("value", ["false", "0", "", "no"])
def test_strict_variable_off(recorder: Recorder, lenient: None, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_MATOMO_STRICT", value)
    before = tracking.rejected["track_event"]
    with recorder.request():
        track_event("", "add")  # no exception: refused and counted instead
    assert tracking.rejected["track_event"] == before + 1


def test_strict_mode_is_read_at_each_call(recorder: Recorder, lenient: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with recorder.request():
        track_goal(0)
        monkeypatch.setenv("OTEL_EXPORTER_MATOMO_STRICT", "true")
        with pytest.raises(ValueError, match="goal_id must be positive"):
            track_goal(0)


_DEV_MODE_SCRIPT = textwrap.dedent(
    """
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind
    from otel_matomo import tracking

    provider = TracerProvider()
    provider.add_span_processor(tracking.TrackingProcessor())
    with provider.get_tracer("t").start_as_current_span("GET /", kind=SpanKind.SERVER):
        try:
            tracking.track_event("", "add")
        except ValueError as error:
            print("raised:", error)
        else:
            print("skipped:", dict(tracking.rejected))
    """
)


@pytest.mark.parametrize(
    ("flags", "environment", "expected"),
    [
        (["-X", "dev"], {}, "raised: otel_matomo.track_event: category must not be empty"),
        ([], {"PYTHONDEVMODE": "1"}, "raised: otel_matomo.track_event: category must not be empty"),
        ([], {"OTEL_EXPORTER_MATOMO_STRICT": "true"}, "raised: otel_matomo.track_event: category must not be empty"),
        ([], {}, "skipped: {'track_event': 1}"),
    ],
    ids=["python -X dev", "PYTHONDEVMODE=1", "OTEL_EXPORTER_MATOMO_STRICT=true", "production"],
)
def test_development_mode_is_told_apart_from_production(
    flags: list[str], environment: dict[str, str], expected: str
) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONDEVMODE", "OTEL_EXPORTER_MATOMO_STRICT", "PYTHONWARNINGS")
    }
    env.update(environment)
    result = subprocess.run(
        [sys.executable, *flags, "-c", _DEV_MODE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


@pytest.mark.parametrize(
    "item",
    [
        EcommerceItem("SKU", name=None),  # type: ignore[arg-type]
        EcommerceItem("SKU", name=5),  # type: ignore[arg-type]
        EcommerceItem("SKU", category=None),  # type: ignore[arg-type]
    ],
    ids=["name None", "name an int", "category None"],
)
def test_item_name_and_category_must_be_text(recorder: Recorder, strict: None, item: EcommerceItem) -> None:
    with recorder.request(), pytest.raises(ValueError, match=r"^otel_matomo\.track_order: "):
        track_order("O-1", 1.0, [item])


def test_a_number_too_large_for_a_float_is_a_skip_in_production(recorder: Recorder, lenient: None) -> None:
    before = tracking.rejected["track_event"]
    with recorder.request():
        track_event("Shop", "add", value=10**400)
    assert tracking.rejected["track_event"] == before + 1


def test_a_rejected_order_does_not_leave_a_partial_event(recorder: Recorder, lenient: None) -> None:
    with recorder.request():
        track_order("O-1", 10.0, [BOOTS, EcommerceItem("", price=1.0)])
    assert events(recorder.server_span()) == []


def test_items_json_is_what_matomo_expects(recorder: Recorder) -> None:
    with recorder.request():
        track_order(
            "O-2",
            20,
            [EcommerceItem("SKU-ü", 'Stiefel "Größe" 42', "Schuhe/Herren", 19.99, 1), EcommerceItem("F", price=0.01)],
        )
    ((_, attributes),) = events(recorder.server_span())
    items = json.loads(attributes["matomo.ecommerce.items"])
    assert items == [["SKU-ü", 'Stiefel "Größe" 42', "Schuhe/Herren", 19.99, 1], ["F", "", "", 0.01, 1]]


# --- zero-code set-up -------------------------------------------------------------------------------------------


def test_zero_code_adds_the_tracking_processor_when_the_exporter_is_matomo(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_matomo import autoconfig

    provider = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,matomo")
    monkeypatch.delenv("OTEL_EXPORTER_MATOMO_PROCESSOR", raising=False)
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "")
    autoconfig.pre_instrument()
    processors = provider._active_span_processor._span_processors
    assert [type(processor) for processor in processors] == [TrackingProcessor]
    tracer = provider.get_tracer("test")
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with tracer.start_as_current_span("GET /", kind=SpanKind.SERVER), tracer.start_as_current_span("nested"):
        track_goal(1)
    provider.shutdown()
    server = next(span for span in memory.get_finished_spans() if span.kind is SpanKind.SERVER)
    assert events(server) == [("matomo.goal", {"matomo.goal.id": 1})]


def test_zero_code_adds_no_tracking_processor_for_other_exporters(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_matomo import autoconfig

    provider = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.delenv("OTEL_EXPORTER_MATOMO_PROCESSOR", raising=False)
    autoconfig.pre_instrument()
    assert provider._active_span_processor._span_processors == ()
    provider.shutdown()

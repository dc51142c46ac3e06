"""Tracking from nested spans with ``BatchSpanProcessor(MatomoSpanExporter())`` alone: no registry, so the call
records on the nested span and the exporter moves the facts to the request's server span (``_nested``), within
a batch and across batches, bounded; where it cannot, it says so once."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_matomo import MatomoSpanExporter, set_page_title, set_user_id, track_event, track_goal
from otel_matomo import _diagnostics as diagnostics
from otel_matomo import _nested as nested
from tests.factories import dry_run_settings

HTTP = {
    "http.request.method": "GET",
    "url.path": "/shop",
    "url.scheme": "https",
    "server.address": "shop.example",
    "client.address": "203.0.113.7",
    "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
}


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("_marked", "_waiting", "_recent_servers"):
        monkeypatch.setattr(nested, name, type(getattr(nested, name))())
    monkeypatch.setattr(diagnostics, "_once", diagnostics.OnceLog(logging.getLogger("otel_matomo")))


class App:
    """A provider whose spans land in memory, in the order they end, like a BatchSpanProcessor's queue."""

    def __init__(self) -> None:
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracer = self.provider.get_tracer("shop")
        self.exporter = MatomoSpanExporter(settings=dry_run_settings())

    def spans(self) -> list[ReadableSpan]:
        spans = list(self.memory.get_finished_spans())
        self.memory.clear()
        return spans

    def hits(self, *batches: Sequence[ReadableSpan]) -> list[dict[str, str]]:
        return [dict(hit) for batch in batches for hit in self.exporter.translate(batch)]


@pytest.fixture
def app() -> Iterator[App]:
    made = App()
    yield made
    made.provider.shutdown()


def _events(hits: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(hit["e_c"], hit["e_a"]) for hit in hits if "e_c" in hit]


def test_a_call_in_a_nested_span_reaches_the_request_hit(app: App) -> None:
    with app.tracer.start_as_current_span("GET /shop", kind=SpanKind.SERVER, attributes=HTTP):
        track_event("Shop", "direct")
        with app.tracer.start_as_current_span("load cart"), app.tracer.start_as_current_span("query"):
            track_event("Shop", "nested")
            set_page_title("Cart")
            set_user_id("alice")

    hits = app.hits(app.spans())

    assert hits[0]["action_name"] == "Cart"
    assert hits[0]["uid"] == "alice"
    assert _events(hits) == [("Shop", "direct"), ("Shop", "nested")]
    assert not nested.waiting(), "nothing is left behind"


@pytest.mark.parametrize("split_after", ["query", "load cart"])
def test_facts_wait_when_a_batch_ends_between_a_nested_span_and_its_server_span(app: App, split_after: str) -> None:
    with (
        app.tracer.start_as_current_span("GET /shop", kind=SpanKind.SERVER, attributes=HTTP),
        app.tracer.start_as_current_span("load cart"),
        app.tracer.start_as_current_span("query"),
    ):
        track_goal(4)
    spans = app.spans()
    cut = [span.name for span in spans].index(split_after) + 1

    first, second = app.hits(spans[:cut]), app.hits(spans[cut:])

    assert first == []
    assert [hit.get("idgoal") for hit in second] == [None, "4"]


def test_two_requests_keep_their_own_facts(app: App) -> None:
    for name in ("first", "second"):
        with (
            app.tracer.start_as_current_span(f"GET /{name}", kind=SpanKind.SERVER, attributes=HTTP),
            app.tracer.start_as_current_span("work"),
        ):
            track_event("Shop", name)

    hits = app.hits(app.spans())

    assert [hit.get("e_a") for hit in hits] == [None, "first", None, "second"]
    assert hits[1]["rand"].startswith(hits[0]["rand"] + "-")
    assert hits[3]["rand"].startswith(hits[2]["rand"] + "-")


def test_a_span_that_ends_after_its_request_is_dropped_with_one_warning(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    server = app.tracer.start_span("GET /shop", kind=SpanKind.SERVER, attributes=HTTP)
    with trace.use_span(server, end_on_exit=False):
        with app.tracer.start_as_current_span("in time"):
            track_event("Shop", "in time")
        late = app.tracer.start_span("late task")
        server.end()
        with trace.use_span(late, end_on_exit=True):
            track_event("Shop", "late")
    hits = app.hits(app.spans())

    assert _events(hits) == [("Shop", "in time")]
    assert [record.getMessage() for record in caplog.records if "outlived" in record.getMessage()] == [
        "otel-matomo: tracking calls (track_event ...) that ran in a span that ended after its request's server "
        "span (a task that outlived the request), when the request's hit was already made were not sent to Matomo"
    ]


def test_a_call_outside_any_request_is_not_sent_and_says_so(app: App, caplog: pytest.LogCaptureFixture) -> None:
    with app.tracer.start_as_current_span("nightly job"), app.tracer.start_as_current_span("step"):
        track_event("Jobs", "ran")

    assert app.hits(app.spans()) == []
    assert any("outside a request" in record.getMessage() for record in caplog.records)
    assert not nested.waiting()


def test_waiting_facts_are_bounded(app: App, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(nested, "MAX_WAITING", 3)
    for _ in range(5):
        with (
            app.tracer.start_as_current_span("GET /shop", kind=SpanKind.SERVER, attributes=HTTP),
            app.tracer.start_as_current_span("work"),
        ):
            track_goal(1)
        # each nested span read in its own batch, its server span never
        assert app.hits([span for span in app.spans() if span.kind is not SpanKind.SERVER]) == []

    assert len(nested._waiting) == 3
    assert any("more than 3 others" in record.getMessage() for record in caplog.records)


def test_with_the_registry_facts_go_to_the_server_span_directly(app: App) -> None:
    from otel_matomo import TrackingProcessor

    app.provider.add_span_processor(TrackingProcessor())
    with (
        app.tracer.start_as_current_span("GET /shop", kind=SpanKind.SERVER, attributes=HTTP),
        app.tracer.start_as_current_span("work"),
    ):
        track_goal(2)

    assert not nested.waiting(), "nothing marked: the registry found the server span"
    assert [hit.get("idgoal") for hit in app.hits(app.spans())] == [None, "2"]

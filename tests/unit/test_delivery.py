"""``MatomoSpanProcessor``: a queue and a worker thread between the application and Matomo.

Real SDK spans (and, for long-lived requests, a real FastAPI app under uvicorn) against the local ``matomo.php``
stand-in: drops are counted and logged, nothing ever raises into the application, the worker survives its own
failures, flush and shutdown keep their timeouts, long-lived requests are tracked once, at their start, with the
captured headers, and a forked child delivers its own hits.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import FastAPI, WebSocket
from fastapi.responses import StreamingResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanKind

from otel_matomo import REQUEST_HEADERS, AnalyticsSampler, MatomoSpanProcessor, Settings, request_hook, tracking
from otel_matomo import _retry as retry_module
from tests.conftest import Processors
from tests.factories import SECRET
from tests.matomo_standin import WRITE_TOKEN, Behaviour, MatomoStandIn
from tests.servers import serve_asgi, wait_until

UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
HOUR_NS = 3600 * 1_000_000_000


class StepClock:
    """A clock that moves only when the test says so: schedule delays and backoffs pass at once, never early."""

    def __init__(self) -> None:
        self._monotonic = time.monotonic()
        self._time = time.time()
        self._lock = threading.Lock()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._monotonic += seconds
            self._time += seconds

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def time(self) -> float:
        with self._lock:
            return self._time

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Until ``event`` is set or ``timeout`` seconds of this clock have passed (checked every 5 ms)."""
        deadline = self.monotonic() + timeout
        while not event.wait(0.005):
            if self.monotonic() >= deadline:
                return False
        return True


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="otel_matomo")
    return caplog


def tracer_for(processor: MatomoSpanProcessor, provider: TracerProvider | None = None) -> Any:
    # No atexit hook: it would keep every provider (and its processor) alive, and each fork re-initialises them.
    provider = provider or TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    return provider.get_tracer("test")


def request_span(
    tracer: Any, path: str, *, kind: SpanKind = SpanKind.SERVER, start_ns: int | None = None, **extra: Any
) -> None:
    """One finished HTTP server span, as the instrumentation records it (new semantic conventions)."""
    attributes = {
        "http.request.method": "GET",
        "url.scheme": "http",
        "url.path": path,
        "http.response.status_code": 200,
        "user_agent.original": UA,
        "network.peer.address": "203.0.113.9",
        "http.request.header.host": ("shop.example",),
        **extra,
    }
    span = tracer.start_span(f"GET {path}", kind=kind, attributes=attributes, start_time=start_ns)
    span.end(end_time=None if start_ns is None else start_ns + 5_000_000)


def paths(standin: MatomoStandIn) -> list[str]:
    return [hit["url"].removeprefix("http://shop.example") for hit in standin.tracked]


# What is sent.


def test_every_recording_server_span_is_sent_sampled_or_not(processors: Processors, standin: MatomoStandIn) -> None:
    processor = processors()
    tracer = tracer_for(
        processor, TracerProvider(sampler=AnalyticsSampler(ParentBased(ALWAYS_OFF)), shutdown_on_exit=False)
    )
    for n in range(5):
        request_span(tracer, f"/page/{n}")
    request_span(tracer, "/client-call", kind=SpanKind.CLIENT)
    request_span(tracer, "/internal", kind=SpanKind.INTERNAL)
    assert processor.force_flush(5000)
    assert paths(standin) == [f"/page/{n}" for n in range(5)]
    assert processor.stats.tracked == processor.stats.requests == 5


def test_batches_are_bounded_by_batch_size(processors: Processors, standin: MatomoStandIn) -> None:
    processor = processors(batch_size=10, schedule_delay=timedelta(seconds=5))
    tracer = tracer_for(processor)
    for n in range(25):
        request_span(tracer, f"/page/{n}")
    assert processor.force_flush(5000)
    sizes = [len(received.body["requests"]) for received in standin.received]  # type: ignore[arg-type]
    assert sizes == [10, 10, 5]
    assert paths(standin) == [f"/page/{n}" for n in range(25)]


def test_full_batches_go_at_once_and_the_rest_waits_for_the_schedule(
    processors: Processors, standin: MatomoStandIn
) -> None:
    # Spans are translated as they come (32 at a time), but Matomo gets full batches: a partial batch waits for
    # schedule_delay, so that hits per request stay high under load.
    clock = StepClock()
    processor = processors(batch_size=40, schedule_delay=timedelta(seconds=1.5), clock=clock)
    tracer = tracer_for(processor)
    for n in range(100):
        request_span(tracer, f"/page/{n}")
    wait_until(lambda: len(standin.received) >= 2, "two full batches, with the clock standing still", timeout=2.0)
    wait_until(lambda: not processor._worker._queue and processor._worker._waiting == 20, "the rest in the buffer")
    sizes = [len(received.body["requests"]) for received in standin.received]  # type: ignore[arg-type]
    assert sizes == [40, 40], "full batches went before the schedule; the rest waits for it"
    clock.advance(1.4)
    time.sleep(0.2)  # real time for the worker to act on the step, were it to (it must not: nothing is due)
    assert len(standin.received) == 2, "not before schedule_delay"
    clock.advance(0.1)
    wait_until(lambda: len(standin.received) == 3, "the rest at schedule_delay", timeout=2.0)
    assert len(standin.received[2].body["requests"]) == 20  # type: ignore[arg-type]
    assert paths(standin) == [f"/page/{n}" for n in range(100)]


def test_queued_spans_are_translated_soon_without_waiting_for_a_batch(processors: Processors) -> None:
    # Spans are large object graphs; the worker turns them into hits within a few spans, not a whole batch.
    processor = processors(batch_size=500, schedule_delay=timedelta(seconds=30))
    tracer = tracer_for(processor)
    for n in range(64):
        request_span(tracer, f"/page/{n}")
    wait_until(
        lambda: len(processor._worker._queue) == 0 and processor._worker._waiting == 64,
        "64 hits in the buffer",
        timeout=2.0,
    )


def test_the_processors_own_http_requests_are_not_traced(processors: Processors, standin: MatomoStandIn) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    memory = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        processor = processors()  # its httpx client is built while httpx is instrumented
        tracer = tracer_for(processor, provider)
        request_span(tracer, "/page")
        assert processor.force_flush(5000)
    finally:
        instrumentor.uninstrument()
    assert len(standin.tracked) == 1
    assert [span.name for span in memory.get_finished_spans()] == ["GET /page"], "no span for the POST to Matomo"


def _finished_span_is_freed(processor: MatomoSpanProcessor, kind: SpanKind) -> bool:
    tracer = tracer_for(processor)
    span = tracer.start_span("GET /page", kind=kind, attributes={"http.request.method": "GET", "url.path": "/page"})
    freed = weakref.ref(span)
    span.end()
    del span
    assert processor.force_flush(5000)
    gc.collect()
    return freed() is None


def test_a_finished_internal_span_is_not_kept(processors: Processors) -> None:
    assert _finished_span_is_freed(processors(), SpanKind.INTERNAL)


def test_a_finished_server_span_is_not_kept(processors: Processors) -> None:
    """The tracking registry must forget a server span at its end: the SDK hands on_end a new object."""
    assert _finished_span_is_freed(processors(), SpanKind.SERVER)


# Drops, and nothing into the application.


def test_a_full_queue_drops_counts_and_logs(
    processors: Processors, standin: MatomoStandIn, logs: pytest.LogCaptureFixture
) -> None:
    processor = processors(queue_size=5, batch_size=1)
    tracer = tracer_for(processor)
    standin.behaviour = Behaviour(delay=0.8)
    request_span(tracer, "/first")
    wait_until(lambda: not processor._worker._queue, "the worker took the first span")
    time.sleep(0.2)  # the worker now waits for the slow stand-in
    started = time.monotonic()
    for n in range(20):
        request_span(tracer, f"/burst/{n}")
    assert time.monotonic() - started < 0.5, "on_end never waits for Matomo"
    assert processor.stats.queue_full == 15
    assert [r.message for r in logs.records].count(
        "otel-matomo: dropped a request: the queue of 5 spans is full (Matomo slow or down?)"
    ) == 1, "logged, rate-limited"
    standin.behaviour = Behaviour()
    assert processor.force_flush(10_000)
    assert paths(standin) == ["/first"] + [f"/burst/{n}" for n in range(5)]
    stats = processor.stats
    assert stats.tracked + stats.queue_full == 21


class Garbage:
    """A span-like object whose every attribute is wrong."""

    kind = SpanKind.SERVER
    name = 42
    attributes = 5
    start_time = "yesterday"
    end_time = None

    @property
    def context(self) -> Any:
        raise RuntimeError("no context")


class ServerWithoutContext:
    kind = SpanKind.SERVER
    context = None
    name = "GET /x"
    attributes: ClassVar[dict[str, Any]] = {"http.request.method": ["not", "a", "string"], "url.path": 7}
    start_time = None
    end_time = None


@pytest.mark.parametrize(
    "span", [None, object(), 42, "span", Garbage(), ServerWithoutContext()], ids=lambda span: type(span).__name__
)
def test_on_start_and_on_end_never_raise(
    processors: Processors, standin: MatomoStandIn, logs: pytest.LogCaptureFixture, span: Any
) -> None:
    processor = processors()
    processor.on_start(span, None)
    processor.on_start(span)
    processor.on_end(span)
    tracer = tracer_for(processor)
    request_span(tracer, "/after-garbage")
    assert processor.force_flush(5000)
    assert paths(standin)[-1:] == ["/after-garbage"]
    assert processor._worker.alive


def test_a_garbage_span_reaching_the_worker_is_counted_malformed(
    processors: Processors, standin: MatomoStandIn, logs: pytest.LogCaptureFixture
) -> None:
    class Broken(ServerWithoutContext):
        @property
        def attributes(self) -> Any:
            raise RuntimeError("broken attributes")

    processor = processors()
    processor.on_end(Broken())  # type: ignore[arg-type]
    request_span(tracer_for(processor), "/fine")
    assert processor.force_flush(5000)
    assert paths(standin) == ["/fine"]
    assert processor.stats.malformed == 1
    assert "could not translate" in logs.text


def test_the_worker_survives_its_own_exceptions(
    processors: Processors, standin: MatomoStandIn, logs: pytest.LogCaptureFixture
) -> None:
    processor = processors()
    tracer = tracer_for(processor)
    send = processor._worker._batches.send_waiting
    failures = []

    def failing_once(**kwargs: Any) -> Any:
        if not failures:
            failures.append(True)
            raise RuntimeError("a bug in the worker")
        return send(**kwargs)

    processor._worker._batches.send_waiting = failing_once  # type: ignore[method-assign]
    request_span(tracer, "/kept-through-the-bug")
    wait_until(lambda: "otel-matomo: the delivery worker failed" in logs.text, "the worker met the bug and logged it")
    assert failures
    assert processor._worker.alive
    request_span(tracer, "/after-the-bug")
    assert processor.force_flush(5000)
    # The bug hit between buffering and sending: the buffered hit is sent on the next cycle, nothing is lost.
    assert paths(standin) == ["/kept-through-the-bug", "/after-the-bug"]


def test_a_start_tracked_span_that_cannot_be_read_does_not_stop_the_worker(
    processors: Processors, standin: MatomoStandIn, logs: pytest.LogCaptureFixture
) -> None:
    class Unreadable:
        kind = SpanKind.SERVER
        attributes: ClassVar[dict[str, str]] = {"url.scheme": "ws", "url.path": "/ws"}

        class context:  # the attribute the SDK span has
            span_id = 0xABC
            trace_id = 0xDEF

        def _readable_span(self) -> Any:
            raise RuntimeError("cannot snapshot")

    clock = StepClock()
    processor = processors(clock=clock)
    unreadable = Unreadable()
    processor.on_start(unreadable)  # type: ignore[arg-type]
    clock.advance(0.3)  # past the delay before a start-tracked span is read
    wait_until(lambda: "otel-matomo: the delivery worker failed" in logs.text, "the worker tried to read the span")
    assert "otel-matomo: failed in on_start" not in logs.text, "on_start took the span"
    assert processor._worker.alive
    request_span(tracer_for(processor), "/still-working")
    assert processor.force_flush(5000)
    assert paths(standin) == ["/still-working"]
    tracking.unregister(unreadable)  # type: ignore[arg-type]  # it never ends: the registry must not keep it


def test_hits_lost_to_a_failing_spool_are_counted(processors: Processors, standin: MatomoStandIn) -> None:
    processor = processors()
    tracer = tracer_for(processor)
    add = processor._worker._buffer.add
    failures = []

    def disk_full_once(*args: Any) -> Any:
        if not failures:
            failures.append(True)
            raise sqlite3.OperationalError("database or disk is full")
        return add(*args)

    processor._worker._buffer.add = disk_full_once  # type: ignore[method-assign]
    request_span(tracer, "/lost")
    wait_until(lambda: failures, "the worker met the full disk")
    request_span(tracer, "/delivered")
    assert processor.force_flush(5000)
    stats = processor.stats
    assert stats.requests == 2
    assert stats.tracked + stats.lost + stats.outage_bound + stats.expired == 2


def test_after_a_failure_the_worker_waits_for_the_backoff_then_sends(
    processors: Processors, standin: MatomoStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retry_module, "backoff", lambda attempt: 10.0)
    clock = StepClock()
    processor = processors(schedule_delay=timedelta(seconds=1), clock=clock)
    standin.stop()
    request_span(tracer_for(processor), "/kept")
    clock.advance(1.0)
    wait_until(lambda: processor._worker._batches.failures == 1, "the first attempt failed")
    standin.start()
    cycles = processor._worker.sender_cycles
    clock.advance(5.0)  # schedule delays pass, the backoff does not
    wait_until(lambda: processor._worker.sender_cycles > cycles, "a cycle within the backoff")
    assert standin.received == []
    assert processor._worker._waiting == 1
    clock.advance(5.0)
    wait_until(lambda: paths(standin) == ["/kept"], "sent once the backoff passed")
    assert processor._worker._batches.failures == 0
    assert processor.stats.lost == 0


# Flush and shutdown keep their timeouts.


def test_force_flush_is_true_once_everything_is_delivered(processors: Processors, standin: MatomoStandIn) -> None:
    processor = processors(schedule_delay=timedelta(seconds=10))  # only the flush makes the worker send
    tracer = tracer_for(processor)
    for n in range(3):
        request_span(tracer, f"/page/{n}")
    started = time.monotonic()
    assert processor.force_flush(5000)
    assert time.monotonic() - started < 1.0
    assert len(standin.tracked) == 3


def test_force_flush_from_many_threads_covers_every_span_that_ended_before_it(
    processors: Processors, standin: MatomoStandIn
) -> None:
    """``on_end`` queues without the lock: the worker must still see every span queued before a flush began."""
    processor = processors(schedule_delay=timedelta(seconds=10))
    tracer = tracer_for(processor)
    missing: list[str] = []

    def serve(n: int) -> None:
        for round_ in range(5):
            path = f"/thread/{n}/{round_}"
            request_span(tracer, path)
            if not processor.force_flush(5000) or path not in paths(standin):
                missing.append(path)

    threads = [threading.Thread(target=serve, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert missing == []
    assert len(standin.tracked) == 40


@pytest.mark.parametrize("matomo", ["down", "slow"])
def test_force_flush_is_false_within_its_timeout_when_matomo_cannot_take_the_hits(
    processors: Processors, standin: MatomoStandIn, matomo: str
) -> None:
    processor = processors()
    tracer = tracer_for(processor)
    if matomo == "down":
        standin.stop()
    else:
        standin.behaviour = Behaviour(delay=0.8)
    request_span(tracer, "/waiting")
    started = time.monotonic()
    assert processor.force_flush(300) is False
    assert 0.25 <= time.monotonic() - started < 0.8
    if matomo == "down":
        standin.start()
    else:
        standin.behaviour = Behaviour()
    assert processor.force_flush(10_000), "once Matomo is back, the kept hit goes out"
    assert "/waiting" in paths(standin)


def test_force_flush_after_shutdown_answers_without_raising(processors: Processors) -> None:
    processor = processors()
    processor.shutdown(2000)
    assert processor.force_flush(100) is True


def test_force_flush_after_shutdown_with_a_spool_answers_without_raising(
    processors: Processors, tmp_path: Path
) -> None:
    processor = processors(spool_dir=str(tmp_path))
    processor.shutdown(2000)
    assert processor.force_flush(100) is True


def test_shutdown_with_matomo_down_is_bounded_and_counts_the_loss(
    processors: Processors, standin: MatomoStandIn, logs: pytest.LogCaptureFixture
) -> None:
    processor = processors()
    tracer = tracer_for(processor)
    standin.stop()
    for n in range(10):
        request_span(tracer, f"/page/{n}")
    wait_until(
        lambda: processor._worker._batches.failures >= 1 and processor._worker._waiting == 10,
        "in the buffer, the worker backs off",
    )
    started = time.monotonic()
    processor.shutdown(timeout_millis=1000)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0, f"shutdown took {elapsed:.2f}s with a 1s timeout"
    assert processor.stats.lost == 10
    assert "otel-matomo: lost 10 hits at shutdown" in logs.text
    request_span(tracer, "/after-shutdown")  # ignored, never raises
    processor.shutdown(1000)  # a second shutdown is a no-op


def test_shutdown_with_a_hanging_matomo_returns_within_its_timeout_plus_a_second(
    processors: Processors, standin: MatomoStandIn
) -> None:
    processor = processors(timeout=timedelta(seconds=10))
    tracer = tracer_for(processor)
    standin.behaviour = Behaviour(delay=3.0)
    request_span(tracer, "/page")
    wait_until(lambda: not processor._worker._queue and len(processor._worker._buffer) == 1, "the worker is sending")
    time.sleep(0.1)
    started = time.monotonic()
    processor.shutdown(timeout_millis=200)
    elapsed = time.monotonic() - started
    print(f"\nshutdown with a hanging Matomo (0.2 s timeout): {elapsed:.2f}s")
    assert elapsed < 1.7, f"shutdown took {elapsed:.2f}s with a 0.2s timeout"


def test_shutdown_with_a_spool_keeps_the_hits_for_the_next_process(
    processors: Processors, standin: MatomoStandIn, tmp_path: Path
) -> None:
    first = processors(spool_dir=str(tmp_path))
    tracer = tracer_for(first)
    standin.stop()
    start_ns = time.time_ns() - HOUR_NS
    for n in range(4):
        request_span(tracer, f"/spooled/{n}", start_ns=start_ns + n * 1_000_000)
    wait_until(
        lambda: first._worker._batches.failures >= 1 and first._worker._waiting == 4, "spooled, the worker backs off"
    )
    first.shutdown(1000)
    assert first.stats.lost == 0, "spooled hits are not lost"
    standin.start()
    second = processors(spool_dir=str(tmp_path))
    assert second.force_flush(5000)
    assert paths(standin) == [f"/spooled/{n}" for n in range(4)]
    assert {hit["cdt"] for hit in standin.tracked} == {str(start_ns // 1_000_000_000)}, "the original cdt"


def test_without_a_token_hits_older_than_a_day_are_dropped_and_logged(
    processors: Processors, standin: MatomoStandIn, logs: pytest.LogCaptureFixture
) -> None:
    processor = processors(token=None)
    tracer = tracer_for(processor)
    request_span(tracer, "/yesterday", start_ns=time.time_ns() - 25 * HOUR_NS)
    request_span(tracer, "/now")
    assert processor.force_flush(5000)
    assert paths(standin) == ["/now"]
    assert processor.stats.expired == 1
    assert "otel-matomo: dropped 1 hits (expired)" in logs.text


def test_with_a_token_hits_older_than_a_day_are_replayed_within_the_max_age(
    processors: Processors, standin: MatomoStandIn
) -> None:
    processor = processors(buffer_max_age=timedelta(days=3))
    tracer = tracer_for(processor)
    start_ns = time.time_ns() - 25 * HOUR_NS
    request_span(tracer, "/yesterday", start_ns=start_ns)
    assert processor.force_flush(5000)
    assert paths(standin) == ["/yesterday"]
    assert standin.tracked[0]["cdt"] == str(start_ns // 1_000_000_000)


# Long-lived requests are tracked when they start.


def _long_lived_app() -> FastAPI:
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(0.8)
        return {"done": True}

    @app.get("/events")
    async def events() -> StreamingResponse:
        async def stream() -> Any:
            for n in range(3):
                yield f"data: {n}\n\n"
                await asyncio.sleep(0.3)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/quick")
    def quick() -> dict[str, bool]:
        return {"quick": True}

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"item": item_id}

    @app.websocket("/ws/{room}")
    async def echo(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        async for message in websocket.iter_text():
            await websocket.send_text(f"{room}: {message}")

    return app


@pytest.fixture(params=["capture", "hook"])
def long_lived(
    processors: Processors, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, MatomoSpanProcessor]]:
    """Headers from OpenTelemetry's capture, or kept by ``request_hook`` until the span ends: either way a
    start-tracked hit has them."""
    processor = processors(start_routes=("/slow", "/events", "/quick"))
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    app = _long_lived_app()
    if request.param == "hook":
        monkeypatch.delenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", raising=False)
        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, server_request_hook=request_hook)
    else:
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=provider, http_capture_headers_server_request=list(REQUEST_HEADERS)
        )
    with serve_asgi(app) as base_url:
        yield base_url, processor


BROWSER = {
    "User-Agent": UA,
    "Accept-Language": "fr-CH,fr;q=0.9",
    "Referer": "https://news.example/article",
    "Host": "shop.example",
}


def _hits_for(standin: MatomoStandIn, path: str) -> list[dict[str, str]]:
    return [hit for hit in standin.tracked if hit["url"].partition("?")[0].endswith(path)]


def _assert_start_hit(hit: dict[str, str], action: str) -> None:
    assert hit["action_name"] == action
    assert hit["lang"] == "fr-CH,fr;q=0.9", "captured headers are read after on_start"
    assert hit["urlref"] == "https://news.example/article"
    assert hit["ua"] == UA
    assert "pf_srv" not in hit, "the duration is unknown at the start"


def test_a_slow_request_on_a_start_route_is_tracked_while_it_runs_and_only_once(
    long_lived: tuple[str, MatomoSpanProcessor], standin: MatomoStandIn
) -> None:
    base_url, processor = long_lived
    answers: list[int] = []
    thread = threading.Thread(
        target=lambda: answers.append(httpx.get(f"{base_url}/slow?ref=mail", headers=BROWSER, timeout=10).status_code)
    )
    started = time.monotonic()
    thread.start()
    wait_until(lambda: _hits_for(standin, "/slow"), "the slow request was not tracked at its start", timeout=0.7)
    assert time.monotonic() - started < 0.7
    assert not answers, "the hit came while the request still ran"
    (hit,) = _hits_for(standin, "/slow")
    _assert_start_hit(hit, "GET /slow")
    assert hit["url"] == "http://shop.example/slow?ref=mail"
    thread.join(timeout=10)
    assert answers == [200]
    assert processor.force_flush(5000)
    time.sleep(0.2)
    assert len(_hits_for(standin, "/slow")) == 1, "the end of the request makes no second hit"


def test_a_server_sent_events_stream_is_tracked_while_it_streams(
    long_lived: tuple[str, MatomoSpanProcessor], standin: MatomoStandIn
) -> None:
    base_url, processor = long_lived
    with httpx.stream("GET", f"{base_url}/events", headers=BROWSER, timeout=10) as response:
        lines = response.iter_lines()
        assert next(lines) == "data: 0"
        wait_until(lambda: _hits_for(standin, "/events"), "the stream was not tracked at its start", timeout=1.0)
        (hit,) = _hits_for(standin, "/events")
        _assert_start_hit(hit, "GET /events")
        rest = [line for line in lines if line]
    assert rest == ["data: 1", "data: 2"]
    assert processor.force_flush(5000)
    time.sleep(0.2)
    assert len(_hits_for(standin, "/events")) == 1


def test_a_start_route_request_that_ends_first_is_tracked_once_with_its_duration(
    long_lived: tuple[str, MatomoSpanProcessor], standin: MatomoStandIn
) -> None:
    base_url, processor = long_lived
    assert httpx.get(f"{base_url}/quick", headers=BROWSER).status_code == 200
    assert httpx.get(f"{base_url}/items/3", headers=BROWSER).status_code == 200
    assert processor.force_flush(5000)
    time.sleep(0.4)
    assert processor.force_flush(5000)
    (quick,) = _hits_for(standin, "/quick")
    (item,) = _hits_for(standin, "/items/3")
    assert "pf_srv" in quick, "it ended before it was read at its start: an ordinary hit"
    assert "pf_srv" in item
    assert item["lang"] == quick["lang"] == "fr-CH,fr;q=0.9"


def test_a_websocket_is_tracked_at_its_start_by_default(
    long_lived: tuple[str, MatomoSpanProcessor], standin: MatomoStandIn
) -> None:
    client = pytest.importorskip(
        "websockets.sync.client", reason="needs the websockets package (uvicorn's websocket support, test extra)"
    )
    base_url, processor = long_lived
    url = base_url.replace("http://", "ws://") + "/ws/lobby?lang=ignored"
    headers = {name: value for name, value in BROWSER.items() if name not in ("Host", "User-Agent")}
    with client.connect(url, additional_headers=headers, user_agent_header=UA) as socket:
        socket.send("hello")
        assert socket.recv(timeout=5) == "lobby: hello"
        wait_until(lambda: _hits_for(standin, "/ws/lobby"), "the websocket was not tracked at its start", timeout=1.0)
        (hit,) = _hits_for(standin, "/ws/lobby")
        _assert_start_hit(hit, "GET /ws/{room}")
        assert hit["url"] == base_url + "/ws/lobby?lang=ignored", "ws:// is reported as http://"
        for n in range(3):
            socket.send(f"message {n}")
            socket.recv(timeout=5)
    assert processor.force_flush(5000)
    time.sleep(0.3)
    assert len(_hits_for(standin, "/ws/lobby")) == 1, "closing the websocket makes no second hit"
    assert processor.stats.requests == 1


# fork() (gunicorn --preload): the child gets its own worker; nothing is sent twice.


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_delivers_its_own_hits_and_the_parent_goes_on(
    processors: Processors, standin: MatomoStandIn
) -> None:
    processor = processors(schedule_delay=timedelta(seconds=0.5))
    tracer = tracer_for(processor)
    request_span(tracer, "/before-fork")  # still queued in the parent when it forks
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            request_span(tracer, "/in-child")
            code = 0 if processor.force_flush(5000) and processor.stats.tracked == 1 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child could not deliver its hit"
    request_span(tracer, "/after-fork")
    assert processor.force_flush(5000)
    assert sorted(paths(standin)) == ["/after-fork", "/before-fork", "/in-child"], "each exactly once"
    assert processor.stats.tracked == 2, "the parent counts its own hits only"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_shut_down_processor_stays_down_in_a_forked_child(processors: Processors) -> None:
    processor = processors()
    processor.shutdown(2000)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 3 if processor._worker.alive or not processor._shutdown else 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_shut_down_processor_can_be_garbage_collected(standin: MatomoStandIn) -> None:
    settings = Settings.from_env({}, endpoint=standin.url, site_id=1, token_auth=WRITE_TOKEN, visitor_id_secret=SECRET)
    processor = MatomoSpanProcessor(settings=settings)
    processor.shutdown(2000)
    freed = weakref.ref(processor)
    del processor
    gc.collect()
    assert freed() is None

"""Replay the corpus through real OpenTelemetry-instrumented apps into a real Matomo, at simulated times.

The FastAPI example runs under uvicorn (ASGI), the Flask example under werkzeug (WSGI); both are instrumented by
the OpenTelemetry instrumentations with one ``TracerProvider`` whose ``BatchSpanProcessor`` feeds a
``MatomoSpanExporter``. Requests are sent over real HTTP in the corpus's chronological order.

Simulated time: the SDK stamps a span's start and end with ``opentelemetry.sdk.trace.time_ns`` (and the Flask
instrumentation stamps the start itself with its own ``time_ns``); both are replaced by one simulated clock. Before
each request the clock is frozen at the request's scripted second, so the span starts exactly then however slow
the machine is; when the SERVER span starts, the clock runs again at real speed, ahead by the request's scripted
server time, so the span's duration (hence ``pf_srv``) is that simulated time plus the real few milliseconds. The
next request is only sent once the span has ended (an ASGI span ends after the answer is sent), so no span mixes
two requests' times. Each span's duration is recorded, apart from the exporter, for the server-time assertions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import fastapi_app
import flask_app
import httpx
import opentelemetry.instrumentation.flask as otel_flask
import opentelemetry.sdk.trace as otel_sdk_trace
import pytest
from opentelemetry.context import Context
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from otel_matomo import MatomoSpanExporter, configure_header_capture
from otel_matomo._sending import SendResult
from otel_matomo._transport import HttpSender
from otel_matomo._types import Hit
from tests.real_matomo.corpus import FASTAPI, FLASK, Request
from tests.servers import serve_asgi, serve_wsgi

_real_time_ns = time.time_ns


class SimulatedClock:
    """``time_ns`` as the SDK calls it: frozen at a request's scripted start, then the real clock plus an offset."""

    def __init__(self) -> None:
        self.offset_ns = 0
        self._frozen_ns: int | None = None

    def __call__(self) -> int:
        frozen = self._frozen_ns
        return frozen if frozen is not None else _real_time_ns() + self.offset_ns

    def freeze_at(self, unix_second: int) -> None:
        """Whatever is stamped next happens exactly at ``unix_second``, however long the request takes to arrive."""
        self._frozen_ns = unix_second * 1_000_000_000

    def run(self, ahead_ns: int = 0) -> None:
        """Let time run at real speed from the frozen instant, ``ahead_ns`` later."""
        frozen = self._frozen_ns
        if frozen is None:
            self.offset_ns += ahead_ns
        else:
            self.offset_ns = frozen + ahead_ns - _real_time_ns()
            self._frozen_ns = None

    def reset(self) -> None:
        self.offset_ns = 0
        self._frozen_ns = None


class EndedServerSpans(SpanProcessor):
    """Counts SERVER spans as they end (so the replay can wait for each request's span) and simulates server time.

    The clock stays frozen at the request's scripted start until its SERVER span has started (so the span starts
    exactly then); it then runs, ``server_time_ns`` (set by the replay for the coming request) ahead, so the
    span's end, and with it its duration, includes that simulated time spent serving.
    """

    def __init__(self, clock: SimulatedClock | None) -> None:
        self._clock = clock
        self.server_time_ns = 0
        self.durations_ns: list[int] = []
        self._condition = threading.Condition()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if span.kind is SpanKind.SERVER and self._clock is not None:
            self._clock.run(self.server_time_ns)

    def on_end(self, span: ReadableSpan) -> None:
        if span.kind is SpanKind.SERVER:
            with self._condition:
                self.durations_ns.append((span.end_time or 0) - (span.start_time or 0))
                self._condition.notify_all()

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        with self._condition:
            ended = lambda: len(self.durations_ns) >= count  # noqa: E731
            if not self._condition.wait_for(ended, timeout):
                raise AssertionError(f"only {len(self.durations_ns)} of {count} server spans ended within {timeout} s")


@dataclass
class Delivery:
    """What the exporter handed to Matomo: every bulk batch and how Matomo answered it."""

    batches: list[tuple[list[Hit], SendResult]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def hits(self) -> list[Hit]:
        with self._lock:
            return [hit for batch, _ in self.batches for hit in batch]

    def record(self, hits: Sequence[Hit], result: SendResult) -> None:
        with self._lock:
            self.batches.append((list(hits), result))


@contextmanager
def capture_deliveries(monkeypatch: pytest.MonkeyPatch) -> Iterator[Delivery]:
    """Record the hits of every bulk request the exporter sends (``HttpSender.send``, the last step before HTTP)."""
    delivery = Delivery()
    original: Callable[..., SendResult] = HttpSender.send

    def send(self: HttpSender, hits: Sequence[Hit], *args: Any, **kwargs: Any) -> SendResult:
        result = original(self, hits, *args, **kwargs)
        delivery.record(hits, result)
        return result

    with monkeypatch.context() as patch:
        patch.setattr(HttpSender, "send", send)
        yield delivery


@contextmanager
def header_capture(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The documented in-code set-up (``configure_header_capture()``) into a private environment."""
    with monkeypatch.context() as patch:
        patch.delenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", raising=False)
        configure_header_capture()
        yield


def _fastapi_app(provider: TracerProvider) -> Any:
    app = fastapi_app.create_app()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app


def _flask_app(provider: TracerProvider) -> Any:
    app = flask_app.create_app()
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    return app


@dataclass
class Shop:
    """Both instrumented apps on loopback, traced into one exporter; ``send`` replays one request."""

    provider: TracerProvider
    clients: dict[str, httpx.Client]
    ended: EndedServerSpans
    clock: SimulatedClock | None
    sent: int = 0
    statuses: list[int] = field(default_factory=list)

    @property
    def durations_ns(self) -> list[int]:
        """The duration of each request's server span, in the order sent."""
        return list(self.ended.durations_ns)

    def send(self, request: Request) -> int:
        """Send ``request`` at its scripted time (when time is simulated); wait until its server span ended."""
        if self.clock is not None:
            self.clock.freeze_at(request.at)
            self.ended.server_time_ns = request.server_ms * 1_000_000
        response = self.clients[request.visitor.app].request(
            request.page.method, request.page.path, headers=request.headers()
        )
        self.sent += 1
        # The span ends after the answer is sent (ASGI): wait, or the next freeze would stamp its end.
        self.ended.wait_for(self.sent)
        self.statuses.append(response.status_code)
        return response.status_code

    def flush(self) -> None:
        """Export everything still queued, with the real clock again."""
        if self.clock is not None:
            self.clock.reset()
        assert self.provider.force_flush(30_000), "the BatchSpanProcessor did not flush within 30 s"


@contextmanager
def shop(
    exporter: MatomoSpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    *,
    simulated_time: bool = True,
    apps: Sequence[str] = (FASTAPI, FLASK),
) -> Iterator[Shop]:
    """Serve the instrumented apps with ``exporter`` behind a BatchSpanProcessor; shut all down afterwards."""
    with ExitStack() as stack:
        stack.enter_context(header_capture(monkeypatch))
        clock = None
        if simulated_time:
            clock = SimulatedClock()
            patch = stack.enter_context(monkeypatch.context())
            patch.setattr(otel_sdk_trace, "time_ns", clock)
            patch.setattr(otel_flask, "time_ns", clock)
        ended = EndedServerSpans(clock)
        provider = TracerProvider()
        provider.add_span_processor(ended)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=200, max_export_batch_size=64))
        stack.callback(provider.shutdown)
        clients = {}
        if FASTAPI in apps:
            base = stack.enter_context(serve_asgi(_fastapi_app(provider)))
            clients[FASTAPI] = stack.enter_context(httpx.Client(base_url=base, timeout=10))
        if FLASK in apps:
            base = stack.enter_context(serve_wsgi(_flask_app(provider)))
            clients[FLASK] = stack.enter_context(httpx.Client(base_url=base, timeout=10))
        yield Shop(provider, clients, ended, clock)

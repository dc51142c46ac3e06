"""The zero-code wiring in process: what ``pre_instrument`` does to a provider as the SDK's configurator leaves it.

The configurator adds ``BatchSpanProcessor(exporter_class())`` for each name of ``OTEL_TRACES_EXPORTER``; these
tests build the same provider by hand, run the hooks, and look at the processors, the sampler, the header
capture variables and the arguments instrumentors receive. ``tests/e2e/test_zero_code.py`` runs the real
``opentelemetry-instrument``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from otel_matomo import (
    AnalyticsSampler,
    ConfigurationError,
    MatomoSpanExporter,
    MatomoSpanProcessor,
    autoconfig,
    request_hook,
)
from otel_matomo._instrumentors import chain
from otel_matomo._names import CAPTURE_ENV, REQUEST_HEADERS, RESPONSE_CAPTURE_ENV
from otel_matomo.autoconfig import MatomoZeroCodeExporter
from otel_matomo.tracking import TrackingProcessor

ENV = {
    "OTEL_TRACES_EXPORTER": "console,matomo",
    "OTEL_EXPORTER_MATOMO_ENDPOINT": "http://127.0.0.1:9",
    "OTEL_EXPORTER_MATOMO_SITE_ID": "1",
    "OTEL_EXPORTER_MATOMO_DRY_RUN": "true",
    CAPTURE_ENV: "x-request-id",
    RESPONSE_CAPTURE_ENV: "",
}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("OTEL_EXPORTER_MATOMO_PROCESSOR", "OTEL_EXPORTER_MATOMO_CAPTURE_HEADERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(autoconfig, "hookless_servers", list)  # whatever this machine has installed
    return monkeypatch


@pytest.fixture
def provider(environment: pytest.MonkeyPatch) -> Iterator[TracerProvider]:
    """As the configurator leaves it for ``console,matomo`` (an in-memory exporter standing in for console)."""
    built = TracerProvider(shutdown_on_exit=False)
    environment.setattr(trace, "get_tracer_provider", lambda: built)
    yield built
    autoconfig.post_instrument()
    built.shutdown()


def _configure(provider: TracerProvider) -> tuple[BatchSpanProcessor, BatchSpanProcessor]:
    other = BatchSpanProcessor(InMemorySpanExporter())
    provider.add_span_processor(other)
    matomo = BatchSpanProcessor(MatomoZeroCodeExporter())
    provider.add_span_processor(matomo)
    return other, matomo


def _processors(provider: TracerProvider) -> tuple[Any, ...]:
    return provider._active_span_processor._span_processors


def _fake_instrumentor(module: str, name: str) -> BaseInstrumentor:
    """An instrumentor that records the arguments of ``instrument()``, named like a real one."""

    class Fake(BaseInstrumentor):  # type: ignore[misc]
        received: list[dict[str, Any]] = []  # noqa: RUF012

        def instrumentation_dependencies(self) -> list[str]:
            return []

        def _instrument(self, **kwargs: Any) -> None:
            self.received.append(kwargs)

        def _uninstrument(self, **kwargs: Any) -> None:
            return None

        @staticmethod
        def instrument_app(app: object, exclude_spans: list[str] | None = None) -> None:
            """As FastAPI's instrumentor has it since it can leave out spans."""

    Fake.__module__, Fake.__qualname__ = module, name
    return Fake()


def test_the_processor_takes_the_place_of_the_batch_processor(provider: TracerProvider) -> None:
    other, matomo = _configure(provider)
    sampler = provider.sampler
    autoconfig.pre_instrument()
    first, second = _processors(provider)
    assert first is other, "the other exporter's processor is untouched"
    assert isinstance(second, MatomoSpanProcessor)
    assert second.settings is matomo.span_exporter.settings
    assert provider.sampler is sampler, "without OTEL_EXPORTER_MATOMO_PROCESSOR the sampler is the user's"
    assert matomo._batch_processor._shutdown, "the replaced batch processor's thread is stopped"


def test_with_the_processor_the_hook_replaces_the_request_header_capture(provider: TracerProvider) -> None:
    _configure(provider)
    autoconfig.pre_instrument()
    assert os.environ[CAPTURE_ENV] == "x-request-id", "the user's own list, nothing added"
    assert os.environ[RESPONSE_CAPTURE_ENV] == "location"
    flask = _fake_instrumentor("opentelemetry.instrumentation.flask", "FlaskInstrumentor")
    flask.instrument()
    assert flask.received == [{"request_hook": request_hook}]
    httpx = _fake_instrumentor("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor")
    httpx.instrument()
    assert httpx.received == [{}], "other instrumentors are called as they were"


def test_after_the_instrumentors_the_application_instruments_with_its_own_arguments(provider: TracerProvider) -> None:
    _configure(provider)
    autoconfig.pre_instrument()
    autoconfig.post_instrument()
    fastapi = _fake_instrumentor("opentelemetry.instrumentation.fastapi", "FastAPIInstrumentor")
    fastapi.instrument()
    assert fastapi.received == [{}]


def test_a_hook_of_the_callers_own_still_runs_after_ours(provider: TracerProvider) -> None:
    _configure(provider)
    autoconfig.pre_instrument()
    calls: list[str] = []
    fastapi = _fake_instrumentor("opentelemetry.instrumentation.fastapi", "FastAPIInstrumentor")
    fastapi.instrument(server_request_hook=lambda span, scope: calls.append(scope["path"]))
    hook = fastapi.received[0]["server_request_hook"]
    span = TracerProvider(shutdown_on_exit=False).get_tracer("t").start_span("GET /")
    hook(span, {"type": "http", "path": "/items/1", "headers": [(b"referer", b"https://example.org/")]})
    assert calls == ["/items/1"]


def test_as_the_only_processor_fastapi_records_no_send_or_receive_spans(
    provider: TracerProvider, environment: pytest.MonkeyPatch
) -> None:
    environment.setenv("OTEL_TRACES_EXPORTER", "matomo")
    provider.add_span_processor(BatchSpanProcessor(MatomoZeroCodeExporter()))
    autoconfig.pre_instrument()
    fastapi = _fake_instrumentor("opentelemetry.instrumentation.fastapi", "FastAPIInstrumentor")
    fastapi.instrument()
    chosen = _fake_instrumentor("opentelemetry.instrumentation.fastapi", "FastAPIInstrumentor")
    chosen.instrument(exclude_spans=["receive"])
    flask = _fake_instrumentor("opentelemetry.instrumentation.flask", "FlaskInstrumentor")
    flask.instrument()
    assert fastapi.received[0]["exclude_spans"] == ["receive", "send"]
    assert chosen.received[0]["exclude_spans"] == ["receive"], "the caller's choice stays"
    assert "exclude_spans" not in flask.received[0]
    older = _fake_instrumentor("opentelemetry.instrumentation.fastapi", "FastAPIInstrumentor")
    older.instrument_app = lambda app: None  # type: ignore[method-assign]  # a version without exclude_spans
    older.instrument()
    assert older.received == [{"server_request_hook": request_hook}], "never an argument it would fail on"
    autoconfig.post_instrument()
    later = _fake_instrumentor("opentelemetry.instrumentation.fastapi", "FastAPIInstrumentor")
    later.instrument()
    assert later.received == [{}], "the application's own instrument() calls are its own"


def test_beside_another_exporter_every_span_is_recorded(provider: TracerProvider) -> None:
    _configure(provider)
    autoconfig.pre_instrument()
    fastapi = _fake_instrumentor("opentelemetry.instrumentation.fastapi", "FastAPIInstrumentor")
    fastapi.instrument()
    assert "exclude_spans" not in fastapi.received[0], "the other exporter would miss them"


def test_chain_is_the_hook_itself_without_another() -> None:
    assert chain(None) is request_hook
    assert chain(request_hook) is request_hook


def test_an_instrumentation_without_a_hook_brings_the_capture_back(
    provider: TracerProvider, environment: pytest.MonkeyPatch
) -> None:
    environment.setattr(autoconfig, "hookless_servers", lambda: ["tornado"])
    _configure(provider)
    autoconfig.pre_instrument()
    assert os.environ[CAPTURE_ENV].split(",") == ["x-request-id", *REQUEST_HEADERS]
    assert isinstance(_processors(provider)[1], MatomoSpanProcessor), "the processor and the hook all the same"


def test_the_processor_switch_adds_the_analytics_sampler(
    provider: TracerProvider, environment: pytest.MonkeyPatch
) -> None:
    environment.setenv("OTEL_EXPORTER_MATOMO_PROCESSOR", "true")
    provider.sampler = ParentBased(TraceIdRatioBased(0.1))
    _configure(provider)
    autoconfig.pre_instrument()
    assert isinstance(provider.sampler, AnalyticsSampler)
    assert [type(item) for item in _processors(provider)] == [BatchSpanProcessor, MatomoSpanProcessor]


def test_an_unreachable_processor_list_keeps_the_exporter_path(provider: TracerProvider) -> None:
    provider.add_span_processor(SimpleSpanProcessor(MatomoZeroCodeExporter()))
    provider.add_span_processor(SimpleSpanProcessor(MatomoZeroCodeExporter()))  # two: not rewritten
    autoconfig.pre_instrument()
    assert [type(item) for item in _processors(provider)] == [SimpleSpanProcessor] * 2 + [TrackingProcessor]
    assert os.environ[CAPTURE_ENV].split(",") == ["x-request-id", *REQUEST_HEADERS], "the capture, as before"


def test_a_misconfiguration_is_one_line_and_turns_matomo_off_only(
    provider: TracerProvider, environment: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    environment.setenv("OTEL_EXPORTER_MATOMO_SITE_ID", "abc")
    with caplog.at_level(logging.DEBUG, logger="otel_matomo"):
        other, matomo = _configure(provider)
        autoconfig.pre_instrument()
    assert [record.getMessage() for record in caplog.records] == [
        "otel-matomo: site_id (OTEL_EXPORTER_MATOMO_SITE_ID) is 'abc': expected a positive whole number, the "
        "Matomo idsite, e.g. 1. Matomo export is off; the application and the other exporters keep running."
    ]
    assert _processors(provider) == (other, matomo), "nothing rewritten"
    assert matomo.span_exporter.export([]).name == "SUCCESS"
    assert os.environ[CAPTURE_ENV] == "x-request-id", "no capture arranged for a Matomo that is off"


def test_in_code_the_exporter_still_raises(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("OTEL_EXPORTER_MATOMO_SITE_ID", "abc")
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_MATOMO_SITE_ID"):
        MatomoSpanExporter()


def test_a_kept_exporter_exports_through_the_real_one(environment: pytest.MonkeyPatch) -> None:
    exporter = MatomoZeroCodeExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("GET /", kind=trace.SpanKind.SERVER) as span:
        span.set_attributes({"http.request.method": "GET", "url.path": "/", "url.scheme": "http"})
    provider.shutdown()
    assert exporter._exporter is not None
    assert exporter._exporter.stats.requests == 1

"""Runtime diagnostics from span counts, span shapes and the SDK exporters; each logged once per process."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import SimpleNamespace

import pytest
from opentelemetry.trace import SpanKind

from otel_matomo import _diagnostics as diagnostics
from otel_matomo._diagnostics import (
    OnceLog,
    SpanDiagnostics,
    report_sdk_exporters,
    report_span_counts,
    span_count_messages,
)


@pytest.fixture(autouse=True)
def fresh_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts in a new "process" as far as log_once is concerned."""
    monkeypatch.setattr(diagnostics, "_once", OnceLog(logging.getLogger("otel_matomo")))


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="otel_matomo")
    return caplog


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "otel_matomo"]


# --- log_once ----------------------------------------------------------------------------------------------


def test_log_once_logs_each_key_once(logs: pytest.LogCaptureFixture) -> None:
    assert diagnostics.log_once("a", logging.WARNING, "first %s", "a")
    assert not diagnostics.log_once("a", logging.WARNING, "again %s", "a")
    assert diagnostics.log_once("b", logging.ERROR, "first b")

    assert messages(logs) == ["first a", "first b"]
    assert [record.levelno for record in logs.records] == [logging.WARNING, logging.ERROR]


def test_a_broken_handler_does_not_raise() -> None:
    logger = logging.getLogger("otel_matomo.test.broken")

    class Broken(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise RuntimeError("broken")

        def handleError(self, record: logging.LogRecord) -> None:
            raise RuntimeError("really broken")

    logger.addHandler(Broken())
    logger.propagate = False
    try:
        assert not OnceLog(logger).log("k", logging.ERROR, "message")
    finally:
        logger.handlers.clear()
        logger.propagate = True


# --- spans ---------------------------------------------------------------------------------------------------


def test_span_counts_without_problems() -> None:
    assert span_count_messages(0, 0) == []
    assert span_count_messages(50, 0, 0) == []


def test_server_spans_without_http_attributes() -> None:
    ((key, message),) = span_count_messages(5, 2)

    assert key == "spans-without-http"
    assert message.startswith("2 of 5 SERVER spans carried no HTTP method")
    assert "HTTP server instrumentation" in message
    assert span_count_messages(3, 3)[0][1].startswith("all SERVER spans")


def test_http_spans_without_any_captured_header() -> None:
    assert span_count_messages(9, 0, 9) == []  # too few to judge

    (_, (key, message)) = span_count_messages(12, 2, 10)

    assert key == "spans-without-headers"
    assert "none of 10 HTTP server spans" in message
    assert "configure_header_capture()" in message


def test_report_span_counts_logs_each_once(logs: pytest.LogCaptureFixture) -> None:
    report_span_counts(5, 1)
    report_span_counts(50, 10)
    report_span_counts(20, 0, 20)

    logged = messages(logs)
    assert len(logged) == 2
    assert logged[0].startswith("otel-matomo: 1 of 5 SERVER spans")
    assert "none of 20 HTTP server spans" in logged[1]


def span(kind: SpanKind, attributes: Mapping[str, object] | None) -> SimpleNamespace:
    return SimpleNamespace(kind=kind, attributes=attributes)


HTTP = {"http.request.method": "GET", "url.path": "/"}
HTTP_WITH_HEADERS = {"http.method": "GET", "http.request.header.host": ("shop.example",)}


def test_span_diagnostics_on_real_shapes(logs: pytest.LogCaptureFixture) -> None:
    watcher = SpanDiagnostics()

    watcher.observe([span(SpanKind.INTERNAL, {}), span(SpanKind.CLIENT, HTTP)])
    assert messages(logs) == []  # no server span: nothing to say

    watcher.observe([span(SpanKind.SERVER, HTTP)] * 6)
    assert messages(logs) == []  # too few yet
    watcher.observe([span(SpanKind.SERVER, HTTP)] * 4 + [span(SpanKind.SERVER, {"rpc.system": "grpc"})])

    logged = messages(logs)
    assert len(logged) == 2
    assert "1 of 11 SERVER spans carried no HTTP method" in logged[0]
    assert "none of 10 HTTP server spans" in logged[1]


def test_span_diagnostics_stay_quiet_once_headers_were_seen(logs: pytest.LogCaptureFixture) -> None:
    watcher = SpanDiagnostics()

    watcher.observe([span(SpanKind.SERVER, HTTP_WITH_HEADERS)])
    watcher.observe([span(SpanKind.SERVER, HTTP)] * 50)

    assert messages(logs) == []


def test_span_diagnostics_stop_after_the_limit(logs: pytest.LogCaptureFixture) -> None:
    watcher = SpanDiagnostics(limit=5)

    watcher.observe([span(SpanKind.SERVER, HTTP_WITH_HEADERS)] * 5)
    watcher.observe([span(SpanKind.SERVER, None)] * 5)  # would be reported, but the watch is over

    assert messages(logs) == []


def test_span_diagnostics_survive_strange_spans(logs: pytest.LogCaptureFixture) -> None:
    watcher = SpanDiagnostics()

    watcher.observe([object(), span(SpanKind.SERVER, None), None])  # type: ignore[list-item]

    assert "all SERVER spans" in messages(logs)[0]


def test_span_diagnostics_on_sdk_spans(logs: pytest.LogCaptureFixture) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /", kind=SpanKind.SERVER, attributes={"http.method": "GET"}):
        pass
    with tracer.start_as_current_span("grpc", kind=SpanKind.SERVER, attributes={"rpc.system": "grpc"}):
        pass

    SpanDiagnostics().observe(exporter.get_finished_spans())

    assert messages(logs) == [
        "otel-matomo: 1 of 2 SERVER spans carried no HTTP method (http.request.method or http.method) and produce "
        "no Matomo hit. Expected for gRPC, websocket or message-queue server spans; if these are web requests, "
        "check that an HTTP server instrumentation (asgi, wsgi, fastapi, flask, django ...) creates the spans and "
        "that no other SERVER span wraps them"
    ]


def test_report_sdk_exporters_logs_errors_once(logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"OTEL_TRACES_EXPORTER": "matomo", "OTEL_METRICS_EXPORTER": "nope", "OTEL_LOGS_EXPORTER": "none"}

    report_sdk_exporters(env)
    report_sdk_exporters(env)

    # Only the SDK's messages: another test's background thread may log on the same logger meanwhile.
    (record,) = [
        record for record in logs.records if record.name == "otel_matomo" and "exporter" in record.getMessage()
    ]
    assert record.levelno == logging.ERROR
    assert "'nope' is not installed" in record.getMessage()


def test_configurator_problem_names_the_fix() -> None:
    from otel_matomo._sdk_exporters import configurator_problem

    assert configurator_problem({}, configurators={"configurator"}) is None
    missing = configurator_problem({}, configurators=())
    assert missing is not None
    assert "Fix: pip install opentelemetry-distro" in missing
    named = configurator_problem({"OTEL_PYTHON_CONFIGURATOR": "mine"}, configurators={"configurator"})
    assert named is not None
    assert "OTEL_PYTHON_CONFIGURATOR names the configurator 'mine'" in named


def test_why_untraced_covers_missing_disabled_and_fastapi_for_starlette() -> None:
    from otel_matomo._frameworks import FRAMEWORKS, why_untraced

    django, flask, _, starlette = FRAMEWORKS
    assert why_untraced(flask, {"flask"}, {}) is None
    assert "pip install 'otel-matomo[flask]'" in (why_untraced(flask, {"django"}, {}) or "")
    disabled = why_untraced(django, {"django"}, {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "flask, django"})
    assert "remove django from OTEL_PYTHON_DISABLED_INSTRUMENTATIONS" in (disabled or "")
    assert why_untraced(flask, {"flask"}, {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "*"}) is not None
    assert why_untraced(starlette, {"fastapi"}, {}) is None


def test_the_import_watch_runs_each_action_once_and_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from otel_matomo._frameworks import _ImportWatch

    seen: list[str] = []
    watch = _ImportWatch({"json.tool": lambda: seen.append("json.tool")})
    monkeypatch.setattr(sys, "meta_path", [watch, *sys.meta_path])
    monkeypatch.delitem(sys.modules, "json.tool", raising=False)

    import json.tool  # noqa: F401

    assert seen == ["json.tool"]
    assert watch not in sys.meta_path

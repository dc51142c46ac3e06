"""Start-up diagnostics from synthetic environments, span counts and Matomo answers; each logged once."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import SimpleNamespace

import pytest
from opentelemetry.trace import SpanKind

from otel_matomo import _diagnostics as diagnostics
from otel_matomo._diagnostics import (
    SANITIZE_ENV,
    OnceLog,
    SpanDiagnostics,
    header_capture,
    header_capture_messages,
    report_sdk_exporters,
    report_span_counts,
    sdk_exporter_problems,
    semconv_mode,
    span_count_messages,
)
from otel_matomo._names import CAPTURE_ENV, REQUEST_HEADERS
from otel_matomo._settings import ConfigurationError


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


# --- header capture ----------------------------------------------------------------------------------------


def test_nothing_configured() -> None:
    capture = header_capture({})

    assert capture.captured == ()
    assert capture.missing == REQUEST_HEADERS
    assert not capture.added_by_otel_matomo
    (message,) = header_capture_messages(capture)
    assert "no request headers are captured" in message
    assert "no referrer and no language" in message
    assert "configure_header_capture()" in message


@pytest.mark.parametrize("exporters", ["matomo", "otlp,matomo", " otlp , Matomo "])
def test_otel_matomo_adds_its_headers_when_the_traces_exporter_names_it(exporters: str) -> None:
    capture = header_capture({"OTEL_TRACES_EXPORTER": exporters, CAPTURE_ENV: "x-request-id"})

    assert capture.added_by_otel_matomo
    assert capture.captured == REQUEST_HEADERS
    assert capture.patterns[0] == "x-request-id"
    assert header_capture_messages(capture) == []


def test_capture_opt_out() -> None:
    capture = header_capture({"OTEL_TRACES_EXPORTER": "matomo", "OTEL_EXPORTER_MATOMO_CAPTURE_HEADERS": "false"})

    assert not capture.added_by_otel_matomo
    assert capture.captured == ()


def test_invalid_opt_out_value_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_MATOMO_CAPTURE_HEADERS"):
        header_capture({"OTEL_TRACES_EXPORTER": "matomo", "OTEL_EXPORTER_MATOMO_CAPTURE_HEADERS": "perhaps"})


def test_patterns_match_whole_names_case_insensitively() -> None:
    capture = header_capture({CAPTURE_ENV: "Referer, accept-.*, sec-ch-ua.*, host, x-forwarded-.*, forwarded, dnt"})

    assert "referer" in capture.captured
    assert "accept-language" in capture.captured
    assert "sec-ch-ua-platform-version" in capture.captured
    assert capture.missing == ("sec-gpc",)
    (message,) = header_capture_messages(capture)
    assert message.startswith("request headers not captured: sec-gpc (")
    assert "opt-out signals" in message
    assert "referrer" not in message


def test_a_partial_pattern_does_not_capture() -> None:
    capture = header_capture({CAPTURE_ENV: "refer,accept"})  # the instrumentation uses fullmatch

    assert capture.captured == ()


def test_missing_client_hint_variants_name_their_consequence() -> None:
    everything_but_model = ",".join(header for header in REQUEST_HEADERS if header != "sec-ch-ua-model")

    (message,) = header_capture_messages(header_capture({CAPTURE_ENV: everything_but_model}))

    assert "sec-ch-ua-model" in message
    assert "client hints" in message


def test_sanitized_headers_are_reported() -> None:
    # The instrumentation redacts when a sanitize pattern is found anywhere in the name (re.search).
    capture = header_capture({CAPTURE_ENV: ".*", SANITIZE_ENV: "refer,language"})

    assert capture.sanitized == ("referer", "accept-language")
    (message,) = header_capture_messages(capture)
    assert "redacts referer, accept-language" in message
    assert "[REDACTED]" in message


def test_invalid_regular_expressions_are_reported() -> None:
    capture = header_capture({CAPTURE_ENV: "referer,(unclosed"})

    assert capture.invalid_patterns == ("(unclosed",)
    assert any("'(unclosed'" in message for message in header_capture_messages(capture))


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (None, "old"),
        ("", "old"),
        ("http", "new"),
        ("http/dup", "dup"),
        ("http,http/dup", "dup"),
        ("database, http", "new"),
        ("database/dup", "old"),
        ("HTTP", "new"),
    ],
)
def test_semconv_mode(value: str | None, mode: str) -> None:
    env = {} if value is None else {"OTEL_SEMCONV_STABILITY_OPT_IN": value}

    assert semconv_mode(env) == mode


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


# --- the SDK's exporters under opentelemetry-instrument ------------------------------------------------------


def only(*installed: tuple[str, str]) -> diagnostics.Finder:
    """A finder that knows exactly ``installed`` (group suffix, name) pairs."""

    def find(group: str, name: str) -> str | None:
        suffix = group.removeprefix("opentelemetry_").removesuffix("_exporter")
        return None if (suffix, name) in installed else "is not installed"

    return find


MATOMO_ONLY = only(("traces", "matomo"))


def test_distro_defaults_without_the_otlp_exporter_fail() -> None:
    problems = sdk_exporter_problems({"OTEL_TRACES_EXPORTER": "matomo"}, distro=True, find=MATOMO_ONLY)

    assert len(problems) == 2
    metrics, logs = problems
    assert metrics.startswith("OTEL_METRICS_EXPORTER is unset, which opentelemetry-distro turns into 'otlp'")
    assert "the metrics exporter 'otlp_proto_grpc' is not installed" in metrics
    assert "run untraced" in metrics
    assert "OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none" in metrics
    assert logs.startswith("OTEL_LOGS_EXPORTER is unset")


def test_none_disables_the_signal() -> None:
    env = {"OTEL_TRACES_EXPORTER": "matomo", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "None"}

    assert sdk_exporter_problems(env, distro=True, find=MATOMO_ONLY) == []


def test_without_the_distro_unset_means_no_exporter() -> None:
    assert sdk_exporter_problems({"OTEL_TRACES_EXPORTER": "matomo"}, distro=False, find=MATOMO_ONLY) == []


def test_an_empty_variable_is_not_unset() -> None:
    env = {"OTEL_TRACES_EXPORTER": "matomo", "OTEL_METRICS_EXPORTER": "", "OTEL_LOGS_EXPORTER": ""}

    assert sdk_exporter_problems(env, distro=True, find=MATOMO_ONLY) == []


def test_otlp_resolves_by_protocol() -> None:
    asked: list[tuple[str, str]] = []

    def find(group: str, name: str) -> str | None:
        asked.append((group, name))
        return None

    env = {
        "OTEL_TRACES_EXPORTER": "otlp,matomo",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "grpc",
    }
    assert sdk_exporter_problems(env, distro=True, find=find) == []

    assert asked == [
        ("opentelemetry_traces_exporter", "otlp_proto_http"),
        ("opentelemetry_traces_exporter", "matomo"),
        ("opentelemetry_metrics_exporter", "otlp_proto_http"),
        ("opentelemetry_logs_exporter", "otlp_proto_grpc"),
    ]


def test_unknown_protocol_and_explicit_missing_exporter() -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "zipkin,matomo",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon",
        "OTEL_LOGS_EXPORTER": "none",
    }

    traces, metrics = sdk_exporter_problems(env, distro=False, find=MATOMO_ONLY)

    assert traces.startswith("OTEL_TRACES_EXPORTER names 'zipkin', but the traces exporter 'zipkin' is not installed")
    assert "remove 'zipkin' from OTEL_TRACES_EXPORTER" in traces
    assert "'carrier-pigeon'" in metrics


def test_real_entry_points_of_this_environment() -> None:
    # The SDK's own console exporters and otel-matomo's entry point are installed here; nothing else is asked.
    env = {"OTEL_TRACES_EXPORTER": "matomo,console", "OTEL_METRICS_EXPORTER": "console", "OTEL_LOGS_EXPORTER": "none"}
    assert sdk_exporter_problems(env, distro=True, load=True) == []

    (problem,) = sdk_exporter_problems({**env, "OTEL_METRICS_EXPORTER": "no-such-exporter"}, distro=True)
    assert "'no-such-exporter' is not installed" in problem


def test_an_exporter_that_fails_to_import(monkeypatch: pytest.MonkeyPatch) -> None:
    class Point:
        name = "broken"

        def load(self) -> object:
            raise ImportError("libgrpc.so: cannot open shared object file")

    monkeypatch.setattr(diagnostics, "entry_points", lambda group: [Point()])

    (problem,) = sdk_exporter_problems(
        {"OTEL_TRACES_EXPORTER": "broken", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"},
        distro=True,
        load=True,
    )

    assert "fails to import (ImportError: libgrpc.so" in problem


def test_report_sdk_exporters_logs_errors_once(logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"OTEL_TRACES_EXPORTER": "matomo", "OTEL_METRICS_EXPORTER": "nope", "OTEL_LOGS_EXPORTER": "none"}

    report_sdk_exporters(env)
    report_sdk_exporters(env)

    (record,) = [record for record in logs.records if record.name == "otel_matomo"]
    assert record.levelno == logging.ERROR
    assert "'nope' is not installed" in record.getMessage()


# --- Matomo refusing every hit with cip ----------------------------------------------------------------------

"""Why opentelemetry-instrument would fail to set up the SDK: missing or broken exporters, from synthetic
environments and entry-point finders, and from this environment's real entry points."""

from __future__ import annotations

import pytest

from otel_matomo import _sdk_exporters
from otel_matomo._sdk_exporters import Finder, sdk_exporter_problems


def only(*installed: tuple[str, str]) -> Finder:
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

    monkeypatch.setattr(_sdk_exporters, "entry_points", lambda group: [Point()])

    (problem,) = sdk_exporter_problems(
        {"OTEL_TRACES_EXPORTER": "broken", "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none"},
        distro=True,
        load=True,
    )

    assert "fails to import (ImportError: libgrpc.so" in problem

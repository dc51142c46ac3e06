"""``AnalyticsSampler`` and the ``matomo_*`` sampler entry points: trace sampling never samples analytics away.

DROP becomes RECORD_ONLY for SERVER spans only, with the request's attributes and the trace state kept; every
other decision and every other span kind is the delegate's own.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

from otel_matomo import AnalyticsSampler
from otel_matomo import sampling as sampling_module

REQUEST = {"http.request.method": "GET", "url.path": "/items/7", "url.scheme": "https"}
OTHER_KINDS = [SpanKind.INTERNAL, SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER, None]
ENTRY_POINTS = {
    "matomo_parentbased_traceidratio": "otel_matomo.sampling:parentbased_traceidratio",
    "matomo_traceidratio": "otel_matomo.sampling:traceidratio",
    "matomo_parentbased_always_off": "otel_matomo.sampling:parentbased_always_off",
}


class Fixed(Sampler):
    """A delegate that answers one fixed result and remembers how it was asked."""

    def __init__(self, result: SamplingResult) -> None:
        self.result = result
        self.calls: list[tuple[Any, ...]] = []

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        self.calls.append((parent_context, trace_id, name, kind, attributes, links, trace_state))
        return self.result

    def get_description(self) -> str:
        return "Fixed"


def remote_parent(*, sampled: bool, state: TraceState | None = None) -> Context:
    context = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT),
        trace_state=state or TraceState(),
    )
    return trace.set_span_in_context(NonRecordingSpan(context))


# The wrapper's decisions.


@pytest.mark.parametrize("delegate", [ALWAYS_OFF, ParentBased(ALWAYS_OFF), TraceIdRatioBased(0.0)], ids=str)
def test_drop_becomes_record_only_for_server_spans_with_the_original_attributes(delegate: Sampler) -> None:
    result = AnalyticsSampler(delegate).should_sample(None, random.getrandbits(128), "GET", SpanKind.SERVER, REQUEST)
    assert result.decision is Decision.RECORD_ONLY
    assert result.decision.is_recording()
    assert not result.decision.is_sampled()
    assert dict(result.attributes) == REQUEST, "built-in samplers return no attributes on DROP: ours must"


@pytest.mark.parametrize("kind", OTHER_KINDS, ids=str)
def test_other_kinds_keep_the_delegates_drop(kind: SpanKind | None) -> None:
    delegate = Fixed(SamplingResult(Decision.DROP))
    result = AnalyticsSampler(delegate).should_sample(None, 1, "work", kind, REQUEST)
    assert result is delegate.result


@pytest.mark.parametrize("decision", [Decision.RECORD_AND_SAMPLE, Decision.RECORD_ONLY])
@pytest.mark.parametrize("kind", [SpanKind.SERVER, *OTHER_KINDS], ids=str)
def test_recording_decisions_are_the_delegates_own(decision: Decision, kind: SpanKind | None) -> None:
    delegate = Fixed(SamplingResult(decision, {"sampler.added": "yes"}, TraceState([("vendor", "x")])))
    result = AnalyticsSampler(delegate).should_sample(None, 1, "GET", kind, REQUEST)
    assert result is delegate.result


def test_the_delegate_is_asked_with_every_argument() -> None:
    delegate = Fixed(SamplingResult(Decision.DROP))
    parent = remote_parent(sampled=False)
    links = [Link(SpanContext(1, 2, is_remote=True))]
    state = TraceState([("k", "v")])
    AnalyticsSampler(delegate).should_sample(parent, 42, "GET /", SpanKind.SERVER, REQUEST, links, state)
    assert delegate.calls == [(parent, 42, "GET /", SpanKind.SERVER, REQUEST, links, state)]


def test_the_trace_state_of_an_unsampled_remote_parent_is_kept() -> None:
    state = TraceState([("vendor", "opaque-value"), ("other", "1")])
    parent = remote_parent(sampled=False, state=state)
    sampler = AnalyticsSampler(ParentBased(TraceIdRatioBased(1.0)))  # an unsampled parent decides DROP
    result = sampler.should_sample(parent, 0x0AF7651916CD43DD8448EB211C80319C, "GET", SpanKind.SERVER, REQUEST)
    assert result.decision is Decision.RECORD_ONLY
    assert result.trace_state == state


def test_a_trace_state_the_delegate_returns_with_drop_wins() -> None:
    own = TraceState([("mine", "1")])
    parent = remote_parent(sampled=False, state=TraceState([("parent", "2")]))
    result = AnalyticsSampler(Fixed(SamplingResult(Decision.DROP, None, own))).should_sample(
        parent, 1, "GET", SpanKind.SERVER, REQUEST
    )
    assert result.trace_state == own


def test_without_trace_state_from_the_delegate_the_parents_is_used() -> None:
    state = TraceState([("parent", "2")])
    parent = remote_parent(sampled=False, state=state)
    result = AnalyticsSampler(Fixed(SamplingResult(Decision.DROP, None, None))).should_sample(
        parent, 1, "GET", SpanKind.SERVER, REQUEST
    )
    assert result.trace_state == state
    assert (
        not AnalyticsSampler(Fixed(SamplingResult(Decision.DROP)))
        .should_sample(None, 1, "GET", SpanKind.SERVER, REQUEST)
        .trace_state
    ), "no parent: an empty trace state"


def test_no_attributes_stay_no_attributes() -> None:
    result = AnalyticsSampler(ALWAYS_OFF).should_sample(None, 1, "GET", SpanKind.SERVER, None)
    assert result.decision is Decision.RECORD_ONLY
    assert not result.attributes


def test_description_names_the_delegate() -> None:
    sampler = AnalyticsSampler(ParentBased(TraceIdRatioBased(0.25)))
    assert sampler.get_description() == f"AnalyticsSampler{{{ParentBased(TraceIdRatioBased(0.25)).get_description()}}}"


def test_a_ratio_sampler_keeps_its_share_of_traces_and_every_server_span() -> None:
    sampler = AnalyticsSampler(TraceIdRatioBased(0.1))
    rng = random.Random(1234)
    ids = [rng.getrandbits(128) for _ in range(10_000)]
    results = [sampler.should_sample(None, trace_id, "GET", SpanKind.SERVER, REQUEST) for trace_id in ids]
    assert all(result.decision.is_recording() for result in results)
    sampled = sum(result.decision.is_sampled() for result in results)
    assert 850 <= sampled <= 1150  # binomial(10000, 0.1): mean 1000, sd 30


def test_with_an_sdk_provider_unsampled_requests_are_recorded_and_their_children_dropped() -> None:
    """What processors see: the server span (recording, not sampled), never its unsampled children."""
    memory = InMemorySpanExporter()
    started: list[Any] = []

    class Spy(SimpleSpanProcessor):
        def on_start(self, span: Any, parent_context: Context | None = None) -> None:
            started.append(span)

    provider = TracerProvider(sampler=AnalyticsSampler(ParentBased(ALWAYS_OFF)))
    provider.add_span_processor(Spy(memory))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /items/{id}", kind=SpanKind.SERVER, attributes=REQUEST) as server:
        with tracer.start_as_current_span("db", kind=SpanKind.CLIENT) as child:
            assert not child.is_recording()
        assert server.is_recording()
        assert not server.get_span_context().trace_flags.sampled
    assert [span.name for span in started] == ["GET /items/{id}"]
    assert dict(started[0].attributes) == REQUEST
    assert memory.get_finished_spans() == (), "SimpleSpanProcessor exports sampled spans only"


# The entry points.


def _load(name: str) -> Any:
    (point,) = entry_points(group="opentelemetry_traces_sampler", name=name)
    return point.load()


@pytest.mark.parametrize(("name", "target"), ENTRY_POINTS.items())
def test_entry_points_are_registered(name: str, target: str) -> None:
    (point,) = entry_points(group="opentelemetry_traces_sampler", name=name)
    assert point.value == target
    assert point.load() is getattr(sampling_module, target.rpartition(":")[2])


@pytest.mark.parametrize(
    ("name", "arg", "inner"),
    [
        ("matomo_parentbased_traceidratio", "0.1", ParentBased(TraceIdRatioBased(0.1))),
        ("matomo_parentbased_traceidratio", " 0.25 ", ParentBased(TraceIdRatioBased(0.25))),
        ("matomo_parentbased_traceidratio", None, ParentBased(TraceIdRatioBased(1.0))),
        ("matomo_parentbased_traceidratio", 0.5, ParentBased(TraceIdRatioBased(0.5))),
        ("matomo_traceidratio", "0.1", TraceIdRatioBased(0.1)),
        ("matomo_traceidratio", "0", TraceIdRatioBased(0.0)),
        ("matomo_traceidratio", "1", TraceIdRatioBased(1.0)),
        ("matomo_parentbased_always_off", None, ParentBased(ALWAYS_OFF)),
        ("matomo_parentbased_always_off", "ignored", ParentBased(ALWAYS_OFF)),
    ],
)
def test_entry_points_build_the_wrapped_sampler_from_the_arg(name: str, arg: Any, inner: Sampler) -> None:
    sampler = _load(name)(arg)
    assert isinstance(sampler, AnalyticsSampler)
    assert sampler.get_description() == f"AnalyticsSampler{{{inner.get_description()}}}"


@pytest.mark.parametrize("name", ["matomo_parentbased_traceidratio", "matomo_traceidratio"])
@pytest.mark.parametrize("arg", ["abc", "", "1.5", "-0.1", "nan", "10%"])
def test_a_bad_arg_is_a_value_error_naming_the_variable_and_value(name: str, arg: str) -> None:
    with pytest.raises(ValueError, match="OTEL_TRACES_SAMPLER_ARG") as error:
        _load(name)(arg)
    assert repr(arg) in str(error.value)
    assert "0 to 1" in str(error.value)


def test_the_sdk_loads_the_entry_point_with_the_arg_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """How ``opentelemetry-instrument`` builds it: ``OTEL_TRACES_SAMPLER`` names the entry point."""
    from opentelemetry.sdk._configuration import _import_sampler

    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    sampler = _import_sampler("matomo_parentbased_traceidratio")
    assert isinstance(sampler, AnalyticsSampler)
    assert "TraceIdRatioBased{0.1}" in sampler.get_description()
    result = sampler.should_sample(None, 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF, "GET", SpanKind.SERVER, REQUEST)
    assert result.decision is Decision.RECORD_ONLY


def test_the_sdk_reports_a_bad_arg_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK catches the factory's ValueError: the message that reaches the log must name the variable."""
    from opentelemetry.sdk._configuration import _import_sampler

    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "ten percent")
    with caplog.at_level(logging.WARNING):
        assert _import_sampler("matomo_traceidratio") is None
    assert "OTEL_TRACES_SAMPLER_ARG is 'ten percent'" in caplog.text


def test_wrapping_always_on_changes_nothing() -> None:
    result = AnalyticsSampler(ALWAYS_ON).should_sample(None, 1, "GET", SpanKind.SERVER, REQUEST)
    assert result.decision is Decision.RECORD_AND_SAMPLE

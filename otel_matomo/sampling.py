"""``AnalyticsSampler``: trace sampling that never samples analytics away.

A DROP decision yields a ``NonRecordingSpan`` that no processor ever sees, so a 10 % trace sampler would give
Matomo 10 % of the requests. This wrapper turns DROP into RECORD_ONLY for SERVER spans only: the span is
recorded (``MatomoSpanProcessor`` sees it) but not sampled (``BatchSpanProcessor`` and the trace backend skip it,
and downstream services see the unsampled flag). Other spans keep the delegate's decision, so the cost of
unsampled traces stays that of one span per request.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, TraceState, get_current_span
from opentelemetry.util.types import Attributes

__all__ = [
    "AnalyticsSampler",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "traceidratio",
]


class AnalyticsSampler(Sampler):
    """Wraps ``delegate``; every SERVER span the delegate drops is recorded, unsampled, for analytics."""

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

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
        """The delegate's decision, except DROP becomes RECORD_ONLY for SERVER spans."""
        result = self._delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if result.decision is not Decision.DROP or kind is not SpanKind.SERVER:
            return result
        # Built-in samplers return no attributes on DROP: pass the original ones, or the request is lost.
        state = result.trace_state
        if state is None:
            state = get_current_span(parent_context).get_span_context().trace_state
        return SamplingResult(Decision.RECORD_ONLY, attributes, state)

    def get_description(self) -> str:
        """``AnalyticsSampler{<delegate>}``."""
        return f"AnalyticsSampler{{{self._delegate.get_description()}}}"


def _ratio(arg: str | float | None) -> float:
    try:
        rate = float(arg) if arg is not None else 1.0
    except ValueError:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG is {arg!r}: expected a ratio from 0 to 1, e.g. 0.1") from None
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"OTEL_TRACES_SAMPLER_ARG is {arg!r}: expected a ratio from 0 to 1, e.g. 0.1")
    return rate


def parentbased_traceidratio(arg: str | float | None = None) -> Sampler:
    """Entry point ``matomo_parentbased_traceidratio``: ``parentbased_traceidratio`` that keeps analytics."""
    return AnalyticsSampler(ParentBased(TraceIdRatioBased(_ratio(arg))))


def traceidratio(arg: str | float | None = None) -> Sampler:
    """Entry point ``matomo_traceidratio``: ``traceidratio`` that keeps analytics."""
    return AnalyticsSampler(TraceIdRatioBased(_ratio(arg)))


def parentbased_always_off(arg: str | float | None = None) -> Sampler:  # noqa: ARG001 - the factory signature
    """Entry point ``matomo_parentbased_always_off``: no traces at all, every request for analytics."""
    return AnalyticsSampler(ParentBased(ALWAYS_OFF))

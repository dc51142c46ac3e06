"""The spans of an OTLP export request as the gateway needs them, whichever encoding carried them, and the checks
both decoders share.

Two kinds of problems are told apart, because OTLP answers them differently: a payload whose structure is broken
is refused whole (:class:`MalformedPayload`, HTTP 400, which clients do not retry), while a single span that
cannot be used (no span id, no start time) raises :class:`Unusable`, is only counted and reported back in
``partial_success``, so one bad span never costs the rest of its batch. Apart from the decoders so that the
protobuf and the JSON decoder build the same records through one :func:`record`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from otel_matomo._types import SpanEvent

SPAN_KIND_SERVER = 2
STATUS_ERROR = 2
"""``Status.code`` ERROR in OTLP."""
_SERVICE_NAME = "service.name"


class MalformedPayload(ValueError):
    """The body is not an ``ExportTraceServiceRequest`` in the announced encoding; the message says why."""


@dataclass(frozen=True)
class SpanRecord:
    """One span as the gateway needs it, whatever encoding carried it."""

    name: str
    kind: int
    attributes: Mapping[str, object]
    start_ns: int
    end_ns: int
    span_id: int
    resource: Mapping[str, object] = field(default_factory=dict)
    """The attributes of the resource that produced the span (``service.name`` selects the Matomo site)."""
    events: tuple[SpanEvent, ...] = ()
    """The span's ``matomo.*`` events (facts an application tracked with ``otel_matomo.tracking`` or its kin); the
    decoders keep no other event, since exception events and the like would only cost memory."""
    failed: bool = False
    """The span's status is ERROR."""
    scope: str = ""
    """The name of the instrumentation scope that recorded the span: it says where ``client.address`` comes
    from."""

    @property
    def service_name(self) -> str | None:
        """The resource's ``service.name``, when it has one."""
        name = self.resource.get(_SERVICE_NAME)
        return name if isinstance(name, str) and name else None


@dataclass
class TraceRequest:
    """A decoded export request: the usable spans, and why the others were not usable."""

    spans: list[SpanRecord] = field(default_factory=list)
    rejections: Counter[str] = field(default_factory=Counter)
    """Reason -> number of spans, for ``partial_success``."""


class Unusable(Exception):
    """One span cannot be used; the payload around it may still be fine."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OverLimit(Unusable):
    """One span is over a per-span decoding limit (``_otlp_limits``): rejected alone, even where a malformed part
    would only be skipped."""


def record(
    *,
    name: str,
    kind: int,
    attributes: dict[str, object],
    span_id: bytes,
    start: int,
    end: int,
    resource: dict[str, object],
    events: tuple[SpanEvent, ...] = (),
    failed: bool = False,
    scope: str = "",
) -> SpanRecord:
    """Checks shared by both encodings: what a hit cannot do without."""
    if len(span_id) != 8 or not any(span_id):
        raise Unusable("without a valid spanId (8 bytes, 16 hex digits in JSON)")
    if start <= 0:
        raise Unusable("without a startTimeUnixNano")
    return SpanRecord(
        name=name,
        kind=kind,
        attributes=attributes,
        start_ns=start,
        # A missing end leaves a zero duration rather than a negative one.
        end_ns=end if end >= start else start,
        span_id=int.from_bytes(span_id, "big"),
        resource=resource,
        events=events,
        failed=failed,
        scope=scope,
    )

"""Tracking facts recorded on nested spans, moved to their request's server span as the exporter reads them.

With ``BatchSpanProcessor(MatomoSpanExporter())`` alone nothing registers which server span a nested span
belongs to, so a tracking call inside a nested span records its facts on that span (``tracking`` marks it
here). The exporter reads every span of a batch in the order they ended, a request's nested spans before its
server span: :func:`collect` keeps a marked span's facts under its parent's id, re-keys them when that parent is
an intermediate span, and :func:`take` hands them to the server span at last. Facts wait across batches (a
batch may end between a nested span and its server span), bounded by :data:`MAX_WAITING` ids, oldest dropped.

Facts cannot be moved, and a warning says so once per process, when their span has no server span above it in
this process, or ended after it (a task that outlived its request): the request's hit was sent already. The
gateway, which reads other processes' spans, does not move them. Cost while no call needed this: one check of
two empty dicts per span read.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from opentelemetry.sdk.trace import ReadableSpan

from otel_matomo import _names as names
from otel_matomo._diagnostics import log_once
from otel_matomo._types import SpanEvent

MAX_WAITING = 4096
"""Span ids with facts waiting for their server span, and marked spans not read yet: the oldest go first."""
_RECENT_SERVERS = 4096
"""Server spans read while facts were waiting: a nested span that ends after its server span finds it here."""


@dataclass
class Facts:
    """The tracking attributes and span events of nested spans, for one server span."""

    attributes: dict[str, object] = field(default_factory=dict)
    events: list[SpanEvent] = field(default_factory=list)

    def add(self, other: Facts) -> None:
        """Gather ``other`` (a later value of an attribute wins, as on one span)."""
        self.attributes.update(other.attributes)
        self.events.extend(other.events)


_lock = threading.Lock()
_marked: OrderedDict[int, None] = OrderedDict()
_waiting: OrderedDict[int, Facts] = OrderedDict()
"""Id of the span the facts are waiting for (a parent not read yet) -> the facts."""
_recent_servers: OrderedDict[int, None] = OrderedDict()


def mark(span_id: int) -> None:
    """``tracking`` recorded facts on the nested span ``span_id``: :func:`collect` will pick them up."""
    with _lock:
        _marked[span_id] = None
        if len(_marked) > MAX_WAITING:
            _marked.popitem(last=False)


def waiting() -> bool:
    """Whether anything was marked or waits: the span reader asks it for every span, so it is cheap."""
    return bool(_marked) or bool(_waiting)


def collect(span: ReadableSpan) -> None:
    """Read a non-server span: keep its own facts (when marked) and those waiting for it, for its parent."""
    context = span.context
    if context is None:
        return
    with _lock:
        facts = _waiting.pop(context.span_id, None)
        if context.span_id in _marked:
            del _marked[context.span_id]
            facts = _own_facts(span, facts)
        if facts is None:
            return
        parent = span.parent.span_id if span.parent is not None else None
        if parent is None:
            _dropped("outside-request", "ran inside spans that belong to no HTTP server span (outside a request)")
        elif parent in _recent_servers:
            _dropped(
                "after-request",
                "ran in a span that ended after its request's server span (a task that outlived the request), "
                "when the request's hit was already made",
            )
        else:
            _wait(parent, facts)


def take(span_id: int) -> Facts | None:
    """The facts of nested spans for the server span ``span_id``, read now; ``None`` when there are none."""
    with _lock:
        _recent_servers[span_id] = None
        if len(_recent_servers) > _RECENT_SERVERS:
            _recent_servers.popitem(last=False)
        return _waiting.pop(span_id, None)


def merged(
    attributes: Mapping[str, object], events: list[SpanEvent], facts: Facts
) -> tuple[dict[str, object], list[SpanEvent]]:
    """A server span's attributes and events with ``facts`` of its nested spans added (theirs win), by time."""
    return {**attributes, **facts.attributes}, sorted([*events, *facts.events], key=lambda event: event[1])


def _own_facts(span: ReadableSpan, waiting_facts: Facts | None) -> Facts:
    facts = Facts(
        {
            key: value
            for key, value in (span.attributes or {}).items()
            if key.startswith(names.ATTRIBUTE_PREFIX) or key in names.USER_IDS
        },
        [
            (event.name, event.timestamp, event.attributes or {})
            for event in span.events
            if event.name in names.TRACKING_EVENTS
        ],
    )
    if waiting_facts is not None:
        facts.add(waiting_facts)  # an attribute both set on the span and in a descendant: the descendant's wins
    return facts


def _wait(parent: int, facts: Facts) -> None:
    """Keep ``facts`` for ``parent`` (with what already waits for it), dropping the oldest beyond the bound."""
    already = _waiting.get(parent)
    if already is not None:
        already.add(facts)  # a sibling that ended earlier waits already: the later values win
        facts = already
    _waiting[parent] = facts
    if len(_waiting) > MAX_WAITING:
        _waiting.popitem(last=False)
        _dropped("too-many", f"waited for their server span among more than {MAX_WAITING} others")


def _dropped(key: str, why: str) -> None:
    log_once(
        f"nested-tracking-{key}",
        logging.WARNING,
        "otel-matomo: tracking calls (track_event ...) that %s were not sent to Matomo",
        why,
    )

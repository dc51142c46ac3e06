"""``MatomoSpanProcessor``: every request reaches Matomo, whatever the trace sampler keeps, and outages lose nothing.

Why a processor of our own rather than ``BatchSpanProcessor(MatomoSpanExporter())``:

- ``BatchSpanProcessor`` skips spans that were recorded but not sampled, so trace sampling would sample
  analytics too; this processor takes every *recording* server span (see :class:`~otel_matomo.AnalyticsSampler`).
- It sees ``on_start``, so long-lived requests (websockets, server-sent events) can be tracked when they start.
- A failed batch is kept and retried while new requests keep coming, bounded in hits, bytes and age, or written
  to an SQLite spool that survives restarts; ``BatchSpanProcessor`` drops a failed batch.

``on_start`` and ``on_end`` only append to the delivery worker's bounded queue (dropping, counted, when full):
translation, the spool and sending happen on the worker's threads (``_worker``).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind

from otel_matomo import _hooks as hooks
from otel_matomo import _names as names
from otel_matomo import _stop, tracking
from otel_matomo._clock import Clock, SystemClock
from otel_matomo._diagnostics import SpanDiagnostics
from otel_matomo._pipeline import Pipeline
from otel_matomo._ratelimit import RateLimitedLog
from otel_matomo._settings import Settings, configured
from otel_matomo._spans import read_span
from otel_matomo._types import ExportStats, HttpRequest, RawHeaders
from otel_matomo._worker import DeliveryWorker

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from otel_matomo._arguments import MatomoOptions

_logger = logging.getLogger("otel_matomo")
_START_DELAY = 0.2
"""Seconds after ``on_start`` before a start-tracked span is read: instrumentations set the captured request
headers right *after* starting the span, so ``on_start`` itself never sees them."""


_Queued = tuple[ReadableSpan, RawHeaders | None]
"""A finished server span and the headers ``otel_matomo.request_hook`` kept for it."""


@dataclass
class _Started:
    span: Span
    at: float
    """The clock's ``monotonic()`` at ``on_start``."""


class MatomoSpanProcessor(SpanProcessor):
    """Sends every recording HTTP server span to Matomo from the delivery worker, with retry buffer and spool.

    Keyword options as for :class:`~otel_matomo.MatomoSpanExporter` (:class:`~otel_matomo.exporter.MatomoOptions`,
    durations as ``datetime.timedelta``), or ``settings=``. Add it to the ``TracerProvider`` instead of a
    ``BatchSpanProcessor`` around the exporter, not in addition to one. ``_clock`` (private, for tests) replaces
    the system clocks, so that a test steps through delays.
    """

    _lock: threading.Lock
    _started: dict[int, _Started]
    _started_sent: set[int]
    _shutdown: bool
    _pipeline: Pipeline
    _worker: DeliveryWorker[_Queued]

    def __init__(
        self, *, settings: Settings | None = None, _clock: Clock | None = None, **options: Unpack[MatomoOptions]
    ) -> None:
        self._settings = configured(type(self).__name__, settings, options)
        self._clock = _clock if _clock is not None else SystemClock()
        self._log = RateLimitedLog(_logger)
        self._diagnostics = SpanDiagnostics()
        self._init_state()
        hooks.add_processor()
        _stop.register(self)
        if hasattr(os, "register_at_fork"):
            reinit = weakref.WeakMethod(self._after_fork)
            os.register_at_fork(after_in_child=lambda: (method := reinit()) and method())

    @property
    def stats(self) -> ExportStats:
        """Running totals of this process."""
        return self._pipeline.stats

    @property
    def settings(self) -> Settings:
        """The validated configuration in use."""
        return self._settings

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:  # noqa: ARG002 - SDK signature
        """Remember server spans of long-lived requests, to track them while they run."""
        try:
            if span.kind is not SpanKind.SERVER:
                return
            tracking.register(span)
            if self._tracks_at_start(span):
                with self._lock:
                    self._started[span.context.span_id] = _Started(span, self._clock.monotonic())
        except Exception:  # noqa: BLE001 - never into the application
            self._log.log(logging.ERROR, "on-start", "otel-matomo: failed in on_start", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a finished server span for the worker; drop and count when the queue is full."""
        try:
            if span.kind is not SpanKind.SERVER:
                return
            tracking.unregister(span)
            if self._shutdown:
                return
            span_id = span.context.span_id if span.context is not None else 0
            raw_headers = hooks.take(span_id)
            # The lock only for long-lived requests tracked at their start (rare): the queue's append is atomic,
            # and a lock on every request is contention the application pays for. The worker adds to
            # _started_sent before it removes from _started, so one of them is never empty.
            if (self._started or self._started_sent) and self._started_ended(span_id):
                return
            self._worker.offer((span, raw_headers))
        except Exception:  # noqa: BLE001 - never into the application
            self._log.log(logging.ERROR, "on-end", "otel-matomo: failed in on_end", exc_info=True)

    def _started_ended(self, span_id: int) -> bool:
        """Forget a start-tracked span at its end; ``True`` when it was already sent (never twice)."""
        with self._lock:
            self._started.pop(span_id, None)
            if span_id in self._started_sent:
                self._started_sent.discard(span_id)
                return True
            return False

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Translate and send everything queued; ``True`` when nothing is left waiting within the timeout."""
        return self._worker.flush(timeout_millis / 1000)

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Flush what can be flushed within the timeout, then stop, and log the totals; never hangs the application."""
        if self._shutdown:
            return
        self._shutdown = True
        hooks.remove_processor()
        self._worker.close(timeout_millis / 1000)
        self._pipeline.metrics.observe_queue_length(None)

    def _init_state(self) -> None:
        self._pipeline = Pipeline(self._settings)
        self._lock = threading.Lock()
        self._started = {}
        self._started_sent = set()
        self._shutdown = False
        self._worker = DeliveryWorker(
            self._pipeline,
            _read_queued,
            clock=self._clock,
            name="span processor",
            collect=self._take_started,
            observe=self._observe,
        )
        self._pipeline.metrics.observe_queue_length(_queue_length(weakref.ref(self)))

    def _after_fork(self) -> None:
        """In a forked child (gunicorn --preload): fresh locks, queue, connections and worker threads."""
        if not self._shutdown:  # a processor shut down before the fork stays shut down in the child
            self._init_state()

    def _observe(self, queued: list[_Queued]) -> None:
        # A span whose headers came through the hook has none among its attributes: not a capture problem.
        self._diagnostics.observe(span for span, raw_headers in queued if raw_headers is None)

    def _take_started(self, final: bool) -> list[_Queued]:
        """Start-tracked spans old enough for their captured headers to be set (see ``_START_DELAY``)."""
        ready = []
        now = self._clock.monotonic()
        with self._lock:
            for span_id, started in list(self._started.items()):
                if final or now - started.at >= _START_DELAY:
                    self._started_sent.add(span_id)  # first: on_end reads both without the lock
                    del self._started[span_id]
                    # A consistent snapshot of a live span, with the headers the hook keeps until it ends.
                    ready.append((started.span._readable_span(), hooks.peek(span_id)))
        return ready

    def _tracks_at_start(self, span: Span) -> bool:
        attributes = span.attributes or {}
        # The old convention's name first: Python's default, and each miss raises KeyError inside the SDK's mapping.
        scheme = attributes.get(names.SCHEME[1]) or attributes.get(names.SCHEME[0])
        if scheme in ("ws", "wss"):
            return True
        if not self._settings.start_routes:
            return False
        candidates = [
            value
            for value in (attributes.get(names.ROUTE), attributes.get(names.PATH), attributes.get(names.TARGET))
            if isinstance(value, str)
        ]
        return any(
            fnmatch.fnmatchcase(candidate.partition("?")[0], pattern)
            for pattern in self._settings.start_routes
            for candidate in candidates
        )


def _read_queued(queued: _Queued) -> HttpRequest | None:
    span, raw_headers = queued
    return read_span(span, raw_headers)


def _queue_length(processor: weakref.ref[MatomoSpanProcessor]) -> Callable[[], int]:
    """The queue-length gauge's callback, holding the processor weakly so that the gauge never keeps it alive."""

    def length() -> int:
        alive = processor()
        return 0 if alive is None else alive._worker.waiting

    return length

"""``MatomoSpanProcessor``: every request reaches Matomo, whatever the trace sampler keeps, and outages lose nothing.

Why a processor of our own rather than ``BatchSpanProcessor(MatomoSpanExporter())``:

- ``BatchSpanProcessor`` skips spans that were recorded but not sampled, so trace sampling would sample
  analytics too; this processor takes every *recording* server span (see :class:`~otel_matomo.AnalyticsSampler`).
- It sees ``on_start``, so long-lived requests (websockets, server-sent events) can be tracked when they start.
- A failed batch is kept and retried while new requests keep coming, bounded in hits, bytes and age, or written
  to an SQLite spool that survives restarts; ``BatchSpanProcessor`` drops a failed batch.

``on_start`` and ``on_end`` only append to a bounded deque (dropping, counted, when full): translation, I/O and
retries happen on one worker thread with instrumentation suppressed, so our own HTTP calls are never traced.
"""

from __future__ import annotations

import collections
import fnmatch
import logging
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind

from otel_matomo import _hooks as hooks
from otel_matomo import _stop, tracking
from otel_matomo._buffer import HitBuffer, MemoryBuffer, SpoolBuffer
from otel_matomo._clock import Clock, SystemClock
from otel_matomo._diagnostics import SpanDiagnostics
from otel_matomo._pipeline import Pipeline
from otel_matomo._ratelimit import RateLimitedLog
from otel_matomo._sending import Outcome
from otel_matomo._settings import Settings
from otel_matomo._transport import backoff
from otel_matomo._types import DropReason, ExportStats, HttpRequest, RawHeaders
from otel_matomo.exporter import read_span

_logger = logging.getLogger("otel_matomo")
_START_DELAY = 0.2
"""Seconds after ``on_start`` before a start-tracked span is read: instrumentations set the captured request
headers right *after* starting the span, so ``on_start`` itself never sees them."""
_DAY = 86_400.0
_TRANSLATE_EVERY = 32
"""Queued spans that wake the worker to translate them. Spans are big object graphs: kept for a whole batch
they outlive the collector's young generations and make its full passes, which pause the application, longer
and more frequent. Hits are small; they wait in the buffer for a full batch (or ``schedule_delay``)."""


_Queued = tuple[ReadableSpan, RawHeaders | None]
"""A finished server span and the headers ``otel_matomo.request_hook`` kept for it."""


@dataclass
class _Started:
    span: Span
    at: float
    """The clock's ``monotonic()`` at ``on_start``."""


class MatomoSpanProcessor(SpanProcessor):
    """Sends every recording HTTP server span to Matomo from a worker thread, with retry buffer and spool.

    Keyword options as for :class:`~otel_matomo.MatomoSpanExporter` (those of ``Settings.from_env``), or
    ``settings=``. Add it to the
    ``TracerProvider`` instead of a ``BatchSpanProcessor`` around the exporter, not in addition to one.
    ``_clock`` (private, for tests) replaces the system clocks, so that a test steps through delays.
    """

    _pipeline: Pipeline
    _buffer: HitBuffer
    _lock: threading.Lock
    _queue: collections.deque[_Queued]
    _started: dict[int, _Started]
    _started_sent: set[int]
    _flush_requests: list[threading.Event]
    _wake: threading.Event
    _shutdown: bool
    _failures: int
    _next_attempt: float
    _send_at: float
    """The clock's ``monotonic()`` when what the buffer holds is sent, full batch or not (every ``schedule_delay``)."""
    _worker: threading.Thread
    _diagnostics: SpanDiagnostics
    _waiting: int

    def __init__(self, *, settings: Settings | None = None, _clock: Clock | None = None, **options: Any) -> None:
        if settings is not None and options:
            raise TypeError("pass either settings= or keyword options, not both")
        self._settings = settings or Settings.from_env(**options)
        self._clock = _clock if _clock is not None else SystemClock()
        self._log = RateLimitedLog(_logger)
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
            tracking.register(span)
            if span.kind is SpanKind.SERVER and self._tracks_at_start(span):
                with self._lock:
                    self._started[span.context.span_id] = _Started(span, self._clock.monotonic())
        except Exception:  # noqa: BLE001 - never into the application
            self._log.log(logging.ERROR, "on-start", "otel-matomo failed in on_start", exc_info=True)

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a finished server span for the worker; drop and count when the queue is full."""
        try:
            tracking.unregister(span)
            if span.kind is not SpanKind.SERVER or self._shutdown:
                return
            span_id = span.context.span_id if span.context is not None else 0
            raw_headers = hooks.take(span_id)
            # The lock only for long-lived requests tracked at their start (rare): the deque's append and the
            # worker's popleft are atomic, and a lock on every request is contention the application pays for.
            # The worker adds to _started_sent before it removes from _started, so one of them is never empty.
            if (self._started or self._started_sent) and self._started_ended(span_id):
                return
            queue = self._queue
            if len(queue) >= self._settings.queue_size:
                self._pipeline.count_dropped(DropReason.QUEUE_FULL, 1)
                self._log.log(
                    logging.WARNING,
                    "queue-full",
                    "otel-matomo dropped a request: the queue of %d spans is full (Matomo slow or down?)",
                    self._settings.queue_size,
                )
                return
            queue.append((span, raw_headers))
            if len(queue) >= _TRANSLATE_EVERY and not self._wake.is_set():
                self._wake.set()
        except Exception:  # noqa: BLE001 - never into the application
            self._log.log(logging.ERROR, "on-end", "otel-matomo failed in on_end", exc_info=True)

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
        if self._shutdown:
            return self._waiting == 0  # the worker closed the buffer (an SQLite connection with a spool)
        done = threading.Event()
        with self._lock:
            self._flush_requests.append(done)
        self._wake.set()
        return done.wait(timeout_millis / 1000)

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Flush what can be flushed within the timeout, then stop; never hangs the application."""
        if self._shutdown:
            return
        self._shutdown = True
        hooks.remove_processor()
        self._wake.set()
        self._worker.join(timeout_millis / 1000)
        if self._worker.is_alive():
            # Ends a backoff wait at once; an HTTP request in flight still runs to its own timeout, on a daemon
            # thread that does not hold the application back.
            self._pipeline.close()
            self._worker.join(1.0)

    # The worker thread.

    def _init_state(self) -> None:
        self._pipeline = Pipeline(self._settings)
        self._diagnostics = SpanDiagnostics()
        self._waiting = 0
        # The gauge reads a count the worker keeps: the spool's length is an SQLite query on the worker's connection.
        self._pipeline.metrics.observe_queue_length(_queue_length(weakref.ref(self)))
        self._buffer = self._make_buffer()
        self._lock = threading.Lock()
        self._queue = collections.deque()
        self._started = {}
        self._started_sent = set()
        self._flush_requests = []
        self._wake = threading.Event()
        self._shutdown = False
        self._failures = 0
        self._next_attempt = 0.0
        self._send_at = self._clock.monotonic() + self._settings.schedule_delay
        self._worker = threading.Thread(target=self._run, name="otel-matomo", daemon=True)
        self._worker.start()

    def _make_buffer(self) -> HitBuffer:
        max_age = self._settings.buffer_max_age
        if self._settings.token_auth is None:
            # Matomo refuses a cdt older than 24 h without a token: keep no hit that long.
            max_age = min(max_age, _DAY - 60)
        if self._settings.spool_dir is not None:
            lease = self._settings.timeout * 2 + 30
            return SpoolBuffer(self._settings.spool_dir, self._settings.buffer_max_hits, max_age, lease)
        return MemoryBuffer(self._settings.buffer_max_hits, self._settings.buffer_max_bytes, max_age)

    def _after_fork(self) -> None:
        """In a forked child (gunicorn --preload): fresh locks, queue, connections and worker thread."""
        if not self._shutdown:  # a processor shut down before the fork stays shut down in the child
            self._init_state()

    def _run(self) -> None:
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            while True:
                self._clock.wait(self._wake, max(self._send_at - self._clock.monotonic(), 0.0))
                self._wake.clear()
                stopping = self._shutdown
                try:
                    self._cycle(final=stopping)
                except Exception:  # noqa: BLE001 - the worker must survive any bug
                    self._log.log(logging.ERROR, "worker", "otel-matomo worker failed", exc_info=True)
                if stopping:
                    break
        finally:
            self._close_buffer()
            detach(token)

    def _cycle(self, *, final: bool) -> None:
        with self._lock:
            flushes, self._flush_requests = self._flush_requests, []
            started = self._take_started(final)
        # Drained after the flush requests are taken: a span queued before force_flush() was called is in this cycle.
        queue = self._queue
        spans = [queue.popleft() for _ in range(len(queue))]
        # A span whose headers came through the hook has none among its attributes: not a capture problem.
        self._diagnostics.observe(span for span, raw_headers in spans if raw_headers is None)
        hits = self._pipeline.translate([*started, *spans], _read_queued).hits
        if hits:
            try:
                drops = self._buffer.add(hits, self._clock.time())
            except Exception:  # noqa: BLE001 - a full disk under the spool, say: counted, then the worker goes on
                self._pipeline.count_dropped(DropReason.LOST, len(hits))
                self._log.log(
                    logging.ERROR,
                    "buffer",
                    "otel-matomo lost %d hits: they could not be buffered",
                    len(hits),
                    exc_info=True,
                )
                return
            for reason, count in drops.counts.items():
                self._pipeline.count_dropped(reason, count)
                self._log.log(
                    logging.WARNING,
                    reason.value,
                    "otel-matomo dropped %d hits (%s): Matomo has been unreachable",
                    count,
                    reason.value,
                )
        waiting = len(self._buffer)
        now = self._clock.monotonic()
        if flushes or final or now >= self._send_at:
            self._send_at = now + self._settings.schedule_delay
            self._send_buffer(force=bool(flushes) or final)
        elif waiting >= self._settings.batch_size:
            self._send_buffer(force=False, full_only=True)
        self._waiting = len(self._buffer)
        for done in flushes:
            if len(self._buffer) == 0:
                done.set()

    def _take_started(self, final: bool) -> list[_Queued]:
        """Start-tracked spans old enough for their captured headers to be set (see ``_START_DELAY``)."""
        ready = []
        now = self._clock.monotonic()
        for span_id, started in list(self._started.items()):
            if final or now - started.at >= _START_DELAY:
                self._started_sent.add(span_id)  # first: on_end reads both without the lock
                del self._started[span_id]
                # A consistent snapshot of a live span, with the headers the hook keeps until it ends.
                ready.append((started.span._readable_span(), hooks.peek(span_id)))
        return ready

    def _send_buffer(self, *, force: bool, full_only: bool = False) -> None:
        """Send batches in order until the buffer is empty (or holds less than a batch, with ``full_only``) or
        Matomo fails; then back off."""
        if not force and self._clock.monotonic() < self._next_attempt:
            return
        while len(self._buffer) >= (self._settings.batch_size if full_only else 1):
            batch = self._buffer.peek(self._settings.batch_size, self._clock.time())
            if not batch.hits:
                return  # another process holds the spool
            result = self._pipeline.send(batch.hits, retry=False)
            if result.outcome in (Outcome.GAVE_UP, Outcome.CANCELLED):
                self._buffer.release(batch)
                self._pipeline.metrics.retry()
                self._failures += 1
                delay = result.retry_after if result.retry_after is not None else backoff(self._failures)
                self._next_attempt = self._clock.monotonic() + min(delay, 60.0)
                return
            self._buffer.done(batch)
            self._failures = 0

    def _close_buffer(self) -> None:
        left = self._waiting = len(self._buffer)
        self._pipeline.metrics.observe_queue_length(None)
        if left and self._settings.spool_dir is None:
            self._pipeline.count_dropped(DropReason.LOST, left)
            _logger.warning("otel-matomo lost %d hits at shutdown: Matomo could not be reached in time", left)
        self._buffer.close()
        self._pipeline.close()

    def _tracks_at_start(self, span: Span) -> bool:
        attributes = span.attributes or {}
        # The old convention's name first: Python's default, and each miss raises KeyError inside the SDK's mapping.
        scheme = attributes.get("http.scheme") or attributes.get("url.scheme")
        if scheme in ("ws", "wss"):
            return True
        if not self._settings.start_routes:
            return False
        candidates = [
            value
            for value in (attributes.get("http.route"), attributes.get("url.path"), attributes.get("http.target"))
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
        return 0 if alive is None else alive._waiting + len(alive._queue)

    return length

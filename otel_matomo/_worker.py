"""The one delivery worker, behind ``MatomoSpanProcessor`` and the OTLP gateway: records in, hits to Matomo, every
hit that does not arrive counted under its reason.

Two threads, so that a slow or hanging Matomo never holds intake:

- *intake* drains the bounded queue every schedule delay (sooner when records pile up), translates, and writes the
  hits to the buffer: with a spool, a hit is on disk within one schedule delay of its span ending, whatever Matomo
  is doing;
- *sender* sends full batches at once and what waits every schedule delay, one attempt at a time, on the one retry
  schedule (``_retry.delay``). When Matomo answers but keeps failing one batch, a probe tells whether it fails
  everything (then the hits wait) or only this batch (then the batch is split until the hits Matomo refuses are
  found: those alone are dropped, counted and logged, and the rest is delivered).
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

from otel_matomo._batches import BatchSender
from otel_matomo._buffer import Drops, HitBuffer, MemoryBuffer
from otel_matomo._clock import Clock
from otel_matomo._durable import DurableBuffer
from otel_matomo._pipeline import Pipeline
from otel_matomo._ratelimit import RateLimitedLog
from otel_matomo._spool import SpoolBuffer
from otel_matomo._types import DropReason, Hit, HttpRequest

_logger = logging.getLogger("otel_matomo")
R = TypeVar("R")

TRANSLATE_EVERY = 32
"""Queued records that wake intake before its schedule. Spans are big object graphs: kept for a whole batch they
outlive the collector's young generations and make its full passes longer; hits are small."""
_DAY = 86_400.0


class Admission(enum.Enum):
    """What :meth:`DeliveryWorker.accept` did with the hits of one request."""

    ACCEPTED = "accepted"
    FULL = "full"
    CLOSED = "closed"


class DeliveryWorker(Generic[R]):
    """Bounded intake, translation, the buffer (memory, or a spool that falls back to memory), sending.

    ``read`` turns a record into a request; ``collect(final)`` adds records of the owner's at each intake (the
    processor's long-lived requests); ``observe(records)`` sees each intake's records (diagnostics).
    """

    _lock: threading.Lock
    _buffer: HitBuffer
    _queue: collections.deque[R]
    _intake_wake: threading.Event
    _send_wake: threading.Event
    _intake_flushes: list[threading.Event]
    _send_flushes: list[threading.Event]
    _stopping: bool
    _intake_done: threading.Event
    _batches: BatchSender
    _send_at: float
    """The clock's ``monotonic()`` of the next scheduled intake, after which what waits is sent, full or not."""
    _send_due: bool
    """Set by the scheduled intake (every ``schedule_delay``): the sender sends what waits, full batch or not."""
    sender_cycles: int
    """Cycles the sender ran (tests wait on it to see that a cycle declined to send)."""
    _waiting: int
    _intake: threading.Thread
    _sender: threading.Thread

    def __init__(
        self,
        pipeline: Pipeline,
        read: Callable[[R], HttpRequest | None],
        *,
        clock: Clock,
        name: str = "otel-matomo",
        spool_dir: str | None = None,
        collect: Callable[[bool], list[R]] | None = None,
        observe: Callable[[list[R]], None] | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._settings = pipeline.settings
        self._read = read
        self._clock = clock
        self._name = name
        self._spool_dir = spool_dir if spool_dir is not None else self._settings.spool_dir
        self._collect = collect
        self._observe = observe
        self._log = RateLimitedLog(_logger)
        self._start()

    # --- the owner's side (any thread) ------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Records queued and hits buffered, as last counted (the queue-length gauge reads it)."""
        return self._waiting + len(self._queue)

    @property
    def alive(self) -> bool:
        """Whether both threads run (they survive their own failures; they end only at :meth:`close`)."""
        return self._intake.is_alive() and self._sender.is_alive()

    def offer(self, record: R) -> bool:
        """Queue one record for intake; never blocks, never raises. ``False`` (counted, logged) when full."""
        queue = self._queue
        if self._stopping:
            return False
        if len(queue) >= self._settings.queue_size:
            self._pipeline.count_dropped(DropReason.QUEUE_FULL, 1)
            self._log.log(
                logging.WARNING,
                "queue-full",
                "otel-matomo: dropped a request: the queue of %d spans is full (Matomo slow or down?)",
                self._settings.queue_size,
            )
            return False
        queue.append(record)
        if len(queue) >= TRANSLATE_EVERY and not self._intake_wake.is_set():
            self._intake_wake.set()
        return True

    def accept(self, hits: Sequence[Hit], capacity: int) -> Admission:
        """Store ``hits`` in the buffer now (the spool, when there is one), or none of them when ``capacity`` hits
        already wait: the gateway answers 200 only for hits that a restart cannot lose."""
        with self._lock:
            if self._stopping:
                return Admission.CLOSED
            waiting = len(self._buffer)
            if waiting and waiting + len(hits) > capacity:
                return Admission.FULL
            drops = self._store(hits)
            self._waiting = len(self._buffer)
            # Sent at once: an OTLP exporter already batches (every few seconds), so no schedule delay is added.
            self._send_due = True
        self._count_drops(drops)
        self._send_wake.set()
        return Admission.ACCEPTED

    def flush(self, timeout: float) -> bool:
        """Translate and send everything queued; ``True`` when nothing is left waiting within ``timeout``."""
        if self._stopping:
            return self._waiting == 0
        done = threading.Event()
        with self._lock:
            self._intake_flushes.append(done)
        self._intake_wake.set()
        return done.wait(timeout)

    def close(self, timeout: float) -> None:
        """Take in what is queued, send what can be sent within ``timeout`` seconds, stop, and log the totals."""
        if self._stopping:
            return
        self._stopping = True
        deadline = self._clock.monotonic() + timeout
        self._intake_wake.set()
        self._intake.join(timeout)
        self._send_wake.set()
        self._sender.join(max(deadline - self._clock.monotonic(), 0.0))
        if self._sender.is_alive():
            # Ends a wait at once; an HTTP request in flight still runs to its own timeout on a daemon thread.
            self._pipeline.close()
            self._sender.join(1.0)
        self._pipeline.log_summary(self._name, waiting=self._waiting, spooled=self._spool_dir is not None)

    def restart_after_fork(self) -> None:
        """In a forked child: fresh locks, queue, buffer connection and threads (the parent's are not there)."""
        if not self._stopping:
            self._start()

    # --- both threads -----------------------------------------------------------------------------------------

    def _start(self) -> None:
        # The lock guards the buffer (both threads use it; an SQLite connection must not see two at once).
        self._lock = threading.Lock()
        self._buffer = self._make_buffer()
        self._queue = collections.deque()
        self._intake_wake = threading.Event()
        self._send_wake = threading.Event()
        self._intake_flushes = []
        self._send_flushes = []
        self._stopping = False
        self._intake_done = threading.Event()
        self._batches = BatchSender(self._pipeline, self._buffer, self._lock, self._clock, self._count_drops)
        self._send_due = False
        self._send_at = self._clock.monotonic() + self._settings.schedule_delay
        self.sender_cycles = 0
        self._waiting = len(self._buffer)
        self._intake = threading.Thread(target=self._run, args=(self._take_in,), name=f"{self._name}-intake")
        self._sender = threading.Thread(target=self._run, args=(self._send_cycle,), name=f"{self._name}-sender")
        for thread in (self._intake, self._sender):
            thread.daemon = True
            thread.start()

    def _make_buffer(self) -> HitBuffer:
        settings = self._settings
        # Matomo refuses a cdt older than 24 h from a sender without a token: keep no such hit (a dry run shows all).
        max_cdt_age = None if settings.token_auth is not None or settings.dry_run else _DAY - 60
        memory = MemoryBuffer(settings.buffer_max_hits, settings.buffer_max_bytes, settings.buffer_max_age, max_cdt_age)
        directory = self._spool_dir
        if directory is None:
            return memory
        lease = settings.timeout * 2 + 30
        return DurableBuffer(
            lambda: SpoolBuffer(directory, settings.buffer_max_hits, settings.buffer_max_age, lease, max_cdt_age),
            memory,
            clock=self._clock.monotonic,
            on_fallback=self._pipeline.metrics.spool_fallback,
        )

    def _run(self, cycle: Callable[[], bool]) -> None:
        # Our own calls to Matomo must not be traced: with httpx instrumented they would become spans, maybe ours.
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            while True:
                try:
                    if cycle():
                        return
                except Exception:  # noqa: BLE001 - the worker must survive any bug of its own
                    self._log.log(logging.ERROR, "worker", "otel-matomo: the delivery worker failed", exc_info=True)
                    if self._stopping:
                        return
        finally:
            detach(token)
            if cycle == self._send_cycle:
                self._close_buffer()
            else:
                self._intake_done.set()
                self._send_wake.set()

    def _store(self, hits: Sequence[Hit]) -> Drops:
        """Add ``hits`` to the buffer (the caller holds the lock); a failure loses them, counted."""
        try:
            return self._buffer.add(hits, self._clock.time())
        except Exception:  # noqa: BLE001 - counted and logged; intake goes on
            self._log.log(
                logging.ERROR,
                "buffer",
                "otel-matomo: lost %d hits: they could not be buffered",
                len(hits),
                exc_info=True,
            )
            drops = Drops()
            drops.add(DropReason.LOST, len(hits))
            return drops

    def _count_drops(self, drops: Drops) -> None:
        for reason, count in drops.counts.items():
            self._pipeline.count_dropped(reason, count)
            self._log.log(
                logging.WARNING, reason.value, _DROP_MESSAGES.get(reason, "%d hits dropped (%s)"), count, reason.value
            )

    # --- intake -------------------------------------------------------------------------------------------------

    def _take_in(self) -> bool:
        self._clock.wait(self._intake_wake, max(self._send_at - self._clock.monotonic(), 0.0))
        self._intake_wake.clear()
        final = self._stopping
        with self._lock:
            flushes, self._intake_flushes = self._intake_flushes, []
        # Drained after the flush requests are taken: a record queued before flush() was called is in this intake.
        queue = self._queue
        records = [queue.popleft() for _ in range(len(queue))]
        if self._collect is not None:
            records = [*self._collect(final), *records]
        if self._observe is not None:
            self._observe(records)
        hits = self._pipeline.translate(records, self._read).hits if records else []
        now = self._clock.monotonic()
        scheduled = now >= self._send_at
        if scheduled:
            self._send_at = now + self._settings.schedule_delay
        with self._lock:
            drops = self._store(hits) if hits else Drops()
            self._waiting = len(self._buffer)
            self._send_flushes.extend(flushes)
            self._send_due = self._send_due or (scheduled and self._waiting > 0)
        self._count_drops(drops)
        if flushes or self._send_due or self._waiting >= self._settings.batch_size:
            self._send_wake.set()
        return final

    # --- sender -------------------------------------------------------------------------------------------------

    def _send_cycle(self) -> bool:
        # Woken by intake: after its scheduled run, for a flush, or for a full batch; the timeout is a safety net.
        self._clock.wait(self._send_wake, self._settings.schedule_delay)
        self._send_wake.clear()
        final = self._intake_done.is_set()
        with self._lock:
            flushes, self._send_flushes = self._send_flushes, []
            due, self._send_due = self._send_due, False
        if flushes or final or due:
            self._batches.send_waiting(force=bool(flushes) or final, full_only=False)
        else:
            self._batches.send_waiting(force=False, full_only=True)
        with self._lock:
            self._waiting = len(self._buffer)
        self.sender_cycles += 1
        for done in flushes:
            if self._waiting == 0:
                done.set()
        return final

    def _close_buffer(self) -> None:
        with self._lock:
            buffer = self._buffer
            left = len(buffer)
            volatile = buffer.in_memory if isinstance(buffer, DurableBuffer) else left
            if volatile:
                self._pipeline.count_dropped(DropReason.LOST, volatile)
                _logger.warning("otel-matomo: lost %d hits at shutdown: Matomo could not be reached in time", volatile)
            self._waiting = left - volatile  # what stays in the spool for the next process
            buffer.close()


_DROP_MESSAGES = {
    DropReason.OUTAGE_BOUND: "otel-matomo: dropped %d hits (%s): too many waited while Matomo was unreachable",
    DropReason.EXPIRED: "otel-matomo: dropped %d hits (%s): they waited longer than the buffer's maximum age",
    DropReason.UNREADABLE: "otel-matomo: moved %d unreadable spool rows aside (%s): they cannot be sent",
    DropReason.LOST: "otel-matomo: lost %d hits (%s): they could not be buffered",
}

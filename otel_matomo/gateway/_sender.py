"""A bounded queue of hits and one worker thread that hands them to :meth:`Pipeline.deliver` in batches.

Why a queue at all: an OTLP client must get its answer in milliseconds, while one bulk request to Matomo may
take the whole export deadline, retries included. Why bounded: when Matomo is slower than the traffic, the
gateway answers 429 and the sender (an SDK exporter, or a Collector with a persistent queue) keeps the data and
retries, instead of the gateway's memory growing until it dies. Deliberately small: a shared delivery module
may replace it.
"""

from __future__ import annotations

import enum
import threading
from collections import deque
from collections.abc import Callable, Sequence

from opentelemetry import context

from otel_matomo._pipeline import Pipeline
from otel_matomo._types import Hit

DEFAULT_BATCH_SIZE = 500
"""Hits per bulk request at most: Matomo's bulk endpoint handles hundreds at once."""
_CANCEL_GRACE_S = 2.0
"""How long a cancelled batch may take to return (an HTTP request in flight is aborted, not awaited)."""


class Admission(enum.Enum):
    """What :meth:`BackgroundSender.offer` did with the hits of one export request."""

    ACCEPTED = "accepted"
    FULL = "full"
    CLOSED = "closed"


class BackgroundSender:
    """Hits in, bulk requests out, from one daemon thread; never more than ``capacity`` hits waiting.

    An export request is admitted whole or not at all, so a client that retries after 429 never duplicates hits.
    A request larger than ``capacity`` is admitted when the queue is empty, so that it cannot be refused forever.
    """

    def __init__(self, capacity: int, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self._capacity = capacity
        self._batch_size = batch_size
        self._entries: deque[tuple[Pipeline, list[Hit]]] = deque()
        self._queued = 0
        self._closing = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="otel-matomo-gateway-sender", daemon=True)
        self._thread.start()

    @property
    def accepting(self) -> bool:
        """Whether a request with hits would be admitted right now (a cheap check before reading a body)."""
        with self._changed:
            return not self._closing and self._queued < self._capacity

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` was called."""
        with self._changed:
            return self._closing

    def offer(self, work: Sequence[tuple[Pipeline, Sequence[Hit]]]) -> Admission:
        """Queue every ``(pipeline, hits)`` of one export request, or none of them."""
        total = sum(len(hits) for _, hits in work)
        with self._changed:
            if self._closing:
                return Admission.CLOSED
            if total and self._queued and self._queued + total > self._capacity:
                return Admission.FULL
            for pipeline, hits in work:
                for start in range(0, len(hits), self._batch_size):
                    self._entries.append((pipeline, list(hits[start : start + self._batch_size])))
            self._queued += total
            self._changed.notify_all()
        return Admission.ACCEPTED

    def close(self, timeout: float, cancel: Callable[[], None]) -> int:
        """Admit nothing more, deliver what waits within ``timeout`` seconds; returns the hits left behind.

        Then ``cancel`` (which closes the pipelines) ends a batch still being retried, which its pipeline counts
        as lost; hits still queued are dropped and returned here, for the caller to report.
        """
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join(timeout)
        with self._changed:
            left = self._queued
            self._entries.clear()
            self._queued = 0
        cancel()
        self._thread.join(_CANCEL_GRACE_S)
        return left

    def _run(self) -> None:
        # The gateway must not trace its own calls to Matomo: with httpx instrumented (opentelemetry-instrument),
        # every bulk request would otherwise become a span, exported back to a collector and maybe to us.
        context.attach(context.set_value(context._SUPPRESS_INSTRUMENTATION_KEY, True))
        while True:
            with self._changed:
                while not self._entries and not self._closing:
                    self._changed.wait()
                if not self._entries:
                    return
                pipeline, batch = self._take()
            pipeline.deliver(batch)  # never raises: every loss is counted in the pipeline's stats

    def _take(self) -> tuple[Pipeline, list[Hit]]:
        """The oldest entry, merged with the next ones of the same site up to a full batch."""
        pipeline, batch = self._entries.popleft()
        while (
            self._entries
            and self._entries[0][0] is pipeline
            and len(batch) + len(self._entries[0][1]) <= self._batch_size
        ):
            batch = batch + self._entries.popleft()[1]
        self._queued -= len(batch)
        return pipeline, batch

"""Sending what waits in the buffer: batches in order, the one retry schedule, and splitting a batch that Matomo
keeps failing to find the hits it refuses.

When Matomo answers but keeps failing one batch (5xx or a malformed answer, ``_SPLIT_AFTER`` times in a row), a
probe tells a Matomo that fails everything (the hits wait, backing off) from one that refuses particular hits: the
batch is then split, and halves of failing halves, in order, until the single hits it refuses are found. Those
alone are dropped, counted and logged; the rest is delivered.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from otel_matomo import _retry
from otel_matomo._buffer import Batch, Drops, HitBuffer
from otel_matomo._clock import Clock
from otel_matomo._pipeline import Pipeline
from otel_matomo._ratelimit import RateLimitedLog
from otel_matomo._sending import Outcome, SendResult
from otel_matomo._types import DropReason

_logger = logging.getLogger("otel_matomo")
_SPLIT_AFTER = 3
"""Answered failures in a row before a batch is probed and split: a passing 500 is retried like any other."""
_SAFE_IN_LOGS = ("idsite", "ca", "idgoal", "e_c", "e_a", "c_n", "action_name")
"""Parameters a refused hit's log line shows by value; of the others (visitor data) only the names."""


class BatchSender:
    """The delivery worker's sending side; the buffer is shared with intake under ``lock``."""

    def __init__(
        self,
        pipeline: Pipeline,
        buffer: HitBuffer,
        lock: threading.Lock,
        clock: Clock,
        count_drops: Callable[[Drops], None],
    ) -> None:
        self._pipeline = pipeline
        self._buffer = buffer
        self._lock = lock
        self._clock = clock
        self._count_drops = count_drops
        self._batch_size = pipeline.settings.batch_size
        self._log = RateLimitedLog(_logger)
        self.failures = 0
        """Failed attempts in a row: the backoff grows with them."""
        self._answered_failures = 0
        """Failures in a row for which Matomo answered (5xx, a malformed answer): a batch it may refuse."""
        self._next_attempt = 0.0

    def send_waiting(self, *, force: bool, full_only: bool) -> None:
        """Send batches in order until too few hits wait or Matomo fails; ``force`` ignores the backoff."""
        if not force and self._clock.monotonic() < self._next_attempt:
            return
        least = self._batch_size if full_only else 1
        while True:
            with self._lock:
                if len(self._buffer) < least:
                    return
                batch = self._buffer.peek(self._batch_size, self._clock.time())
            self._count_drops(batch.drops)
            if not batch.hits:
                if batch.drops.counts:
                    continue  # only unreadable spool rows this time, moved aside
                return  # another process holds the spool
            if not self._deliver(batch):
                return

    def _deliver(self, batch: Batch) -> bool:
        """Send one batch; ``True`` when it is settled, ``False`` when it waits for the next attempt."""
        result = self._pipeline.send(batch.hits, retry=False)
        if _settled(result):
            self._settle(batch)
            return True
        if _refusing(result):
            self._answered_failures += 1
            if self._answered_failures >= _SPLIT_AFTER and self._pipeline.matomo_accepts_a_probe():
                return self._split(batch)
        self._back_off(batch, result)
        return False

    def _split(self, batch: Batch) -> bool:
        """Matomo accepts hits but not this batch: send halves, and halves of failing halves, in order, until the
        single hits it refuses are found; those alone are dropped."""
        parts = list(reversed(batch.split()))
        while parts:
            part = parts.pop()
            if not part.hits:
                continue
            result = self._pipeline.send(part.hits, retry=False)
            if _settled(result):
                self._settle(part)
            elif not _refusing(result):
                for waiting in (part, *parts):
                    self._back_off(waiting, result)
                return False
            elif len(part.hits) == 1:
                self._refuse(part)
            else:
                parts.extend(reversed(part.split()))
        return True

    def _settle(self, batch: Batch) -> None:
        with self._lock:
            self._buffer.done(batch)
        self.failures = 0
        self._answered_failures = 0

    def _refuse(self, batch: Batch) -> None:
        with self._lock:
            self._buffer.done(batch)
        self._pipeline.count_dropped(DropReason.REFUSED, 1)
        hit = batch.hits[0]
        shown = ", ".join(f"{name}={hit[name]!r}" for name in _SAFE_IN_LOGS if name in hit)
        others = ", ".join(name for name in hit if name not in _SAFE_IN_LOGS)
        self._log.log(
            logging.ERROR,
            "refused",
            "otel-matomo: dropped a hit that Matomo refuses (every batch holding it failed; the other hits were "
            "delivered): %s; also %s",
            shown,
            others,
        )

    def _back_off(self, batch: Batch, result: SendResult) -> None:
        with self._lock:
            self._buffer.release(batch)
        self._pipeline.metrics.retry()
        self.failures += 1
        delay = _retry.delay(self.failures, result.retry_after)
        self._next_attempt = self._clock.monotonic() + delay
        if result.outcome is Outcome.GAVE_UP:
            self._log.log(
                logging.WARNING,
                "back-off",
                "otel-matomo: Matomo at %s did not take a batch of %d hits (%s); kept, sent again in %.1f s",
                self._pipeline.settings.endpoint_for_logs,
                len(batch.hits),
                result.cause or "no reason given",
                delay,
            )


def _settled(result: SendResult) -> bool:
    """Whether Matomo has answered for the batch for good (stored, refused item by item, or refused as a whole)."""
    return result.outcome in (Outcome.DELIVERED, Outcome.PARTIAL, Outcome.REJECTED)


def _refusing(result: SendResult) -> bool:
    """Whether Matomo answered the batch and failed it in a way one hit can cause: HTTP 500 (it rolled the batch
    back) or an answer that is not its bulk JSON. 429, 502, 503 and 504 say Matomo or a proxy is overloaded or
    down: those wait, whole."""
    return result.outcome is Outcome.GAVE_UP and result.answered and result.status in (200, 500)

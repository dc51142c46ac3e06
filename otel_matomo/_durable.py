"""The spool, degrading to memory: a spool that cannot be used never stops delivery, nor the application.

A full disk, an unwritable or corrupt file, a missing directory: the hits go to the bounded memory buffer
instead, with one clear error and a count, and the spool is tried again every ``retry_every`` seconds. Once it
works again, what waited in memory moves to it, behind what the spool already held.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Sequence

from otel_matomo._buffer import Batch, Drops, HitBuffer, MemoryBuffer
from otel_matomo._spool import SpoolBuffer, SpoolError
from otel_matomo._types import Hit

_logger = logging.getLogger("otel_matomo")
_SPOOL_ERRORS = (SpoolError, sqlite3.Error, OSError)


class DurableBuffer:
    """A :class:`SpoolBuffer` with a :class:`MemoryBuffer` to fall back on; never raises for the disk's sake."""

    def __init__(
        self,
        open_spool: Callable[[], SpoolBuffer],
        memory: MemoryBuffer,
        *,
        clock: Callable[[], float],
        retry_every: float = 30.0,
        on_fallback: Callable[[], None] = lambda: None,
    ) -> None:
        self._open_spool = open_spool
        self._memory = memory
        self._clock = clock
        self._retry_every = retry_every
        self._on_fallback = on_fallback
        self._spool: SpoolBuffer | None = None
        self._retry_at = 0.0
        self._peeked_from: HitBuffer = memory
        self._try_spool()

    @property
    def in_memory(self) -> int:
        """Hits kept in memory while the spool was out of use: those a stop would lose."""
        return len(self._memory)

    def __len__(self) -> int:
        spooled = 0
        if self._spool is not None:
            try:
                spooled = len(self._spool)
            except _SPOOL_ERRORS as error:
                self._fall_back(error)
        return len(self._memory) + spooled

    def add(self, hits: Sequence[Hit], now: float) -> Drops:
        """Write ``hits`` to the spool, or keep them in memory while it cannot be used."""
        if self._spool is None and self._clock() >= self._retry_at:
            self._try_spool()
        spool = self._spool
        if spool is not None:
            try:
                return spool.add(hits, now)
            except _SPOOL_ERRORS as error:
                self._fall_back(error)
        return self._memory.add(hits, now)

    def peek(self, limit: int, now: float) -> Batch:
        """Hits that waited in memory first (the spool was out of use when they came), then the spool's."""
        if len(self._memory):
            self._peeked_from = self._memory
            return self._memory.peek(limit, now)
        spool = self._spool
        if spool is None:
            self._peeked_from = self._memory
            return Batch([])
        self._peeked_from = spool
        try:
            return spool.peek(limit, now)
        except _SPOOL_ERRORS as error:
            self._fall_back(error)
            return Batch([])

    def done(self, batch: Batch) -> None:
        """Remove delivered (or refused) hits from the buffer that gave them."""
        self._apply(lambda buffer: buffer.done(batch))

    def release(self, batch: Batch) -> None:
        """Give hits back to the buffer that gave them."""
        self._apply(lambda buffer: buffer.release(batch))

    def close(self) -> None:
        """Release the spool's claims and close it."""
        if self._spool is not None:
            with contextlib.suppress(*_SPOOL_ERRORS):
                self._spool.close()

    def _apply(self, action: Callable[[HitBuffer], None]) -> None:
        buffer = self._peeked_from
        if buffer is self._memory:
            action(buffer)
            return
        try:
            action(buffer)
        except _SPOOL_ERRORS as error:
            self._fall_back(error)

    def _try_spool(self) -> None:
        try:
            spool = self._open_spool()
        except _SPOOL_ERRORS as error:
            self._fall_back(error)
            return
        if len(self._memory):
            waiting = self._memory.peek(len(self._memory), self._clock())
            try:
                spool.add(waiting.hits, self._clock())
            except _SPOOL_ERRORS as error:
                spool.close()
                self._fall_back(error)
                return
            self._memory.done(waiting)
        if self._retry_at:
            _logger.warning("otel-matomo: the spool %s works again; hits are written to disk again", spool.path)
        self._spool = spool

    def _fall_back(self, error: BaseException) -> None:
        first = self._spool is not None or not self._retry_at
        if self._spool is not None:
            with contextlib.suppress(*_SPOOL_ERRORS):
                self._spool.close()
        self._spool = None
        self._retry_at = self._clock() + self._retry_every
        if first:
            self._on_fallback()
            _logger.error(
                "otel-matomo: cannot use its spool (%s): hits are kept in memory instead, bounded by "
                "OTEL_EXPORTER_MATOMO_BUFFER_MAX_HITS/_BYTES, and delivery goes on; the spool is tried again every "
                "%.0f s",
                error,
                self._retry_every,
            )

"""The one pipeline behind every shell: recorded requests -> hits -> Matomo, with every loss counted.

The span exporter and the OTLP gateway differ only in how they read a request out of what they receive; both
hand their records and a reader to :class:`Pipeline`, so translation, counting and delivery exist once.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from otel_matomo._ratelimit import RateLimitedLog
from otel_matomo.hits import Hit, request_hit
from otel_matomo.policy import Skip, skip_reason
from otel_matomo.request import HttpRequest
from otel_matomo.settings import Settings
from otel_matomo.transport import Outcome, Transport

__all__ = ["ExportStats", "Pipeline", "hits_logger"]

_logger = logging.getLogger("otel_matomo")
hits_logger = logging.getLogger("otel_matomo.hits")
"""Where dry-run mode writes each hit, as JSON, with the hit itself in the record's ``hit`` attribute."""

Record = TypeVar("Record")


@dataclass
class ExportStats:
    """Running totals since start; every hit that does not reach Matomo is in one of them."""

    requests: int = 0
    """HTTP server requests turned into hits."""
    malformed_spans: int = 0
    """Server spans that could not be translated (logged)."""
    excluded: int = 0
    """Requests excluded by path, extension, method or status (health checks, static files, OPTIONS ...)."""
    opted_out: int = 0
    """Requests whose visitor sent Sec-GPC: 1 or DNT: 1."""
    synthetic: int = 0
    """Requests from clients the instrumentation marked as bots or tests (with ``skip_synthetic``)."""
    tracked: int = 0
    """Hits Matomo confirmed."""
    invalid: int = 0
    """Hits Matomo refused for good (validation errors, bad token)."""
    lost: int = 0
    """Hits not delivered: Matomo unreachable until the deadline, shut down while retrying, or a failure."""
    batches: int = 0
    """Bulk requests that Matomo answered or that were given up."""


class Pipeline:
    """Translate records into hits and deliver them; thread-safe counters, no exception escapes ``deliver``."""

    def __init__(self, settings: Settings, transport: Transport | None = None) -> None:
        self.settings = settings
        self._transport = transport if transport is not None or settings.dry_run else Transport(settings)
        self._stats = ExportStats()
        self._lock = threading.Lock()
        self._log = RateLimitedLog(_logger)

    @property
    def stats(self) -> ExportStats:
        """A copy of the running totals."""
        with self._lock:
            return ExportStats(**vars(self._stats))

    def translate(self, records: Iterable[Record], read: Callable[[Record], HttpRequest | None]) -> list[Hit]:
        """One hit per record that ``read`` sees as a tracked HTTP server request, in chronological order."""
        requests = []
        for record in records:
            try:
                request = read(record)
            except Exception:  # noqa: BLE001 - malformed attributes skip one record, never the batch.
                self._count_malformed("a server span")
                continue
            if request is not None:
                requests.append(request)
        requests.sort(key=lambda request: request.start_ns)
        hits = []
        for request in requests:
            try:
                reason = skip_reason(request, self.settings)
                if reason is not None:
                    self._count_skip(reason)
                    continue
                hits.append(request_hit(request, self.settings))
            except Exception:  # noqa: BLE001 - see above
                self._count_malformed(f"the request {request.method} {request.path!r}")
        return hits

    def deliver(self, hits: Sequence[Hit]) -> bool:
        """Send ``hits`` in one bulk request (or log them in dry-run mode); ``True`` when Matomo has them."""
        if not hits:
            return True
        with self._lock:
            self._stats.requests += len(hits)
        if self._transport is None:
            for hit in hits:
                hits_logger.info("%s", json.dumps(hit), extra={"hit": hit})
            return True
        try:
            result = self._transport.send(hits)
        except Exception:  # noqa: BLE001 - never into the caller's thread
            with self._lock:
                self._stats.lost += len(hits)
            self._log.log(
                logging.ERROR, "bug", "otel-matomo lost %d hits to an unexpected error", len(hits), exc_info=True
            )
            return False
        with self._lock:
            self._stats.batches += 1
            self._stats.tracked += result.tracked
            self._stats.invalid += result.invalid
            if result.outcome in (Outcome.GAVE_UP, Outcome.CANCELLED):
                self._stats.lost += len(hits)
        return result.outcome in (Outcome.DELIVERED, Outcome.PARTIAL)

    def close(self) -> None:
        """End any retry wait at once and release connections."""
        if self._transport is not None:
            self._transport.close()

    def _count_skip(self, reason: Skip) -> None:
        with self._lock:
            setattr(self._stats, reason.value, getattr(self._stats, reason.value) + 1)

    def _count_malformed(self, what: str) -> None:
        with self._lock:
            self._stats.malformed_spans += 1
        self._log.log(
            logging.WARNING, "malformed", "otel-matomo skipped %s it could not translate", what, exc_info=True
        )

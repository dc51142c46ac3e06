"""The one pipeline behind every shell: recorded requests -> hits -> Matomo, with every loss counted.

The span exporter and the OTLP gateway differ only in how they read a request out of what they receive; both
hand their records and a reader to :class:`Pipeline`, so translation, counting and delivery exist once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from otel_matomo._gil import yield_gil
from otel_matomo._hits import request_hits
from otel_matomo._metrics import PipelineMetrics
from otel_matomo._policy import skip_reason
from otel_matomo._ratelimit import RateLimitedLog
from otel_matomo._settings import Settings
from otel_matomo._transport import Outcome, SendResult, Transport
from otel_matomo._types import ExportStats, Hit, HttpRequest

_logger = logging.getLogger("otel_matomo")
hits_logger = logging.getLogger("otel_matomo.hits")
"""Where dry-run mode writes each hit, as JSON, with the hit itself in the record's ``hit`` attribute."""

Record = TypeVar("Record")


_YIELD_EVERY = 16
"""Records translated between two offers of the GIL (see ``yield_gil``): under half a millisecond of work."""


class Pipeline:
    """Translate records into hits and deliver them; thread-safe counters, no exception escapes ``deliver``."""

    def __init__(
        self, settings: Settings, transport: Transport | None = None, metrics: PipelineMetrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else PipelineMetrics()
        self._transport = transport if transport is not None or settings.dry_run else Transport(settings)
        self._stats = ExportStats()
        self._lock = threading.Lock()
        self._log = RateLimitedLog(_logger)

    @property
    def stats(self) -> ExportStats:
        """A copy of the running totals."""
        with self._lock:
            return ExportStats(**vars(self._stats))

    def translate(
        self, records: Iterable[Record], read: Callable[[Record], HttpRequest | None], *, count: bool = True
    ) -> list[Hit]:
        """One hit per record that ``read`` sees as a tracked HTTP server request, in chronological order.

        Each record becomes a hit, a counted skip (by reason) or a counted, logged malformed record; ``count=False``
        previews without touching the totals.
        """
        tally: Counter[str] = Counter()
        requests = []
        for index, record in enumerate(records, start=1):
            if index % _YIELD_EVERY == 0:
                yield_gil()
            try:
                request = read(record)
            except Exception:  # noqa: BLE001 - malformed attributes skip one record, never the batch.
                self._log_malformed("a server span")
                tally["malformed_spans"] += 1
                continue
            if request is not None:
                requests.append(request)
                if request.peer_address is None and request.user_agent is None:
                    self._log.log(
                        logging.WARNING,
                        "anonymous-span",
                        "otel-matomo: a server span has no client address and no user agent, so every such visitor "
                        "is one Matomo visitor with no referrer or language. Spans like these come from telemetry "
                        "that frameworks record themselves (FastAPI's built-in spans); use the framework's "
                        "OpenTelemetry instrumentation (FastAPIInstrumentor) or opentelemetry-instrument instead.",
                    )
        requests.sort(key=lambda request: request.start_ns)
        hits = []
        for index, request in enumerate(requests, start=1):
            if index % _YIELD_EVERY == 0:
                yield_gil()
            try:
                reason = skip_reason(request, self.settings)
                if reason is None:
                    hits.extend(request_hits(request, self.settings))
                    tally["requests"] += 1
                else:
                    tally[reason.value] += 1
            except Exception:  # noqa: BLE001 - see above
                self._log_malformed(f"the request {request.method} {request.path!r}")
                tally["malformed_spans"] += 1
        if count:
            for field_name, value in tally.items():
                self.count_dropped(field_name, value)
        return hits

    def deliver(self, hits: Sequence[Hit]) -> bool:
        """Send ``hits`` in one bulk request (or log them in dry-run mode); ``True`` when Matomo has them."""
        result = self.send(hits)
        if result.outcome in (Outcome.GAVE_UP, Outcome.CANCELLED):
            self.count_dropped("lost", len(hits))
        return result.outcome in (Outcome.DELIVERED, Outcome.PARTIAL)

    def send(self, hits: Sequence[Hit], *, retry: bool = True) -> SendResult:
        """One bulk request with Matomo's answer counted; a caller that keeps undelivered hits counts nothing lost."""
        if not hits:
            return SendResult(Outcome.DELIVERED)
        if self._transport is None:
            for hit in hits:
                hits_logger.info("%s", json.dumps(hit), extra={"hit": hit})
            return SendResult(Outcome.DELIVERED, tracked=len(hits))
        self.metrics.hits_sent(len(hits))
        started = time.monotonic()
        try:
            result = self._transport.send(hits, retry=retry)
        except Exception:  # noqa: BLE001 - never into the caller's thread
            self._log.log(
                logging.ERROR, "bug", "otel-matomo lost %d hits to an unexpected error", len(hits), exc_info=True
            )
            self.count_dropped("lost", len(hits))
            return SendResult(Outcome.REJECTED)
        with self._lock:
            self._stats.batches += 1
            self._stats.tracked += result.tracked
            self._stats.invalid += result.invalid
        self.metrics.export_duration(time.monotonic() - started, result.outcome)
        self.metrics.retry(result.attempts - 1)
        self.metrics.hits_tracked(result.tracked)
        self.metrics.hits_invalid(result.invalid)
        return result

    def count_dropped(self, reason: str, count: int) -> None:
        """Add ``count`` to the :class:`ExportStats` field ``reason`` (a drop reason, or ``requests``)."""
        if count:
            with self._lock:
                setattr(self._stats, reason, getattr(self._stats, reason) + count)
            if reason != "requests":
                self.metrics.hits_dropped("malformed" if reason == "malformed_spans" else reason, count)

    def close(self) -> None:
        """End any retry wait at once and release connections."""
        if self._transport is not None:
            self._transport.close()

    def _log_malformed(self, what: str) -> None:
        self._log.log(
            logging.WARNING, "malformed", "otel-matomo skipped %s it could not translate", what, exc_info=True
        )

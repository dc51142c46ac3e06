"""The one pipeline behind every shell: recorded requests -> hits -> Matomo, with every loss counted.

The span exporter and the OTLP gateway differ only in how they read a request out of what they receive; both
hand their records and a reader to :class:`Pipeline`, so translation, counting and delivery exist once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from otel_matomo._gil import yield_gil
from otel_matomo._hits import InvalidFact, request_hits
from otel_matomo._metrics import PipelineMetrics
from otel_matomo._policy import skip_reason
from otel_matomo._ratelimit import RateLimitedLog
from otel_matomo._sending import DryRunSender, Outcome, Sender, SendResult
from otel_matomo._settings import Settings
from otel_matomo._transport import HttpSender
from otel_matomo._types import Adjustment, DropReason, ExportStats, Hit, HttpRequest

_logger = logging.getLogger("otel_matomo")

Record = TypeVar("Record")


_YIELD_EVERY = 64
"""Records translated between two offers of the GIL (see ``yield_gil``). More than the delivery worker takes in at
a time (``_worker.TRANSLATE_EVERY``): each offer taken costs a pair of thread switches on the application's core,
and a usual intake, well within the interpreter's switch interval, runs in one stretch. Larger batches (the
exporter's, the gateway's, a backlog) still offer the GIL along the way."""


@dataclass(frozen=True)
class Translation:
    """What :meth:`Pipeline.translate` made of a batch of records."""

    hits: list[Hit]
    requests: int = 0
    """Requests turned into hits (a request may make more than one hit)."""
    dropped: Mapping[DropReason, int] = field(default_factory=dict)
    """Records that made no hit, by reason (only the reasons that occurred), and under ``MALFORMED`` also the
    tracked facts left out of a translated request (see ``invalid_facts``)."""
    invalid_facts: int = 0
    """Of ``dropped[MALFORMED]``, the tracked facts left out because Matomo cannot take them (their request's
    own hit was made): a reader that reports rejected records subtracts them."""
    adjusted: Mapping[Adjustment, int] = field(default_factory=dict)
    """Hits changed so that Matomo records them, by kind of change (only those that occurred)."""


class Pipeline:
    """Translate records into hits and deliver them; thread-safe counters, no exception escapes ``deliver``.

    ``sender`` defaults to what the settings ask for: the dry-run sender with ``dry_run``, else the HTTP sender.
    """

    def __init__(
        self, settings: Settings, sender: Sender | None = None, metrics: PipelineMetrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else PipelineMetrics()
        self._sender = sender if sender is not None else _sender_for(settings)
        self._requests = 0
        self._tracked = 0
        self._invalid = 0
        self._batches = 0
        self._dropped: Counter[DropReason] = Counter()
        self._adjusted: Counter[Adjustment] = Counter()
        self._lock = threading.Lock()
        self._log = RateLimitedLog(_logger)

    @property
    def stats(self) -> ExportStats:
        """A copy of the running totals."""
        with self._lock:
            return ExportStats(
                requests=self._requests,
                tracked=self._tracked,
                invalid=self._invalid,
                batches=self._batches,
                **{reason.value: count for reason, count in self._dropped.items()},
                **{adjustment.value: count for adjustment, count in self._adjusted.items()},
            )

    def translate(
        self, records: Iterable[Record], read: Callable[[Record], HttpRequest | None], *, count: bool = True
    ) -> Translation:
        """One hit per record that ``read`` sees as a tracked HTTP server request, in chronological order.

        Each record becomes a hit, a skip (by reason) or a logged malformed record, and each tracked fact a hit or,
        when Matomo cannot take it, a logged malformed fact; all are counted in the totals unless ``count=False``
        (a preview). The result says what was made and what was dropped.
        """
        dropped: Counter[DropReason] = Counter()
        adjusted: Counter[Adjustment] = Counter()
        requests = []
        for index, record in enumerate(records, start=1):
            if index % _YIELD_EVERY == 0:
                yield_gil()
            try:
                request = read(record)
            except Exception:  # noqa: BLE001 - malformed attributes skip one record, never the batch.
                self._log_malformed("a server span")
                dropped[DropReason.MALFORMED] += 1
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
        tracked = invalid_facts = 0
        for index, request in enumerate(requests, start=1):
            if index % _YIELD_EVERY == 0:
                yield_gil()
            try:
                reason = skip_reason(request, self.settings)
                if reason is None:
                    made = request_hits(request, self.settings)
                    hits.extend(made.hits)
                    tracked += 1
                    invalid_facts += len(made.invalid)
                    for fact in made.invalid:
                        self._log_invalid_fact(fact)
                    if made.adjusted:
                        adjusted.update(made.adjusted)
                else:
                    dropped[reason] += 1
            except Exception:  # noqa: BLE001 - see above
                self._log_malformed(f"the request {request.method} {request.path!r}")
                dropped[DropReason.MALFORMED] += 1
        if invalid_facts:
            dropped[DropReason.MALFORMED] += invalid_facts
        translation = Translation(hits, tracked, dict(dropped), invalid_facts, dict(adjusted))
        if count:
            self.count_requests(tracked)
            for reason, number in dropped.items():
                self.count_dropped(reason, number)
            for adjustment, number in adjusted.items():
                self.count_adjusted(adjustment, number)
        return translation

    def deliver(self, hits: Sequence[Hit]) -> bool:
        """Send ``hits`` in one bulk request (or log them in dry-run mode); ``True`` when Matomo has them."""
        result = self.send(hits)
        if result.outcome in (Outcome.GAVE_UP, Outcome.CANCELLED):
            self.count_dropped(DropReason.LOST, len(hits))
        return result.outcome in (Outcome.DELIVERED, Outcome.PARTIAL)

    def send(self, hits: Sequence[Hit], *, retry: bool = True) -> SendResult:
        """One bulk request with Matomo's answer counted (hits its counts leave out as unconfirmed); a caller that
        keeps undelivered hits counts nothing lost."""
        if not hits:
            return SendResult(Outcome.DELIVERED)
        if not self._sender.reaches_matomo:
            return self._sender.send(hits, retry=retry)
        self.metrics.hits_sent(len(hits))
        started = time.monotonic()
        try:
            result = self._sender.send(hits, retry=retry)
        except Exception:  # noqa: BLE001 - never into the caller's thread
            self._log.log(
                logging.ERROR, "bug", "otel-matomo: lost %d hits to an unexpected error", len(hits), exc_info=True
            )
            self.count_dropped(DropReason.LOST, len(hits))
            return SendResult(Outcome.REJECTED)
        # Only counts Matomo confirmed, never below zero: a sender (or an answer) that says -5 takes nothing back.
        tracked, invalid = max(result.tracked, 0), max(result.invalid, 0)
        with self._lock:
            self._batches += 1
            self._tracked += tracked
            self._invalid += invalid
        self.count_dropped(DropReason.UNCONFIRMED, max(result.unconfirmed, 0))
        self.metrics.export_duration(time.monotonic() - started, result.outcome)
        self.metrics.retry(result.attempts - 1)
        self.metrics.hits_tracked(tracked)
        self.metrics.hits_invalid(invalid)
        return result

    def count_dropped(self, reason: DropReason, count: int) -> None:
        """``count`` requests or hits that did not reach Matomo, for ``reason``: in the totals and the metric."""
        if count:
            with self._lock:
                self._dropped[reason] += count
            self.metrics.hits_dropped(reason, count)

    def count_adjusted(self, adjustment: Adjustment, count: int) -> None:
        """``count`` hits were changed for ``adjustment`` and sent: in the totals and the metric."""
        if count:
            with self._lock:
                self._adjusted[adjustment] += count
            self.metrics.hits_adjusted(adjustment, count)

    def count_requests(self, count: int) -> None:
        """``count`` requests were turned into hits."""
        if count:
            with self._lock:
                self._requests += count

    def close(self) -> None:
        """End any retry wait at once and release connections."""
        self._sender.close()

    def matomo_accepts_a_probe(self) -> bool:
        """Whether Matomo stores *some* hit now: one it validates but does not record (no ``rec=1``), sent
        uncounted. Tells a Matomo that fails every request from one that refuses particular hits."""
        probe = {"idsite": str(self.settings.site_id), "apiv": "1"}
        return self._sender.send([probe], retry=False).outcome is Outcome.DELIVERED

    def log_summary(self, name: str, *, waiting: int = 0, spooled: bool = False) -> None:
        """One line at shutdown that accounts for every request: tracked, and what did not reach Matomo, by reason.

        A warning when hits were lost or refused, so that it shows without any logging set up.
        """
        with self._lock:
            requests, tracked, invalid, dropped = self._requests, self._tracked, self._invalid, dict(self._dropped)
        listed = ", ".join(f"{reason.value} {count}" for reason, count in dropped.items() if count)
        fate = "left in the spool for the next process" if spooled else "still waiting, lost"
        left = f"; {waiting} hits {fate}" if waiting else ""
        lost = any(reason not in _POLICY for reason in dropped) or (waiting and not spooled)
        _logger.log(
            logging.WARNING if lost else logging.INFO,
            "otel-matomo: %s stopped: %d requests, %d hits tracked by Matomo, %d invalid; not sent: %s%s",
            name,
            requests,
            tracked,
            invalid,
            listed or "none",
            left,
        )

    def _log_invalid_fact(self, fact: InvalidFact) -> None:
        # What is wrong, never the values: they may be personal (an order id, a content name).
        self._log.log(
            logging.WARNING,
            f"invalid-fact-{fact.kind}-{fact.attribute}",
            "otel-matomo: dropped a tracked %s: its attribute %s is %s, and Matomo would refuse the whole bulk "
            "request for it (the request's page view and its other facts are sent)",
            fact.kind,
            fact.attribute,
            fact.problem,
        )

    def _log_malformed(self, what: str) -> None:
        self._log.log(
            logging.WARNING, "malformed", "otel-matomo: skipped %s it could not translate", what, exc_info=True
        )


_POLICY = frozenset(
    {DropReason.EXCLUDED, DropReason.OPTED_OUT, DropReason.SYNTHETIC, DropReason.SKIPPED, DropReason.FOREIGN_HOST}
)
"""Requests left out on purpose (configuration, the visitor's opt-out, the application): no loss."""


def _sender_for(settings: Settings) -> Sender:
    if settings.dry_run:
        return DryRunSender()
    return HttpSender(settings)

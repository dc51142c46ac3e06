"""Self-metrics through the OpenTelemetry metrics API, so they reach whatever backend the application uses.

Only ``opentelemetry-api`` is used: with no ``MeterProvider`` configured every call is a no-op. Each method
of :class:`PipelineMetrics` records one event, costs one instrument call, and never raises.

=================================  ==================  ========  =============================================
name                               instrument          unit      attributes
=================================  ==================  ========  =============================================
``otel_matomo.hits.sent``          counter             ``{hit}``
``otel_matomo.hits.tracked``       counter             ``{hit}``
``otel_matomo.hits.invalid``       counter             ``{hit}``
``otel_matomo.hits.dropped``       counter             ``{hit}`` ``reason``: see :data:`DROP_REASONS`
``otel_matomo.hits.adjusted``      counter             ``{hit}`` ``reason``: see :data:`ADJUSTMENTS`
``otel_matomo.export.retries``     counter             ``{retry}``
``otel_matomo.spool.fallbacks``    counter             ``{fallback}``
``otel_matomo.export.duration``    histogram           ``s``     ``outcome``: delivered, partial, rejected ...
``otel_matomo.queue.length``       observable gauge    ``{hit}``
=================================  ==================  ========  =============================================
"""

from __future__ import annotations

import enum
import threading
import weakref
from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from otel_matomo._types import Adjustment, DropReason
from otel_matomo._version import package_version

METER_NAME = "otel_matomo"

DROP_REASONS: tuple[str, ...] = tuple(reason.value for reason in DropReason)
"""The ``reason`` values of ``otel_matomo.hits.dropped``: those of :class:`~otel_matomo._types.DropReason`, which
says what each means."""

ADJUSTMENTS: tuple[str, ...] = tuple(adjustment.value for adjustment in Adjustment)
"""The ``reason`` values of ``otel_matomo.hits.adjusted``: those of :class:`~otel_matomo._types.Adjustment`."""

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0, 60.0)
"""The semantic conventions' duration buckets (seconds), plus 30 s and 60 s for exports that retry."""


_queues_lock = threading.Lock()
_queues: weakref.WeakKeyDictionary[PipelineMetrics, Callable[[], int]] = weakref.WeakKeyDictionary()
"""Every live instance's queue-length callback. The SDK keeps the callbacks of an instrument's first registration
only (a second ``create_observable_gauge`` of the same name returns the first gauge), so every instance registers
the same module-level callback, which sums them all: the hits waiting in this process."""


def _observe_queues(options: CallbackOptions) -> Iterable[Observation]:  # noqa: ARG001 - API signature
    with _queues_lock:
        callbacks = list(_queues.values())
    lengths = [length for length in map(_call, callbacks) if length is not None]
    return [Observation(sum(lengths))] if lengths else []


def _call(length: Callable[[], int]) -> int | None:
    try:
        return int(length())
    except Exception:  # noqa: BLE001 - a failing callback must not break the reader, nor the others
        return None


def _text(value: object) -> str:
    return str(value.value) if isinstance(value, enum.Enum) else str(value)


class PipelineMetrics:
    """The instruments of one exporter (or gateway); one method per event.

    ``meter_provider`` defaults to the global one (``opentelemetry.metrics.get_meter_provider()``), so the
    metrics go wherever the application's other metrics go. Counts below 1 are ignored.
    """

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = metrics.get_meter(METER_NAME, package_version(), meter_provider=meter_provider)
        self._sent = meter.create_counter(
            "otel_matomo.hits.sent", unit="{hit}", description="Hits sent to Matomo in bulk requests."
        )
        self._tracked = meter.create_counter(
            "otel_matomo.hits.tracked", unit="{hit}", description="Hits Matomo confirmed as tracked."
        )
        self._invalid = meter.create_counter(
            "otel_matomo.hits.invalid",
            unit="{hit}",
            description="Hits Matomo rejected for good (unknown site, cip or cdt without a valid token ...).",
        )
        self._dropped = meter.create_counter(
            "otel_matomo.hits.dropped",
            unit="{hit}",
            description="Requests that did not reach Matomo as hits, by reason.",
        )
        self._adjusted = meter.create_counter(
            "otel_matomo.hits.adjusted",
            unit="{hit}",
            description="Hits sent with a value changed so that Matomo records it (cut, time clamped ...), by reason.",
        )
        self._retries = meter.create_counter(
            "otel_matomo.export.retries",
            unit="{retry}",
            description="Bulk requests sent again after a connection error, HTTP 408/425/429 or 5xx.",
        )
        self._spool_fallbacks = meter.create_counter(
            "otel_matomo.spool.fallbacks",
            unit="{fallback}",
            description="Times the spool could not be used and hits were kept in memory instead.",
        )
        name, unit = "otel_matomo.export.duration", "s"
        description = "Duration of one export to Matomo, retries and backoff included."
        try:
            self._duration = meter.create_histogram(
                name, unit, description, explicit_bucket_boundaries_advisory=_DURATION_BUCKETS
            )
        except TypeError:  # opentelemetry-api < 1.23 takes no bucket advice
            self._duration = meter.create_histogram(name, unit, description)
        meter.create_observable_gauge(
            "otel_matomo.queue.length",
            callbacks=[_observe_queues],
            unit="{hit}",
            description="Hits waiting to be sent to Matomo.",
        )

    def hits_sent(self, count: int) -> None:
        """``count`` hits were handed to Matomo in one bulk request.

        Once per ``Pipeline.send``; the HTTP sender's own re-sends of that request are counted by :meth:`retry`.
        """
        self._add(self._sent, count, None)

    def hits_tracked(self, count: int) -> None:
        """Matomo answered ``tracked: count``."""
        self._add(self._tracked, count, None)

    def hits_invalid(self, count: int) -> None:
        """Matomo answered ``invalid: count`` (or refused a whole batch of ``count``)."""
        self._add(self._invalid, count, None)

    def spool_fallback(self) -> None:
        """The spool could not be used: hits go to memory until it can."""
        self._add(self._spool_fallbacks, 1, None)

    def hits_dropped(self, reason: DropReason, count: int = 1) -> None:
        """``count`` requests produced no delivered hit, for ``reason`` (recorded by its value)."""
        try:
            self._add(self._dropped, count, {"reason": reason.value})
        except Exception:  # noqa: BLE001 - metrics never break the export
            return

    def hits_adjusted(self, adjustment: Adjustment, count: int = 1) -> None:
        """``count`` hits were changed for ``adjustment`` (recorded by its value) and are sent."""
        self._add(self._adjusted, count, {"reason": adjustment.value})

    def retry(self, count: int = 1) -> None:
        """A bulk request is about to be sent again."""
        self._add(self._retries, count, None)

    def export_duration(self, seconds: float, outcome: str | enum.Enum | None = None) -> None:
        """One export took ``seconds`` (from the start of the first attempt to the settled answer).

        ``outcome`` (e.g. ``_sending.Outcome``: delivered, partial, rejected, gave_up, cancelled) becomes the
        ``outcome`` attribute.
        """
        try:
            if seconds >= 0:
                attributes = None if outcome is None else {"outcome": _text(outcome)}
                self._duration.record(seconds, attributes)
        except Exception:  # noqa: BLE001 - metrics never break the export
            return

    def observe_queue_length(self, length: Callable[[], int] | None) -> None:
        """Have ``otel_matomo.queue.length`` count ``length()`` at each collection (``None`` stops it).

        ``length`` runs on the metric reader's thread: it must be cheap and thread-safe (``len(deque)`` is; a
        count the worker thread caches is). The gauge reports the sum over every live instance.
        """
        with _queues_lock:
            if length is None:
                _queues.pop(self, None)
            else:
                _queues[self] = length

    @staticmethod
    def _add(counter: metrics.Counter, count: int, attributes: dict[str, str] | None) -> None:
        try:
            if count > 0:
                counter.add(count, attributes)
        except Exception:  # noqa: BLE001 - metrics never break the export
            return

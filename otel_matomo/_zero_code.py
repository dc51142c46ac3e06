"""The zero-code path: the exporter ``OTEL_TRACES_EXPORTER=matomo`` builds, and its replacement by the processor.

The SDK's configurator builds every exporter of ``OTEL_TRACES_EXPORTER`` with no argument inside one ``try``: an
exception from one constructor leaves the whole process untraced, every other exporter included, behind two
tracebacks. So :class:`MatomoZeroCodeExporter` catches a :class:`~otel_matomo.ConfigurationError`, logs one line
and stays inert; in code, ``MatomoSpanExporter(...)`` still raises.

The configurator wraps the exporter in a ``BatchSpanProcessor``, which costs the request path a queue and a
thread, and sees only sampled spans. The ``pre_instrument`` hook runs next, before any request:
:func:`use_processor` puts a :class:`~otel_matomo.MatomoSpanProcessor` with the exporter's settings in that
processor's place, so that every request still reaches Matomo once. The exporter builds its own pipeline only
when it is kept (a provider whose processors this module cannot reach), on its first export.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_matomo._delivery import MatomoSpanProcessor
from otel_matomo._options import ConfigurationError
from otel_matomo._settings import Settings
from otel_matomo.exporter import MatomoSpanExporter

_logger = logging.getLogger("otel_matomo")


def log_matomo_off(error: Exception) -> None:
    """The one line a zero-code misconfiguration gets: what is wrong, where, and that only Matomo is off."""
    _logger.error(
        "otel-matomo: %s. Matomo export is off; the application and the other exporters keep running.",
        str(error).rstrip("."),
    )


class MatomoZeroCodeExporter(SpanExporter):
    """``OTEL_TRACES_EXPORTER=matomo``: a :class:`~otel_matomo.MatomoSpanExporter` configured from the
    ``OTEL_EXPORTER_MATOMO_*`` variables that never raises.

    Invalid variables are logged in one line (the variable and the expected form) and the exporter does
    nothing; the SDK and the other exporters keep working. :attr:`settings` is ``None`` then.
    """

    def __init__(self) -> None:
        self.settings: Settings | None = None
        try:
            self.settings = Settings.from_env()
        except ConfigurationError as error:
            log_matomo_off(error)
        self._lock = threading.Lock()
        self._exporter: MatomoSpanExporter | None = None
        self._shut_down = False

    def _delegate(self) -> MatomoSpanExporter | None:
        """The real exporter, built at the first export: usually the processor took its place before."""
        with self._lock:
            if self._exporter is None and self.settings is not None and not self._shut_down:
                self._exporter = MatomoSpanExporter(settings=self.settings)
            return self._exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export through the real exporter; nothing (successfully) when misconfigured."""
        if self.settings is None:
            return SpanExportResult.SUCCESS
        exporter = self._delegate()
        return SpanExportResult.FAILURE if exporter is None else exporter.export(spans)

    def shutdown(self) -> None:
        """Shut the real exporter down, if it was built."""
        with self._lock:
            self._shut_down = True
            exporter = self._exporter
        if exporter is not None:
            exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:  # noqa: ARG002 - the SDK's signature
        """Nothing is buffered here (nor in the real exporter)."""
        return True


@dataclass(frozen=True)
class Found:
    """The SDK's processor around the zero-code exporter, in the provider's list of processors."""

    processors: Any
    """The provider's ``SynchronousMultiSpanProcessor`` (or concurrent one): ``_span_processors`` and ``_lock``."""
    batch: SpanProcessor
    exporter: MatomoZeroCodeExporter


def find_exporter(provider: TracerProvider) -> Found | None:
    """The one ``BatchSpanProcessor(MatomoZeroCodeExporter())`` the SDK's configurator added, if reachable.

    ``None`` for none, for two (a set-up this module does not rewrite), or for a provider whose processors are
    not in the SDK's ``_span_processors`` tuple.
    """
    multi = getattr(provider, "_active_span_processor", None)
    processors = _span_processors(provider)
    if getattr(multi, "_lock", None) is None or processors is None:
        return None
    found = [
        (item, exporter)
        for item in processors
        if isinstance(exporter := getattr(item, "span_exporter", None), MatomoZeroCodeExporter)
    ]
    return Found(multi, *found[0]) if len(found) == 1 else None


def use_processor(found: Found, settings: Settings) -> MatomoSpanProcessor:
    """Put a ``MatomoSpanProcessor`` in the place of ``found.batch``, and shut that one down.

    The same position among the provider's processors and the exporter's ``settings``: every request reaches
    Matomo once, through the processor. The batch processor's exporter had built nothing yet.
    """
    processor = MatomoSpanProcessor(settings=settings)
    with found.processors._lock:
        found.processors._span_processors = tuple(
            processor if item is found.batch else item for item in found.processors._span_processors
        )
    found.batch.shutdown()
    return processor


def only_processor(provider: TracerProvider, processor: SpanProcessor) -> bool:
    """Whether ``processor`` is the provider's one span processor: then no exporter sees any other span."""
    return _span_processors(provider) == (processor,)


def _span_processors(provider: TracerProvider) -> tuple[SpanProcessor, ...] | None:
    """The provider's span processors, from the SDK's private ``_span_processors`` tuple; ``None`` where a
    provider keeps them otherwise."""
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", None)
    return processors if isinstance(processors, tuple) else None

"""``MatomoSpanExporter``: HTTP server spans in, one bulk Tracking API request per export batch out."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_matomo import _stop
from otel_matomo._arguments import MatomoOptions
from otel_matomo._diagnostics import SpanDiagnostics, report_sdk_exporters
from otel_matomo._names import traces_exporters
from otel_matomo._pipeline import Pipeline
from otel_matomo._settings import Settings, configured
from otel_matomo._spans import read_span
from otel_matomo._types import ExportStats, Hit

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["MatomoOptions", "MatomoSpanExporter"]

if "matomo" in traces_exporters():
    # opentelemetry-instrument imports every configured exporter class before it builds any: this import is the
    # one moment our code runs before a missing metrics or logs exporter makes the whole SDK set-up fail.
    report_sdk_exporters()


class MatomoSpanExporter(SpanExporter):
    """Turns finished HTTP server spans into Matomo page views, sent with the Bulk Tracking API.

    Keyword options (:class:`MatomoOptions`: ``endpoint``, ``site_id``, ``token_auth``, ``timeout`` as a
    ``datetime.timedelta``, ``exclude_paths`` ...) override the ``OTEL_EXPORTER_MATOMO_*`` variables; with no
    arguments it is configured from the environment alone, which is how ``OTEL_TRACES_EXPORTER=matomo`` builds
    it. ``settings=`` takes a :class:`~otel_matomo.Settings` instead. Invalid configuration raises
    :class:`~otel_matomo.ConfigurationError` here, at start-up, and an unknown keyword ``TypeError``.
    Export never raises: every failure is counted in :attr:`stats` and logged, rate-limited.
    """

    def __init__(self, *, settings: Settings | None = None, **options: Unpack[MatomoOptions]) -> None:
        self._settings = configured(type(self).__name__, settings, options)
        self._pipeline = Pipeline(self._settings)
        self._diagnostics = SpanDiagnostics()
        self._shut_down = False
        _stop.register(self)

    @property
    def settings(self) -> Settings:
        """The validated configuration in use."""
        return self._settings

    @property
    def stats(self) -> ExportStats:
        """A copy of the running totals."""
        return self._pipeline.stats

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Translate the batch's HTTP server spans and send them in one bulk request."""
        if self._shut_down:
            return SpanExportResult.FAILURE
        self._diagnostics.observe(spans)
        try:
            delivered = self._pipeline.deliver(self._pipeline.translate(spans, read_span).hits)
        except Exception:
            logging.getLogger("otel_matomo").exception("otel-matomo: failed to export a batch")
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if delivered else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Stop at once any wait for a retry and release the HTTP connections."""
        if self._shut_down:
            return
        self._shut_down = True
        self._pipeline.close()
        self._pipeline.log_summary("exporter")

    def force_flush(self, timeout_millis: int = 30000) -> bool:  # noqa: ARG002 - the SDK's signature
        """Nothing is buffered here: each export is sent before it returns."""
        return True

    def translate(self, spans: Iterable[ReadableSpan]) -> list[Hit]:
        """The hits that :meth:`export` would send for ``spans``, without sending or counting them."""
        return self._pipeline.translate(spans, read_span, count=False).hits

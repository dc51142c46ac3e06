"""``MatomoSpanExporter``: HTTP server spans in, one bulk Tracking API request per export batch out."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from otel_matomo._ratelimit import RateLimitedLog
from otel_matomo.hits import Hit, page_view_hit
from otel_matomo.request import HttpRequest, http_request_from_span_data
from otel_matomo.settings import Settings
from otel_matomo.transport import Outcome, Transport

__all__ = ["ExportStats", "MatomoSpanExporter"]

_logger = logging.getLogger("otel_matomo")
hits_logger = logging.getLogger("otel_matomo.hits")
"""Where dry-run mode writes each hit, as JSON, with the hit itself in the record's ``hit`` attribute."""


@dataclass
class ExportStats:
    """Running totals since the exporter started; every hit that does not reach Matomo is in one of them."""

    requests: int = 0
    """HTTP server spans turned into hits."""
    malformed_spans: int = 0
    """Server spans that could not be translated (logged)."""
    tracked: int = 0
    """Hits Matomo confirmed."""
    invalid: int = 0
    """Hits Matomo refused for good (validation errors, bad token)."""
    lost: int = 0
    """Hits not delivered: Matomo unreachable until the deadline, or shut down while retrying."""
    batches: int = 0
    """Bulk requests that Matomo answered or that were given up."""


class MatomoSpanExporter(SpanExporter):
    """Turns finished HTTP server spans into Matomo page views, sent with the Bulk Tracking API.

    Keyword arguments override the ``OTEL_EXPORTER_MATOMO_*`` variables (see :class:`Settings`); with no
    arguments it is configured from the environment alone, which is how ``OTEL_TRACES_EXPORTER=matomo``
    builds it. Invalid configuration raises :class:`~otel_matomo.ConfigurationError` here, at start-up.
    Export never raises: every failure is counted in :attr:`stats` and logged, rate-limited.
    """

    def __init__(
        self,
        *,
        endpoint: str | None = None,
        site_id: int | str | None = None,
        token_auth: str | None = None,
        timeout: float | None = None,
        visitor_id_secret: str | bytes | None = None,
        error_page_titles: bool | None = None,
        dry_run: bool | None = None,
        settings: Settings | None = None,
    ) -> None:
        self._settings = settings or Settings.from_env(
            endpoint=endpoint,
            site_id=site_id,
            token_auth=token_auth,
            timeout=timeout,
            visitor_id_secret=visitor_id_secret,
            error_page_titles=error_page_titles,
            dry_run=dry_run,
        )
        self._transport = None if self._settings.dry_run else Transport(self._settings)
        self._stats = ExportStats()
        self._lock = threading.Lock()
        self._log = RateLimitedLog(_logger)
        self._shut_down = False

    @property
    def settings(self) -> Settings:
        """The validated configuration in use."""
        return self._settings

    @property
    def stats(self) -> ExportStats:
        """A copy of the running totals."""
        with self._lock:
            return ExportStats(**vars(self._stats))

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Translate the batch's HTTP server spans and send them in one bulk request."""
        if self._shut_down:
            return SpanExportResult.FAILURE
        try:
            return self._export(spans)
        except Exception:  # noqa: BLE001 - an exception must never reach the SDK's worker thread.
            self._log.log(logging.ERROR, "bug", "otel-matomo failed to export a batch", exc_info=True)
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        """Stop at once any wait for a retry and release the HTTP connections."""
        self._shut_down = True
        if self._transport is not None:
            self._transport.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:  # noqa: ARG002 - the SDK's signature
        """Nothing is buffered here: each export is sent before it returns."""
        return True

    def translate(self, spans: Iterable[ReadableSpan]) -> list[Hit]:
        """The hits that :meth:`export` would send for ``spans``, without sending them."""
        return self._hits(spans)

    def _export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        hits = self._hits(spans)
        if not hits:
            return SpanExportResult.SUCCESS
        with self._lock:
            self._stats.requests += len(hits)
        if self._transport is None:
            for hit in hits:
                hits_logger.info("%s", json.dumps(hit), extra={"hit": hit})
            return SpanExportResult.SUCCESS
        try:
            result = self._transport.send(hits)
        except Exception:
            with self._lock:
                self._stats.lost += len(hits)
            raise
        with self._lock:
            self._stats.batches += 1
            self._stats.tracked += result.tracked
            self._stats.invalid += result.invalid
            if result.outcome in (Outcome.GAVE_UP, Outcome.CANCELLED):
                self._stats.lost += len(hits)
        ok = result.outcome in (Outcome.DELIVERED, Outcome.PARTIAL)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def _hits(self, spans: Iterable[ReadableSpan]) -> list[Hit]:
        """One page view per server span, in chronological order as Matomo wants a bulk request."""
        server_spans = sorted(
            (span for span in spans if span.kind is SpanKind.SERVER), key=lambda span: span.start_time or 0
        )
        hits = []
        for span in server_spans:
            try:
                request = _request_of(span)
                if request is not None:
                    hits.append(page_view_hit(request, self._settings))
            except Exception:  # noqa: BLE001 - malformed attributes skip one span, never the batch.
                with self._lock:
                    self._stats.malformed_spans += 1
                self._log.log(
                    logging.WARNING,
                    "malformed-span",
                    "otel-matomo skipped a server span it could not read: %r",
                    span.name,
                    exc_info=True,
                )
        return hits


def _request_of(span: ReadableSpan) -> HttpRequest | None:
    context = span.context
    return http_request_from_span_data(
        name=span.name,
        attributes=span.attributes or {},
        start_ns=span.start_time or 0,
        end_ns=span.end_time or span.start_time or 0,
        span_id=context.span_id if context is not None else 0,
    )

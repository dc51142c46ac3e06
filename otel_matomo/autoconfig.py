"""Request-header capture: the headers a Matomo hit needs only reach spans when capture is configured.

OpenTelemetry HTTP instrumentation records the User-Agent by itself, but the Referer (``urlref``), the
Accept-Language (``lang``), the Host (the page URL), the forwarding headers (the visitor behind a proxy), the
privacy signals (Sec-GPC, DNT) and the client hints (``uadata``) only as captured headers. The list is defined
here once; the request view and the policy read what it names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping

from otel_matomo._names import CAPTURE_ENV, REQUEST_HEADERS, RESPONSE_CAPTURE_ENV, RESPONSE_HEADERS, traces_exporters
from otel_matomo._options import ConfigurationError
from otel_matomo._settings import read_flag

__all__ = ["REQUEST_HEADERS", "RESPONSE_HEADERS", "configure_header_capture", "pre_instrument"]

_logger = logging.getLogger("otel_matomo")


def configure_header_capture(
    environ: MutableMapping[str, str] | None = None, *, request_headers: bool = True
) -> list[str]:
    """Add :data:`REQUEST_HEADERS` to ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST`` (and
    :data:`RESPONSE_HEADERS` to ``..._SERVER_RESPONSE``).

    Call it before instrumenting the application (``FastAPIInstrumentor.instrument_app`` and the ASGI
    middleware read the variable when they are built, the WSGI middleware on every request). Headers the
    user listed are kept. Returns the merged request list, which may also be passed to the ASGI middleware's
    ``http_capture_headers_server_request`` argument. ``request_headers=False`` arranges the response headers
    alone, for applications that pass :func:`~otel_matomo.request_hook` to their instrumentation, which hands
    over the request headers at a fraction of the capture's cost.
    """
    env = os.environ if environ is None else environ
    _merge(env, RESPONSE_CAPTURE_ENV, RESPONSE_HEADERS)
    if not request_headers:
        return _listed(env, CAPTURE_ENV)
    return _merge(env, CAPTURE_ENV, REQUEST_HEADERS)


def _listed(env: MutableMapping[str, str], variable: str) -> list[str]:
    return [item.strip() for item in env.get(variable, "").split(",") if item.strip()]


def _merge(env: MutableMapping[str, str], variable: str, headers: tuple[str, ...]) -> list[str]:
    current = _listed(env, variable)
    known = {item.lower() for item in current}
    merged = current + [header for header in headers if header not in known]
    env[variable] = ",".join(merged)
    return merged


def pre_instrument() -> None:
    """``opentelemetry_pre_instrument`` hook: runs inside ``opentelemetry-instrument`` before instrumentors.

    With ``OTEL_EXPORTER_MATOMO_PROCESSOR=true`` it adds a :class:`~otel_matomo.MatomoSpanProcessor` to the
    SDK's tracer provider and wraps its sampler in :class:`~otel_matomo.AnalyticsSampler`, so that every request
    reaches Matomo while the trace exporters keep their sampled share. When ``matomo`` is among
    ``OTEL_TRACES_EXPORTER`` or the processor is on, it arranges header capture
    (``OTEL_EXPORTER_MATOMO_CAPTURE_HEADERS=false`` opts out). Never raises: a broken hook would disable every
    instrumentation of the application.
    """
    try:
        exporters = set(traces_exporters())
        processor = read_flag("PROCESSOR")
        if processor:
            _install_processor(exporters)
        elif "matomo" in exporters:
            _install_tracking()
        if ("matomo" in exporters or processor) and read_flag("CAPTURE_HEADERS"):
            merged = configure_header_capture()
            _logger.debug("otel-matomo captures request headers %s", merged)
    except ConfigurationError as error:
        _logger.error("otel-matomo is not active: %s", error)


def _install_tracking() -> None:
    """Let ``otel_matomo.tracking`` calls find the request's server span from nested spans."""
    from opentelemetry import trace  # noqa: PLC0415 - only in the zero-code path
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

    from otel_matomo.tracking import TrackingProcessor  # noqa: PLC0415

    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(TrackingProcessor())


def _install_processor(exporters: set[str]) -> None:
    from opentelemetry import trace  # noqa: PLC0415 - only in the zero-code path
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

    from otel_matomo._delivery import MatomoSpanProcessor  # noqa: PLC0415 - imports the SDK exporter machinery
    from otel_matomo.sampling import AnalyticsSampler  # noqa: PLC0415

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        _logger.error("otel-matomo: OTEL_EXPORTER_MATOMO_PROCESSOR is set but the OpenTelemetry SDK is not configured")
        return
    if "matomo" in exporters:
        _logger.error(
            "otel-matomo: OTEL_EXPORTER_MATOMO_PROCESSOR=true and OTEL_TRACES_EXPORTER=...matomo would send every "
            "request twice; remove matomo from OTEL_TRACES_EXPORTER. The processor was not installed."
        )
        return
    provider.add_span_processor(MatomoSpanProcessor())
    if not isinstance(provider.sampler, AnalyticsSampler):
        provider.sampler = AnalyticsSampler(provider.sampler)

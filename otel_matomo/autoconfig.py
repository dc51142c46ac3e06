"""The zero-code set-up (``opentelemetry-instrument`` hooks and exporter entry point) and request-header capture.

OpenTelemetry HTTP instrumentation records the User-Agent by itself, but the Referer (``urlref``), the
Accept-Language (``lang``), the Host (the page URL), the forwarding headers (the visitor behind a proxy), the
privacy signals (Sec-GPC, DNT) and the client hints (``uadata``) only as captured headers, or through
:func:`~otel_matomo.request_hook`, which :func:`pre_instrument` gives the instrumentors where it can.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

from otel_matomo._delivery import MatomoSpanProcessor
from otel_matomo._instrumentors import (
    hand_over_headers,
    hookless_servers,
    leave_out_internal_spans,
    restore_instrumentors,
)
from otel_matomo._names import CAPTURE_ENV, REQUEST_HEADERS, RESPONSE_CAPTURE_ENV, RESPONSE_HEADERS, traces_exporters
from otel_matomo._options import ConfigurationError
from otel_matomo._settings import read_flag
from otel_matomo._zero_code import (
    MatomoZeroCodeExporter,
    find_exporter,
    log_matomo_off,
    only_processor,
    use_processor,
)
from otel_matomo.sampling import AnalyticsSampler

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

__all__ = [
    "REQUEST_HEADERS",
    "RESPONSE_HEADERS",
    "MatomoZeroCodeExporter",
    "configure_header_capture",
    "post_instrument",
    "pre_instrument",
]

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
    """``opentelemetry_pre_instrument`` hook: runs inside ``opentelemetry-instrument`` after the SDK is
    configured and before the instrumentors, when ``OTEL_TRACES_EXPORTER`` names ``matomo`` or
    ``OTEL_EXPORTER_MATOMO_PROCESSOR`` is true. Never raises: a broken hook would disable every instrumentation.

    It sets up the cheapest path that sends every request to Matomo once:

    - the SDK's ``BatchSpanProcessor(MatomoZeroCodeExporter())`` is replaced, in place, by a
      :class:`~otel_matomo.MatomoSpanProcessor` with the same settings (the exporter path stays, with a
      ``TrackingProcessor`` beside it, only where the provider's processors cannot be reached). The sampler is
      kept: Matomo receives the requests it records, which are the sampled ones unless it is an
      ``AnalyticsSampler`` (the ``matomo_*`` samplers), whose unsampled server spans now reach Matomo too.
    - ``OTEL_EXPORTER_MATOMO_PROCESSOR=true`` also wraps the sampler in
      :class:`~otel_matomo.AnalyticsSampler`, so that every request reaches Matomo whatever the trace
      exporters keep; without ``matomo`` in ``OTEL_TRACES_EXPORTER`` it adds the processor.
    - When that processor is the provider's only one (``OTEL_TRACES_EXPORTER=matomo``), FastAPI's instrumentor
      records no ``http send`` / ``http receive`` spans: no exporter would read them.
    - ``OTEL_EXPORTER_MATOMO_CAPTURE_HEADERS`` (default true): with the processor, the FastAPI, Starlette,
      Flask, Django and Falcon instrumentors get :func:`~otel_matomo.request_hook` (before a hook of their
      own, which still runs) and OpenTelemetry's request-header capture is arranged only when an
      instrumentation without such a hook will run (Tornado, Pyramid, aiohttp); with the exporter path, the
      capture. ``false``: neither, so hits carry no referrer and no language.

    A misconfiguration is logged in one line and leaves Matomo off, everything else on.
    """
    try:
        _set_up(set(traces_exporters()), read_flag("PROCESSOR"))
    except ConfigurationError as error:
        log_matomo_off(error)


def post_instrument() -> None:
    """``opentelemetry_post_instrument`` hook: instrumentors the application calls later get their own arguments."""
    restore_instrumentors()


def _set_up(exporters: set[str], processor_flag: bool) -> None:
    """The processor where the SDK's configurator put the exporter (else the exporter path, as the configurator
    built it), the sampler for the switch, then the request headers for whichever of the two runs."""
    if "matomo" not in exporters and not processor_flag:
        return
    from opentelemetry import trace  # noqa: PLC0415 - only in the zero-code path
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        if processor_flag:
            _logger.error(
                "otel-matomo: OTEL_EXPORTER_MATOMO_PROCESSOR is set but the OpenTelemetry SDK is not configured"
            )
        return
    found = find_exporter(provider) if "matomo" in exporters else None
    processor = None
    if found is not None:
        if found.exporter.settings is None:
            return  # misconfigured: said in one line when the SDK built it
        processor = use_processor(found, found.exporter.settings)
    if processor is None and processor_flag:
        processor = _add_processor(provider, exporters)
    if processor is None:
        provider.add_span_processor(_tracking_processor())
    elif processor_flag and not isinstance(provider.sampler, AnalyticsSampler):
        provider.sampler = AnalyticsSampler(provider.sampler)
    if processor is not None and only_processor(provider, processor):
        leave_out_internal_spans()
        _logger.debug("otel-matomo: the only span processor: FastAPI's http send/receive spans are left out")
    if read_flag("CAPTURE_HEADERS"):
        _arrange_headers(hook=processor is not None)


def _add_processor(provider: TracerProvider, exporters: set[str]) -> MatomoSpanProcessor | None:
    """``OTEL_EXPORTER_MATOMO_PROCESSOR=true`` where no zero-code exporter was replaced."""
    if "matomo" in exporters:
        _logger.error(
            "otel-matomo: OTEL_EXPORTER_MATOMO_PROCESSOR=true, but the SDK's processor around the matomo exporter "
            "of OTEL_TRACES_EXPORTER could not be replaced, and both would send every request twice. The "
            "processor was not installed: the exporter sends the sampled requests."
        )
        return None
    processor = MatomoSpanProcessor()
    provider.add_span_processor(processor)
    return processor


def _tracking_processor() -> SpanProcessor:
    """Let ``otel_matomo.tracking`` calls find the request's server span from nested spans (the processor does)."""
    from otel_matomo.tracking import TrackingProcessor  # noqa: PLC0415

    return TrackingProcessor()


def _arrange_headers(*, hook: bool) -> None:
    """The request headers reach the processor through the instrumentors' hook, else through the capture."""
    fallback = hookless_servers() if hook else []
    if hook:
        hand_over_headers()
    merged = configure_header_capture(request_headers=not hook or bool(fallback))
    _logger.debug(
        "otel-matomo: request headers through request_hook: %s; captured by OpenTelemetry: %s (for %s)",
        hook,
        merged,
        ", ".join(fallback) or "-",
    )

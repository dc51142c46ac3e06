"""Server-side Matomo analytics from OpenTelemetry HTTP server spans."""

from otel_matomo.autoconfig import REQUEST_HEADERS, configure_header_capture
from otel_matomo.delivery import MatomoSpanProcessor
from otel_matomo.exporter import MatomoSpanExporter
from otel_matomo.hits import Hit
from otel_matomo.pipeline import ExportStats
from otel_matomo.request import HttpRequest
from otel_matomo.sampling import AnalyticsSampler
from otel_matomo.settings import ConfigurationError, Settings

__all__ = [
    "REQUEST_HEADERS",
    "AnalyticsSampler",
    "ConfigurationError",
    "ExportStats",
    "Hit",
    "HttpRequest",
    "MatomoSpanExporter",
    "MatomoSpanProcessor",
    "Settings",
    "configure_header_capture",
]

"""Server-side Matomo analytics from OpenTelemetry HTTP server spans."""

from otel_matomo._delivery import MatomoSpanProcessor
from otel_matomo._hooks import request_hook
from otel_matomo._names import REQUEST_HEADERS
from otel_matomo._options import ConfigurationError
from otel_matomo._settings import Settings
from otel_matomo._types import ExportStats, Hit, HttpRequest
from otel_matomo.autoconfig import configure_header_capture
from otel_matomo.exporter import MatomoOptions, MatomoSpanExporter
from otel_matomo.sampling import AnalyticsSampler
from otel_matomo.tracking import (
    EcommerceItem,
    TrackingProcessor,
    set_custom_dimension,
    set_page_title,
    set_user_id,
    skip_tracking,
    track_cart_update,
    track_content_impression,
    track_event,
    track_goal,
    track_order,
    track_product_view,
    track_site_search,
)

__all__ = [
    "REQUEST_HEADERS",
    "AnalyticsSampler",
    "ConfigurationError",
    "EcommerceItem",
    "ExportStats",
    "Hit",
    "HttpRequest",
    "MatomoOptions",
    "MatomoSpanExporter",
    "MatomoSpanProcessor",
    "Settings",
    "TrackingProcessor",
    "configure_header_capture",
    "request_hook",
    "set_custom_dimension",
    "set_page_title",
    "set_user_id",
    "skip_tracking",
    "track_cart_update",
    "track_content_impression",
    "track_event",
    "track_goal",
    "track_order",
    "track_product_view",
    "track_site_search",
]

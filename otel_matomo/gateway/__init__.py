"""``otel-matomo gateway``: Matomo analytics for back ends in any language, through OTLP/HTTP.

Every other back end (Node.js, Java, Go, .NET...) already exports OTLP. The gateway receives those traces on
``POST /v1/traces`` (directly, or from an OpenTelemetry Collector) and turns their HTTP server spans into
Matomo hits with the exporter's own :class:`~otel_matomo.pipeline.Pipeline`: it only adds "OTLP span ->
request view", never a second translation. Needs the ``gateway`` extra (opentelemetry-proto, uvicorn).
"""

from otel_matomo.gateway._config import GatewayConfig, matomo_settings
from otel_matomo.gateway._process import run_gateway, serve
from otel_matomo.gateway._server import Gateway

__all__ = ["Gateway", "GatewayConfig", "matomo_settings", "run_gateway", "serve"]

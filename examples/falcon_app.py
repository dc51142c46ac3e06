"""A small Falcon shop, tracked in Matomo through OpenTelemetry's generic WSGI middleware.

Falcon's route template (``/items/{item_id:int}``) is only known once Falcon has routed the request, after the
WSGI middleware started the span. Without it the Matomo page title is the path (``GET /items/7``): one row per
item. :class:`RouteTemplate` puts the template on the span, so the title becomes ``GET /items/{item_id:int}``.

In code: ``python falcon_app.py`` (see ``instrument`` below). Zero code, with Falcon's own instrumentation
(which records the route template by itself)::

    pip install otel-matomo opentelemetry-distro opentelemetry-instrumentation-falcon gunicorn
    OTEL_TRACES_EXPORTER=matomo OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \
    OTEL_EXPORTER_MATOMO_ENDPOINT=https://matomo.example.com OTEL_EXPORTER_MATOMO_SITE_ID=1 \
    opentelemetry-instrument gunicorn falcon_app:app
"""

# ruff: noqa: ARG002 - the framework's handler signatures
from __future__ import annotations

from typing import Any

import falcon


class Home:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"page": "home"}


class Item:
    def on_get(self, req: falcon.Request, resp: falcon.Response, item_id: int) -> None:
        if item_id > 100:
            raise falcon.HTTPNotFound(description="no such item")
        resp.media = {"item": item_id}


class Cart:
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"added": True}


class OldHome:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise falcon.HTTPFound("/")


class Boom:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise RuntimeError("a bug in the shop")


class RouteTemplate:
    """Falcon middleware: the matched route template onto the request's span (``http.route``).

    The generic WSGI middleware's span is the current span while Falcon handles the request, so plain
    OpenTelemetry API is enough; Matomo then titles the page ``GET /items/{item_id:int}``.
    """

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any, params: Any) -> None:
        if req.uri_template:
            from opentelemetry import trace

            trace.get_current_span().set_attribute("http.route", req.uri_template)


def create_app(*, route_templates: bool = True) -> falcon.App:
    """The shop: a page with a route parameter, a JSON API call, a redirect and a 404."""
    shop = falcon.App(middleware=[RouteTemplate()] if route_templates else [])
    shop.add_route("/", Home())
    shop.add_route("/items/{item_id:int}", Item())
    shop.add_route("/api/cart", Cart())
    shop.add_route("/old-home", OldHome())
    shop.add_route("/boom", Boom())
    return shop


app = create_app()


def instrument(shop: falcon.App) -> Any:
    """The shop wrapped in OpenTelemetry's WSGI middleware, exporting to Matomo (settings from the environment)."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import otel_matomo

    otel_matomo.configure_header_capture()  # Referer, Accept-Language, Host, X-Forwarded-For
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(otel_matomo.MatomoSpanExporter()))
    trace.set_tracer_provider(provider)
    return OpenTelemetryMiddleware(shop)


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    make_server("127.0.0.1", 8000, instrument(app)).serve_forever()

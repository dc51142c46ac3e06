"""A small Flask shop, tracked in Matomo through OpenTelemetry.

Zero code::

    OTEL_TRACES_EXPORTER=matomo OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \
    OTEL_EXPORTER_MATOMO_ENDPOINT=https://matomo.example.com OTEL_EXPORTER_MATOMO_SITE_ID=1 \
    opentelemetry-instrument flask --app flask_app run

In code: ``python flask_app.py`` (see ``instrument`` below).
"""

from __future__ import annotations

from flask import Flask, abort, jsonify, redirect
from werkzeug.wrappers import Response


def create_app() -> Flask:
    """The shop: a page with a route parameter, a JSON API call, a redirect and a 404."""
    shop = Flask(__name__)

    @shop.get("/")
    def home() -> Response:
        return jsonify(page="home")

    @shop.get("/items/<int:item_id>")
    def item(item_id: int) -> Response:
        if item_id > 100:
            abort(404)
        return jsonify(item=item_id)

    @shop.post("/api/cart")
    def add_to_cart() -> Response:
        return jsonify(added=True)

    @shop.get("/old-home")
    def old_home() -> Response:
        return redirect("/")

    @shop.get("/boom")
    def boom() -> Response:
        raise RuntimeError("a bug in the shop")

    return shop


app = create_app()


def instrument(shop: Flask) -> None:
    """Configure OpenTelemetry with the Matomo exporter in code (settings from OTEL_EXPORTER_MATOMO_*)."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import otel_matomo

    otel_matomo.configure_header_capture()  # Referer, Accept-Language, Host, X-Forwarded-For
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(otel_matomo.MatomoSpanExporter()))
    trace.set_tracer_provider(provider)
    FlaskInstrumentor().instrument_app(shop)


if __name__ == "__main__":
    instrument(app)
    app.run(host="127.0.0.1", port=8000)

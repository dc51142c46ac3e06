"""A small FastAPI shop, tracked in Matomo through OpenTelemetry.

Zero code (the app below has no OpenTelemetry import at all)::

    OTEL_TRACES_EXPORTER=matomo OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \
    OTEL_EXPORTER_MATOMO_ENDPOINT=https://matomo.example.com OTEL_EXPORTER_MATOMO_SITE_ID=1 \
    opentelemetry-instrument uvicorn fastapi_app:app

In code: ``python fastapi_app.py`` (see ``instrument`` below).
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from fastapi.responses import RedirectResponse


def create_app() -> FastAPI:
    """The shop: a page with a route parameter, a JSON API call, a redirect and a 404."""
    shop = FastAPI()

    @shop.get("/")
    def home() -> dict[str, str]:
        return {"page": "home"}

    @shop.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        if item_id > 100:
            raise HTTPException(status_code=404, detail="no such item")
        return {"item": item_id}

    @shop.post("/api/cart")
    def add_to_cart() -> dict[str, bool]:
        return {"added": True}

    @shop.get("/old-home")
    def old_home() -> RedirectResponse:
        return RedirectResponse("/")

    @shop.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug in the shop")

    return shop


app = create_app()


def instrument(shop: FastAPI) -> None:
    """Configure OpenTelemetry with the Matomo exporter in code (settings from OTEL_EXPORTER_MATOMO_*)."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import otel_matomo

    otel_matomo.configure_header_capture()  # before instrumenting: Referer, Accept-Language, Host, X-Forwarded-For
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(otel_matomo.MatomoSpanExporter()))
    trace.set_tracer_provider(provider)
    FastAPIInstrumentor.instrument_app(shop)


if __name__ == "__main__":
    import uvicorn

    instrument(app)
    uvicorn.run(app, host="127.0.0.1", port=8000)

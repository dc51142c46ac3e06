"""A small Starlette shop, tracked in Matomo through OpenTelemetry.

Zero code (the app below has no OpenTelemetry import at all)::

    pip install otel-matomo opentelemetry-distro opentelemetry-instrumentation-starlette uvicorn
    OTEL_TRACES_EXPORTER=matomo OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \
    OTEL_EXPORTER_MATOMO_ENDPOINT=https://matomo.example.com OTEL_EXPORTER_MATOMO_SITE_ID=1 \
    opentelemetry-instrument uvicorn starlette_app:app

In code: ``python starlette_app.py`` (see ``instrument`` below).
"""

# ruff: noqa: ARG001 - the framework's handler signatures
from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route


async def home(request: Request) -> Response:
    return JSONResponse({"page": "home"})


async def item(request: Request) -> Response:
    item_id: int = request.path_params["item_id"]
    if item_id > 100:
        raise HTTPException(status_code=404, detail="no such item")
    return JSONResponse({"item": item_id})


async def add_to_cart(request: Request) -> Response:
    return JSONResponse({"added": True})


async def old_home(request: Request) -> Response:
    return RedirectResponse("/")


async def boom(request: Request) -> Response:
    raise RuntimeError("a bug in the shop")


def create_app() -> Starlette:
    """The shop: a page with a route parameter, a JSON API call, a redirect and a 404."""
    return Starlette(
        routes=[
            Route("/", home),
            Route("/items/{item_id:int}", item),
            Route("/api/cart", add_to_cart, methods=["POST"]),
            Route("/old-home", old_home),
            Route("/boom", boom),
        ]
    )


app = create_app()


def instrument(shop: Starlette) -> None:
    """Configure OpenTelemetry with the Matomo exporter in code (settings from OTEL_EXPORTER_MATOMO_*)."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.starlette import StarletteInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import otel_matomo

    otel_matomo.configure_header_capture()  # before instrumenting: Referer, Accept-Language, Host, X-Forwarded-For
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(otel_matomo.MatomoSpanExporter()))
    trace.set_tracer_provider(provider)
    StarletteInstrumentor.instrument_app(shop)


if __name__ == "__main__":
    import uvicorn

    instrument(app)
    uvicorn.run(app, host="127.0.0.1", port=8000)

"""A small Litestar shop, tracked in Matomo through OpenTelemetry's generic ASGI middleware.

The middleware wraps the whole application, so it sees every request (unknown URLs too), but Litestar's route
template (``/items/{item_id:int}``) is only known once Litestar has routed the request. Without it the Matomo
page title is the path (``GET /items/7``): one row per item. :func:`route_template` puts the template on the
span, so the title becomes ``GET /items/{item_id:int}``.

In code: ``python litestar_app.py`` (see ``instrument`` below).
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Request, get, post
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect


@get("/")
async def home() -> dict[str, str]:
    return {"page": "home"}


@get("/items/{item_id:int}")
async def item(item_id: FromPath[int]) -> dict[str, int]:
    if item_id > 100:
        raise NotFoundException("no such item")
    return {"item": item_id}


@post("/api/cart", status_code=200)
async def add_to_cart() -> dict[str, bool]:
    return {"added": True}


@get("/old-home")
async def old_home() -> Redirect:
    return Redirect("/")


@get("/boom")
async def boom() -> None:
    raise RuntimeError("a bug in the shop")


async def route_template(request: Request[Any, Any, Any]) -> None:
    """``before_request`` hook: the matched route template onto the request's span (``http.route``).

    The generic ASGI middleware's span is the current span while Litestar handles the request, so plain
    OpenTelemetry API is enough; Matomo then titles the page ``GET /items/{item_id:int}``.
    """
    from opentelemetry import trace

    template = request.scope.get("path_template")
    if template:
        trace.get_current_span().set_attribute("http.route", template)


def create_app(*, route_templates: bool = True) -> Litestar:
    """The shop: a page with a route parameter, a JSON API call, a redirect and a 404."""
    return Litestar(
        route_handlers=[home, item, add_to_cart, old_home, boom],
        before_request=route_template if route_templates else None,
    )


app = create_app()


def instrument(shop: Litestar) -> Any:
    """The shop wrapped in OpenTelemetry's ASGI middleware, exporting to Matomo (settings from the environment)."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import otel_matomo

    headers = otel_matomo.configure_header_capture()  # Referer, Accept-Language, Host, X-Forwarded-For
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(otel_matomo.MatomoSpanExporter()))
    trace.set_tracer_provider(provider)
    return OpenTelemetryMiddleware(shop, http_capture_headers_server_request=headers)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(instrument(app), host="127.0.0.1", port=8000)

"""A small Django shop in one file (settings, views and URLs), tracked in Matomo through OpenTelemetry.

The module is its own settings module and URLconf, and serves both WSGI (``django_app:application``) and ASGI
(``django_app:asgi_application``). The application objects are made on first use, so that OpenTelemetry's
Django instrumentation (which adds its middleware to ``MIDDLEWARE``) runs before Django loads the middleware.

Zero code (no OpenTelemetry import below)::

    pip install otel-matomo opentelemetry-distro opentelemetry-instrumentation-django gunicorn
    export DJANGO_SETTINGS_MODULE=django_app
    OTEL_TRACES_EXPORTER=matomo OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none \
    OTEL_EXPORTER_MATOMO_ENDPOINT=https://matomo.example.com OTEL_EXPORTER_MATOMO_SITE_ID=1 \
    opentelemetry-instrument gunicorn django_app:application      # or: uvicorn django_app:asgi_application

In code: ``python django_app.py`` (see ``instrument`` below).
"""

# ruff: noqa: ARG001 - the framework's handler signatures
from __future__ import annotations

import os
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app")

# Settings.
DEBUG = False
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "django_app"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
USE_TZ = True


# Views.
def home(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"page": "home"})


def item(request: HttpRequest, item_id: int) -> HttpResponse:
    if item_id > 100:
        raise Http404("no such item")
    return JsonResponse({"item": item_id})


def add_to_cart(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponse(status=405)
    return JsonResponse({"added": True})


def old_home(request: HttpRequest) -> HttpResponse:
    return redirect("/")


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug in the shop")


# URLs: the shop, a page with a route parameter, a JSON API call, a redirect and a 404.
urlpatterns = [
    path("", home),
    path("items/<int:item_id>", item),
    path("api/cart", add_to_cart),
    path("old-home", old_home),
    path("boom", boom),
]

_applications: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """``application`` (WSGI) and ``asgi_application`` (ASGI), made on first use: after any instrumentation."""
    if name not in ("application", "asgi_application"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _applications:
        if name == "application":
            from django.core.wsgi import get_wsgi_application

            _applications[name] = get_wsgi_application()
        else:
            from django.core.asgi import get_asgi_application

            _applications[name] = get_asgi_application()
    return _applications[name]


def instrument() -> None:
    """Configure OpenTelemetry with the Matomo exporter in code (settings from OTEL_EXPORTER_MATOMO_*).

    Call it before the first use of ``application`` or ``asgi_application``.
    """
    from opentelemetry import trace
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import otel_matomo

    otel_matomo.configure_header_capture()  # Referer, Accept-Language, Host, X-Forwarded-For
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(otel_matomo.MatomoSpanExporter()))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument()


if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    instrument()
    make_server("127.0.0.1", 8000, __getattr__("application")).serve_forever()

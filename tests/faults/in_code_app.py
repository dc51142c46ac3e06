"""A FastAPI app set up in code at import, as the README's recipe does but without a lifespan that shuts the
provider down: the graceful-stop rows for ``uvicorn --workers N`` serve it (``tests.faults.in_code_app:app``).

``IN_CODE_DELIVERY=processor`` adds a ``MatomoSpanProcessor``; otherwise ``BatchSpanProcessor(MatomoSpanExporter())``.
Settings come from ``OTEL_EXPORTER_MATOMO_*``.
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import otel_matomo

otel_matomo.configure_header_capture()
provider = TracerProvider()
if os.environ.get("IN_CODE_DELIVERY") == "processor":
    provider.add_span_processor(otel_matomo.MatomoSpanProcessor())
else:
    provider.add_span_processor(BatchSpanProcessor(otel_matomo.MatomoSpanExporter()))
trace.set_tracer_provider(provider)

app = FastAPI()


@app.get("/")
def home() -> dict[str, str]:
    """The page view the test counts."""
    return {"page": "home"}


FastAPIInstrumentor.instrument_app(app, server_request_hook=otel_matomo.request_hook)

"""The ASGI benchmark app: FastAPI, one route template, a little work; the variant comes from BENCH_VARIANT."""

from __future__ import annotations

from common import (
    INSTRUMENTED,
    LEAN,
    MATOMO_URL,
    SITE_ID,
    STATS_PATH,
    TOKEN,
    VARIANT,
    freeze_startup_objects,
    request_hook,
    setup_tracing,
    stats,
    work,
)
from fastapi import FastAPI

setup_tracing()

app = FastAPI()


@app.get("/items/{item_id}")
async def item(item_id: int, q: str | None = None) -> dict[str, object]:
    return work(item_id, q)


@app.get(STATS_PATH)
async def _stats() -> dict[str, object]:
    return stats()


if VARIANT in INSTRUMENTED:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        excluded_urls=STATS_PATH,
        server_request_hook=request_hook(),
        exclude_spans=["receive", "send"] if VARIANT in LEAN else None,
    )
    application = app
elif VARIANT == "peer":
    from asgi_matomo import MatomoMiddleware

    application = MatomoMiddleware(  # type: ignore[assignment]
        app, matomo_url=MATOMO_URL, idsite=SITE_ID, access_token=TOKEN, exclude_paths=[STATS_PATH]
    )
else:
    application = app

freeze_startup_objects()

"""The WSGI benchmark app: Flask, one route template, a little work; the variant comes from BENCH_VARIANT."""

from __future__ import annotations

from common import (
    INSTRUMENTED,
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
from flask import Flask, request

setup_tracing()

app = Flask(__name__)


@app.get("/items/<int:item_id>")
def item(item_id: int) -> dict[str, object]:
    return work(item_id, request.args.get("q"))


@app.get(STATS_PATH)
def _stats() -> dict[str, object]:
    return stats()


if VARIANT in INSTRUMENTED:
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    FlaskInstrumentor().instrument_app(app, excluded_urls=STATS_PATH, request_hook=request_hook())
elif VARIANT == "peer":
    from flask_matomo2 import Matomo

    Matomo(app, matomo_url=MATOMO_URL, id_site=SITE_ID, token_auth=TOKEN, ignored_routes=[STATS_PATH])

freeze_startup_objects()

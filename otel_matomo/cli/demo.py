"""``otel-matomo demo``: a real instrumented app, a scripted browsing session, the hits it becomes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from fastapi import FastAPI, HTTPException
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_matomo._types import Hit
from otel_matomo.autoconfig import configure_header_capture
from otel_matomo.cli._serving import serve_asgi
from otel_matomo.exporter import MatomoSpanExporter

__all__ = ["run_demo"]

_COLUMNS = ("cid", "cdt", "action_name", "url", "urlref", "lang", "pf_srv")


@dataclass(frozen=True)
class _Visit:
    """One scripted request: who asks for what, coming from where."""

    path: str
    user_agent: str
    language: str
    referrer: str | None = None
    method: str = "GET"
    forwarded_for: str | None = None


_DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
_MOBILE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
)
_SESSION = (
    _Visit("/?mtm_campaign=autumn", _DESKTOP, "en-GB,en;q=0.9", "https://news.example/", forwarded_for="198.51.100.4"),
    _Visit("/items/7", _DESKTOP, "en-GB,en;q=0.9", "http://shop.example/", forwarded_for="198.51.100.4"),
    _Visit("/api/cart", _DESKTOP, "en-GB,en;q=0.9", method="POST", forwarded_for="198.51.100.4"),
    _Visit("/items/12?color=red", _MOBILE, "fr-FR,fr;q=0.8", "https://www.google.com/", forwarded_for="203.0.113.9"),
    _Visit("/no/such/page", _MOBILE, "fr-FR,fr;q=0.8", "http://shop.example/items/12", forwarded_for="203.0.113.9"),
)


def _build_app() -> FastAPI:
    app = FastAPI()

    @app.get("/")
    def home() -> dict[str, str]:
        return {"page": "home"}

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        if item_id > 100:
            raise HTTPException(status_code=404)
        return {"item": item_id}

    @app.post("/api/cart")
    def add_to_cart() -> dict[str, bool]:
        return {"added": True}

    return app


def run_demo(*, as_json: bool = False) -> int:
    """Serve, browse, print the hits; send them too when an endpoint is configured."""
    send = bool(os.environ.get("OTEL_EXPORTER_MATOMO_ENDPOINT"))
    exporter = MatomoSpanExporter(dry_run=not send)
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    app = _build_app()
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, http_capture_headers_server_request=configure_header_capture({})
    )
    with serve_asgi(app) as base_url:
        _browse(base_url)
    finished = spans.get_finished_spans()
    hits = exporter.translate(finished)
    _print_json(hits) if as_json else _print_table(hits)
    if send:
        exporter.export(finished)
        exporter.shutdown()
        stats = exporter.stats
        _say(
            f"\nsent to {exporter.settings.endpoint_for_logs}: tracked {stats.tracked}, invalid {stats.invalid}, "
            f"lost {stats.lost}",
            as_json,
        )
        return 0 if stats.tracked == len(hits) else 1
    _say(
        "\nNo Matomo configured (OTEL_EXPORTER_MATOMO_ENDPOINT, OTEL_EXPORTER_MATOMO_SITE_ID): nothing was sent.",
        as_json,
    )
    return 0


def _say(message: str, as_json: bool) -> None:
    """A sentence for the reader: on standard output with the table, on standard error with ``--json`` so that
    standard output stays pure JSON (one hit per line) for ``jq`` and scripts."""
    print(message.lstrip("\n") if as_json else message, file=sys.stderr if as_json else sys.stdout)


def _browse(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as client:
        for visit in _SESSION:
            headers = {
                "Host": "shop.example",
                "User-Agent": visit.user_agent,
                "Accept-Language": visit.language,
                **({"Referer": visit.referrer} if visit.referrer else {}),
                **({"X-Forwarded-For": visit.forwarded_for} if visit.forwarded_for else {}),
            }
            client.request(visit.method, visit.path, headers=headers)


def _print_json(hits: Sequence[Hit]) -> None:
    for hit in hits:
        print(json.dumps(hit))


def _print_table(hits: Sequence[Hit]) -> None:
    rows = [[hit.get(column, "") for column in _COLUMNS] for hit in hits]
    widths = [min(max(len(column), *(len(row[i]) for row in rows)), 48) for i, column in enumerate(_COLUMNS)]
    print(f"{len(hits)} Matomo hits (bulk tracking API parameters, one row per request):\n")
    for line in [list(_COLUMNS), *rows]:
        print("  ".join(_cut(cell, width).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    if sys.stdout.isatty():
        print("\nRun with --json to see every parameter of every hit.")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"

"""The test suite's one place for building settings and requests: each test module states only what differs."""

from __future__ import annotations

import calendar
import time
from typing import Any

from otel_matomo._settings import Settings
from otel_matomo._types import HttpRequest

TOKEN = "0123456789abcdef0123456789abcdef"
SECRET = "tests-visitor-id-secret-0123456789"
CLIENT = "203.0.113.195"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
START_NS = calendar.timegm((2024, 5, 1, 12, 0, 0)) * 1_000_000_000
"""2024-05-01 12:00:00 UTC, when the built requests start."""


def settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings for ``https://matomo.example``, site 3, with a token and a fixed visitor id secret; ``overrides``
    are ``Settings.from_env`` keyword arguments."""
    options: dict[str, Any] = {
        "endpoint": "https://matomo.example",
        "site_id": 3,
        "token_auth": TOKEN,
        "visitor_id_secret": SECRET,
        **overrides,
    }
    return Settings.from_env(environ or {}, **options)


def dry_run_settings(**overrides: Any) -> Settings:
    """Settings that send nothing (no endpoint, no token): for the policy, which needs no Matomo."""
    return Settings.from_env({}, dry_run=True, **overrides)


def http_request(**overrides: Any) -> HttpRequest:
    """A finished ``GET /items/7`` on ``shop.example`` from :data:`CLIENT`, answered 200 in 42.4 ms; ``headers``
    are given lower-case, as the request view stores them."""
    fields: dict[str, Any] = {
        "method": "GET",
        "path": "/items/7",
        "route": "/items/{item_id}",
        "start_ns": START_NS,
        "end_ns": START_NS + 42_400_000,
        "span_id": 0x1234,
        "host": "shop.example",
        "peer_address": CLIENT,
        "user_agent": UA,
        "status": 200,
        **overrides,
    }
    return HttpRequest(**fields)


OTLP_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15"
)
OTLP_VISITOR = "198.51.100.23"
"""The visitor behind the proxy (``X-Forwarded-For``) in the OTLP spans below."""


def otlp_server_span(
    path: str = "/items/7", *, span_id: int = 1, kind: int = 2, route: str | None = "/items/:id"
) -> dict[str, Any]:
    """A Node.js-style HTTP server span (new conventions, captured headers as string arrays), started now."""
    start = time.time_ns() - 50_000_000 + span_id * 1000  # distinct, increasing start times
    attributes: list[dict[str, Any]] = [
        {"key": "http.request.method", "value": {"stringValue": "GET"}},
        {"key": "url.scheme", "value": {"stringValue": "https"}},
        {"key": "url.path", "value": {"stringValue": path}},
        {"key": "network.peer.address", "value": {"stringValue": "127.0.0.1"}},
        {"key": "user_agent.original", "value": {"stringValue": OTLP_UA}},
        {"key": "http.response.status_code", "value": {"intValue": "200"}},
        {"key": "http.request.header.host", "value": {"arrayValue": {"values": [{"stringValue": "shop.example"}]}}},
        {
            "key": "http.request.header.x-forwarded-for",
            "value": {"arrayValue": {"values": [{"stringValue": OTLP_VISITOR}]}},
        },
    ]
    if route is not None:
        attributes.append({"key": "http.route", "value": {"stringValue": route}})
    return {
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "spanId": f"{span_id:016x}",
        "name": f"GET {route or path}",
        "kind": kind,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 3_000_000),
        "attributes": attributes,
    }


def otlp_payload(*spans: dict[str, Any], service: str = "shop") -> dict[str, Any]:
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}
    return {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": list(spans)}]}]}

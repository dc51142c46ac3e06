"""The test suite's one place for building settings and requests: each test module states only what differs."""

from __future__ import annotations

import calendar
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

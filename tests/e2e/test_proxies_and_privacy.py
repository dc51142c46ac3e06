"""The traffic policy through a real instrumented Flask app under werkzeug, sending to the matomo.php stand-in.

The client talks to the app from loopback, which is how a reverse proxy on the same host reaches it: with the
default trusted proxies (loopback) its forwarding headers are believed, as a proxy's would be. With trusted proxies
that exclude loopback the same requests come from an untrusted peer, and the same headers must change nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import flask_app
import httpx
import pytest
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_matomo import MatomoSpanExporter, Settings, configure_header_capture
from otel_matomo._visitor import visitor_id
from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn
from tests.servers import serve_wsgi

SECRET = "e2e-proxy-visitor-secret-0123456789"
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CLIENT = "203.0.113.9"
SPOOFED = "6.6.6.6"


@pytest.fixture
def capture_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", raising=False)
    configure_header_capture()  # the documented in-code call, into the monkeypatched environment


@dataclass
class Shop:
    base_url: str
    exporter: MatomoSpanExporter
    provider: TracerProvider

    def request(self, method: str, path: str, headers: dict[str, str] | list[tuple[str, str]] | None = None) -> int:
        """One request from loopback; a list of headers keeps repeated names as separate header lines."""
        extra = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        overridden = {name.lower() for name, _ in extra}
        sent = [
            (name, value)
            for name, value in (("Host", "shop.example"), ("User-Agent", UA))
            if name.lower() not in overridden
        ]
        with httpx.Client(base_url=self.base_url) as client:
            return client.request(method, path, headers=sent + extra).status_code

    def flush(self) -> None:
        assert self.provider.force_flush(10_000)


@pytest.fixture
def open_shop(standin: MatomoStandIn, capture_headers: None) -> Iterator[Callable[..., Any]]:
    """``open_shop(**policy)``: a context manager serving the Flask shop with the exporter configured so."""
    providers: list[TracerProvider] = []

    @contextmanager
    def shop(**policy: Any) -> Iterator[Shop]:
        settings = Settings.from_env(
            {}, endpoint=standin.url, site_id=1, token_auth=WRITE_TOKEN, visitor_id_secret=SECRET, **policy
        )
        exporter = MatomoSpanExporter(settings=settings)
        provider = TracerProvider()
        providers.append(provider)
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
        app = flask_app.create_app()
        FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
        with serve_wsgi(app) as base_url:
            yield Shop(base_url, exporter, provider)

    yield shop
    for provider in providers:
        provider.shutdown()


def _by_url(hits: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {hit["url"]: hit for hit in hits}


# --- behind a trusted proxy ---------------------------------------------------------------------------------------


def test_a_trusted_proxy_gives_the_client_address_scheme_and_host(
    open_shop: Callable[..., Any], standin: MatomoStandIn
) -> None:
    with open_shop() as shop:
        shop.request(
            "GET",
            "/items/7",
            {
                "Host": "127.0.0.1:8000",
                "X-Forwarded-For": f"{SPOOFED}, {CLIENT}",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "www.shop.example",
            },
        )
        # Two header lines: the client's own first, the one the proxy added last.
        shop.request("GET", "/items/8", [("X-Forwarded-For", SPOOFED), ("X-Forwarded-For", "198.51.100.20")])
        standin.wait_for_hits(2)
    # Behind proxies that write RFC 7239 Forwarded instead.
    with open_shop(forwarded_header="forwarded") as shop:
        shop.request(
            "GET", "/", {"Forwarded": f'for={SPOOFED}, for="[2001:db8:cafe::17]:4711";proto=https;host=shop.example'}
        )
        hits = _by_url(standin.wait_for_hits(3))

    assert set(hits) == {
        "https://www.shop.example/items/7",
        "https://shop.example/",
        "http://shop.example/items/8",
    }
    first = hits["https://www.shop.example/items/7"]
    assert first["cip"] == CLIENT
    assert first["cid"] == visitor_id(SECRET.encode(), CLIENT, UA)
    assert first["action_name"] == "GET /items/<int:item_id>"
    second = hits["https://shop.example/"]
    assert second["cip"] == "2001:db8:cafe::17"
    assert second["cid"] == visitor_id(SECRET.encode(), "2001:db8:cafe::17", UA)
    third = hits["http://shop.example/items/8"]
    assert third["cip"] == "198.51.100.20"
    assert SPOOFED not in json.dumps([received.body for received in standin.received])


def test_a_chain_of_trusted_proxies_and_an_anonymised_address(
    open_shop: Callable[..., Any], standin: MatomoStandIn
) -> None:
    with open_shop(trusted_proxies=["127.0.0.1", "10.0.0.0/8"], anonymize_ip=2) as shop:
        shop.request("GET", "/items/7", {"X-Forwarded-For": f"{SPOOFED}, {CLIENT}, 10.1.2.3, 10.4.5.6"})
        (hit,) = standin.wait_for_hits(1)
    assert hit["cip"] == "203.0.0.0"
    # The visitor id comes from the full address, before masking.
    assert hit["cid"] == visitor_id(SECRET.encode(), CLIENT, UA)
    assert hit["url"] == "http://shop.example/items/7"


# --- from an untrusted peer ---------------------------------------------------------------------------------------


def test_an_untrusted_peer_cannot_spoof_address_scheme_or_host(
    open_shop: Callable[..., Any], standin: MatomoStandIn
) -> None:
    with open_shop(trusted_proxies=["10.0.0.0/8"]) as shop:
        shop.request(
            "GET",
            "/items/7",
            {"X-Forwarded-For": SPOOFED, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"},
        )
        shop.request("GET", "/", {"Forwarded": f"for={SPOOFED};proto=https;host=evil.example"})
        hits = _by_url(standin.wait_for_hits(2))

    assert set(hits) == {"http://shop.example/items/7", "http://shop.example/"}
    for hit in hits.values():
        assert hit["cip"] == "127.0.0.1"
        assert hit["cid"] == visitor_id(SECRET.encode(), "127.0.0.1", UA)
    assert SPOOFED not in json.dumps([received.body for received in standin.received])
    assert "evil.example" not in json.dumps([received.body for received in standin.received])


# --- what becomes a hit ---------------------------------------------------------------------------------------------


def test_opt_outs_health_checks_static_files_and_preflights_are_counted_not_sent(
    open_shop: Callable[..., Any], standin: MatomoStandIn
) -> None:
    with open_shop() as shop:
        assert shop.request("GET", "/items/1", {"Sec-GPC": "1"}) == 200
        assert shop.request("GET", "/items/2", {"DNT": "1"}) == 200
        shop.request("GET", "/healthz")
        shop.request("GET", "/static/site.css")
        assert shop.request("OPTIONS", "/api/cart", {"Origin": "https://other.example"}) == 200
        shop.request("GET", "/items/3")  # the one visit
        (hit,) = standin.wait_for_hits(1)
        shop.flush()
        stats = shop.exporter.stats

    assert hit["url"] == "http://shop.example/items/3"
    assert stats.opted_out == 2
    assert stats.excluded == 3
    assert stats.tracked == 1
    sent = [item for received in standin.received for item in received.body["requests"]]  # type: ignore[union-attr]
    assert len(sent) == 1


def test_honouring_privacy_signals_can_be_switched_off(open_shop: Callable[..., Any], standin: MatomoStandIn) -> None:
    with open_shop(honor_gpc=False, honor_dnt=False) as shop:
        shop.request("GET", "/items/1", {"Sec-GPC": "1"})
        shop.request("GET", "/items/2", {"DNT": "1"})
        hits = _by_url(standin.wait_for_hits(2))
        shop.flush()
        assert shop.exporter.stats.opted_out == 0
    assert set(hits) == {"http://shop.example/items/1", "http://shop.example/items/2"}


def test_an_event_route_sends_an_event(open_shop: Callable[..., Any], standin: MatomoStandIn) -> None:
    with open_shop(event_routes=["/api/*"], event_category="Shop API") as shop:
        shop.request("POST", "/api/cart")
        shop.request("GET", "/items/7")
        hits = _by_url(standin.wait_for_hits(2))

    event = hits["http://shop.example/api/cart"]
    assert (event["ca"], event["e_c"], event["e_a"], event["e_n"]) == ("1", "Shop API", "POST /api/cart", "/api/cart")
    assert 0 <= int(event["e_v"]) < 5000
    assert "action_name" not in event
    assert "pf_srv" not in event
    page = hits["http://shop.example/items/7"]
    assert page["action_name"] == "GET /items/<int:item_id>"
    assert "e_c" not in page


def test_credentials_in_the_query_never_reach_matomo(open_shop: Callable[..., Any], standin: MatomoStandIn) -> None:
    with open_shop() as shop:
        shop.request(
            "GET",
            "/items/7?token=s3cr3t&utm_source=news&color=red",
            {"Referer": "https://shop.example/login?password=hunter2&next=%2Fcart"},
        )
        (hit,) = standin.wait_for_hits(1)

    assert hit["url"] == "http://shop.example/items/7?utm_source=news&color=red"
    assert hit["urlref"] == "https://shop.example/login?next=%2Fcart"
    raw = json.dumps([received.body for received in standin.received])
    assert "s3cr3t" not in raw
    assert "hunter2" not in raw


def test_an_overlong_client_header_cannot_spoof_the_address(
    open_shop: Callable[..., Any], standin: MatomoStandIn
) -> None:
    client_header = "," * (4096 - len(SPOOFED)) + SPOOFED  # what the client sent
    with open_shop() as shop:
        shop.request("GET", "/items/7", {"X-Forwarded-For": f"{client_header}, {CLIENT}"})  # what the proxy passes on
        (hit,) = standin.wait_for_hits(1)
    assert hit["cip"] == CLIENT

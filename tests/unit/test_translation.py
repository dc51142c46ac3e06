"""Span -> HttpRequest -> hit, over spans recorded from real instrumented apps in every semconv mode.

The fixtures (``tests/fixtures/spans``, made by ``tests/fixtures/generate_spans.py``) hold what the FastAPI,
raw ASGI, Flask (wsgiref and werkzeug) and raw WSGI instrumentations really set, next to the request the client
really sent; the expectations here are derived from that request, not from the attributes.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import pytest

from otel_matomo.hits import request_hit
from otel_matomo.request import HttpRequest, http_request_from_span_data
from otel_matomo.settings import Settings

SPANS = Path(__file__).parent.parent / "fixtures" / "spans"
TOKEN = "0123456789abcdef0123456789abcdef"
SETTINGS = Settings.from_env({}, endpoint="https://matomo.example", site_id=3, token_auth=TOKEN)

# WSGI under wsgiref (no RAW_URI) in the new conventions records neither url.path nor url.query: the path is
# only in the span name, which frameworks replace with the route template, and the query is gone.
LOSSY = {"flask-new", "wsgi-raw-new"}


def _server_spans() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for path in sorted(SPANS.glob("*.json")):
        for span in json.loads(path.read_text()):
            if span["kind"] == "SERVER":
                cases.append((path.stem, span))
    return cases


CASES = _server_spans()


def _header(span: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in span["request"]["headers"] if key.lower() == name]


def _expected_origin(span: dict[str, Any]) -> tuple[str, str, str]:
    """Scheme, host and client address the hit must carry, from the headers the client sent.

    uvicorn (the ASGI fixtures) itself replaces the peer with the right-most X-Forwarded-For address, since it
    trusts 127.0.0.1; the WSGI servers report the loopback peer, so our own trusted-proxy walk applies to
    X-Forwarded-For (the default forwarding header; a Forwarded header the client sent is not read). Either way
    the right-most address, 10.0.0.2 in the repeated-headers request, is the first untrusted one.
    """
    host = _header(span, "host")[0]
    chain = [hop.strip() for hop in ",".join(_header(span, "x-forwarded-for")).split(",") if hop.strip()]
    return "http", host, chain[-1] if chain else "127.0.0.1"


def _uri_component(text: str) -> str:
    """JavaScript's encodeURIComponent."""
    return quote(text, safe="!*'()")


def _request(span: dict[str, Any]) -> HttpRequest:
    request = http_request_from_span_data(
        span["name"], span["attributes"], span["start_time"], span["end_time"], int(span["span_id"], 16)
    )
    assert request is not None
    return request


def test_fixtures_cover_every_mode_and_stack() -> None:
    stems = {stem for stem, _ in CASES}
    for app in ("fastapi", "asgi-raw", "flask", "flask-werkzeug", "wsgi-raw"):
        for mode in ("old", "new", "dup"):
            assert f"{app}-{mode}" in stems


@pytest.mark.parametrize(("stem", "span"), CASES, ids=[f"{s}:{sp['request']['label']}" for s, sp in CASES])
def test_hit_matches_what_the_client_sent(stem: str, span: dict[str, Any]) -> None:
    sent = span["request"]
    hit = request_hit(_request(span), SETTINGS)
    scheme, host, client = _expected_origin(span)
    path, _, query = sent["target"].partition("?")
    if stem in LOSSY:
        route = span["attributes"].get("http.route")
        path, query = (route or span["name"].partition(" ")[2]), ""

    assert hit["idsite"] == "3"
    assert hit["rec"] == "1"
    assert hit["apiv"] == "1"
    assert hit["rand"] == span["span_id"]
    assert hit["url"] == f"{scheme}://{host}{path}" + (f"?{query}" if query else "")
    assert hit["cdt"] == str(span["start_time"] // 10**9)
    assert hit["pf_srv"] == str(round((span["end_time"] - span["start_time"]) / 1e6))
    assert hit.get("ua") == next(iter(_header(span, "user-agent")), None)
    assert hit.get("urlref") == next(iter(_header(span, "referer")), None)
    languages = _header(span, "accept-language")
    assert (hit.get("lang") or "").replace(" ", "") == ",".join(languages).replace(" ", "")
    assert hit["cip"] == client
    assert len(hit["cid"]) == 16

    status = sent["response_status"]
    if status >= 400:
        title = f"{status}/URL = {_uri_component(path + ('?' + query if query else ''))}"
        referrer = hit.get("urlref")
        assert hit["action_name"] == title + (f"/From = {_uri_component(referrer)}" if referrer else "")
    else:
        route = span["attributes"].get("http.route")
        assert hit["action_name"] == f"{sent['method']} {route or path}"


@pytest.mark.parametrize("mode", ["old", "new", "dup"])
def test_fastapi_route_template_is_the_title_in_every_mode(mode: str) -> None:
    spans = json.loads((SPANS / f"fastapi-{mode}.json").read_text())
    first = next(span for span in spans if span["kind"] == "SERVER")
    hit = request_hit(_request(first), SETTINGS)
    assert hit["action_name"] == "GET /items/{item_id}"
    assert hit["url"] == "http://shop.example/items/42?q=shoes&utm_source=news"


def test_same_visitor_same_id_across_requests_and_modes() -> None:
    ids = set()
    for stem in ("fastapi-old", "fastapi-new", "flask-dup", "wsgi-raw-old"):
        spans = json.loads((SPANS / f"{stem}.json").read_text())
        first = next(span for span in spans if span["kind"] == "SERVER")
        ids.add(request_hit(_request(first), SETTINGS)["cid"])
    assert len(ids) == 1, "one browser behind one address is one visitor whatever the stack"


def test_without_token_no_cip_is_sent() -> None:
    settings = Settings.from_env({}, endpoint="https://matomo.example", site_id=1, visitor_id_secret="s" * 16)
    for _, span in CASES:
        assert "cip" not in request_hit(_request(span), settings)


def test_non_http_and_internal_spans_are_not_requests() -> None:
    for path in sorted(SPANS.glob("*.json")):
        for span in json.loads(path.read_text()):
            if span["kind"] == "INTERNAL":
                request = http_request_from_span_data(span["name"], span["attributes"], 0, 1, 1)
                assert request is None, span["name"]


@pytest.mark.parametrize("padding", [0, 600])
def test_old_asgi_urls_are_re_escaped_whatever_their_length(padding: int) -> None:
    # Old ASGI builds http.url from the decoded query; splitting it is cached up to 512 characters.
    from otel_matomo.request import http_request_from_span_data

    attributes = {
        "http.method": "GET",
        "http.target": "/search",
        "http.url": f"http://shop.example/search?q=red shoes&p={'x' * padding}",
    }
    for _ in range(2):
        request = http_request_from_span_data("GET /search", attributes, 1, 2, 3)
        assert request is not None
        assert (request.path, request.query) == ("/search", f"q=red%20shoes&p={'x' * padding}")


def test_sdk_attributes_are_read_from_a_plain_copy() -> None:
    # The SDK's BoundedAttributes view runs Python code on every lookup; read_span reads a dict copy of it.
    from opentelemetry.attributes import BoundedAttributes

    from otel_matomo.exporter import _plain

    bounded = BoundedAttributes(attributes={"http.method": "GET", "http.request.header.host": ["a"]}, immutable=True)
    plain = _plain(MappingProxyType(bounded))  # type: ignore[arg-type]
    assert isinstance(plain, dict)
    assert plain == {"http.method": "GET", "http.request.header.host": ("a",)}
    assert _plain(None) == {}
    assert _plain(MappingProxyType({})) == {}

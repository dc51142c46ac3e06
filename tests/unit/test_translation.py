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

from otel_matomo._hits import request_hit
from otel_matomo._request import http_request_from_span_data
from otel_matomo._settings import Settings
from otel_matomo._types import HttpRequest

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
        span["name"],
        span["attributes"],
        span["start_time"],
        span["end_time"],
        int(span["span_id"], 16),
        scope=span["scope"],
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
    from otel_matomo._request import http_request_from_span_data

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

    from otel_matomo._spans import _plain

    bounded = BoundedAttributes(attributes={"http.method": "GET", "http.request.header.host": ["a"]}, immutable=True)
    plain = _plain(MappingProxyType(bounded))  # type: ignore[arg-type]
    assert isinstance(plain, dict)
    assert plain == {"http.method": "GET", "http.request.header.host": ("a",)}
    assert _plain(None) == {}
    assert _plain(MappingProxyType({})) == {}


def test_every_field_is_read_into_its_own_place() -> None:
    # The request is built by position (the hot path): each field carries a value no other field could.
    attributes = {
        "http.request.method": "patch",
        "url.scheme": "HTTPS",
        "url.path": "/orders/9",
        "url.query": "a=1",
        "http.route": "/orders/{order_id}",
        "http.response.status_code": 303,
        "network.peer.address": "198.51.100.7",
        "user_agent.original": "agent/1.0",
        "enduser.id": "user-42",
        "user_agent.synthetic.type": "test",
        "http.response.body.size": 1234,
        "http.response.header.location": ("/orders/9/",),
        "http.request.header.host": ("shop.example:8443",),
        "matomo.page_title": "Order 9",
    }
    events = [("matomo.event", 5, {"matomo.event.category": "c"})]
    request = http_request_from_span_data("PATCH /orders/{order_id}", attributes, 11, 22, 33, events)
    assert request is not None
    assert (request.method, request.path, request.query) == ("PATCH", "/orders/9", "a=1")
    assert request.route == "/orders/{order_id}"
    assert (request.start_ns, request.end_ns, request.span_id) == (11, 22, 33)
    assert (request.scheme, request.host, request.peer_address) == ("https", "shop.example:8443", "198.51.100.7")
    assert (request.user_agent, request.status, request.user_id) == ("agent/1.0", 303, "user-42")
    assert (request.synthetic_type, request.response_size) == ("test", 1234)
    assert (request.redirect_location, request.headers) == ("/orders/9/", {"host": "shop.example:8443"})
    assert request.tracking.page_title == "Order 9"
    assert [fact.kind for fact in request.tracking.facts] == ["matomo.event"]
    assert request.attributes is attributes


HEADER_CASES: list[tuple[dict[str, Any], dict[str, str]]] = [
    ({"http.method": "GET"}, {}),  # no header at all
    (
        {
            "http.method": "GET",
            "http.request.header.user_agent": ("one",),
            "http.request.header.User-Agent": ("two",),  # the same header twice: the later attribute wins
            "http.request.header.accept_language": [" fr ", "", "en"],  # a list, blank lines dropped
            "http.request.header.referer": "https://a.example/é",  # a plain string, not ASCII
            "http.request.header.x_forwarded_for": ("10.0.0.1", "10.0.0.2"),  # repeated lines
            "http.request.header.cookie": ("[REDACTED]",),  # sanitised
            "http.request.header.dnt": (),  # empty
            "http.request.header.sec_ch_ua": ("\ud800odd",),  # a lone surrogate
            "http.request.header.x_number": (7,),  # not text
        },
        {
            "user-agent": "two",
            "accept-language": "fr, en",
            "referer": "https://a.example/é",
            "x-forwarded-for": "10.0.0.1, 10.0.0.2",
            "sec-ch-ua": "\ufffdodd",
        },
    ),
    (
        {"http.request.header.host": ("shop.example",), "matomo.page_title": "Home", "http.method": "GET"},
        {"host": "shop.example"},
    ),
    (
        {"http.method": "GET", "enduser.id": " ", "user.id": "u-2", "http.request.header.host": "a.example"},
        {"host": "a.example"},
    ),
    ({"http.method": "GET", "http.response.header.location": ["/next"], "user_agent.synthetic.type": "bot"}, {}),
]


@pytest.mark.parametrize(("attributes", "headers"), HEADER_CASES)
def test_captured_headers_are_read_in_attribute_order_whatever_else_the_span_holds(
    attributes: dict[str, Any], headers: dict[str, str]
) -> None:
    # Unrelated attributes before the headers, or the same attributes in the opposite order, change nothing but
    # which of two attributes for one header comes last (and wins).
    first = http_request_from_span_data("GET /", attributes, 1, 2, 3)
    padded = {**{f"custom.{n}.{'k' * 64}": n for n in range(80)}, **attributes}
    with_others = http_request_from_span_data("GET /", padded, 1, 2, 3)
    reversed_request = http_request_from_span_data("GET /", dict(reversed(list(attributes.items()))), 1, 2, 3)
    assert first is not None
    assert with_others is not None
    assert reversed_request is not None
    assert first.headers == with_others.headers == headers
    assert reversed_request.headers == {**headers, **({"user-agent": "one"} if "user-agent" in headers else {})}
    for request in (with_others, reversed_request):
        assert (request.user_id, request.synthetic_type, request.redirect_location, request.tracking) == (
            first.user_id,
            first.synthetic_type,
            first.redirect_location,
            first.tracking,
        )


def test_user_id_synthetic_type_redirect_and_page_title_are_read_from_their_attributes() -> None:
    requests = [http_request_from_span_data("GET /", attributes, 1, 2, 3) for attributes, _ in HEADER_CASES]
    assert [(r.user_id, r.synthetic_type, r.redirect_location, r.tracking.page_title) for r in requests if r] == [
        (None, None, None, None),
        (None, None, None, None),
        (None, None, None, "Home"),
        ("u-2", None, None, None),
        (None, "bot", "/next", None),
    ]


def test_rare_attributes_are_read_when_present_and_none_otherwise() -> None:
    plain = http_request_from_span_data("GET /", {"http.method": "GET"}, 1, 2, 3)
    rare = http_request_from_span_data(
        "GET /",
        {"http.method": "GET", "user.id": ["u-1"], "user_agent.synthetic.type": "", "http.response.header.location": 3},
        1,
        2,
        3,
    )
    assert plain is not None
    assert rare is not None
    assert (plain.user_id, plain.synthetic_type, plain.redirect_location) == (None, None, None)
    assert (rare.user_id, rare.synthetic_type, rare.redirect_location) == ("u-1", None, "3")


@pytest.mark.parametrize(
    ("route", "template"),
    [
        ("/items/{item_id}", "/items/{item_id}"),
        ("GET /items/7", "/items/7"),  # Litestar
        ("articles/<slug:slug>", "/articles/<slug:slug>"),  # Django
        ("/é/{x}", "/é/{x}"),
        ("/" + "a" * 600 + "/{x}", "/" + "a" * 600 + "/{x}"),  # past the cached length
    ],
)
def test_route_templates_are_the_same_from_the_cache(route: str, template: str) -> None:
    for _ in range(2):
        request = http_request_from_span_data("GET", {"http.method": "GET", "http.route": route}, 1, 2, 3)
        assert request is not None
        assert request.route == template

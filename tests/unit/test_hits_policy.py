"""``request_hit`` under the traffic policy: event hits, bots, client hints, response size, IP masking, daily
visitor ids, URL redaction and the origin a trusted proxy reports.
"""

from __future__ import annotations

import calendar
import json
from typing import Any

import pytest

from otel_matomo._caps import fit
from otel_matomo._hits import request_hit
from otel_matomo._request import http_request_from_span_data
from otel_matomo._visitor import visitor_id
from tests import factories
from tests.factories import CLIENT, SECRET, START_NS, UA

settings = factories.settings
request = factories.http_request


def at(year: int, month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> int:
    return calendar.timegm((year, month, day, hour, minute, second)) * 1_000_000_000


# --- event hits -------------------------------------------------------------------------------------------------


def test_an_event_route_becomes_an_event_hit() -> None:
    api = request(method="POST", path="/api/cart", route="/api/cart", end_ns=START_NS + 12_600_000)
    hit = request_hit(api, settings(event_routes=["/api/*"], event_category="Shop API"))
    assert hit["ca"] == "1"
    assert hit["e_c"] == "Shop API"
    assert hit["e_a"] == "POST /api/cart"
    assert hit["e_n"] == "/api/cart"
    assert hit["e_v"] == "13"
    assert "action_name" not in hit
    assert "pf_srv" not in hit
    assert hit["url"] == "http://shop.example/api/cart"
    assert hit["cid"] == visitor_id(SECRET.encode(), CLIENT, UA)


def test_an_event_names_the_route_template_and_the_real_path() -> None:
    api = request(path="/api/orders/9", route="/api/orders/{order_id}")
    hit = request_hit(api, settings(event_routes=["/api/orders/{order_id}"]))
    assert (hit["e_c"], hit["e_a"], hit["e_n"]) == ("API", "GET /api/orders/{order_id}", "/api/orders/9")
    # Without a route the path stands in for it.
    hit = request_hit(request(path="/api/ping", route=None), settings(event_routes=["/api/*"]))
    assert hit["e_a"] == "GET /api/ping"


def test_other_routes_stay_page_views() -> None:
    hit = request_hit(request(), settings(event_routes=["/api/*"]))
    assert hit["action_name"] == "GET /items/{item_id}"
    assert hit["pf_srv"] == "42"
    assert not {"ca", "e_c", "e_a", "e_n", "e_v"} & hit.keys()


# --- bots, client hints, response size ----------------------------------------------------------------------------


def test_bots_flag_only_with_track_bots() -> None:
    assert request_hit(request(), settings(track_bots=True))["bots"] == "1"
    assert "bots" not in request_hit(request(), settings())


CHROME_HINTS = {
    "sec-ch-ua": '"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"',
    "sec-ch-ua-mobile": "?0",
    "sec-ch-ua-platform": '"Windows"',
    "sec-ch-ua-platform-version": '"15.0.0"',
    "sec-ch-ua-model": '""',
    "sec-ch-ua-full-version-list": '"Chromium";v="124.0.6367.91", "Google Chrome";v="124.0.6367.91", '
    '"Not-A.Brand";v="99.0.0.0"',
}


def test_client_hints_become_uadata_in_matomo_shape() -> None:
    uadata = json.loads(request_hit(request(headers=CHROME_HINTS), settings())["uadata"])
    assert uadata == {
        "brands": [
            {"brand": "Chromium", "version": "124"},
            {"brand": "Google Chrome", "version": "124"},
            {"brand": "Not-A.Brand", "version": "99"},
        ],
        "fullVersionList": [
            {"brand": "Chromium", "version": "124.0.6367.91"},
            {"brand": "Google Chrome", "version": "124.0.6367.91"},
            {"brand": "Not-A.Brand", "version": "99.0.0.0"},
        ],
        "mobile": False,
        "platform": "Windows",
        "platformVersion": "15.0.0",
        "model": "",
    }


def test_mobile_client_hints() -> None:
    headers = {
        "sec-ch-ua": '"Chromium";v="124"',
        "sec-ch-ua-mobile": "?1",
        "sec-ch-ua-platform": '"Android"',
        "sec-ch-ua-model": '"Pixel 8"',
    }
    uadata = json.loads(request_hit(request(headers=headers), settings())["uadata"])
    assert uadata == {
        "brands": [{"brand": "Chromium", "version": "124"}],
        "mobile": True,
        "platform": "Android",
        "model": "Pixel 8",
    }


def test_client_hints_from_captured_span_attributes() -> None:
    attributes = {
        "http.request.method": "GET",
        "url.path": "/",
        "network.peer.address": CLIENT,
        "http.request.header.sec_ch_ua": ('"Chromium";v="124"',),
        "http.request.header.sec_ch_ua_mobile": ("?0",),
        "http.request.header.sec_ch_ua_platform": ('"Linux"',),
    }
    parsed = http_request_from_span_data("GET /", attributes, START_NS, START_NS + 1, 1)
    assert parsed is not None
    uadata = json.loads(request_hit(parsed, settings())["uadata"])
    assert uadata == {"brands": [{"brand": "Chromium", "version": "124"}], "mobile": False, "platform": "Linux"}


def test_no_client_hints_no_uadata() -> None:
    assert "uadata" not in request_hit(request(), settings())
    assert "uadata" not in request_hit(request(headers={"accept-language": "en"}), settings())


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({"http.response.body.size": 5120}, "5120"),
        ({"http.response_content_length": 17}, "17"),
        ({"http.response.body.size": "2048"}, "2048"),
        ({"http.response.body.size": 0}, "0"),
        ({"http.response.body.size": 10, "http.response_content_length": 99}, "10"),
        ({}, None),
        ({"http.response.body.size": "many"}, None),
        ({"http.response.body.size": True}, None),
    ],
)
def test_response_size_becomes_bw_bytes(attributes: dict[str, Any], expected: str | None) -> None:
    base = {"http.request.method": "GET", "url.path": "/", "network.peer.address": CLIENT}
    parsed = http_request_from_span_data("GET /", {**base, **attributes}, START_NS, START_NS + 1, 1)
    assert parsed is not None
    assert request_hit(parsed, settings()).get("bw_bytes") == expected


# --- IP masking and visitor ids -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "mask", "expected"),
    [
        (CLIENT, 1, "203.0.113.0"),
        (CLIENT, 2, "203.0.0.0"),
        (CLIENT, 3, "203.0.0.0"),
        ("2001:db8:1234:5678:9abc:def0:1234:5678", 1, "2001:db8:1234:5678::"),
        ("2001:db8:1234:5678:9abc:def0:1234:5678", 2, "2001:db8:1234::"),
        ("2001:db8:1234:5678:9abc:def0:1234:5678", 3, "2001:d00::"),
    ],
)
def test_cip_is_masked_but_the_visitor_id_uses_the_full_address(address: str, mask: int, expected: str) -> None:
    masked = request_hit(request(peer_address=address), settings(anonymize_ip=mask))
    full = request_hit(request(peer_address=address), settings())
    assert masked["cip"] == expected
    assert full["cip"] == address
    assert masked["cid"] == full["cid"] == visitor_id(SECRET.encode(), address, UA)
    # Two visitors in the same masked block stay two visitors.
    neighbour = request_hit(request(peer_address=address[:-1] + "1"), settings(anonymize_ip=mask))
    assert neighbour["cip"] == expected
    assert neighbour["cid"] != masked["cid"]


def test_the_masked_address_is_the_one_behind_the_proxy() -> None:
    behind = request(peer_address="127.0.0.1", headers={"x-forwarded-for": CLIENT})
    hit = request_hit(behind, settings(anonymize_ip=1))
    assert hit["cip"] == "203.0.113.0"
    assert hit["cid"] == visitor_id(SECRET.encode(), CLIENT, UA)


def test_daily_ids_are_stable_within_a_utc_day() -> None:
    daily = settings(visitor_id="daily")
    first, last = at(2024, 5, 1, 0), at(2024, 5, 1, 23, 59, 59)
    ids = {request_hit(request(start_ns=start), daily)["cid"] for start in (first, last)}
    assert ids == {visitor_id(SECRET.encode(), CLIENT, UA, "2024-05-01")}


def test_daily_ids_differ_across_days_and_from_the_stable_id() -> None:
    daily = settings(visitor_id="daily")
    days = [at(2024, 5, 1, 23, 59, 59), at(2024, 5, 2, 0), at(2024, 5, 3, 12), at(2025, 5, 1, 12)]
    ids = [request_hit(request(start_ns=start), daily)["cid"] for start in days]
    assert len(set(ids)) == len(days)
    assert request_hit(request(), settings())["cid"] not in ids


def test_stable_ids_are_identical_across_days() -> None:
    stable = settings(visitor_id="stable")
    days = [at(2024, 5, 1, 0), at(2024, 5, 2, 0), at(2025, 1, 1, 0)]
    ids = {request_hit(request(start_ns=start), stable)["cid"] for start in days}
    assert ids == {visitor_id(SECRET.encode(), CLIENT, UA)}
    assert request_hit(request(), settings())["cid"] in ids  # stable is the default


# --- redaction --------------------------------------------------------------------------------------------------------


def test_credentials_are_removed_from_url_and_urlref() -> None:
    leaky = request(
        path="/reset",
        query="token=s3cr3t&utm_source=mail&step=2",
        headers={"referer": "https://login.example/cb?code=abc123&state=xyz&lang=en"},
    )
    hit = request_hit(leaky, settings())
    assert hit["url"] == "http://shop.example/reset?utm_source=mail&step=2"
    assert hit["urlref"] == "https://login.example/cb?lang=en"
    assert "s3cr3t" not in json.dumps(hit)
    assert "abc123" not in json.dumps(hit)


def test_the_error_title_keeps_its_own_path_but_the_url_is_redacted() -> None:
    hit = request_hit(request(path="/gone", query="api_key=k", status=404), settings())
    assert hit["url"] == "http://shop.example/gone"


def test_redaction_with_a_custom_list_and_off() -> None:
    leaky = request(query="ticket=1&token=2")
    assert request_hit(leaky, settings(redact_query_params=["ticket"]))["url"] == "http://shop.example/items/7?token=2"
    assert request_hit(leaky, settings(redact_query_params=[]))["url"] == "http://shop.example/items/7?ticket=1&token=2"


# --- origin ---------------------------------------------------------------------------------------------------------


def test_scheme_and_host_from_a_trusted_proxy() -> None:
    behind = request(
        peer_address="127.0.0.1",
        host="127.0.0.1:8000",
        headers={"x-forwarded-for": CLIENT, "x-forwarded-proto": "https", "x-forwarded-host": "www.shop.example"},
    )
    hit = request_hit(behind, settings())
    assert hit["url"] == "https://www.shop.example/items/7"
    assert hit["cip"] == CLIENT


def test_forwarded_origin_with_default_port_dropped() -> None:
    behind = request(
        peer_address="::1", headers={"forwarded": f'for="{CLIENT}:5000";proto=https;host="shop.example:443"'}
    )
    hit = request_hit(behind, settings(forwarded_header="forwarded"))
    assert hit["url"] == "https://shop.example/items/7"
    assert hit["cip"] == CLIENT


def test_origin_headers_of_an_untrusted_peer_are_ignored() -> None:
    spoofing = request(headers={"x-forwarded-proto": "https", "x-forwarded-host": "evil.example"})
    assert request_hit(spoofing, settings())["url"] == "http://shop.example/items/7"
    behind = request(peer_address="127.0.0.1", headers={"x-forwarded-proto": "https"})
    assert request_hit(behind, settings(trusted_proxies=["10.0.0.0/8"]))["url"] == "http://shop.example/items/7"


@pytest.mark.parametrize(
    ("scheme", "host", "expected"),
    [
        ("ws", "shop.example", "http://shop.example/items/7"),
        ("wss", "shop.example", "https://shop.example/items/7"),
        ("wss", "shop.example:443", "https://shop.example/items/7"),
        ("ws", "shop.example:80", "http://shop.example/items/7"),
        ("wss", "shop.example:8443", "https://shop.example:8443/items/7"),
    ],
)
def test_websocket_schemes_are_http_urls(scheme: str, host: str, expected: str) -> None:
    assert request_hit(request(scheme=scheme, host=host), settings())["url"] == expected


@pytest.mark.parametrize("scheme", ["ftp", "h2c", "x y"])
def test_an_unknown_scheme_never_makes_a_non_http_url(scheme: str) -> None:
    assert request_hit(request(scheme=scheme), settings())["url"].startswith(("http://", "https://"))


# --- cached parts of the hit: the same whatever the length of what the visitor sent ------------------------------


def _uncached_page_url(scheme: str, host: str | None, path: str, query: str, words: tuple[str, ...]) -> str:
    """The page URL put together without the cache (``page_url`` before it had one)."""
    from otel_matomo._redact import redact_query, redact_url

    scheme = {"https": "https", "wss": "https"}.get(scheme, "http")
    host = host or "localhost"
    default_port = {"http": ":80", "https": ":443"}[scheme]
    if host.endswith(default_port):
        host = host[: -len(default_port)]
    path = redact_url(path if path.startswith("/") else "/" + path, words)
    query = redact_query(query, words)
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


@pytest.mark.parametrize("padding", [0, 200, 600])
@pytest.mark.parametrize(
    ("scheme", "host", "path", "query"),
    [
        ("http", "shop.example", "/items/7", ""),
        ("https", "shop.example:443", "items/7", "q=1&token=s3cret&utm_source=x"),
        ("wss", None, "/é/ü", "q=%C3%A9"),
        ("http", "shop.example:80", "/a#b", "password=x"),
        ("ftp", "shop.example:8080", "/", "a=1&a=2"),
    ],
)
def test_page_urls_from_the_cache_are_those_put_together(
    scheme: str, host: str | None, path: str, query: str, padding: int
) -> None:
    words = settings().redact_query_params
    long_path = path + "x" * padding  # past the cached length at 600, or with the host and query together
    expected = _uncached_page_url(scheme, host, long_path, query, words)
    for _ in range(2):  # the second time from the cache, when short enough to be cached
        hit = request_hit(request(scheme=scheme, host=host, path=long_path, query=query), settings())
        assert hit["url"] == expected


@pytest.mark.parametrize("padding", [0, 600])
def test_error_titles_from_the_cache_are_those_encoded(padding: int) -> None:
    from urllib.parse import quote

    path, kept_referrer = f"/missing/{'p' * padding}", f"https://other.example/é?ref={'r' * padding}"
    missing = request(status=404, path=path, query="a=1 2", headers={"referer": kept_referrer + "&token=x"})
    safe = "!*'()"
    expected = f"404/URL = {quote(path + '?a=1 2', safe=safe)}/From = {quote(kept_referrer, safe=safe)}"
    for _ in range(2):  # the long title is cut to the 1024 bytes Matomo keeps, the same from the cache or not
        assert request_hit(missing, settings())["action_name"] == fit("action_name", expected)


@pytest.mark.parametrize("padding", [0, 600])
def test_client_hints_from_the_cache_are_those_read(padding: int) -> None:
    brands = '"Chromium";v="126", "Not-A.Brand";v="99"' + " " * padding
    headers = {"sec-ch-ua": brands, "sec-ch-ua-mobile": "?1", "sec-ch-ua-platform": '"Android"'}
    expected = {
        "brands": [{"brand": "Chromium", "version": "126"}, {"brand": "Not-A.Brand", "version": "99"}],
        "mobile": True,
        "platform": "Android",
    }
    for _ in range(2):  # the second time from the cache, when short enough to be cached
        assert json.loads(request_hit(request(headers=headers), settings())["uadata"]) == expected

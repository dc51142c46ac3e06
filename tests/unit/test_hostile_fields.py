"""Hostile input in the translation (issue 17, rows 4 and 8): every text field cut to what Matomo stores, ``cdt``
within the window Matomo takes, ``client.address`` never chosen by the client, foreign hosts dropped; each change
counted, through the pipeline every shell shares.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind

from otel_matomo._caps import CAPS, UADATA_CAP, fit
from otel_matomo._hits import request_hit, request_hits
from otel_matomo._pipeline import Pipeline
from otel_matomo._request import http_request_from_span_data
from otel_matomo._spans import read_span
from otel_matomo._types import Adjustment, AppTracking, DropReason, TrackedFact
from otel_matomo.gateway._otlp import Encoding, decode, http_request_of
from tests import factories
from tests.factories import CLIENT, START_NS

NOW = START_NS / 1e9 + 3600.0
"""The clock of these tests: an hour after the requests started."""


def _matomo_length(text: str, unit: str) -> int:
    """What Matomo measures, written out character by character (``_caps`` counts instead)."""
    escaped = text.replace("&", "&amp;").replace('"', "&quot;").replace("'", "&#039;")
    escaped = escaped.replace("<", "&lt;").replace(">", "&gt;")
    return len(escaped.encode()) if unit == "bytes" else len(escaped)


# --- fit: the cut ---------------------------------------------------------------------------------------------

_PIECES = st.sampled_from(["a", "/", "&", '"', "'", "<", "é", "€", "😀", "%", "%C3%A9", "%2", "%F0%9F", "aaaaaaaaaa"])


@given(parameter=st.sampled_from(sorted(CAPS)), pieces=st.lists(_PIECES, max_size=1500))
# A lone "%" before a cut multi-byte escape: dropping the escape left the "%" last (found by Hypothesis).
@example(parameter="ec_id", pieces=["a" * 4, "&" * 14, "a" * 20, "%", "%C3%A9"])
def test_a_cut_value_is_the_longest_prefix_matomo_stores_whole(parameter: str, pieces: list[str]) -> None:
    value = "".join(pieces)
    cap, unit = CAPS[parameter]
    fitted = fit(parameter, value)
    assert value.startswith(fitted)
    assert _matomo_length(fitted, unit) <= cap
    if _matomo_length(value, unit) <= cap:
        assert fitted is value
    else:
        assert not re.search(r"%[0-9A-Fa-f]?\Z", fitted), "never ends inside a percent-escape"
        # Nothing whole was given away: one more character would not fit, or would start an unfinished escape.
        more = value[: len(fitted) + 1]
        assert _matomo_length(more, unit) > cap or "%" in value[len(fitted) : len(fitted) + 12]


@given(text=st.text(max_size=1200))
def test_a_cut_url_still_decodes(text: str) -> None:
    encoded = quote(text.encode("utf-8", "surrogatepass"), safe="/")
    fitted = fit("url", encoded)
    unquote(fitted, errors="strict")  # every escaped character is whole
    assert text.encode("utf-8", "surrogatepass").startswith(
        bytes(unquote(fitted, errors="surrogateescape"), "utf-8", "surrogateescape")
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/" + "a" * 1022 + "%C3%A9", "/" + "a" * 1022),  # the escaped é would end at byte 1029
        ("/" + "a" * 1020 + "%C3%A9", "/" + "a" * 1020),
        ("/" + "a" * 1017 + "%C3%A9", "/" + "a" * 1017 + "%C3%A9"),  # exactly 1024
        ("/" + "a" * 1016 + "%F0%9F%98%80", "/" + "a" * 1016),
        ("/" + "a" * 1020 + "&b=1", "/" + "a" * 1020),  # & is 5 bytes once Matomo escaped it
        ("/" + "a" * 1021 + "é€", "/" + "a" * 1021 + "é"),  # é is 2 bytes, € 3
    ],
)
def test_cuts_at_the_edge(value: str, expected: str) -> None:
    assert fit("url", value) == expected


# --- caps through translation ---------------------------------------------------------------------------------


def test_a_seven_megabyte_path_is_cut_to_what_matomo_keeps() -> None:
    attributes = {
        "http.request.method": "GET",
        "url.scheme": "https",
        "url.path": "/" + "x" * 7_000_000,
        "network.peer.address": CLIENT,
        "http.request.header.host": ("shop.example",),
    }
    pipeline = Pipeline(factories.settings())
    try:
        started = time.perf_counter()
        translation = pipeline.translate(
            [attributes], lambda record: http_request_from_span_data("GET", record, time.time_ns(), None, 1)
        )
        took = time.perf_counter() - started
    finally:
        pipeline.close()
    (hit,) = translation.hits
    assert hit["url"] == "https://shop.example/" + "x" * (1024 - len("https://shop.example/"))
    assert len(hit["action_name"].encode()) <= 1024
    assert translation.adjusted == {Adjustment.TRUNCATED: 1}
    assert pipeline.stats.truncated == 1
    assert took < 1.0


def _long(character: str = "x") -> str:
    return character * 20_000


def test_every_visitor_controlled_field_is_capped() -> None:
    tracking = AppTracking(
        page_title=_long("t"),
        search_keyword=_long("k"),
        search_category=_long("c"),
        product={"sku": _long("s"), "name": _long("n"), "category": _long("g")},
        dimensions={1: _long("d")},
    )
    headers = {"referer": "https://ref.example/" + _long("r"), "accept-language": _long("l")}
    long_request = factories.http_request(
        path="/" + _long("p"), user_agent=_long("u"), user_id=_long("i"), headers=headers, tracking=tracking
    )
    made = request_hits(long_request, factories.settings(), now=NOW)
    (hit,) = made.hits
    for parameter, value in hit.items():
        key = "dimension" if parameter.startswith("dimension") else parameter
        if key in CAPS:
            assert _matomo_length(value, CAPS[key][1]) == CAPS[key][0], parameter
    assert {"url", "action_name", "urlref", "ua", "lang", "uid", "search", "search_cat", "_pks", "_pkn"} <= set(hit)
    assert made.adjusted == (Adjustment.TRUNCATED,)


def test_event_and_fact_parameters_are_capped_and_each_hit_counted() -> None:
    facts = (
        TrackedFact("matomo.event", START_NS, {"matomo.event.category": _long("c"), "matomo.event.action": "a"}),
        TrackedFact("matomo.content_impression", START_NS, {"matomo.content.name": "banner"}),
    )
    made = request_hits(factories.http_request(tracking=AppTracking(facts=facts)), factories.settings(), now=NOW)
    _, event, impression = made.hits
    assert len(event["e_c"]) == 4096
    assert impression["c_n"] == "banner"
    assert made.adjusted == (Adjustment.TRUNCATED,)  # the event hit alone
    api_call = factories.http_request(path="/api/" + _long("a"), route=None)
    routed = request_hit(api_call, factories.settings(event_routes=["/api/*"]), now=NOW)
    assert len(routed["e_a"]) == len(routed["e_n"]) == 4096


def test_a_long_url_cut_in_the_page_view_is_cut_in_its_facts_and_counted_for_each() -> None:
    facts = (TrackedFact("matomo.goal", START_NS, {"matomo.goal.id": 1}),)
    long_request = factories.http_request(path="/" + _long("p"), tracking=AppTracking(facts=facts))
    made = request_hits(long_request, factories.settings(), now=NOW)
    assert made.hits[0]["url"] == made.hits[1]["url"]
    assert made.adjusted == (Adjustment.TRUNCATED, Adjustment.TRUNCATED)


def test_client_hints_too_long_to_keep_whole_are_left_out() -> None:
    brands = ", ".join(f'"Brand{index}";v="{index}"' for index in range(200))
    hinted = factories.http_request(headers={"sec-ch-ua": brands, "sec-ch-ua-mobile": "?0"})
    made = request_hits(hinted, factories.settings(), now=NOW)
    assert "uadata" not in made.hits[0]
    assert made.adjusted == (Adjustment.TRUNCATED,)
    short = factories.http_request(headers={"sec-ch-ua": '"Chromium";v="126"'})
    assert len(json.loads(request_hit(short, factories.settings(), now=NOW)["uadata"])["brands"]) == 1
    assert len(brands) > UADATA_CAP


def test_ordinary_hits_are_not_adjusted() -> None:
    made = request_hits(factories.http_request(headers={"referer": "https://ref.example/"}), factories.settings())
    assert made.adjusted == ()


# --- cdt --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start_ns", "expected", "clamped"),
    [
        (START_NS, START_NS // 10**9, False),
        (int((NOW + 60) * 1e9), int(NOW) + 60, False),  # a clock a minute ahead is skew
        (int((NOW + 61) * 1e9), int(NOW), True),
        (2**64, int(NOW), True),  # the year 2554
        (1, int(NOW), True),  # 1970
        (int((NOW - 19 * 365 * 86_400) * 1e9), int(NOW) - 19 * 365 * 86_400, False),  # Matomo takes 20 years
        (int((NOW - 20 * 365 * 86_400) * 1e9), int(NOW), True),
    ],
)
def test_cdt_is_kept_within_the_window_matomo_accepts(start_ns: int, expected: int, clamped: bool) -> None:
    made = request_hits(factories.http_request(start_ns=start_ns, end_ns=None), factories.settings(), now=NOW)
    assert made.hits[0]["cdt"] == str(expected)
    assert made.adjusted == ((Adjustment.TIME_CLAMPED,) if clamped else ())


def test_a_clamped_time_makes_the_daily_visitor_id_of_today() -> None:
    daily = factories.settings(visitor_id="daily")
    bogus = request_hit(factories.http_request(start_ns=1), daily, now=NOW)
    today = request_hit(factories.http_request(start_ns=int(NOW * 1e9)), daily, now=NOW)
    assert bogus["cid"] == today["cid"]


def test_a_fact_time_is_clamped_on_its_own() -> None:
    facts = (TrackedFact("matomo.goal", 2**64, {"matomo.goal.id": 1}),)
    made = request_hits(factories.http_request(tracking=AppTracking(facts=facts)), factories.settings(), now=NOW)
    assert [hit["cdt"] for hit in made.hits] == [str(START_NS // 10**9), str(int(NOW))]
    assert made.adjusted == (Adjustment.TIME_CLAMPED,)


# --- client.address ---------------------------------------------------------------------------------------------

SPOOFED = "6.6.6.6"
PYTHON_NEW = {"http.request.method": "GET", "url.path": "/", "client.address": CLIENT}


def _sdk_span(attributes: dict[str, Any], scope: str | None) -> ReadableSpan:
    return ReadableSpan(
        name="GET /",
        context=SpanContext(1, 2, is_remote=False),
        kind=SpanKind.SERVER,
        attributes=attributes,
        start_time=START_NS,
        end_time=START_NS + 1,
        instrumentation_scope=InstrumentationScope(scope) if scope is not None else None,
    )


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ("opentelemetry.instrumentation.asgi", CLIENT),
        ("opentelemetry.instrumentation.flask", CLIENT),
        ("my-app", None),  # a custom instrumentation may have read X-Forwarded-For
        ("@opentelemetry/instrumentation-http", None),
        (None, None),
    ],
)
def test_client_address_is_the_peer_only_from_instrumentations_that_read_the_connection(
    scope: str | None, expected: str | None
) -> None:
    request = read_span(_sdk_span(PYTHON_NEW, scope))
    assert request is not None
    assert request.peer_address == expected
    assert ("cip" in request_hit(request, factories.settings())) is (expected is not None)


def test_the_socket_peer_wins_over_client_address_whatever_the_scope() -> None:
    attributes = {**PYTHON_NEW, "network.peer.address": "198.51.100.9", "client.address": SPOOFED}
    request = read_span(_sdk_span(attributes, "opentelemetry.instrumentation.asgi"))
    assert request is not None
    assert request.peer_address == "198.51.100.9"


def _otlp(scope: dict[str, Any] | None) -> dict[str, Any]:
    span = {
        "spanId": "00000000000000aa",
        "name": "GET /",
        "kind": 2,
        "startTimeUnixNano": str(START_NS),
        "endTimeUnixNano": str(START_NS + 1),
        "attributes": [{"key": key, "value": {"stringValue": value}} for key, value in PYTHON_NEW.items()],
    }
    scope_spans: dict[str, Any] = {"spans": [span]}
    if scope is not None:
        scope_spans["scope"] = scope
    return {"resourceSpans": [{"resource": {}, "scopeSpans": [scope_spans]}]}


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ({"name": "opentelemetry.instrumentation.fastapi"}, CLIENT),
        ({"name": "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"}, None),
        ({}, None),
        (None, None),
        ({"name": 7}, None),
        ("not an object", None),
    ],
)
def test_the_gateway_reads_the_scope_of_each_span(scope: Any, expected: str | None) -> None:
    (record,) = decode(json.dumps(_otlp(scope)).encode(), Encoding.JSON).spans
    request = http_request_of(record)
    assert request is not None
    assert request.peer_address == expected


def test_the_gateway_reads_the_scope_from_protobuf_too() -> None:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    payload = _otlp({"name": "opentelemetry.instrumentation.wsgi"})
    payload["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "AAAAAAAAAKo="
    body = json_format.ParseDict(payload, ExportTraceServiceRequest()).SerializeToString()
    (record,) = decode(body, Encoding.PROTOBUF).spans
    assert record.scope == "opentelemetry.instrumentation.wsgi"
    assert http_request_of(record).peer_address == CLIENT  # type: ignore[union-attr]


def test_a_malformed_chain_from_a_trusted_proxy_gives_no_cip_and_is_counted() -> None:
    proxied = factories.http_request(peer_address="127.0.0.1", headers={"x-forwarded-for": f"{SPOOFED}, garbage"})
    pipeline = Pipeline(factories.settings())
    try:
        (hit,) = pipeline.translate([proxied], lambda request: request).hits
    finally:
        pipeline.close()
    assert "cip" not in hit
    assert pipeline.stats.forwarded_malformed == 1


# --- site_hosts ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "kept"),
    [
        ("shop.example", True),
        ("SHOP.example:8443", True),
        ("shop.example.", True),
        ("eu.shop.example", True),
        ("a.b.shop.example", True),
        ("evil.example", False),
        ("shop.example.evil.example", False),
        ("notshop.example", False),
        ("[2001:db8::1]:80", False),
        (None, False),
    ],
)
def test_only_the_site_hosts_are_tracked_when_listed(host: str | None, kept: bool) -> None:
    listed = factories.settings(site_hosts=["shop.example", "*.shop.example"])
    pipeline = Pipeline(listed)
    try:
        translation = pipeline.translate([factories.http_request(host=host)], lambda request: request)
    finally:
        pipeline.close()
    assert len(translation.hits) == int(kept)
    assert pipeline.stats.foreign_host == int(not kept)


def test_the_host_a_trusted_proxy_reports_is_the_one_checked() -> None:
    listed = factories.settings(site_hosts=["shop.example"])
    proxied = factories.http_request(
        host="internal:8080", peer_address="127.0.0.1", headers={"x-forwarded-host": "shop.example"}
    )
    assert request_hits(proxied, listed).hits
    spoofing = factories.http_request(headers={"x-forwarded-host": "shop.example"}, host="evil.example")
    pipeline = Pipeline(listed)
    try:
        assert pipeline.translate([spoofing], lambda request: request).dropped == {DropReason.FOREIGN_HOST: 1}
    finally:
        pipeline.close()


def test_site_hosts_are_off_by_default_and_read_from_the_environment() -> None:
    assert factories.settings().site_hosts == ()
    assert request_hits(factories.http_request(host="anything.example"), factories.settings()).hits
    from_env = factories.settings({"OTEL_EXPORTER_MATOMO_SITE_HOSTS": "Shop.Example, *.shop.example"})
    assert from_env.site_hosts == ("shop.example", "*.shop.example")

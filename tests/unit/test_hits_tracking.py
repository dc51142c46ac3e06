"""``request_hits`` for requests the application tracked facts on: the exact Matomo parameters of each fact kind,
the visitor parameters every extra hit shares with the page view, their order and times, site search, product
views, page titles, skipped requests, custom dimensions and event routes.
"""

from __future__ import annotations

import calendar
import json
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_matomo import _names as names
from otel_matomo import tracking
from otel_matomo._hits import InvalidFact, RequestHits, request_hits
from otel_matomo._options import ConfigurationError
from otel_matomo._pipeline import Pipeline
from otel_matomo._policy import skip_reason
from otel_matomo._request import http_request_from_span_data
from otel_matomo._settings import Settings
from otel_matomo._types import AppTracking, DropReason, HttpRequest, SpanEvent, TrackedFact
from otel_matomo._visitor import visitor_id
from otel_matomo.exporter import MatomoSpanExporter
from otel_matomo.tracking import EcommerceItem
from tests import factories
from tests.factories import CLIENT, SECRET, UA
from tests.matomo_standin import _custom_action_without_plugin

START_S = calendar.timegm((2024, 5, 1, 12, 0, 0))
START_NS = START_S * 1_000_000_000
SPAN_ID = 0x00F067AA0BA902B7
RAND = "00f067aa0ba902b7"
ITEMS = '[["SKU-BOOTS","Boots","Shoes",49.9,1],["SKU-SOCKS","","",4.95,2]]'


settings = factories.settings


def attributes(**extra: Any) -> dict[str, Any]:
    """A finished POST /checkout?step=2 as the stable HTTP conventions record it, with captured headers."""
    recorded: dict[str, Any] = {
        "http.request.method": "POST",
        "url.scheme": "https",
        "url.path": "/checkout",
        "url.query": "step=2",
        "http.route": "/checkout",
        "http.response.status_code": 200,
        "user_agent.original": UA,
        "network.peer.address": CLIENT,
        "http.request.header.host": ("shop.example",),
        "http.request.header.referer": ("https://shop.example/cart",),
        "http.request.header.accept_language": ("de-DE,de;q=0.9",),
        "enduser.id": "alice@example.com",
    }
    recorded.update(extra)
    return recorded


def at(seconds: float) -> int:
    """A time ``seconds`` after the request started, in ns."""
    return START_NS + int(seconds * 1_000_000_000)


def request(*events: SpanEvent, end_s: float = 4.2, **extra: Any) -> HttpRequest:
    built = http_request_from_span_data("POST /checkout", attributes(**extra), START_NS, at(end_s), SPAN_ID, events)
    assert built is not None
    return built


VISITOR = {
    "idsite": "3",
    "rec": "1",
    "apiv": "1",
    "cid": visitor_id(SECRET.encode(), CLIENT, UA),
    "url": "https://shop.example/checkout?step=2",
    "urlref": "https://shop.example/cart",
    "ua": UA,
    "lang": "de-DE,de;q=0.9",
    "uid": "alice@example.com",
    "cip": CLIENT,
}
"""What every hit of the request carries."""
PAGE_VIEW = {**VISITOR, "rand": RAND, "cdt": str(START_S), "action_name": "POST /checkout", "pf_srv": "4200"}


def extra(index: int, seconds: int, **parameters: str) -> dict[str, str]:
    """The expected ``index``-th extra hit, tracked ``seconds`` after the start."""
    # Goals and ecommerce hits carry no ca=1: Matomo 5 answers HTTP 500 for them with it.
    marker = {} if "idgoal" in parameters else {"ca": "1"}
    return {**VISITOR, "rand": f"{RAND}-{index}", "cdt": str(START_S + seconds), **marker, **parameters}


# --- each fact kind ---------------------------------------------------------------------------------------------


def test_no_facts_one_page_view() -> None:
    assert request_hits(request(), settings()).hits == [PAGE_VIEW]


FACTS: list[tuple[str, SpanEvent, dict[str, str]]] = [
    (
        "event",
        (
            "matomo.event",
            at(1),
            {
                "matomo.event.category": "Checkout",
                "matomo.event.action": "pay",
                "matomo.event.name": "card",
                "matomo.event.value": 59.9,
            },
        ),
        {"e_c": "Checkout", "e_a": "pay", "e_n": "card", "e_v": "59.9"},
    ),
    (
        "event, whole value",
        ("matomo.event", at(1), {"matomo.event.category": "C", "matomo.event.action": "A", "matomo.event.value": 3.0}),
        {"e_c": "C", "e_a": "A", "e_v": "3"},
    ),
    (
        "event, category and action",
        ("matomo.event", at(1), {"matomo.event.category": "C", "matomo.event.action": "A"}),
        {"e_c": "C", "e_a": "A"},
    ),
    ("goal", ("matomo.goal", at(1), {"matomo.goal.id": 4}), {"idgoal": "4"}),
    (
        "goal with revenue",
        ("matomo.goal", at(1), {"matomo.goal.id": 4, "matomo.goal.revenue": 19.99}),
        {"idgoal": "4", "revenue": "19.99"},
    ),
    (
        "order",
        (
            "matomo.ecommerce.order",
            at(1),
            {
                "matomo.ecommerce.order_id": "A-1001",
                "matomo.ecommerce.revenue": 64.8,
                "matomo.ecommerce.items": ITEMS,
                "matomo.ecommerce.subtotal": 59.8,
                "matomo.ecommerce.tax": 9.55,
                "matomo.ecommerce.shipping": 5.0,
                "matomo.ecommerce.discount": 0.0,
            },
        ),
        {
            "idgoal": "0",
            "ec_id": "A-1001",
            "revenue": "64.8",
            "ec_items": ITEMS,
            "ec_st": "59.8",
            "ec_tx": "9.55",
            "ec_sh": "5",
            "ec_dt": "0",
        },
    ),
    (
        "order, required only",
        (
            "matomo.ecommerce.order",
            at(1),
            {"matomo.ecommerce.order_id": "A-1002", "matomo.ecommerce.revenue": 10.0, "matomo.ecommerce.items": "[]"},
        ),
        {"idgoal": "0", "ec_id": "A-1002", "revenue": "10", "ec_items": "[]"},
    ),
    (
        "cart update",
        ("matomo.ecommerce.cart_update", at(1), {"matomo.ecommerce.revenue": 59.8, "matomo.ecommerce.items": ITEMS}),
        {"idgoal": "0", "revenue": "59.8", "ec_items": ITEMS},
    ),
    (
        "content impression",
        (
            "matomo.content_impression",
            at(1),
            {
                "matomo.content.name": "Spring sale",
                "matomo.content.piece": "/img/spring.png",
                "matomo.content.target": "/sale",
            },
        ),
        {"c_n": "Spring sale", "c_p": "/img/spring.png", "c_t": "/sale"},
    ),
    (
        "content impression, name only",
        ("matomo.content_impression", at(1), {"matomo.content.name": "Newsletter box"}),
        {"c_n": "Newsletter box"},
    ),
]


@pytest.mark.parametrize(("event", "parameters"), [case[1:] for case in FACTS], ids=[case[0] for case in FACTS])
def test_each_fact_kind_becomes_its_exact_hit(event: SpanEvent, parameters: dict[str, str]) -> None:
    assert request_hits(request(event), settings()) == RequestHits([PAGE_VIEW, extra(1, 1, **parameters)], invalid=())


def test_page_view_first_then_facts_in_call_order_each_with_its_own_time() -> None:
    events: list[SpanEvent] = [
        ("matomo.event", at(0.5), {"matomo.event.category": "Checkout", "matomo.event.action": "start"}),
        ("matomo.goal", at(1.2), {"matomo.goal.id": 2, "matomo.goal.revenue": 64.8}),
        (
            "matomo.ecommerce.order",
            at(2.9),
            {"matomo.ecommerce.order_id": "A-1", "matomo.ecommerce.revenue": 64.8, "matomo.ecommerce.items": ITEMS},
        ),
        ("matomo.content_impression", at(3), {"matomo.content.name": "Thanks banner"}),
        ("matomo.event", at(4.1), {"matomo.event.category": "Checkout", "matomo.event.action": "done"}),
    ]
    assert request_hits(request(*events), settings()).hits == [
        PAGE_VIEW,
        extra(1, 0, e_c="Checkout", e_a="start"),
        extra(2, 1, idgoal="2", revenue="64.8"),
        extra(3, 2, idgoal="0", ec_id="A-1", revenue="64.8", ec_items=ITEMS),
        extra(4, 3, c_n="Thanks banner"),
        extra(5, 4, e_c="Checkout", e_a="done"),
    ]


def test_extra_hits_share_the_visitor_not_the_page_view_details() -> None:
    hits = request_hits(
        request(
            ("matomo.goal", at(1), {"matomo.goal.id": 1}),
            **{
                "http.response.body.size": 5120,
                "http.request.header.sec_ch_ua": ('"Chromium";v="124"',),
                "matomo.search.keyword": "boots",
                "matomo.product.sku": "SKU-BOOTS",
            },
        ),
        settings(track_bots=True),
    ).hits
    page_view, goal = hits
    assert {"bw_bytes", "uadata", "bots", "pf_srv", "action_name", "search", "_pks"} <= page_view.keys()
    assert goal == {
        **{key: page_view[key] for key in (*VISITOR, "uadata", "bots")},
        "rand": f"{RAND}-1",
        "cdt": str(START_S + 1),
        "idgoal": "1",
    }


def test_without_token_no_hit_carries_cip() -> None:
    plain = Settings.from_env({}, endpoint="https://matomo.example", site_id=3, visitor_id_secret=SECRET)
    hits = request_hits(request(("matomo.goal", at(1), {"matomo.goal.id": 1})), plain).hits
    assert [("cip" in hit) for hit in hits] == [False, False]
    assert hits[0]["cid"] == hits[1]["cid"] == VISITOR["cid"]


def test_a_request_without_user_has_no_uid_anywhere() -> None:
    built = http_request_from_span_data(
        "POST /checkout",
        {key: value for key, value in attributes().items() if key != "enduser.id"},
        START_NS,
        at(1),
        SPAN_ID,
        [("matomo.goal", at(1), {"matomo.goal.id": 1})],
    )
    assert built is not None
    assert [("uid" in hit) for hit in request_hits(built, settings()).hits] == [False, False]


def test_other_span_events_are_not_facts() -> None:
    events: list[SpanEvent] = [
        ("exception", at(1), {"exception.type": "ValueError"}),
        ("matomo.unknown", at(1), {"x": 1}),
        ("matomo.goal", at(2), {"matomo.goal.id": 8}),
    ]
    built = request(*events)
    assert built.tracking.facts == (TrackedFact("matomo.goal", at(2), {"matomo.goal.id": 8}),)
    assert request_hits(built, settings()).hits == [PAGE_VIEW, extra(1, 2, idgoal="8")]


def test_facts_on_a_hand_built_request() -> None:
    """``HttpRequest`` with ``AppTracking`` directly, as another reader (the gateway) would build it."""
    built = HttpRequest(
        method="GET",
        path="/",
        start_ns=START_NS,
        end_ns=at(0.01),
        span_id=SPAN_ID,
        host="shop.example",
        peer_address=CLIENT,
        user_agent=UA,
        status=200,
        tracking=AppTracking(
            page_title="Home",
            dimensions={2: "gold"},
            facts=(TrackedFact(names.EVENT, at(0), {"matomo.event.category": "C", "matomo.event.action": "A"}),),
        ),
    )
    page_view, event = request_hits(built, settings()).hits
    assert page_view["action_name"] == "Home"
    assert page_view["dimension2"] == event["dimension2"] == "gold"
    assert event == {
        "idsite": "3",
        "rec": "1",
        "apiv": "1",
        "cid": visitor_id(SECRET.encode(), CLIENT, UA),
        "url": "http://shop.example/",
        "ua": UA,
        "cip": CLIENT,
        "dimension2": "gold",
        "rand": f"{RAND}-1",
        "cdt": str(START_S),
        "ca": "1",
        "e_c": "C",
        "e_a": "A",
    }


# --- facts Matomo cannot take ---------------------------------------------------------------------------------

INVALID_FACTS: list[tuple[str, str, dict[str, Any], str, str]] = [
    ("bare event", names.EVENT, {}, names.EVENT_CATEGORY, "missing"),
    ("event without category", names.EVENT, {names.EVENT_ACTION: "pay"}, names.EVENT_CATEGORY, "missing"),
    ("event without action", names.EVENT, {names.EVENT_CATEGORY: "Checkout"}, names.EVENT_ACTION, "missing"),
    (
        "event, blank action",
        names.EVENT,
        {names.EVENT_CATEGORY: "C", names.EVENT_ACTION: "  "},
        names.EVENT_ACTION,
        "empty",
    ),
    (
        "event, category not text",
        names.EVENT,
        {names.EVENT_CATEGORY: True, names.EVENT_ACTION: "A"},
        names.EVENT_CATEGORY,
        "missing",
    ),
    (
        "event, word value",
        names.EVENT,
        {names.EVENT_CATEGORY: "C", names.EVENT_ACTION: "A", names.EVENT_VALUE: "lots"},
        names.EVENT_VALUE,
        "not a number",
    ),
    (
        "event, NaN value",
        names.EVENT,
        {names.EVENT_CATEGORY: "C", names.EVENT_ACTION: "A", names.EVENT_VALUE: float("nan")},
        names.EVENT_VALUE,
        "not a number",
    ),
    ("goal without id", names.GOAL, {names.GOAL_REVENUE: 5.0}, names.GOAL_ID, "missing"),
    ("goal 0", names.GOAL, {names.GOAL_ID: 0}, names.GOAL_ID, "not a positive whole number"),
    ("negative goal", names.GOAL, {names.GOAL_ID: -3}, names.GOAL_ID, "not a positive whole number"),
    ("fractional goal", names.GOAL, {names.GOAL_ID: 2.5}, names.GOAL_ID, "not a positive whole number"),
    ("goal named in words", names.GOAL, {names.GOAL_ID: "signup"}, names.GOAL_ID, "not a positive whole number"),
    ("order without id", names.ORDER, {names.REVENUE: 10.0}, names.ORDER_ID, "missing"),
    ("order, blank id", names.ORDER, {names.ORDER_ID: "", names.REVENUE: 10.0}, names.ORDER_ID, "empty"),
    ("order without revenue", names.ORDER, {names.ORDER_ID: "A-1"}, names.REVENUE, "missing"),
    ("order, word revenue", names.ORDER, {names.ORDER_ID: "A-1", names.REVENUE: "free"}, names.REVENUE, "not a number"),
    ("cart update without revenue", names.CART_UPDATE, {names.ITEMS: "[]"}, names.REVENUE, "missing"),
    (
        "content impression without name",
        names.CONTENT_IMPRESSION,
        {names.CONTENT_PIECE: "a.png"},
        names.CONTENT_NAME,
        "missing",
    ),
    (
        "content impression, blank name",
        names.CONTENT_IMPRESSION,
        {names.CONTENT_NAME: " "},
        names.CONTENT_NAME,
        "empty",
    ),
]


@pytest.mark.parametrize(
    ("kind", "attributes", "attribute", "problem"),
    [case[1:] for case in INVALID_FACTS],
    ids=[case[0] for case in INVALID_FACTS],
)
def test_a_fact_matomo_cannot_take_is_left_out_and_named(
    kind: str, attributes: dict[str, Any], attribute: str, problem: str
) -> None:
    made = request_hits(request((kind, at(1), attributes)), settings())
    assert made == RequestHits([PAGE_VIEW], (InvalidFact(kind, attribute, problem),))


@pytest.mark.parametrize(
    ("event", "parameters"),
    [
        (("matomo.goal", at(1), {"matomo.goal.id": 4.0}), {"idgoal": "4"}),
        (("matomo.goal", at(1), {"matomo.goal.id": "7"}), {"idgoal": "7"}),
        (
            (
                "matomo.event",
                at(1),
                {"matomo.event.category": "C", "matomo.event.action": "A", "matomo.event.value": "-2.5"},
            ),
            {"e_c": "C", "e_a": "A", "e_v": "-2.5"},
        ),
        (
            ("matomo.ecommerce.order", at(1), {"matomo.ecommerce.order_id": 1001, "matomo.ecommerce.revenue": "64.80"}),
            {"idgoal": "0", "ec_id": "1001", "revenue": "64.80"},
        ),
        (("matomo.ecommerce.cart_update", at(1), {"matomo.ecommerce.revenue": 0}), {"idgoal": "0", "revenue": "0"}),
    ],
    ids=["whole float goal", "goal id as text", "event value as text", "order id as number", "empty cart"],
)
def test_facts_in_the_forms_another_process_sends_are_kept(event: SpanEvent, parameters: dict[str, str]) -> None:
    """Span events from the gateway carry numbers as text or ids as numbers: what Matomo reads the same is kept."""
    assert request_hits(request(event), settings()) == RequestHits([PAGE_VIEW, extra(1, 1, **parameters)])


def test_an_invalid_fact_leaves_the_others_and_their_places() -> None:
    events: list[SpanEvent] = [
        ("matomo.event", at(1), {"matomo.event.category": "Checkout", "matomo.event.action": "start"}),
        ("matomo.event", at(2), {"matomo.event.name": "no category, no action"}),
        ("matomo.goal", at(3), {"matomo.goal.id": 2}),
    ]
    made = request_hits(request(*events), settings())
    assert made.hits == [PAGE_VIEW, extra(1, 1, e_c="Checkout", e_a="start"), extra(3, 3, idgoal="2")]
    assert made.invalid == (InvalidFact(names.EVENT, names.EVENT_CATEGORY, "missing"),)


_FACT_ATTRIBUTES = {
    names.EVENT: (names.EVENT_CATEGORY, names.EVENT_ACTION, names.EVENT_NAME, names.EVENT_VALUE),
    names.GOAL: (names.GOAL_ID, names.GOAL_REVENUE),
    names.ORDER: (names.ORDER_ID, names.REVENUE, names.ITEMS),
    names.CART_UPDATE: (names.REVENUE, names.ITEMS),
    names.CONTENT_IMPRESSION: (names.CONTENT_NAME, names.CONTENT_PIECE, names.CONTENT_TARGET),
}
_VALUES = (
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats() | st.sampled_from(["", " ", "x", "2", "-1.5", "0"])
)


@given(
    st.lists(
        st.sampled_from(sorted(_FACT_ATTRIBUTES)).flatmap(
            lambda kind: st.tuples(
                st.just(kind),
                st.fixed_dictionaries({}, optional=dict.fromkeys(_FACT_ATTRIBUTES[kind], _VALUES)),
            )
        ),
        max_size=5,
    )
)
def test_no_fact_whatever_its_attributes_becomes_a_hit_that_fails_the_bulk_request(
    facts: list[tuple[str, dict[str, Any]]],
) -> None:
    """What the stand-in (as Matomo 5.3.1) answers HTTP 500 for never leaves; every fact is a hit or named."""
    made = request_hits(request(*((kind, at(1), values) for kind, values in facts)), settings())
    assert len(made.hits) - 1 + len(made.invalid) == len(facts)
    for hit in made.hits:
        assert not _custom_action_without_plugin(hit)
        if "idgoal" in hit:
            assert hit["idgoal"].isdigit()
            assert hit["idgoal"] != "0" or "revenue" in hit


def test_translate_counts_a_dropped_fact_as_malformed_and_logs_what_is_wrong_not_the_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="otel_matomo")
    order = ("matomo.ecommerce.order", at(1), {"matomo.ecommerce.order_id": "A-SECRET-77"})
    pipeline = Pipeline(settings(dry_run=True))
    translation = pipeline.translate([request(order), request(order)], lambda record: record)
    assert translation.hits == [PAGE_VIEW, PAGE_VIEW]
    assert (translation.requests, translation.dropped, translation.invalid_facts) == (
        2,
        {DropReason.MALFORMED: 2},
        2,
    )
    assert (pipeline.stats.requests, pipeline.stats.malformed) == (2, 2)
    [record] = [r for r in caplog.records if "dropped a tracked" in r.getMessage()]  # rate-limited: logged once
    message = record.getMessage()
    assert "matomo.ecommerce.order" in message
    assert "matomo.ecommerce.revenue is missing" in message
    assert "A-SECRET-77" not in message
    assert record.levelno == logging.WARNING


def test_a_preview_translation_counts_no_dropped_fact() -> None:
    pipeline = Pipeline(settings(dry_run=True))
    translation = pipeline.translate([request(("matomo.event", at(1), {}))], lambda record: record, count=False)
    assert (translation.dropped, translation.invalid_facts) == ({DropReason.MALFORMED: 1}, 1)
    assert (pipeline.stats.requests, pipeline.stats.malformed) == (0, 0)


# --- site search, product view, page title, skip ---------------------------------------------------------------


def test_site_search_turns_the_page_view_into_a_search() -> None:
    built = request(
        **{
            "matomo.search.keyword": "red boots",
            "matomo.search.category": "Shoes",
            "matomo.search.results_count": 12,
        }
    )
    assert request_hits(built, settings()).hits == [
        {**PAGE_VIEW, "search": "red boots", "search_cat": "Shoes", "search_count": "12"}
    ]


def test_site_search_without_category_or_count() -> None:
    (hit,) = request_hits(request(**{"matomo.search.keyword": "boots"}), settings()).hits
    assert hit == {**PAGE_VIEW, "search": "boots", "search_cat": ""}


def test_site_search_with_no_results() -> None:
    (hit,) = request_hits(
        request(**{"matomo.search.keyword": "unobtainium", "matomo.search.results_count": 0}), settings()
    ).hits
    assert hit["search_count"] == "0"


def test_product_view_adds_the_product_parameters() -> None:
    built = request(
        **{
            "matomo.product.sku": "SKU-BOOTS",
            "matomo.product.name": "Boots",
            "matomo.product.category": "Shoes",
            "matomo.product.price": 49.9,
        }
    )
    assert request_hits(built, settings()).hits == [
        {**PAGE_VIEW, "_pks": "SKU-BOOTS", "_pkn": "Boots", "_pkc": "Shoes", "_pkp": "49.9"}
    ]


def test_product_view_with_sku_only() -> None:
    (hit,) = request_hits(request(**{"matomo.product.sku": "SKU-BOOTS"}), settings()).hits
    assert hit == {**PAGE_VIEW, "_pks": "SKU-BOOTS"}


def test_page_title_overrides_the_action_name() -> None:
    (hit,) = request_hits(request(**{"matomo.page_title": "Checkout - payment"}), settings()).hits
    assert hit == {**PAGE_VIEW, "action_name": "Checkout - payment"}


@pytest.mark.parametrize("status", [404, 500])
def test_page_title_overrides_error_titles_too(status: int) -> None:
    built = request(**{"http.response.status_code": status})
    assert request_hits(built, settings()).hits[0]["action_name"].startswith(f"{status}/URL = ")
    titled = request(**{"http.response.status_code": status, "matomo.page_title": "Sorry, out of stock"})
    assert request_hits(titled, settings()).hits[0]["action_name"] == "Sorry, out of stock"


def test_skip_tracking_sends_nothing_and_counts_skipped(caplog: pytest.LogCaptureFixture) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(tracking.TrackingProcessor())
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER, attributes=attributes()):
        tracking.track_event("Checkout", "pay")
        tracking.track_order("A-1", 1.0)
        with tracer.start_as_current_span("nested"):
            tracking.skip_tracking()
    with tracer.start_as_current_span("GET /", kind=SpanKind.SERVER, attributes=attributes(**{"url.path": "/"})):
        pass
    provider.shutdown()
    caplog.set_level(logging.INFO, logger="otel_matomo.hits")
    exporter = MatomoSpanExporter(settings=Settings.from_env({}, dry_run=True, visitor_id_secret=SECRET))
    exporter.export(memory.get_finished_spans())
    stats = exporter.stats
    exporter.shutdown()
    assert (stats.skipped, stats.requests) == (1, 1)
    sent = [record.hit for record in caplog.records if record.name == "otel_matomo.hits"]  # type: ignore[attr-defined]
    assert [hit["url"] for hit in sent] == ["https://shop.example/?step=2"]


def test_skip_wins_over_every_other_reason() -> None:
    built = request(**{"matomo.skip": True, "http.request.header.sec_gpc": ("1",), "http.request.method": "OPTIONS"})
    assert skip_reason(built, settings()) is DropReason.SKIPPED
    pipeline = Pipeline(Settings.from_env({}, dry_run=True, visitor_id_secret=SECRET))
    assert pipeline.translate([built], lambda record: record).hits == []
    assert pipeline.stats.skipped == 1
    assert pipeline.stats.requests == 0


@pytest.mark.parametrize("value", [False, "true", 1])
def test_only_a_true_skip_attribute_skips(value: object) -> None:
    assert skip_reason(request(**{"matomo.skip": value}), settings()) is None


# --- custom dimensions ------------------------------------------------------------------------------------------


def test_configured_dimensions_come_from_span_attributes() -> None:
    built = request(
        ("matomo.goal", at(1), {"matomo.goal.id": 1}),
        **{"enduser.role": "admin", "tenant": "acme"},
    )
    hits = request_hits(built, settings(dimensions={1: "enduser.role", 2: "tenant"})).hits
    assert hits == [
        {**PAGE_VIEW, "dimension1": "admin", "dimension2": "acme"},
        extra(1, 1, idgoal="1", dimension1="admin", dimension2="acme"),
    ]


def test_configured_dimensions_from_the_environment() -> None:
    configured = settings({"OTEL_EXPORTER_MATOMO_DIMENSIONS": "1=enduser.role, 2=tenant"})
    assert configured.dimensions == ((1, "enduser.role"), (2, "tenant"))
    (hit,) = request_hits(request(**{"enduser.role": "editor", "tenant": "globex"}), configured).hits
    assert (hit["dimension1"], hit["dimension2"]) == ("editor", "globex")


@pytest.mark.parametrize("bad", ["1", "0=tenant", "x=tenant", "1=", "=tenant", "-1=tenant"])
def test_a_malformed_dimension_mapping_fails_at_start_up(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="DIMENSIONS"):
        settings({"OTEL_EXPORTER_MATOMO_DIMENSIONS": bad})


def test_configured_dimension_values_of_other_types() -> None:
    built = request(**{"plan.seats": 25, "plan.ratio": 0.5, "plan.trial": True, "plan.tags": ("a", "b"), "empty": ""})
    (hit,) = request_hits(
        built,
        settings(dimensions={1: "plan.seats", 2: "plan.ratio", 3: "plan.trial", 4: "plan.tags", 5: "empty", 6: "nope"}),
    ).hits
    assert {key: value for key, value in hit.items() if key.startswith("dimension")} == {
        "dimension1": "25",
        "dimension2": "0.5",
    }


def test_set_custom_dimension_wins_over_the_configured_one() -> None:
    built = request(**{"enduser.role": "admin", "tenant": "acme", "matomo.dimension.1": "superadmin"})
    (hit,) = request_hits(built, settings(dimensions={1: "enduser.role", 2: "tenant"})).hits
    assert (hit["dimension1"], hit["dimension2"]) == ("superadmin", "acme")


def test_dimension_values_are_cut_to_250_characters() -> None:
    built = request(**{"tenant": "t" * 300, "matomo.dimension.7": "d" * 251})
    (hit,) = request_hits(built, settings(dimensions={2: "tenant"})).hits
    assert hit["dimension2"] == "t" * 250
    assert hit["dimension7"] == "d" * 250


def test_malformed_dimension_attributes_are_ignored() -> None:
    built = request(**{"matomo.dimension.x": "a", "matomo.dimension.": "b", "matomo.dimension.3": 5})
    (hit,) = request_hits(built, settings()).hits
    assert not [key for key in hit if key.startswith("dimension")]


# --- event routes ---------------------------------------------------------------------------------------------


def test_an_event_route_with_facts() -> None:
    built = request(
        ("matomo.ecommerce.order", at(1), {"matomo.ecommerce.order_id": "A-9", "matomo.ecommerce.revenue": 5.0}),
        **{"url.path": "/api/orders", "url.query": "", "http.route": "/api/orders", "matomo.dimension.1": "gold"},
    )
    url = "https://shop.example/api/orders"
    visitor = {**VISITOR, "url": url, "dimension1": "gold"}
    assert request_hits(built, settings(event_routes=["/api/*"])).hits == [
        {
            **visitor,
            "rand": RAND,
            "cdt": str(START_S),
            "ca": "1",
            "e_c": "API",
            "e_a": "POST /api/orders",
            "e_n": "/api/orders",
            "e_v": "4200",
        },
        {
            **visitor,
            "rand": f"{RAND}-1",
            "cdt": str(START_S + 1),
            "idgoal": "0",
            "ec_id": "A-9",
            "revenue": "5",
        },
    ]


# --- end to end over real SDK spans ---------------------------------------------------------------------------


def test_calls_on_real_spans_become_the_exact_hits() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(tracking.TrackingProcessor())
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    recorded = {key: value for key, value in attributes().items() if key != "enduser.id"}
    with tracer.start_as_current_span(
        "POST /checkout", kind=SpanKind.SERVER, attributes=recorded, start_time=START_NS
    ) as server:
        with tracer.start_as_current_span("auth"):
            tracking.set_user_id("alice@example.com")
        with tracer.start_as_current_span("service"):
            tracking.set_page_title("Checkout")
            tracking.set_custom_dimension(1, "gold")
            tracking.track_event("Checkout", "pay", value=64.8)
            tracking.track_goal(2, revenue=64.8)
            tracking.track_order(
                "A-1001",
                64.8,
                [
                    EcommerceItem("SKU-BOOTS", "Boots", "Shoes", 49.9),
                    EcommerceItem("SKU-SOCKS", price=4.95, quantity=2),
                ],
                subtotal=59.8,
                shipping=5,
            )
            tracking.track_content_impression("Thanks banner", piece="thanks.png")
    provider.shutdown()
    span_id = f"{server.get_span_context().span_id:016x}"
    exporter = MatomoSpanExporter(settings=settings(dry_run=True))
    hits = exporter.translate(memory.get_finished_spans())
    exporter.shutdown()
    for hit in hits[1:]:
        assert int(hit.pop("cdt")) >= START_S
    assert [hit.pop("rand") for hit in hits] == [span_id] + [f"{span_id}-{index}" for index in range(1, 5)]
    page_view = hits[0]
    assert int(page_view.pop("pf_srv")) >= 0
    assert hits == [
        {**VISITOR, "cdt": str(START_S), "action_name": "Checkout", "dimension1": "gold"},
        {**VISITOR, "dimension1": "gold", "ca": "1", "e_c": "Checkout", "e_a": "pay", "e_v": "64.8"},
        {**VISITOR, "dimension1": "gold", "idgoal": "2", "revenue": "64.8"},
        {
            **VISITOR,
            "dimension1": "gold",
            "idgoal": "0",
            "ec_id": "A-1001",
            "revenue": "64.8",
            "ec_items": '[["SKU-BOOTS","Boots","Shoes",49.9,1],["SKU-SOCKS","","",4.95,2]]',
            "ec_st": "59.8",
            "ec_sh": "5",
        },
        {**VISITOR, "dimension1": "gold", "ca": "1", "c_n": "Thanks banner", "c_p": "thanks.png"},
    ]
    assert json.loads(hits[3]["ec_items"])[1] == ["SKU-SOCKS", "", "", 4.95, 2]

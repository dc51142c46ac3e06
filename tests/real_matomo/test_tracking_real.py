"""The tracking API (issue 6) against the real Matomo 5: what real instrumented apps' calls become in its reports.

FastAPI (uvicorn) and Flask (werkzeug) apps call ``otel_matomo.track_*``/``set_*`` while they serve real HTTP
requests; a ``MatomoSpanProcessor`` per Matomo site sends the hits (token = the superuser's, so ``cip`` and old
``cdt`` are accepted). Then the Reporting API is asked what Matomo recorded.

Isolation from the other real-Matomo tests: every request is stamped (simulated clock, as in ``replay.py``) on
the day *before yesterday*, a day no other test tracks into or reports on (the fidelity corpus is yesterday's,
the negative/redaction/check tests track today). Site 1 gets the events, site search, user id, dimensions,
titles, content impressions and the goal; site 2 (ecommerce) the product view, cart and orders.

Goals, orders and cart updates go through processors of their own: Matomo 5.3.1 refuses those hits as the
package sends them (see ``test_goal_ecommerce_hits_are_accepted``), and a refused batch is rolled back whole and
retried at the head of the processor's FIFO, so it would otherwise take the other facts down with it.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import opentelemetry.instrumentation.flask as otel_flask
import opentelemetry.sdk.trace as otel_sdk_trace
import pytest
from fastapi import Depends, FastAPI, Request
from flask import Flask, jsonify
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from werkzeug.wrappers import Response

import otel_matomo
from otel_matomo import EcommerceItem, MatomoSpanProcessor
from otel_matomo._sending import Outcome
from otel_matomo._types import ExportStats, Hit
from otel_matomo._visitor import visitor_id
from tests.real_matomo.conftest import Matomo
from tests.real_matomo.replay import Delivery, EndedServerSpans, SimulatedClock, capture_deliveries, header_capture
from tests.servers import serve_asgi, serve_wsgi

pytestmark = pytest.mark.real_matomo

SECRET = "real-matomo-tracking-api-secret-0123"
HOST = "tracking.example"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36"
)
BOOTS = EcommerceItem("SKU-BOOTS", "Winter boots", "Shoes", 49.9, 1)
SOCKS = EcommerceItem("SKU-SOCKS", "Wool socks", "Shoes", 4.95, 2)
ORDER_REVENUE, ORDER_SUBTOTAL, ORDER_TAX, ORDER_SHIPPING = 64.8, 59.8, 9.55, 5.0
CART_REVENUE = 59.8  # 49.9 + 2 x 4.95
ABANDONED_REVENUE = 49.9
GOAL_REVENUE = 12.5
ECOMMERCE_GOAL_REVENUE = 5.0
SERVER_TIME_NS = 25_000_000
CA_BUG = (
    "bug: hits.request_hits sends ca=1 on goal, order and cart-update hits; Matomo 5.3.1 answers such a hit "
    "'Request was meant for a plugin which is no longer activated' (HTTP 500, the bulk request rolled back), "
    "so the processor retries the batch forever and nothing after it is delivered"
)


@dataclass(frozen=True)
class Visitor:
    name: str
    ip: str
    user_agent: str
    language: str = "en-GB,en;q=0.9"
    user: str | None = None

    def headers(self, **extra: str) -> dict[str, str]:
        headers = {
            "Host": HOST,
            "User-Agent": self.user_agent,
            "Accept-Language": self.language,
            "X-Forwarded-For": self.ip,
            **extra,
        }
        if self.user is not None:
            headers["X-User"] = self.user
        return headers

    def cid(self) -> str:
        return visitor_id(SECRET.encode(), self.ip, self.user_agent)


ALICE = Visitor("alice", "192.0.2.101", CHROME.format(v=126), user="alice@example.com")
BOB = Visitor("bob", "192.0.2.102", CHROME.format(v=125), "de-DE,de;q=0.9")
SKIPPER = Visitor("skipper", "192.0.2.103", CHROME.format(v=124))
CAROL = Visitor("carol", "192.0.2.104", CHROME.format(v=123))
DAVE = Visitor("dave", "192.0.2.105", CHROME.format(v=122), user="dave@example.com")
ERIN = Visitor("erin", "192.0.2.106", CHROME.format(v=121))
FRANK = Visitor("frank", "192.0.2.107", CHROME.format(v=120))


@dataclass(frozen=True)
class Ids:
    """The fixtures ``scripts/matomo-local`` made: goals and custom dimensions of both sites."""

    goal: int
    ecommerce_goal: int
    visit_dimension: int
    action_dimension: int


@pytest.fixture(scope="module")
def ids(matomo: Matomo) -> Ids:
    names = ("MATOMO_GOAL_ID", "MATOMO_ECOMMERCE_GOAL_ID", "MATOMO_VISIT_DIMENSION_ID", "MATOMO_ACTION_DIMENSION_ID")
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        pytest.skip(f'{", ".join(missing)} unset: run `eval "$(scripts/matomo-local env)"`')
    return Ids(*(int(os.environ[name]) for name in names))


# --------------------------------------------------------------------------------------------- the apps


def content_fastapi(provider: TracerProvider, ids: Ids) -> FastAPI:
    """Articles, search and newsletter of site 1; the user comes from a dependency (the README's pattern)."""
    app = FastAPI()

    async def current_user(request: Request) -> None:
        if user := request.headers.get("x-user"):
            otel_matomo.set_user_id(user)

    @app.get("/articles/{slug}", dependencies=[Depends(current_user)])
    def article(slug: str) -> dict[str, str]:
        otel_matomo.set_custom_dimension(ids.visit_dimension, "gold")
        otel_matomo.set_custom_dimension(ids.action_dimension, "article")
        otel_matomo.set_page_title(f"Article: {slug}")
        otel_matomo.track_event("Article", "read", name=slug, value=3)
        otel_matomo.track_content_impression("Spring banner", piece="spring.png", target="/sale")
        return {"article": slug}

    @app.get("/search", dependencies=[Depends(current_user)])
    async def search(q: str, n: int) -> dict[str, int]:
        otel_matomo.track_site_search(q, category="Shoes", results_count=n)
        return {"results": n}

    @app.post("/newsletter", dependencies=[Depends(current_user)])
    async def newsletter() -> dict[str, bool]:
        otel_matomo.track_event("Newsletter", "subscribe", value=1)
        return {"subscribed": True}

    @app.get("/internal/warmup")
    async def warmup() -> dict[str, bool]:
        otel_matomo.skip_tracking()
        return {"warm": True}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app


def content_flask(provider: TracerProvider, ids: Ids) -> Flask:
    app = Flask(__name__)

    @app.get("/news/<slug>")
    def news(slug: str) -> Response:
        otel_matomo.set_page_title(f"News: {slug}")
        otel_matomo.set_custom_dimension(ids.action_dimension, "news")
        otel_matomo.track_event("News", "read", name=slug, value=2)
        return jsonify(news=slug)

    @app.get("/internal/warmup")
    def warmup() -> Response:
        otel_matomo.skip_tracking()
        return jsonify(warm=True)

    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    return app


def goal_fastapi(provider: TracerProvider, ids: Ids) -> FastAPI:
    app = FastAPI()

    @app.post("/signup")
    def signup() -> dict[str, bool]:
        otel_matomo.track_goal(ids.goal, revenue=GOAL_REVENUE)
        return {"signed_up": True}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app


def shop_fastapi(provider: TracerProvider, ids: Ids) -> FastAPI:
    app = FastAPI()

    async def current_user(request: Request) -> None:
        if user := request.headers.get("x-user"):
            otel_matomo.set_user_id(user)

    @app.get("/products/{sku}", dependencies=[Depends(current_user)])
    def product(sku: str) -> dict[str, str]:
        otel_matomo.track_product_view(sku, BOOTS.name, BOOTS.category, BOOTS.price)
        return {"sku": sku}

    @app.post("/cart", dependencies=[Depends(current_user)])
    def cart() -> dict[str, float]:
        otel_matomo.track_cart_update(CART_REVENUE, [BOOTS, SOCKS])
        return {"total": CART_REVENUE}

    @app.post("/checkout/{order_id}", dependencies=[Depends(current_user)])
    def checkout(order_id: str) -> dict[str, str]:
        otel_matomo.track_order(
            order_id,
            ORDER_REVENUE,
            [BOOTS, SOCKS],
            subtotal=ORDER_SUBTOTAL,
            tax=ORDER_TAX,
            shipping=ORDER_SHIPPING,
            discount=0,
        )
        otel_matomo.track_goal(ids.ecommerce_goal, revenue=ECOMMERCE_GOAL_REVENUE)
        return {"order": order_id}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app


def shop_flask(provider: TracerProvider, ids: Ids) -> Flask:
    app = Flask(__name__)

    @app.post("/cart")
    def cart() -> Response:
        otel_matomo.track_cart_update(ABANDONED_REVENUE, [BOOTS])
        return jsonify(total=ABANDONED_REVENUE)

    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    return app


# --------------------------------------------------------------------------------------------- the traffic


@dataclass
class SiteDelivery:
    """One Matomo site's delivery: a provider with a ``MatomoSpanProcessor`` and its apps' HTTP clients."""

    site_id: int
    processor: MatomoSpanProcessor
    clients: dict[str, httpx.Client]

    def settle(self, seconds: float) -> bool:
        """Everything delivered (the processor's buffer empty) within ``seconds``."""
        deadline = time.monotonic() + seconds
        before = self.processor.stats
        while time.monotonic() < deadline:
            if self.processor.force_flush(250):
                return True
            now = self.processor.stats
            if now.batches - before.batches >= 2 and (now.tracked, now.invalid) == (before.tracked, before.invalid):
                return False  # Matomo refuses the batch at the head of the queue again and again
        return False


@dataclass
class Traffic:
    """Sends requests at simulated seconds of the tracked day, one at a time, each once its span ended."""

    matomo: Matomo
    day: datetime
    clock: SimulatedClock
    ended: EndedServerSpans
    stack: ExitStack
    ids: Ids
    sent: int = 0
    settled: dict[str, bool] = field(default_factory=dict)

    def pipeline(self, site_id: int, apps: dict[str, Callable[[TracerProvider, Ids], Any]]) -> SiteDelivery:
        processor = MatomoSpanProcessor(
            endpoint=self.matomo.url,
            site_id=site_id,
            token_auth=self.matomo.token,
            visitor_id_secret=SECRET,
            schedule_delay=timedelta(milliseconds=50),
            timeout=timedelta(seconds=30),
            # The tracked day is two days old: the default maximum age (24 h) would expire every hit.
            buffer_max_age=timedelta(days=7),
        )
        provider = TracerProvider()
        provider.add_span_processor(self.ended)
        provider.add_span_processor(processor)
        self.stack.callback(provider.shutdown)
        clients = {}
        for name, make in apps.items():
            app = make(provider, self.ids)
            base = self.stack.enter_context(serve_asgi(app) if isinstance(app, FastAPI) else serve_wsgi(app))
            clients[name] = self.stack.enter_context(httpx.Client(base_url=base, timeout=10))
        return SiteDelivery(site_id, processor, clients)

    def at(self, hour: int, minute: int, second: int = 0) -> int:
        return int((self.day + timedelta(hours=hour, minutes=minute, seconds=second)).timestamp())

    def send(
        self, pipeline: SiteDelivery, app: str, method: str, path: str, visitor: Visitor, at: int, **headers: str
    ) -> int:
        self.clock.freeze_at(at)
        self.ended.server_time_ns = SERVER_TIME_NS
        response = pipeline.clients[app].request(method, path, headers=visitor.headers(**headers))
        self.sent += 1
        self.ended.wait_for(self.sent)
        assert response.status_code == 200, (path, response.status_code, response.text[:200])
        return response.status_code


@dataclass(frozen=True)
class Tracked:
    """What was sent, per site, and how each processor fared."""

    matomo: Matomo
    ids: Ids
    day: str
    order_id: str
    hits: list[Hit]
    results: list[tuple[int, Outcome]]
    """``(idsite, outcome)`` of every bulk request, in order."""
    stats: dict[str, ExportStats]
    settled: dict[str, bool]
    started: dict[str, int]
    """Simulated second of each visitor's first request."""

    def report(self, method: str, site_id: int, **params: Any) -> Any:
        return self.matomo.api(method, idSite=site_id, period="day", date=self.day, filter_limit=-1, **params)

    def visit(self, site_id: int, visitor_id_: str) -> dict[str, Any]:
        [visit] = self.matomo.visits(site_id, self.day, segment=f"visitorId=={visitor_id_}")
        return visit

    def hits_of(self, visitor: Visitor) -> list[Hit]:
        return [hit for hit in self.hits if hit.get("cip") == visitor.ip]


@contextmanager
def simulated_time(patch: pytest.MonkeyPatch) -> Iterator[SimulatedClock]:
    clock = SimulatedClock()
    with patch.context() as local:
        local.setattr(otel_sdk_trace, "time_ns", clock)
        local.setattr(otel_flask, "time_ns", clock)
        yield clock


@pytest.fixture(scope="module")
def tracked(clean_matomo: Matomo, ids: Ids, session_monkeypatch: pytest.MonkeyPatch) -> Tracked:
    matomo = clean_matomo
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    day = today - timedelta(days=2)
    order_id = f"ORD-{secrets.token_hex(4)}"
    started: dict[str, int] = {}
    with ExitStack() as stack:
        delivery: Delivery = stack.enter_context(capture_deliveries(session_monkeypatch))
        stack.enter_context(header_capture(session_monkeypatch))
        clock = stack.enter_context(simulated_time(session_monkeypatch))
        traffic = Traffic(matomo, day, clock, EndedServerSpans(clock), stack, ids)
        content = traffic.pipeline(matomo.site_id, {"fastapi": content_fastapi, "flask": content_flask})
        goals = traffic.pipeline(matomo.site_id, {"fastapi": goal_fastapi})
        shop = traffic.pipeline(matomo.other_site_id, {"fastapi": shop_fastapi, "flask": shop_flask})

        # Site 1: alice reads, searches twice (one search finds nothing) and subscribes; bob reads the news
        # (Flask); the warm-up calls skip tracking in both apps.
        started[ALICE.name] = t = traffic.at(9, 0)
        traffic.send(content, "fastapi", "GET", "/articles/winter-boots", ALICE, t)
        traffic.send(content, "fastapi", "GET", "/search?q=boots&n=3", ALICE, t + 40)
        traffic.send(content, "fastapi", "GET", "/search?q=unicorn+boots&n=0", ALICE, t + 80)
        traffic.send(content, "fastapi", "POST", "/newsletter", ALICE, t + 120)
        started[BOB.name] = t = traffic.at(9, 30)
        traffic.send(content, "flask", "GET", "/news/spring-sale", BOB, t)
        started[SKIPPER.name] = t = traffic.at(9, 45)
        traffic.send(content, "fastapi", "GET", "/internal/warmup", SKIPPER, t)
        traffic.send(content, "flask", "GET", "/internal/warmup", SKIPPER, t + 5)
        # Site 1, a conversion: carol signs up.
        started[CAROL.name] = t = traffic.at(10, 0)
        traffic.send(goals, "fastapi", "POST", "/signup", CAROL, t)
        # Site 2: dave views a product (delivered on its own), fills his cart and orders; erin leaves her cart
        # (Flask); frank's checkout repeats dave's order id.
        started[DAVE.name] = t = traffic.at(11, 0)
        traffic.send(shop, "fastapi", "GET", "/products/SKU-BOOTS", DAVE, t)
        traffic.settled["product view"] = shop.settle(10)
        traffic.send(shop, "fastapi", "POST", "/cart", DAVE, t + 30)
        traffic.send(shop, "fastapi", "POST", f"/checkout/{order_id}", DAVE, t + 60)
        started[ERIN.name] = t = traffic.at(11, 30)
        traffic.send(shop, "flask", "POST", "/cart", ERIN, t)
        traffic.settled["shop"] = shop.settle(4)
        started[FRANK.name] = t = traffic.at(12, 0)
        traffic.send(shop, "fastapi", "POST", f"/checkout/{order_id}", FRANK, t)

        clock.reset()
        traffic.settled["content"] = content.settle(15)
        traffic.settled["goals"] = goals.settle(4)
        traffic.settled["duplicate order"] = shop.settle(4)
        stats = {"content": content.processor.stats, "goals": goals.processor.stats, "shop": shop.processor.stats}
        batches = list(delivery.batches)
    date = day.strftime("%Y-%m-%d")
    for site in (matomo.site_id, matomo.other_site_id):
        fresh_archives(matomo, site, date)
    return Tracked(
        matomo=matomo,
        ids=ids,
        day=date,
        order_id=order_id,
        hits=[hit for hits, _ in batches for hit in hits],
        results=[(int(hits[0]["idsite"]), result.outcome) for hits, result in batches],
        stats=stats,
        settled=dict(traffic.settled),
        started=started,
    )


def fresh_archives(matomo: Matomo, site_id: int, date: str, attempts: int = 6) -> dict[str, Any]:
    """``VisitsSummary.get`` once it agrees with Live, as ``Matomo.fresh_archives`` but counting actions as the
    archives do: Live lists content impressions among a visit's ``actionDetails``, ``nb_actions`` does not (Live's
    per-visit ``actions`` is the archives' count)."""
    visits = matomo.visits(site_id, date)
    expected = (len(visits), sum(int(visit["actions"]) for visit in visits))
    summary: dict[str, Any] = {}
    for _attempt in range(attempts):
        matomo.invalidate(site_id, date)
        summary = matomo.api("VisitsSummary.get", idSite=site_id, period="day", date=date)
        if (summary.get("nb_visits"), summary.get("nb_actions")) == expected:
            return summary
        time.sleep(1.1)
    raise AssertionError(f"archives of {date} stay stale: {summary} while Live has (visits, actions) {expected}")


def uid_visitor_id(user_id: str) -> str:
    """The visitor id Matomo derives from a user id (``enable_userid_overwrites_visitorid``, on by default)."""
    return hashlib.sha1(user_id.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------- the tests


def rows(result: Any, *columns: str) -> dict[str, tuple[float, ...]]:
    """``{label: (column, ...)}`` of a report's rows, numbers as Matomo counts them (it mixes "1" and 1)."""
    assert isinstance(result, list), result
    return {row["label"]: tuple(float(row.get(column) or 0) for column in columns) for row in result}


def kinds(visit: dict[str, Any]) -> list[tuple[Any, int]]:
    """``(type, timestamp)`` of each entry of a Live visit, in Live's order."""
    return [(action["type"], action["timestamp"]) for action in visit["actionDetails"]]


def test_site_hits_are_all_accepted(tracked: Tracked) -> None:
    """Page views, events, searches, content impressions with user id and dimensions: Matomo takes every hit.

    5 tracked requests (2 skipped) become 9 hits: each page view (or search) plus one hit per fact.
    """
    stats = tracked.stats["content"]
    assert (stats.requests, stats.skipped, stats.tracked, stats.invalid, stats.lost) == (5, 2, 9, 0, 0)
    assert tracked.settled["content"]
    assert tracked.settled["product view"]


def test_events(tracked: Tracked) -> None:
    """Events.getCategory/getAction/getName: one event per track_event call, with its value (FastAPI and Flask)."""
    site = tracked.matomo.site_id
    columns = ("nb_events", "sum_event_value", "nb_visits")
    assert rows(tracked.report("Events.getCategory", site), *columns) == {
        "Article": (1, 3, 1),
        "Newsletter": (1, 1, 1),
        "News": (1, 2, 1),
    }
    assert rows(tracked.report("Events.getAction", site), *columns) == {"read": (2, 5, 2), "subscribe": (1, 1, 1)}
    # An event without a name is Matomo's "Event Name not defined".
    assert rows(tracked.report("Events.getName", site), *columns) == {
        "winter-boots": (1, 3, 1),
        "spring-sale": (1, 2, 1),
        "Event Name not defined": (1, 1, 1),
    }


def test_site_search(tracked: Tracked) -> None:
    """Actions.getSiteSearch*: the request's page view became a search with keyword, category and results count.

    Matomo's reports have no results-count column: a search with ``search_count=0`` is listed by
    getSiteSearchNoResultKeywords; Live shows the count (``siteSearchCount``) per search.
    """
    site = tracked.matomo.site_id
    assert rows(tracked.report("Actions.getSiteSearchKeywords", site), "nb_visits", "nb_hits") == {
        "boots": (1, 1),
        "unicorn boots": (1, 1),
    }
    assert list(rows(tracked.report("Actions.getSiteSearchNoResultKeywords", site))) == ["unicorn boots"]
    assert rows(tracked.report("Actions.getSiteSearchCategories", site), "nb_visits", "nb_actions") == {"Shoes": (1, 2)}
    visit = tracked.visit(site, uid_visitor_id("alice@example.com"))
    searches = [action for action in visit["actionDetails"] if action["type"] == "search"]
    assert [(a["siteSearchKeyword"], a["siteSearchCategory"], a.get("siteSearchCount") or 0) for a in searches] == [
        ("boots", "Shoes", 3),
        ("unicorn boots", "Shoes", 0),
    ]
    # A search is not a page view: no page title row for the search route.
    titles = {row["label"] for row in tracked.report("Actions.getPageTitles", site, flat=1)}
    assert not any("/search" in title for title in titles)


def test_custom_dimensions(tracked: Tracked) -> None:
    """CustomDimensions.getCustomDimension: the visit dimension per visit, the action dimension per hit.

    Every hit of a request carries the request's dimensions (as Matomo's JavaScript tracker does), so the
    action dimension counts the page view and its event and content impression: 3 hits for the article request,
    2 for the news request (page view and event, set from Flask).
    """
    site = tracked.matomo.site_id
    visit_rows = tracked.report("CustomDimensions.getCustomDimension", site, idDimension=tracked.ids.visit_dimension)
    assert rows(visit_rows, "nb_visits") == {"gold": (1,)}
    action_rows = tracked.report("CustomDimensions.getCustomDimension", site, idDimension=tracked.ids.action_dimension)
    assert rows(action_rows, "nb_hits") == {"article": (3,), "news": (2,)}
    visit = tracked.visit(site, uid_visitor_id("alice@example.com"))
    assert visit[f"dimension{tracked.ids.visit_dimension}"] == "gold"
    action_key = f"dimension{tracked.ids.action_dimension}"
    assert [action.get(action_key) for action in visit["actionDetails"]] == [
        *("article", "article", "article"),
        *(None, None, None, None),
    ]


def test_user_id_and_the_visitor_id_matomo_derives_from_it(tracked: Tracked) -> None:
    """set_user_id in a FastAPI dependency: Live's userId, and Matomo's visitorId = sha1(user id)[:16].

    The user id wins over the exporter's ``cid`` (Matomo's ``enable_userid_overwrites_visitorid``): the visit is
    found under the derived id, not under the keyed hash of IP and user agent.
    """
    site = tracked.matomo.site_id
    visit = tracked.visit(site, uid_visitor_id("alice@example.com"))
    assert visit["userId"] == "alice@example.com"
    assert visit["visitorId"] == uid_visitor_id("alice@example.com") != ALICE.cid()
    assert visit["visitIp"] == ALICE.ip
    assert all(hit["uid"] == "alice@example.com" for hit in tracked.hits_of(ALICE))
    [user] = tracked.report("UserId.getUsers", site)
    assert (user["label"], user["idvisitor"], int(user["nb_visits"])) == (
        "alice@example.com",
        uid_visitor_id("alice@example.com"),
        1,
    )
    # An anonymous visitor keeps the exporter's visitor id.
    assert tracked.visit(site, BOB.cid())["userId"] is None
    shopper = tracked.visit(tracked.matomo.other_site_id, uid_visitor_id("dave@example.com"))
    assert shopper["userId"] == "dave@example.com"


def test_live_actions_in_order(tracked: Tracked) -> None:
    """Live.getLastVisitsDetails: every fact follows its page view, at its own time, in the order tracked.

    Content impressions come back with the numeric action type 13 (Matomo 5.3.1's Live has no name for it).
    """
    site = tracked.matomo.site_id
    t = tracked.started[ALICE.name]
    visit = tracked.visit(site, uid_visitor_id("alice@example.com"))
    assert kinds(visit) == [
        ("action", t),
        ("event", t),
        (13, t),
        ("search", t + 40),
        ("search", t + 80),
        ("action", t + 120),
        ("event", t + 120),
    ]
    article, read, banner, _, _, newsletter, subscribe = visit["actionDetails"]
    assert (article["pageTitle"], article["url"]) == ("Article: winter-boots", f"http://{HOST}/articles/winter-boots")
    assert (read["eventCategory"], read["eventAction"], read["eventName"], read["eventValue"]) == (
        "Article",
        "read",
        "winter-boots",
        3,
    )
    assert read["url"] == article["url"]
    assert (banner["contentName"], banner["contentPiece"], banner["contentTarget"]) == (
        "Spring banner",
        "spring.png",
        "/sale",
    )
    assert newsletter["pageTitle"] == "POST /newsletter"
    assert (subscribe["eventCategory"], subscribe["eventAction"], subscribe["eventValue"]) == (
        "Newsletter",
        "subscribe",
        1,
    )
    assert subscribe.get("eventName") is None
    # Flask: the same calls from a Flask view.
    t = tracked.started[BOB.name]
    news = tracked.visit(site, BOB.cid())
    assert kinds(news) == [("action", t), ("event", t)]
    assert news["actionDetails"][0]["pageTitle"] == "News: spring-sale"
    assert news["actionDetails"][1]["eventName"] == "spring-sale"
    # Matomo's per-visit counts: events are actions, content impressions are not.
    assert (int(visit["actions"]), int(visit["events"]), int(visit["searches"])) == (6, 2, 2)


def test_content_impressions(tracked: Tracked) -> None:
    """Contents.getContentNames/getContentPieces: the server-rendered banner's impression."""
    site = tracked.matomo.site_id
    columns = ("nb_impressions", "nb_interactions", "nb_visits")
    assert rows(tracked.report("Contents.getContentNames", site), *columns) == {"Spring banner": (1, 0, 1)}
    assert rows(tracked.report("Contents.getContentPieces", site), *columns) == {"spring.png": (1, 0, 1)}


def test_page_title_override(tracked: Tracked) -> None:
    """Actions.getPageTitles: set_page_title replaced the route template, in FastAPI and in Flask."""
    titles = rows(tracked.report("Actions.getPageTitles", tracked.matomo.site_id, flat=1), "nb_hits")
    assert titles["Article: winter-boots"] == (1,)
    assert titles["News: spring-sale"] == (1,)
    assert titles["POST /newsletter"] == (1,)  # no override: the route template
    assert not {"GET /articles/{slug}", "GET /news/<slug>"} & set(titles)


def test_skip_tracking_records_nothing(tracked: Tracked) -> None:
    """skip_tracking() in FastAPI and Flask: no hit sent, counted as skipped, no visit in Matomo."""
    assert tracked.stats["content"].skipped == 2
    assert tracked.hits_of(SKIPPER) == []
    site = tracked.matomo.site_id
    assert tracked.matomo.visits(site, tracked.day, segment=f"visitorId=={SKIPPER.cid()}") == []
    assert SKIPPER.ip not in {visit["visitIp"] for visit in tracked.matomo.visits(site, tracked.day)}


def test_product_view(tracked: Tracked) -> None:
    """track_product_view: Live's productView* fields on the page view, and the product in Goals.getItemsSku."""
    visit = tracked.visit(tracked.matomo.other_site_id, uid_visitor_id("dave@example.com"))
    view = visit["actionDetails"][0]
    assert (view["type"], view["pageTitle"], view["timestamp"]) == (
        "action",
        "GET /products/{sku}",
        tracked.started[DAVE.name],
    )
    assert (view["productViewSku"], view["productViewName"], view["productViewCategories"]) == (
        "SKU-BOOTS",
        "Winter boots",
        ["Shoes"],
    )
    assert view["productViewPrice"] == pytest.approx(49.9)
    products = {row["label"]: row for row in tracked.report("Goals.getItemsSku", tracked.matomo.other_site_id)}
    assert (int(products["SKU-BOOTS"]["nb_visits"]), int(products["SKU-BOOTS"]["nb_actions"])) == (1, 1)
    assert products["SKU-BOOTS"]["avg_price"] == pytest.approx(49.9)


def test_goal_and_ecommerce_hits_are_accepted(tracked: Tracked) -> None:
    """Every bulk request with a goal, an order or a cart update is answered 200 (the duplicate order: PARTIAL)."""
    assert Outcome.GAVE_UP not in [outcome for _, outcome in tracked.results]
    assert (tracked.settled["goals"], tracked.settled["shop"], tracked.settled["duplicate order"]) == (True,) * 3
    goals, shop = tracked.stats["goals"], tracked.stats["shop"]
    assert (goals.tracked, goals.invalid, goals.lost) == (2, 0, 0)
    # dave: 3 page views, the order, the goal (his cart update became the order); erin: page view and cart;
    # frank: page view and goal, his order refused.
    assert (shop.tracked, shop.invalid, shop.lost) == (10, 1, 0)


def test_goal_conversion(tracked: Tracked) -> None:
    """Goals.get for the manual goal: one conversion with its revenue; Live lists it in carol's visit."""
    site = tracked.matomo.site_id
    goal = tracked.report("Goals.get", site, idGoal=tracked.ids.goal)
    assert (goal["nb_conversions"], goal["revenue"]) == (1, pytest.approx(GOAL_REVENUE))
    visit = tracked.visit(site, CAROL.cid())
    t = tracked.started[CAROL.name]
    # Live lists a conversion before the page view of the same second.
    assert kinds(visit) == [("goal", t), ("action", t)]
    converted = visit["actionDetails"][0]
    assert (converted["goalId"], converted["revenue"]) == (tracked.ids.goal, pytest.approx(GOAL_REVENUE))
    assert visit["actionDetails"][1]["pageTitle"] == "POST /signup"


def test_ecommerce_order(tracked: Tracked) -> None:
    """Goals.get(ecommerceOrder), Goals.getItemsSku and Live's order details: the order dave placed."""
    site = tracked.matomo.other_site_id
    order = tracked.report("Goals.get", site, idGoal="ecommerceOrder")
    assert order["nb_conversions"] == 1
    assert {key: order[key] for key in ("revenue", "revenue_subtotal", "revenue_tax", "revenue_shipping")} == {
        "revenue": pytest.approx(ORDER_REVENUE),
        "revenue_subtotal": pytest.approx(ORDER_SUBTOTAL),
        "revenue_tax": pytest.approx(ORDER_TAX),
        "revenue_shipping": pytest.approx(ORDER_SHIPPING),
    }
    assert (order["revenue_discount"], order["items"]) == (0, 3)
    products = rows(tracked.report("Goals.getItemsSku", site), "revenue", "quantity", "orders")
    assert products == {"SKU-BOOTS": pytest.approx((49.9, 1, 1)), "SKU-SOCKS": pytest.approx((9.9, 2, 1))}
    goal = tracked.report("Goals.get", site, idGoal=tracked.ids.ecommerce_goal)
    assert (goal["nb_conversions"], goal["revenue"]) == (2, pytest.approx(2 * ECOMMERCE_GOAL_REVENUE))

    visit = tracked.visit(site, uid_visitor_id("dave@example.com"))
    t = tracked.started[DAVE.name]
    assert kinds(visit) == [
        ("action", t),
        ("action", t + 30),
        ("ecommerceOrder", t + 60),
        ("goal", t + 60),
        ("action", t + 60),
    ]
    assert visit["visitEcommerceStatus"] == "ordered"
    placed = visit["actionDetails"][2]
    assert (placed["orderId"], placed["items"]) == (tracked.order_id, 3)
    assert placed["revenue"] == pytest.approx(ORDER_REVENUE)
    assert [(item["itemSKU"], item["itemName"], item["quantity"]) for item in placed["itemDetails"]] == [
        ("SKU-BOOTS", "Winter boots", 1),
        ("SKU-SOCKS", "Wool socks", 2),
    ]


def test_abandoned_cart(tracked: Tracked) -> None:
    """Goals.get(ecommerceAbandonedCart): erin's cart (from Flask) only; dave's cart became his order."""
    site = tracked.matomo.other_site_id
    cart = tracked.report("Goals.get", site, idGoal="ecommerceAbandonedCart")
    assert (cart["nb_conversions"], cart["revenue"], cart["items"]) == (1, pytest.approx(ABANDONED_REVENUE), 1)
    abandoned = rows(tracked.report("Goals.getItemsSku", site, abandonedCarts=1), "abandoned_carts", "quantity")
    assert abandoned == {"SKU-BOOTS": (1, 1)}
    visit = tracked.visit(site, ERIN.cid())
    t = tracked.started[ERIN.name]
    assert kinds(visit) == [("ecommerceAbandonedCart", t), ("action", t)]
    assert visit["visitEcommerceStatus"] == "abandonedCart"
    assert visit["actionDetails"][0]["revenue"] == pytest.approx(ABANDONED_REVENUE)


def test_duplicate_order_id_is_refused(tracked: Tracked) -> None:
    """A second order with dave's order id: Matomo refuses that hit (``invalid``, its index in
    ``invalid_indices``), keeps the request's page view and goal, and still reports one order."""
    assert tracked.stats["shop"].invalid == 1
    assert tracked.results[-1] == (tracked.matomo.other_site_id, Outcome.PARTIAL)
    visit = tracked.visit(tracked.matomo.other_site_id, FRANK.cid())
    t = tracked.started[FRANK.name]
    assert kinds(visit) == [("goal", t), ("action", t)]
    order = tracked.report("Goals.get", tracked.matomo.other_site_id, idGoal="ecommerceOrder")
    assert (order["nb_conversions"], order["revenue"]) == (1, pytest.approx(ORDER_REVENUE))

"""The traffic policy (who the visitor is, what is tracked) against the real Matomo 5.

The shop examples (FastAPI under uvicorn, Flask under werkzeug) are instrumented and exported with
``MatomoSpanExporter`` in a ``BatchSpanProcessor``, as in the fidelity suite (``replay.shop``), once per exporter
configuration; requests are stamped on simulated seconds. Matomo is then asked, through Live and the Reporting
API, what it recorded.

Isolation from the other real-Matomo tests: everything lies three and four days ago in site 1 (the fidelity
corpus is yesterday's, the tracking API test two days ago, the other tests today), so the visits of those days
are exactly this file's and are asserted as a whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from otel_matomo import MatomoSpanExporter
from otel_matomo._types import ExportStats, Hit
from otel_matomo._visitor import visitor_id
from tests.real_matomo.conftest import Matomo
from tests.real_matomo.corpus import BOT, FASTAPI, FLASK
from tests.real_matomo.replay import Shop, capture_deliveries, shop

pytestmark = pytest.mark.real_matomo

SECRET = "real-matomo-policy-visitor-secret-01"
HOST = "policy.example"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0"
# What Chrome sends since its User-Agent reduction: the real model, OS and versions are only in client hints.
REDUCED_ANDROID = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Mobile Safari/537.36"
)
REDUCED_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36"
)
ANDROID_HINTS = {
    "Sec-CH-UA": '"Not/A)Brand";v="8", "Chromium";v="126", "Google Chrome";v="126"',
    "Sec-CH-UA-Full-Version-List": '"Not/A)Brand";v="8.0.0.0", "Chromium";v="126.0.6478.122", '
    '"Google Chrome";v="126.0.6478.122"',
    "Sec-CH-UA-Mobile": "?1",
    "Sec-CH-UA-Platform": '"Android"',
    "Sec-CH-UA-Platform-Version": '"14.0.0"',
    "Sec-CH-UA-Model": '"Pixel 8"',
}
WINDOWS_HINTS = {
    "Sec-CH-UA": '"Not/A)Brand";v="8", "Chromium";v="126", "Google Chrome";v="126"',
    "Sec-CH-UA-Mobile": "?0",
    "Sec-CH-UA-Platform": '"Windows"',
    "Sec-CH-UA-Platform-Version": '"15.0.0"',  # Windows 11
}
RESET_TOKEN = "s3cr3t-reset-token"
OAUTH_CODE = "c0de-0f-the-callback"
SERVER_MS = 20


@dataclass(frozen=True)
class Visitor:
    ip: str
    user_agent: str
    language: str = "en-US,en;q=0.8"

    def headers(self, **extra: str) -> dict[str, str]:
        return {
            "Host": HOST,
            "User-Agent": self.user_agent,
            "Accept-Language": self.language,
            "X-Forwarded-For": self.ip,
            **extra,
        }

    def cid(self, day: str | None = None) -> str:
        return visitor_id(SECRET.encode(), self.ip, self.user_agent, day)


READER = Visitor("192.0.2.11", FIREFOX.format(v=128))
GPC = Visitor("192.0.2.12", FIREFOX.format(v=127))
DNT = Visitor("192.0.2.13", FIREFOX.format(v=126))
MONITOR = Visitor("192.0.2.14", "kube-probe/1.30")
ASSETS = Visitor("192.0.2.15", FIREFOX.format(v=125))
PREFLIGHT = Visitor("192.0.2.16", FIREFOX.format(v=124))
CRAWLER = Visitor("192.0.2.17", BOT.user_agent(1))
KEPT_CRAWLER = Visitor("192.0.2.18", BOT.user_agent(1))
ANONYMOUS = Visitor("192.0.2.19", FIREFOX.format(v=123))
DAILY = Visitor("192.0.2.20", FIREFOX.format(v=122))
PHONE_HINTS = Visitor("192.0.2.21", REDUCED_ANDROID.format(v=126))
PHONE_PLAIN = Visitor("192.0.2.22", REDUCED_ANDROID.format(v=126))
DESKTOP_HINTS = Visitor("192.0.2.23", REDUCED_WINDOWS.format(v=126))
DESKTOP_PLAIN = Visitor("192.0.2.24", REDUCED_WINDOWS.format(v=126))

EXCLUDED = {
    MONITOR: [("GET", "/health"), ("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/robots.txt")],
    ASSETS: [
        ("GET", "/static/app.css"),
        ("GET", "/static/app.js"),
        ("GET", "/favicon.ico"),
        ("GET", "/img/logo.png"),
        ("GET", "/fonts/inter.woff2"),
    ],
    PREFLIGHT: [("OPTIONS", "/api/cart"), ("HEAD", "/")],
}


@dataclass
class Run:
    """One exporter configuration's traffic: what was sent, and the exporter's totals."""

    hits: list[Hit]
    stats: ExportStats


@dataclass(frozen=True)
class Replayed:
    matomo: Matomo
    day: str
    """Three days ago, where all but the first day of the daily visitor lies."""
    day_before: str
    """Four days ago: the daily visitor's first day."""
    start: datetime
    default: Run
    bots: Run
    anonymized: Run
    daily: Run

    def visits(self, visitor: Visitor | None = None, *, day: str | None = None) -> list[dict[str, Any]]:
        """The day's visits (of one visitor's IP), oldest first."""
        visits = self.matomo.visits(self.matomo.site_id, day or self.day)
        return [visit for visit in visits if visitor is None or visit["visitIp"] == visitor.ip]

    def at(self, hour: int, minute: int = 0, day_offset: int = 0) -> int:
        return int((self.start + timedelta(days=day_offset, hours=hour, minutes=minute)).timestamp())


def send(served: Shop, app: str, method: str, path: str, at: int, headers: dict[str, str]) -> int:
    """One request at a simulated second, once the previous span ended (as ``Shop.send``)."""
    assert served.clock is not None
    served.clock.freeze_at(at)
    served.ended.server_time_ns = SERVER_MS * 1_000_000
    status = served.clients[app].request(method, path, headers=headers).status_code
    served.sent += 1
    served.ended.wait_for(served.sent)
    return status


@pytest.fixture(scope="module")
def replayed(clean_matomo: Matomo, session_monkeypatch: pytest.MonkeyPatch) -> Replayed:
    matomo = clean_matomo
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=3)

    def at(hour: int, minute: int = 0, day_offset: int = 0) -> int:
        return int((start + timedelta(days=day_offset, hours=hour, minutes=minute)).timestamp())

    runs: list[Run] = []

    @contextmanager
    def run(**options: Any) -> Iterator[Callable[..., int]]:
        """Serve both apps with one exporter configuration; yields ``request(app, method, path, at, visitor)``."""
        exporter = MatomoSpanExporter(
            endpoint=matomo.url, site_id=matomo.site_id, token_auth=matomo.token, visitor_id_secret=SECRET, **options
        )
        with capture_deliveries(session_monkeypatch) as delivery, shop(exporter, session_monkeypatch) as served:

            def request(app: str, method: str, path: str, when: int, visitor: Visitor, **extra: str) -> int:
                return send(served, app, method, path, when, visitor.headers(**extra))

            yield request
            served.flush()
        runs.append(Run(delivery.hits, exporter.stats))

    # The default policy, with one JSON route tracked as an event.
    with run(event_routes=["/api/*"]) as request:
        referer = f"https://login.example/callback?code={OAUTH_CODE}&state=x1&lang=en"
        assert (
            request(FASTAPI, "GET", f"/items/7?token={RESET_TOKEN}&color=red", at(10), READER, Referer=referer) == 200
        )
        assert request(FASTAPI, "POST", "/api/cart", at(10, 1), READER) == 200
        request(FASTAPI, "GET", "/", at(10, 5), GPC, **{"Sec-GPC": "1"})
        request(FLASK, "GET", "/", at(10, 6), DNT, DNT="1")
        for minute, (visitor, requests) in enumerate(EXCLUDED.items()):
            for second, (method, path) in enumerate(requests):
                app = FLASK if second % 2 else FASTAPI
                request(app, method, path, at(10, 10 + minute) + second, visitor, Origin="https://other.example")
        request(FASTAPI, "GET", "/", at(10, 20), CRAWLER)
        request(FASTAPI, "GET", "/items/3", at(10, 30), PHONE_HINTS, **ANDROID_HINTS)
        request(FASTAPI, "GET", "/items/3", at(10, 31), PHONE_PLAIN)
        request(FLASK, "GET", "/items/4", at(10, 32), DESKTOP_HINTS, **WINDOWS_HINTS)
        request(FLASK, "GET", "/items/4", at(10, 33), DESKTOP_PLAIN)
    with run(track_bots=True) as request:
        request(FASTAPI, "GET", "/", at(11), KEPT_CRAWLER)
        request(FASTAPI, "GET", "/items/1", at(11) + 7, KEPT_CRAWLER)
    # Two visits of one visitor (40 minutes apart: a new visit), the IP masked before it leaves the process.
    with run(anonymize_ip=2) as request:
        request(FASTAPI, "GET", "/", at(12), ANONYMOUS)
        request(FLASK, "GET", "/items/2", at(12, 1), ANONYMOUS)
        request(FASTAPI, "GET", "/", at(12, 41), ANONYMOUS)
    # Daily visitor ids: two visits on the day before, one on the day.
    with run(visitor_id="daily") as request:
        request(FASTAPI, "GET", "/", at(9, 0, -1), DAILY)
        request(FASTAPI, "GET", "/items/5", at(9, 45, -1), DAILY)
        request(FASTAPI, "GET", "/", at(9), DAILY)

    day, day_before = start.strftime("%Y-%m-%d"), (start - timedelta(days=1)).strftime("%Y-%m-%d")
    for date in (day, day_before):
        matomo.fresh_archives(matomo.site_id, date)
    return Replayed(matomo, day, day_before, start, *runs)


def sent_by(run: Run, visitor: Visitor) -> list[Hit]:
    return [hit for hit in run.hits if hit["cid"] == visitor.cid()]


# --------------------------------------------------------------------------------------------- the tests


def test_the_days_visits_are_exactly_the_tracked_ones(replayed: Replayed) -> None:
    """Live for the day: one visit per visitor that may be tracked (two for the returning ones), nothing else.

    The opted-out visitors (GPC, DNT), the monitor's health checks, the static assets, the CORS pre-flight and
    the HEAD probe, and the Googlebot without ``bots=1`` left no visit.
    """
    ips = sorted(visit["visitIp"] for visit in replayed.visits())
    expected = [
        READER.ip,
        KEPT_CRAWLER.ip,
        "192.0.0.0",  # ANONYMOUS, masked
        "192.0.0.0",
        DAILY.ip,
        PHONE_HINTS.ip,
        PHONE_PLAIN.ip,
        DESKTOP_HINTS.ip,
        DESKTOP_PLAIN.ip,
    ]
    assert ips == sorted(expected)
    assert sorted(visit["visitIp"] for visit in replayed.visits(day=replayed.day_before)) == [DAILY.ip, DAILY.ip]


def test_opt_outs_health_checks_static_assets_and_preflights_send_nothing(replayed: Replayed) -> None:
    """Counted by the exporter (``opted_out``, ``excluded``), never sent, and no visit in Matomo."""
    stats = replayed.default.stats
    assert stats.opted_out == 2
    assert stats.excluded == sum(len(requests) for requests in EXCLUDED.values())
    # reader (page view + event), the crawler, four client-hint visitors.
    assert (stats.requests, stats.tracked, stats.invalid, stats.lost) == (7, 7, 0, 0)
    for visitor in (GPC, DNT, *EXCLUDED):
        assert [hit for hit in replayed.default.hits if hit["cid"] == visitor.cid()] == []
        assert replayed.visits(visitor) == []


def test_event_route_is_an_event_not_a_page_view(replayed: Replayed) -> None:
    """``event_routes=["/api/*"]``: the JSON call is an event (category API, action the route, value the server
    time in ms) in the reader's visit, and no page: Actions.getPageUrls and getPageTitles do not list it."""
    [visit] = replayed.visits(READER)
    page, event = visit["actionDetails"]
    assert (page["type"], event["type"]) == ("action", "event")
    assert (event["eventCategory"], event["eventAction"], event["eventName"]) == ("API", "POST /api/cart", "/api/cart")
    [hit] = [hit for hit in replayed.default.hits if hit.get("e_c") == "API"]
    assert event["eventValue"] == int(hit["e_v"]) >= SERVER_MS
    assert event["timestamp"] == replayed.at(10, 1)
    assert "pf_srv" not in hit
    assert (int(visit["actions"]), int(visit["events"])) == (2, 1)
    events = replayed.matomo.api(
        "Events.getCategory", idSite=replayed.matomo.site_id, period="day", date=replayed.day, filter_limit=-1
    )
    assert [(row["label"], int(row["nb_events"])) for row in events] == [("API", 1)]
    urls = replayed.matomo.api(
        "Actions.getPageUrls", idSite=replayed.matomo.site_id, period="day", date=replayed.day, flat=1, filter_limit=-1
    )
    assert urls
    assert not [row for row in urls if "api" in row["label"]]
    titles = replayed.matomo.api(
        "Actions.getPageTitles",
        idSite=replayed.matomo.site_id,
        period="day",
        date=replayed.day,
        flat=1,
        filter_limit=-1,
    )
    assert not [row for row in titles if "/api/" in row["label"]]


def test_credentials_are_stripped_from_url_and_referrer(replayed: Replayed) -> None:
    """What Matomo stores: the page URL without ``token``, the referrer without ``code`` and ``state``."""
    [visit] = replayed.visits(READER)
    page = visit["actionDetails"][0]
    assert page["url"] == f"http://{HOST}/items/7?color=red"
    assert visit["referrerUrl"] == "https://login.example/callback?lang=en"
    assert (visit["referrerType"], visit["referrerName"]) == ("website", "login.example")
    stored = json.dumps(visit)
    for secret in (RESET_TOKEN, OAUTH_CODE, "state=x1"):
        assert secret not in stored


def test_bots_are_dropped_by_matomo_unless_track_bots(replayed: Replayed) -> None:
    """Without ``bots=1`` Matomo answers the Googlebot hit as tracked and drops it; with ``track_bots`` it keeps
    the visit, with both pages."""
    [dropped] = sent_by(replayed.default, CRAWLER)
    assert "bots" not in dropped
    assert replayed.visits(CRAWLER) == []
    kept_hits = sent_by(replayed.bots, KEPT_CRAWLER)
    assert [hit["bots"] for hit in kept_hits] == ["1", "1"]
    assert replayed.bots.stats.tracked == 2
    [visit] = replayed.visits(KEPT_CRAWLER)
    assert visit["visitorId"] == KEPT_CRAWLER.cid()
    assert [(a["url"], a["timestamp"]) for a in visit["actionDetails"]] == [
        (f"http://{HOST}/", replayed.at(11)),
        (f"http://{HOST}/items/1", replayed.at(11) + 7),
    ]


def test_anonymize_ip_masks_the_ip_and_keeps_the_visitor(replayed: Replayed) -> None:
    """``anonymize_ip=2``: Matomo stores 192.0.0.0 for 192.0.2.19; the visitor id is computed from the full IP,
    so the two visits are one returning visitor (the second visit is its second, "returning")."""
    hits = replayed.anonymized.hits
    assert [hit["cip"] for hit in hits] == ["192.0.0.0"] * 3
    assert {hit["cid"] for hit in hits} == {ANONYMOUS.cid()}
    visits = replayed.matomo.visits(replayed.matomo.site_id, replayed.day, segment=f"visitorId=={ANONYMOUS.cid()}")
    assert [(v["visitIp"], v["visitCount"], v["visitorType"], len(v["actionDetails"])) for v in visits] == [
        ("192.0.0.0", 1, "new", 2),
        ("192.0.0.0", 2, "returning", 1),
    ]
    assert ANONYMOUS.ip not in json.dumps(visits)


def test_daily_visitor_ids_rotate_across_days_and_hold_within_a_day(replayed: Replayed) -> None:
    """``visitor_id="daily"``: the day before, two visits under one id; on the day a new id and a new visitor."""
    first_day = replayed.visits(DAILY, day=replayed.day_before)
    second_day = replayed.visits(DAILY)
    assert [v["visitorId"] for v in first_day] == [DAILY.cid(replayed.day_before)] * 2
    assert [(v["visitCount"], v["visitorType"]) for v in first_day] == [(1, "new"), (2, "returning")]
    [visit] = second_day
    assert visit["visitorId"] == DAILY.cid(replayed.day)
    assert visit["visitorId"] != DAILY.cid(replayed.day_before)
    assert visit["visitorId"] != DAILY.cid()  # not the stable id either
    assert (visit["visitCount"], visit["visitorType"]) == (1, "new")
    assert [hit["cid"] for hit in replayed.daily.hits] == [
        DAILY.cid(replayed.day_before),
        DAILY.cid(replayed.day_before),
        DAILY.cid(replayed.day),
    ]


def test_client_hints_reach_matomos_device_detection(replayed: Replayed) -> None:
    """``uadata`` from captured ``Sec-CH-UA*`` headers: Matomo takes the model and the OS version from the hints
    (a reduced User-Agent says "Android 10; K" and "Windows NT 10.0" whatever the truth)."""
    [phone] = replayed.visits(PHONE_HINTS)
    [plain_phone] = replayed.visits(PHONE_PLAIN)
    [desktop] = replayed.visits(DESKTOP_HINTS)
    [plain_desktop] = replayed.visits(DESKTOP_PLAIN)
    [hinted] = sent_by(replayed.default, PHONE_HINTS)
    assert json.loads(hinted["uadata"])["model"] == "Pixel 8"

    def device(visit: dict[str, Any]) -> tuple[str, ...]:
        keys = ("deviceType", "deviceBrand", "deviceModel", "operatingSystemName", "operatingSystemVersion")
        return tuple(visit[key] for key in (*keys, "browserName", "browserVersion"))

    assert device(phone) == ("Smartphone", "Google", "Pixel 8", "Android", "14.0", "Chrome Mobile", "126.0")
    assert device(plain_phone)[3:5] == ("Android", "10")
    assert device(plain_phone)[2] != "Pixel 8"
    assert (desktop["operatingSystem"], plain_desktop["operatingSystem"]) == ("Windows 11", "Windows 10")

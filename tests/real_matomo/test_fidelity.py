"""Analytics fidelity: the corpus, replayed through real instrumented apps, is exactly what a real Matomo 5 reports.

Every expectation is computed from the corpus (``corpus.py``): who visited, when, from where, with which browser,
and what each request was. Matomo is asked through its Reporting API for the corpus's day.

How the bot counts: by default (``track_bots`` off) the exporter sends no ``bots=1``, so Matomo drops the
Googlebot's hits while answering them as "tracked" (``ExportStats.tracked`` counts them). The corpus's figures
therefore count the human visitors only, and the bot is asserted to be absent; with ``track_bots=True`` the same
bot visit is replayed into the second site and asserted to be kept.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import pytest

from otel_matomo import MatomoSpanExporter
from otel_matomo._types import ExportStats, Hit
from otel_matomo._visitor import visitor_id
from tests.real_matomo.conftest import Matomo
from tests.real_matomo.corpus import ITEM_ROUTE, Request, Visitor, build_corpus
from tests.real_matomo.replay import capture_deliveries, shop

pytestmark = pytest.mark.real_matomo

# Matomo's defaults ([Tracker] campaign_var_name and campaign_keyword_var_name in global.ini.php): it reads the
# campaign from these parameters and removes them from the page URL it stores.
MATOMO_CAMPAIGN_PARAMETERS = frozenset(
    (
        *("pk_cpn", "pk_campaign", "piwik_campaign", "mtm_campaign", "matomo_campaign"),
        *("utm_campaign", "utm_source", "utm_medium"),
        *("pk_kwd", "pk_keyword", "piwik_kwd", "mtm_kwd", "mtm_keyword", "matomo_kwd", "utm_term"),
    )
)
# encodeURIComponent, in which Matomo's error-page title convention is written.
_COMPONENT_SAFE = "!*'()"


@dataclass(frozen=True)
class Replayed:
    """The corpus after its replay into the real Matomo, with what was sent."""

    matomo: Matomo
    day: str
    visitors: list[Visitor]
    requests: list[Request]
    """Every request, in the order sent (chronological)."""
    statuses: list[int]
    durations_ns: list[int]
    """Each request's server span duration (same order as ``requests``)."""
    hits: list[Hit]
    stats: ExportStats
    secret: bytes
    summary: dict[str, Any]

    @property
    def humans(self) -> list[Visitor]:
        return [visitor for visitor in self.visitors if not visitor.agent.bot]

    @property
    def bots(self) -> list[Visitor]:
        return [visitor for visitor in self.visitors if visitor.agent.bot]

    def cid(self, visitor: Visitor) -> str:
        return visitor_id(self.secret, visitor.ip, visitor.user_agent)

    def report(self, method: str, **params: Any) -> list[dict[str, Any]]:
        rows = self.matomo.api(
            method, idSite=self.matomo.site_id, period="day", date=self.day, filter_limit=-1, **params
        )
        assert isinstance(rows, list), rows
        return rows

    def human_visits(self) -> Iterable[tuple[Visitor, int, tuple[Request, ...]]]:
        for visitor in self.humans:
            for number, visit in enumerate(visitor.visits):
                yield visitor, number, visit.requests

    def duration_of(self) -> dict[Request, int]:
        return dict(zip(self.requests, self.durations_ns, strict=True))


@pytest.fixture(scope="module")
def replayed(clean_matomo: Matomo, corpus_day: datetime, session_monkeypatch: pytest.MonkeyPatch) -> Replayed:
    """Replay the whole corpus once (half the visitors through FastAPI/uvicorn, half through Flask/werkzeug)."""
    visitors = build_corpus(corpus_day)
    requests = sorted(
        (request for visitor in visitors for request in visitor.requests),
        key=lambda request: (request.at, request.visitor.number),
    )
    matomo = clean_matomo
    # A generous deadline: a loaded CI machine must not turn a slow Matomo into lost hits.
    exporter = MatomoSpanExporter(
        endpoint=matomo.url, site_id=matomo.site_id, token_auth=matomo.token, timeout=timedelta(seconds=60)
    )
    started = time.monotonic()
    with capture_deliveries(session_monkeypatch) as delivery, shop(exporter, session_monkeypatch) as replay:
        for request in requests:
            replay.send(request)
        replay.flush()
    day = corpus_day.strftime("%Y-%m-%d")
    summary = matomo.fresh_archives(matomo.site_id, day)
    print(f"replayed {len(requests)} requests into Matomo in {time.monotonic() - started:.1f} s")
    return Replayed(
        matomo=matomo,
        day=day,
        visitors=visitors,
        requests=requests,
        statuses=replay.statuses,
        durations_ns=replay.durations_ns,
        hits=delivery.hits,
        stats=exporter.stats,
        secret=exporter.settings.visitor_id_secret,
        summary=summary,
    )


# ---------------------------------------------------------------------------------------------- expectations


def expected_title(request: Request) -> str:
    """The page title Matomo should show: the route template, or the error-page title for 4xx/5xx."""
    page = request.page
    if request.status >= 400:
        title = f"{request.status}/URL = {quote(page.path, safe=_COMPONENT_SAFE)}"
        if request.referer:
            title += f"/From = {quote(request.referer, safe=_COMPONENT_SAFE)}"
        return title
    route = {"home": "/", "item": ITEM_ROUTE[request.visitor.app], "cart": "/api/cart", "redirect": "/old-home"}
    return f"{page.method} {route[page.kind]}"


def expected_url(request: Request) -> str:
    """The page URL Matomo stores: as requested, minus the campaign parameters Matomo consumes."""
    parts = urlsplit(request.url)
    kept = [(k, v) for k, v in parse_qsl(parts.query) if k.lower() not in MATOMO_CAMPAIGN_PARAMETERS]
    return parts._replace(query=urlencode(kept)).geturl()


def language_code(visitor: Visitor) -> str:
    """Matomo keeps the first language of Accept-Language, lower-cased."""
    return visitor.language.split(",")[0].split(";")[0].strip().lower()


def count_by(
    replayed: Replayed, key: Any, visits: Iterable[tuple[Visitor, int, tuple[Request, ...]]] | None = None
) -> dict[str, tuple[int, int, int]]:
    """``{key: (nb_visits, nb_uniq_visitors, nb_actions)}`` over the human visits."""
    visit_count: Counter[str] = Counter()
    action_count: Counter[str] = Counter()
    visitors: defaultdict[str, set[int]] = defaultdict(set)
    for visitor, number, requests in visits if visits is not None else replayed.human_visits():
        label = key(visitor, number)
        visit_count[label] += 1
        action_count[label] += len(requests)
        visitors[label].add(visitor.number)
    return {label: (visit_count[label], len(visitors[label]), action_count[label]) for label in visit_count}


def reported(rows: list[dict[str, Any]], label: Any = lambda row: row["label"]) -> dict[str, tuple[int, int, int]]:
    """The same triple from a report, rows without visits left out."""
    return {
        label(row): (int(row["nb_visits"]), int(row["nb_uniq_visitors"]), int(row["nb_actions"]))
        for row in rows
        if int(row.get("nb_visits") or 0)
    }


def segment_value(row: dict[str, Any], dimension: str) -> str:
    """``referrerType==search`` -> ``search``; the first condition of the row's segment."""
    first = unquote(row["segment"]).split(",")[0].split(";")[0]
    name, _, value = first.partition("==")
    assert name == dimension, row["segment"]
    return value


# ---------------------------------------------------------------------------------------------- the tests


def test_replay_sent_one_exact_hit_per_request(replayed: Replayed) -> None:
    """What the exporter sent: one hit per request, at the scripted second, with the visitor's IP and server time.

    Matomo answers the bot's hits as tracked too (it drops them silently), so ``tracked`` counts them.
    """
    assert replayed.statuses == [request.status for request in replayed.requests]
    assert 500 in replayed.statuses
    assert replayed.statuses.count(404) >= 2
    assert replayed.stats.requests == len(replayed.requests)
    assert replayed.stats.tracked == len(replayed.requests)
    assert (replayed.stats.invalid, replayed.stats.lost, replayed.stats.malformed) == (0, 0, 0)
    hits = sorted(replayed.hits, key=lambda hit: (int(hit["cdt"]), hit["cid"]))
    durations = replayed.duration_of()
    by_time = sorted(replayed.requests, key=lambda request: (request.at, replayed.cid(request.visitor)))
    assert len(hits) == len(by_time)
    for hit, request in zip(hits, by_time, strict=True):
        assert hit["cdt"] == str(request.at)
        assert hit["cid"] == replayed.cid(request.visitor)
        assert hit["cip"] == request.visitor.ip
        assert hit["url"] == request.url
        assert hit["action_name"] == expected_title(request)
        assert hit.get("urlref") == request.referer
        # Simulated server time plus the real few milliseconds, sent in whole milliseconds.
        assert abs(int(hit["pf_srv"]) - durations[request] / 1e6) <= 0.5
        assert int(hit["pf_srv"]) >= request.server_ms


def test_visits_summary(replayed: Replayed) -> None:
    """VisitsSummary.get for the day: visits, unique visitors and actions of the human visitors."""
    summary = replayed.summary
    visits = list(replayed.human_visits())
    assert summary["nb_visits"] == len(visits)
    assert summary["nb_uniq_visitors"] == len(replayed.humans)
    assert summary["nb_actions"] == sum(len(requests) for _, _, requests in visits)
    # The corpus has returning visitors, so visits and visitors differ, and the bot would add to both.
    assert len(visits) > len(replayed.humans) >= 30


def test_bot_is_dropped_by_matomo(replayed: Replayed) -> None:
    """Googlebot's hits were sent and answered as tracked, but Matomo recorded no visit (no ``bots=1``)."""
    [bot] = replayed.bots
    sent = [hit for hit in replayed.hits if hit["cid"] == replayed.cid(bot)]
    assert len(sent) == len(bot.requests)
    assert "bots" not in sent[0]
    recorded = replayed.matomo.visits(replayed.matomo.site_id, replayed.day, segment=f"visitorId=={replayed.cid(bot)}")
    assert recorded == []
    assert bot.ip not in {visit["visitIp"] for visit in replayed.matomo.visits(replayed.matomo.site_id, replayed.day)}


def test_bot_is_kept_with_track_bots(replayed: Replayed, monkeypatch: pytest.MonkeyPatch, corpus_day: datetime) -> None:
    """With ``track_bots=True`` the exporter sends ``bots=1`` and Matomo keeps the same Googlebot visit.

    Replayed into the second site, so that the corpus's site keeps its human-only figures.
    """
    [bot] = replayed.bots
    matomo = replayed.matomo
    exporter = MatomoSpanExporter(
        endpoint=matomo.url,
        site_id=matomo.other_site_id,
        token_auth=matomo.token,
        track_bots=True,
        timeout=timedelta(seconds=60),
    )
    with capture_deliveries(monkeypatch) as delivery, shop(exporter, monkeypatch) as replay:
        for request in bot.requests:
            replay.send(request)
        replay.flush()
    assert [hit.get("bots") for hit in delivery.hits] == ["1"] * len(bot.requests)
    [visit] = matomo.visits(matomo.other_site_id, replayed.day, segment=f"visitorId=={replayed.cid(bot)}")
    assert visit["visitIp"] == bot.ip
    assert [action["timestamp"] for action in visit["actionDetails"]] == [request.at for request in bot.requests]
    assert [action["pageTitle"] for action in visit["actionDetails"]] == [expected_title(r) for r in bot.requests]


def test_live_visit_details(replayed: Replayed) -> None:
    """Live.getLastVisitsDetails: each visit's IP, visitor id, language, device, referrer, and actions in order."""
    expected = []
    for visitor, number, requests in replayed.human_visits():
        source = visitor.source
        first_visit = number == 0
        expected.append(
            {
                "visitIp": visitor.ip,
                "visitorId": replayed.cid(visitor),
                "visitCount": number + 1,
                "languageCode": language_code(visitor),
                "browserName": visitor.agent.browser,
                "operatingSystemName": visitor.agent.os,
                "referrerType": source.matomo_type if first_visit else "direct",
                "referrerName": source.matomo_name if first_visit else "",
                "referrerKeyword": source.matomo_keyword if first_visit else "",
                "firstActionTimestamp": requests[0].at,
                "actions": [
                    {"type": "action", "pageTitle": expected_title(r), "url": expected_url(r), "timestamp": r.at}
                    for r in requests
                ],
            }
        )
    visits = replayed.matomo.visits(replayed.matomo.site_id, replayed.day)
    actual = [
        {
            **{key: visit[key] for key in expected[0] if key != "actions"},
            "referrerKeyword": visit["referrerKeyword"] or "",
            "referrerName": visit["referrerName"] or "",
            "actions": [
                {key: action.get(key) for key in ("type", "pageTitle", "url", "timestamp")}
                for action in visit["actionDetails"]
            ],
        }
        for visit in visits
    ]

    def order(visit: dict[str, Any]) -> tuple[int, str]:
        return visit["firstActionTimestamp"], visit["visitorId"]

    assert len(actual) == len(expected)
    for got, want in zip(sorted(actual, key=order), sorted(expected, key=order), strict=True):
        assert got == want


def test_page_titles_and_server_time(replayed: Replayed) -> None:
    """Actions.getPageTitles (flat): one row per route template (and error title), hits, visits, server time.

    ``avg_time_server`` (seconds, 3 decimals) is compared with the ``pf_srv`` the exporter sent and with the spans'
    own durations (recorded apart from the exporter), so a unit mistake in ``pf_srv`` would show. Labels come back
    URL-decoded.
    """
    durations = replayed.duration_of()
    hits: Counter[str] = Counter()
    visits: defaultdict[str, set[tuple[int, int]]] = defaultdict(set)
    spans_ms: defaultdict[str, list[float]] = defaultdict(list)
    for visitor, number, requests in replayed.human_visits():
        for request in requests:
            title = unquote(expected_title(request))
            hits[title] += 1
            visits[title].add((visitor.number, number))
            spans_ms[title].append(durations[request] / 1e6)
    humans = {replayed.cid(visitor) for visitor in replayed.humans}
    sent_ms: defaultdict[str, list[int]] = defaultdict(list)
    for hit in replayed.hits:
        if hit["cid"] in humans:
            sent_ms[unquote(hit["action_name"])].append(int(hit["pf_srv"]))
    rows = {row["label"]: row for row in replayed.report("Actions.getPageTitles", flat=1)}
    assert set(rows) == set(hits) == set(sent_ms)
    for title, row in rows.items():
        # Exactly what was sent, averaged by Matomo and shown in seconds with 3 decimals.
        assert row["avg_time_server"] == pytest.approx(statistics.fmean(sent_ms[title]) / 1000, abs=0.00051), title
        assert (row["nb_hits"], row["nb_visits"]) == (hits[title], len(visits[title])), title
        assert int(row["nb_hits_with_time_server"]) == hits[title], title
        mean_s = statistics.fmean(spans_ms[title]) / 1000
        # Each pf_srv is rounded to the millisecond, the average to 3 decimals of a second.
        assert row["avg_time_server"] == pytest.approx(mean_s, abs=0.0011), title
        assert float(row["min_time_server"]) == pytest.approx(min(spans_ms[title]) / 1000, abs=0.00051), title
        assert float(row["max_time_server"]) == pytest.approx(max(spans_ms[title]) / 1000, abs=0.00051), title
    for app_route in ITEM_ROUTE.values():
        assert f"GET {app_route}" in rows


def test_error_pages_in_page_titles(replayed: Replayed) -> None:
    """How Matomo 5 shows the error-page titles: one row each, never grouped under "404"/"500".

    Observed on Matomo 5.3.1 with its defaults: ``action_title_category_delimiter`` is empty, so page titles are
    not split into categories; the flat report and the hierarchical one have the same rows (the hierarchical
    labels with a leading space), each ``404/URL = .../From = ...`` title URL-decoded in the label and as sent in
    ``Actions_PageTitle``. Grouping under "404" only happens with ``action_title_category_delimiter = "/"``,
    which would also split every route title (``GET /items/{item_id}`` -> ``GET `` > ``items`` > ...).
    """
    errors: Counter[str] = Counter()
    for _, _, requests in replayed.human_visits():
        errors.update(expected_title(r) for r in requests if r.status >= 400)
    assert any(title.startswith("404/") for title in errors)
    assert any(title.startswith("500/") for title in errors)

    flat = replayed.report("Actions.getPageTitles", flat=1)
    flat_errors = {row["Actions_PageTitle"]: row for row in flat if row["label"][:4] in ("404/", "500/")}
    assert {title: row["nb_hits"] for title, row in flat_errors.items()} == dict(errors)
    assert all(row["label"] == unquote(title) for title, row in flat_errors.items())

    tree = replayed.report("Actions.getPageTitles")
    assert all("idsubdatatable" not in row for row in tree), "page titles were grouped into categories"
    assert not {row["label"].strip() for row in tree} & {"404", "500"}
    assert Counter({row["label"]: row["nb_hits"] for row in tree}) == Counter(
        {" " + row["label"]: row["nb_hits"] for row in flat}
    )


def test_referrer_types(replayed: Replayed) -> None:
    """Referrers.getReferrerType: the corpus's split over direct, search, social, website and campaign."""

    def kind(visitor: Visitor, number: int) -> str:
        return visitor.source.matomo_type if number == 0 else "direct"

    expected = count_by(replayed, kind)
    assert set(expected) == {"direct", "search", "social", "website", "campaign"}
    rows = replayed.report("Referrers.getReferrerType")
    assert reported(rows, lambda row: segment_value(row, "referrerType")) == expected


def test_campaigns(replayed: Replayed) -> None:
    """Referrers.getCampaigns: campaign names (lower-cased by Matomo) from mtm_campaign and utm_campaign."""

    def campaign_visits() -> Iterable[tuple[Visitor, int, tuple[Request, ...]]]:
        return ((v, n, r) for v, n, r in replayed.human_visits() if n == 0 and v.source.matomo_type == "campaign")

    expected = count_by(replayed, lambda visitor, _: visitor.source.matomo_name, campaign_visits())
    assert len(expected) == 2
    assert reported(replayed.report("Referrers.getCampaigns")) == expected


def test_languages(replayed: Replayed) -> None:
    """UserLanguage.getLanguage: visits per language (Matomo groups de-de and de under "German")."""
    expected = count_by(replayed, lambda visitor, _: language_code(visitor).split("-")[0])
    rows = replayed.report("UserLanguage.getLanguage")
    assert reported(rows, lambda row: segment_value(row, "languageCode")) == expected


def test_browsers_and_operating_systems(replayed: Replayed) -> None:
    """DevicesDetection.getBrowsers and getOsFamilies: the corpus's desktop and mobile split."""
    browsers = count_by(replayed, lambda visitor, _: visitor.agent.browser)
    assert reported(replayed.report("DevicesDetection.getBrowsers")) == browsers
    systems = count_by(replayed, lambda visitor, _: visitor.agent.os)
    assert reported(replayed.report("DevicesDetection.getOsFamilies")) == systems
    assert {"Chrome Mobile", "Mobile Safari", "Chrome", "Firefox", "Safari"} <= set(browsers)


def test_visit_ips_are_the_visitors_not_the_servers(replayed: Replayed) -> None:
    """With a token, every visit carries its visitor's own IP (cip), never the back end's 127.0.0.1."""
    visits = replayed.matomo.visits(replayed.matomo.site_id, replayed.day)
    ips = {visit["visitIp"] for visit in visits}
    assert ips == {visitor.ip for visitor in replayed.humans}
    assert "127.0.0.1" not in ips

"""The scripted traffic of the fidelity suite: who visits the shop, when, from where, and what they ask for.

Everything the suite expects Matomo to report is computed from this corpus (see ``expected_*`` helpers in the
tests), never written down by hand. The only hand-written knowledge is what Matomo's DeviceDetector and referrer
tables call each user agent and referrer (``Agent.browser``/``Agent.os``, ``Source.matomo_type``/``matomo_name``):
that is Matomo's vocabulary, not a count.

Time is simulated: every request carries a scripted UTC second (all of them inside one past day, 08:00-20:00), and
the replay makes the OpenTelemetry SDK stamp the span with that second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

__all__ = ["BOT", "CORPUS_SEED", "Agent", "Page", "Request", "Source", "Visit", "Visitor", "build_corpus"]

CORPUS_SEED = 20240611
HOST = "shop.example"
FASTAPI, FLASK = "fastapi-uvicorn", "flask-werkzeug"
ITEM_ROUTE = {FASTAPI: "/items/{item_id}", FLASK: "/items/<int:item_id>"}
REDIRECT_STATUS = {FASTAPI: 307, FLASK: 302}
VISIT_GAP_S = 35 * 60
"""Between a returning visitor's two visits: more than Matomo's 30-minute visit length, so a new visit."""


@dataclass(frozen=True)
class Agent:
    """A user agent and what Matomo's DeviceDetector calls it."""

    kind: str
    template: str
    """With ``{v}``: a version number that makes each visitor's user agent distinct."""
    browser: str
    os: str
    bot: bool = False

    def user_agent(self, version: int) -> str:
        return self.template.format(v=version)


AGENTS = (
    Agent(
        "desktop-chrome",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 "
        "Safari/537.36",
        "Chrome",
        "Windows",
    ),
    Agent(
        "desktop-firefox",
        "Mozilla/5.0 (X11; Linux x86_64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
        "Firefox",
        "GNU/Linux",
    ),
    Agent(
        "desktop-safari",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{v} "
        "Safari/605.1.15",
        "Safari",
        "Mac",
    ),
    Agent(
        "mobile-android",
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Mobile "
        "Safari/537.36",
        "Chrome Mobile",
        "Android",
    ),
    Agent(
        "mobile-iphone",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_{v} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.{v} Mobile/15E148 Safari/604.1",
        "Mobile Safari",
        "iOS",
    ),
)
BOT = Agent(
    "bot-googlebot",
    "Mozilla/5.0 (compatible; Googlebot/2.{v}; +http://www.google.com/bot.html)",
    "Googlebot",
    "",
    bot=True,
)


@dataclass(frozen=True)
class Source:
    """Where a visit comes from: a Referer header, or campaign parameters on the landing URL."""

    kind: str
    referer: str | None
    matomo_type: str
    """``referrerType`` in Live (``direct``, ``search``, ``social``, ``website``, ``campaign``)."""
    matomo_name: str
    """``referrerName`` in Live."""
    matomo_keyword: str = ""
    """``referrerKeyword`` in Live."""
    landing_query: str = ""


SOURCES = (
    Source("direct", None, "direct", ""),
    Source("google", "https://www.google.com/search?q=winter+boots", "search", "Google", "winter boots"),
    Source("bing", "https://www.bing.com/search?q=shop+example", "search", "Bing", "shop example"),
    # Matomo 5.3.1 lists facebook.com among its *search engines*, which it checks before social networks: a
    # visit from https://www.facebook.com/ is a "search" visit from "Facebook" without keyword.
    Source("facebook", "https://www.facebook.com/", "search", "Facebook", "Keyword not defined"),
    Source("linkedin", "https://www.linkedin.com/feed/", "social", "LinkedIn"),
    Source("website", "https://blog.example.org/best-shops-2024", "website", "blog.example.org"),
    # Matomo lower-cases campaign names; with no keyword parameter it takes the referrer's host as keyword.
    Source("campaign-mtm", None, "campaign", "spring_sale", "", "mtm_campaign=Spring_Sale&mtm_source=newsletter"),
    Source(
        "campaign-utm",
        "https://mail.example.net/",
        "campaign",
        "autumn",
        "mail.example.net",
        "utm_campaign=Autumn&utm_medium=email",
    ),
)

LANGUAGES = (
    "en-US,en;q=0.9",
    "de-DE,de;q=0.9,en;q=0.5",
    "fr-FR,fr;q=0.8",
    "es-ES,es;q=0.9",
    "ja-JP,ja;q=0.9",
    "pt-BR,pt;q=0.8,en;q=0.3",
    "en-GB,en;q=0.9",
    "nl-NL,nl;q=0.9",
)


@dataclass(frozen=True)
class Page:
    """One thing a visitor asks the shop for."""

    method: str
    path: str
    """Path and query as requested."""
    status: int | None
    """The answer expected; ``None`` for the redirect, whose status depends on the framework."""
    kind: str
    """``home``, ``item``, ``cart``, ``redirect``, ``missing-item``, ``no-route``, ``error``."""


@dataclass(frozen=True)
class Request:
    """One scripted request: a page at a simulated UTC second, with the visitor's headers."""

    visitor: Visitor
    visit: int
    """0 for the first visit, 1 for the return visit."""
    at: int
    """Simulated UTC Unix second of the request's start."""
    page: Page
    referer: str | None
    server_ms: int
    """Simulated time the server spends on it (added to the span's end), in milliseconds."""

    @property
    def status(self) -> int:
        if self.page.status is None:
            return REDIRECT_STATUS[self.visitor.app]
        return self.page.status

    @property
    def url(self) -> str:
        return f"http://{HOST}{self.page.path}"

    def headers(self) -> dict[str, str]:
        headers = {
            "Host": HOST,
            "User-Agent": self.visitor.user_agent,
            "Accept-Language": self.visitor.language,
            "X-Forwarded-For": self.visitor.ip,
        }
        if self.referer is not None:
            headers["Referer"] = self.referer
        return headers


@dataclass(frozen=True)
class Visit:
    requests: tuple[Request, ...] = ()


@dataclass(frozen=True)
class Visitor:
    number: int
    ip: str
    agent: Agent
    user_agent: str
    language: str
    source: Source
    app: str
    """Which instrumented app serves all of this visitor's requests."""
    visits: list[Visit] = field(default_factory=list, compare=False, repr=False)

    @property
    def requests(self) -> list[Request]:
        return [request for visit in self.visits for request in visit.requests]


def _pages(rng: random.Random, count: int, landing_query: str) -> list[Page]:
    """A plausible browse: landing page, items, sometimes the cart, a redirect or a missing item."""
    landing_kind = rng.choice(("home", "item"))
    item = rng.randint(1, 99)
    pages = [Page("GET", "/", 200, "home") if landing_kind == "home" else Page("GET", f"/items/{item}", 200, "item")]
    if landing_query:
        pages[0] = Page("GET", f"{pages[0].path}?{landing_query}", 200, pages[0].kind)
    for _ in range(count - 1):
        roll = rng.random()
        if roll < 0.55:
            pages.append(Page("GET", f"/items/{rng.randint(1, 99)}", 200, "item"))
        elif roll < 0.7:
            pages.append(Page("POST", "/api/cart", 200, "cart"))
        elif roll < 0.8:
            pages.append(Page("GET", "/", 200, "home"))
        elif roll < 0.87:
            pages.append(Page("GET", "/old-home", None, "redirect"))
        elif roll < 0.94:
            pages.append(Page("GET", f"/items/{rng.randint(101, 999)}?ref=related", 404, "missing-item"))
        else:
            pages.append(Page("GET", "/no-such-page", 404, "no-route"))
    return pages


def build_corpus(day: datetime, humans: int = 34) -> list[Visitor]:
    """``humans`` visitors (half per app), one Googlebot; every request between 08:00 and 20:00 UTC of ``day``."""
    assert day.tzinfo is timezone.utc
    assert (day.hour, day.minute, day.second) == (0, 0, 0)
    rng = random.Random(CORPUS_SEED)
    start_of_traffic = int((day + timedelta(hours=8)).timestamp())
    visitors: list[Visitor] = []
    for number in range(humans):
        agent = AGENTS[number % len(AGENTS)]
        source = SOURCES[number % len(SOURCES)]
        visitor = Visitor(
            number=number,
            # Documentation ranges, distinct per visitor.
            ip=("198.51.100.{}" if number % 2 else "203.0.113.{}").format(10 + number),
            agent=agent,
            user_agent=agent.user_agent(110 + number if "{v}.0" in agent.template else number % 9),
            language=LANGUAGES[number % len(LANGUAGES)],
            source=source,
            app=FASTAPI if number % 2 == 0 else FLASK,
        )
        at = start_of_traffic + number * 20 * 60 + rng.randint(0, 300)
        returning = number % 3 == 1
        for visit_number in range(2 if returning else 1):
            pages = _pages(rng, rng.randint(2, 5), source.landing_query if visit_number == 0 else "")
            referer = source.referer if visit_number == 0 else None  # the return visit is typed in: direct
            requests = []
            for page in pages:
                requests.append(Request(visitor, visit_number, at, page, referer, rng.randint(3, 900)))
                referer = f"http://{HOST}{page.path}"
                at += rng.randint(20, 240)
            visitor.visits.append(Visit(tuple(requests)))
            at = requests[-1].at + VISIT_GAP_S
        visitors.append(visitor)
    # One visitor meets the shop's bug: a 500 as their last page.
    unlucky = visitors[4]
    last_visit = unlucky.visits[-1]
    last = last_visit.requests[-1]
    boom = Request(
        unlucky, last.visit, last.at + 45, Page("GET", "/boom", 500, "error"), f"http://{HOST}{last.page.path}", 1500
    )
    unlucky.visits[-1] = Visit((*last_visit.requests, boom))
    bot = Visitor(
        number=humans,
        ip="192.0.2.66",
        agent=BOT,
        user_agent=BOT.user_agent(1),
        language="en-US,en;q=0.5",
        source=SOURCES[0],
        app=FASTAPI,
    )
    at = start_of_traffic + 3 * 3600 + 17
    crawl = [("/", 200, "home"), ("/items/1", 200, "item"), ("/items/2", 200, "item"), ("/nope", 404, "no-route")]
    bot.visits.append(
        Visit(
            tuple(
                Request(bot, 0, at + 7 * index, Page("GET", path, status, kind), None, 20)
                for index, (path, status, kind) in enumerate(crawl)
            )
        )
    )
    visitors.append(bot)
    for visitor in visitors:
        times = [request.at for request in visitor.requests]
        assert times == sorted(times), visitor
        assert start_of_traffic <= times[0], visitor
        assert times[-1] < start_of_traffic + 12 * 3600, visitor
    return visitors

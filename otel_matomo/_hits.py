"""``HttpRequest`` -> Matomo Tracking API parameters. The only module that knows Matomo parameter names."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

from otel_matomo import _names as names
from otel_matomo._cache import text_cache, text_length
from otel_matomo._caps import UADATA_CAP, Capped, capped, fit_values
from otel_matomo._policy import client_address, forwarded_origin, is_event, mask_ip
from otel_matomo._redact import redact_query, redact_url
from otel_matomo._settings import Settings
from otel_matomo._types import Adjustment, Hit, HttpRequest
from otel_matomo._visitor import visitor_id

_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
_NUMERIC = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)
_BRAND = re.compile(r'"((?:[^"\\]|\\.)*)"\s*;\s*v\s*=\s*"((?:[^"\\]|\\.)*)"')
_SKEW = 60
"""Seconds a hit's time may be ahead of this clock (the span's host keeps its own) before it is clamped."""
_OLDEST = 20 * 365 * 86_400 - 86_400
"""Matomo takes ``cdt`` from the last 20 years only (older is "now" to it); a day less, for hits that wait."""


@dataclass(frozen=True, slots=True)
class InvalidFact:
    """A tracked fact left out because Matomo cannot take its hit: named by what is wrong, never by its values."""

    kind: str
    """The fact's kind (``otel_matomo._names.TRACKING_EVENTS``)."""
    attribute: str
    """The span event attribute at fault (``matomo.event.category`` ...)."""
    problem: str
    """What is wrong with it: ``missing`` (absent, or neither text nor a number), ``empty``, ``not a number``,
    ``not a positive whole number``."""


@dataclass(frozen=True, slots=True)
class RequestHits:
    """What one request becomes: its hits, the tracked facts left out because Matomo cannot take them, and what
    was changed in the hits so that Matomo records them."""

    hits: list[Hit]
    invalid: tuple[InvalidFact, ...] = ()
    adjusted: tuple[Adjustment, ...] = ()
    """One item per hit and kind of change (a hit cut and clamped counts under both)."""


def request_hits(request: HttpRequest, settings: Settings, now: float | None = None) -> RequestHits:
    """The request's hit, then one hit per valid fact the application tracked, in the order it tracked them.

    Every extra hit shares the request's visitor (id, IP, user agent, language, user id) and URL, carries its own
    time and, except goals and ecommerce hits, ``ca=1`` (Matomo's mark of a hit that is not a page view).

    A fact Matomo cannot take (see ``_RULES``) is left out and named in the result: one such hit in a bulk request
    makes Matomo answer HTTP 500 to the whole request, so it would take the request's page view and every other
    hit of the batch with it. ``otel_matomo.tracking`` refuses such facts, but span events from another process
    (through the OTLP gateway) are not checked before they get here. ``now`` (Unix seconds, the clock by default)
    bounds the hits' times.
    """
    now = time.time() if now is None else now
    main, shared_adjusted, adjusted = _request_hit(request, settings, now)
    if not request.tracking.facts:
        return RequestHits([main], (), adjusted)
    shared = {key: value for key, value in main.items() if key in _SHARED or key.startswith(_DIMENSION)}
    hits = [main]
    invalid = []
    adjusted_facts: list[Adjustment] = []
    for index, fact in enumerate(request.tracking.facts, start=1):
        parameters = _pick(fact.attributes, _FACT_PARAMETERS[fact.kind])
        wrong = _invalid_fact(fact.kind, parameters)
        if wrong is not None:
            invalid.append(wrong)
            continue
        seconds, clamped = _seconds(fact.time_ns, now)
        cut = bool(fit_values(parameters, _FACT_CAPPED))
        adjusted_facts.extend(_adjustments(shared_adjusted, cut, clamped))
        hits.append(
            {
                **shared,
                "rand": f"{main['rand']}-{index}",
                "cdt": str(seconds),
                # ca=1 marks a hit that is no page view, but Matomo 5 answers HTTP 500 for a goal or ecommerce hit
                # that carries it ("meant for a plugin which is no longer activated"), failing the whole batch.
                **({} if fact.kind in _CONVERSIONS else {"ca": "1"}),
                # Matomo records an ecommerce order or cart as a conversion of goal 0.
                **({"idgoal": "0"} if fact.kind in _ECOMMERCE else {}),
                **parameters,
            }
        )
    return RequestHits(hits, tuple(invalid), adjusted + tuple(adjusted_facts))


def request_hit(request: HttpRequest, settings: Settings, now: float | None = None) -> Hit:
    """The hit one HTTP request becomes: a page view, or an event for routes listed in ``event_routes``."""
    return _request_hit(request, settings, time.time() if now is None else now)[0]


def _request_hit(
    request: HttpRequest, settings: Settings, now: float
) -> tuple[Hit, tuple[Adjustment, ...], tuple[Adjustment, ...]]:
    """The request's hit, what was changed in the part of it every fact hit shares, and in the hit itself."""
    ip, malformed = client_address(request, settings.trusted_proxies, settings.forwarded_header)
    seconds, clamped = _seconds(request.start_ns, now)
    day = time.strftime("%Y-%m-%d", time.gmtime(seconds)) if settings.daily_visitor_id else None
    hit: Hit = {
        "idsite": str(settings.site_id),
        "rec": "1",
        "apiv": "1",
        # The span id is unique per request, so it serves as Matomo's cache buster and keeps this pure.
        "rand": f"{request.span_id:016x}",
        # cid, not _id: an unknown _id lets Matomo fall back to fingerprinting, and a server-side tracker's
        # fingerprint is the back end's own, which merges visitors. Computed from the full address, before any
        # masking, so that visitor counts stay right.
        "cid": visitor_id(settings.visitor_id_secret, ip, request.user_agent, day),
        "url": page_url(request, settings),
        # Matomo reads cdt as whole UTC seconds; the request's start is when the visitor acted.
        "cdt": str(seconds),
    }
    own = _action(request, settings, hit)
    dimensions = _dimensions(request, settings) if settings.dimensions or request.tracking.dimensions else None
    if dimensions:
        hit.update(dimensions)
    hints_left_out = _visitor(request, settings, hit)
    # Matomo refuses cip without a token that may write to the site; without cip it records our own IP.
    if ip and settings.token_auth is not None:
        hit["cip"] = mask_ip(ip, settings.anonymize_ip)
    if settings.track_bots:
        hit["bots"] = "1"
    if request.response_size is not None:
        hit["bw_bytes"] = str(request.response_size)
    cut = fit_values(hit, own) + (fit_values(hit, capped(*dimensions)) if dimensions else ())
    if not (cut or hints_left_out or clamped or malformed):
        return hit, (), ()  # almost every hit
    # What a fact hit copies (its visitor, page and dimensions) may be cut, or only the request's own action.
    shared_cut = hints_left_out or any(parameter not in _ACTION_CAPPED for parameter in cut)
    shared = _adjustments((Adjustment.FORWARDED_MALFORMED,) if malformed else (), shared_cut, clamped=False)
    return hit, shared, _adjustments(shared, bool(cut), clamped)


def _action(request: HttpRequest, settings: Settings, hit: Hit) -> Capped:
    """Add what the visitor did to ``hit`` (a page view, or an event for ``event_routes``); the capped parameters
    the hit may then have (the visitor's too)."""
    duration = request.duration_ns
    # A request tracked at its start has no duration yet: no server time rather than a false zero.
    server_ms = None if duration is None else str(round(duration / 1_000_000))
    app = request.tracking
    if is_event(request, settings):
        path = redact_url(request.path, settings.redact_query_params)
        hit.update(ca="1", e_c=settings.event_category, e_a=f"{request.method} {request.route or path}", e_n=path)
        if server_ms is not None:
            hit["e_v"] = server_ms
        return _EVENT_CAPPED
    hit["action_name"] = app.page_title or action_name(request, settings)
    if server_ms is not None:
        hit["pf_srv"] = server_ms
    if app.search_keyword is None and not app.product:
        return _PAGE_CAPPED
    if app.search_keyword is not None:
        hit.update(search=app.search_keyword, search_cat=app.search_category or "")
        if app.search_count is not None:
            hit["search_count"] = str(app.search_count)
    hit.update({_PRODUCT[part]: value for part, value in app.product.items()})
    return _TRACKED_PAGE_CAPPED


def _visitor(request: HttpRequest, settings: Settings, hit: Hit) -> bool:
    """Add who the visitor is, as their browser says, to ``hit``; whether client hints too long to keep whole
    (JSON, which a cut would break) were left out."""
    headers = request.headers
    if request.referrer:
        hit["urlref"] = redact_url(request.referrer, settings.redact_query_params)
    if request.user_agent:
        hit["ua"] = request.user_agent
    left_out = False
    # Most requests (all but Chromium's) carry no hint: one test of the header names before reading six headers.
    if not _HINTS.isdisjoint(headers) and (uadata := _client_hints(tuple(map(headers.get, names.CLIENT_HINT_HEADERS)))):
        left_out = len(uadata) > UADATA_CAP
        if not left_out:
            hit["uadata"] = uadata
    if request.accept_language:
        hit["lang"] = request.accept_language
    if request.user_id:
        hit["uid"] = request.user_id
    return left_out


def _seconds(time_ns: int, now: float) -> tuple[int, bool]:
    """A hit's ``cdt``: whole UTC seconds of ``time_ns``, or ``now`` (and ``True``) when it is in the future or
    older than Matomo takes: it would replace it with its own "now" anyway, and a bogus time (0, the year 2554)
    would put the hit in the wrong day's visitor id and buffer age."""
    seconds = time_ns // 1_000_000_000
    if now - _OLDEST < seconds <= now + _SKEW:
        return seconds, False
    return int(now), True


def _adjustments(shared: tuple[Adjustment, ...], cut: bool, clamped: bool) -> tuple[Adjustment, ...]:
    """One hit's changes: those of the part every hit of the request shares, then its own."""
    if cut and Adjustment.TRUNCATED not in shared:
        shared = (*shared, Adjustment.TRUNCATED)
    return (*shared, Adjustment.TIME_CLAMPED) if clamped else shared


def _dimensions(request: HttpRequest, settings: Settings) -> dict[str, str]:
    """``dimension<ID>`` from configured attribute names, then from ``set_custom_dimension`` (which wins)."""
    values = {}
    for dimension_id, attribute in settings.dimensions:
        value = request.attributes.get(attribute)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value):
            values[dimension_id] = str(value)
    values.update(request.tracking.dimensions)
    return {f"{_DIMENSION}{dimension_id}": value for dimension_id, value in values.items()}


_FACT_PARAMETERS: dict[str, dict[str, str]] = {
    names.EVENT: {
        "e_c": names.EVENT_CATEGORY,
        "e_a": names.EVENT_ACTION,
        "e_n": names.EVENT_NAME,
        "e_v": names.EVENT_VALUE,
    },
    names.GOAL: {"idgoal": names.GOAL_ID, "revenue": names.GOAL_REVENUE},
    names.ORDER: {
        "ec_id": names.ORDER_ID,
        "revenue": names.REVENUE,
        "ec_items": names.ITEMS,
        "ec_st": names.SUBTOTAL,
        "ec_tx": names.TAX,
        "ec_sh": names.SHIPPING,
        "ec_dt": names.DISCOUNT,
    },
    names.CART_UPDATE: {"revenue": names.REVENUE, "ec_items": names.ITEMS},
    names.CONTENT_IMPRESSION: {"c_n": names.CONTENT_NAME, "c_p": names.CONTENT_PIECE, "c_t": names.CONTENT_TARGET},
}
"""Per kind of tracked fact: Matomo parameter -> the span event attribute it comes from."""


def _text(value: str) -> str | None:
    return None if value.strip() else "empty"


def _number(value: str) -> str | None:
    # What PHP's is_numeric takes: no "nan", "inf" or "1_000", which Python's float() would.
    return None if _NUMERIC.fullmatch(value) else "not a number"


def _positive_whole(value: str) -> str | None:
    return None if value.isascii() and value.isdigit() and int(value) > 0 else "not a positive whole number"


_RULES: dict[str, tuple[tuple[str, Callable[[str], str | None], bool], ...]] = {
    # Without a non-empty e_c and e_a Matomo takes the hit for a page view, but ca=1 says it is none: no plugin
    # claims it, and Matomo 5 answers HTTP 500 to the whole bulk request. e_v is read as a number.
    names.EVENT: (("e_c", _text, True), ("e_a", _text, True), ("e_v", _number, False)),
    # Matomo reads idgoal as a whole number; without one the hit is a page view, and 0 is the ecommerce goal.
    names.GOAL: (("idgoal", _positive_whole, True),),
    # Without ec_id Matomo takes an order for a cart update; revenue is what a conversion records.
    names.ORDER: (("ec_id", _text, True), ("revenue", _number, True)),
    names.CART_UPDATE: (("revenue", _number, True),),
    # A content impression is its name: without c_n the ca=1 hit is claimed by no plugin, as an event without e_c.
    names.CONTENT_IMPRESSION: (("c_n", _text, True),),
}
"""Per kind of tracked fact: ``(parameter, check, required)``, what Matomo needs of its hit; a check returns what
is wrong with a value, ``None`` when it is fine."""


def _invalid_fact(kind: str, parameters: Mapping[str, str]) -> InvalidFact | None:
    """The first parameter of a fact's hit that Matomo cannot take, named by its span event attribute."""
    for parameter, check, required in _RULES[kind]:
        value = parameters.get(parameter)
        problem = ("missing" if required else None) if value is None else check(value)
        if problem is not None:
            return InvalidFact(kind, _FACT_PARAMETERS[kind][parameter], problem)
    return None


def _pick(attributes: Mapping[str, object], parameters: Mapping[str, str]) -> Hit:
    """Matomo parameter -> the attribute it comes from; numbers without a needless ``.0``."""
    hit = {}
    for parameter, key in parameters.items():
        value = attributes.get(key)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            hit[parameter] = str(value)
    return hit


_SHARED = frozenset({"idsite", "rec", "apiv", "cid", "url", "urlref", "ua", "uadata", "lang", "uid", "cip", "bots"})
"""The visitor and page parameters of the request's hit that every fact hit of the request copies (with its
``dimension<ID>``)."""
_VISITOR_CAPPED = ("url", "urlref", "ua", "lang", "uid")
"""The capped parameters (``_caps``) among those every fact hit of a request shares (dimensions aside)."""
_ACTION_CAPPED = frozenset({"action_name", "search", "search_cat", "_pks", "_pkn", "_pkc", "e_c", "e_a", "e_n"})
"""The capped parameters of the request's own action, which no fact hit copies."""
_PAGE_CAPPED = capped(*_VISITOR_CAPPED, "action_name")
_TRACKED_PAGE_CAPPED = capped(*_VISITOR_CAPPED, "action_name", "search", "search_cat", "_pks", "_pkn", "_pkc")
_EVENT_CAPPED = capped(*_VISITOR_CAPPED, "e_c", "e_a", "e_n")
_FACT_CAPPED = capped("e_c", "e_a", "e_n", "c_n", "c_p", "c_t", "ec_id")
"""Per kind of hit, the capped parameters it may have."""
_CONVERSIONS = frozenset({names.GOAL, names.ORDER, names.CART_UPDATE})
"""Facts Matomo records as conversions (``idgoal``), which must not carry ``ca=1``."""
_ECOMMERCE = frozenset({names.ORDER, names.CART_UPDATE})
_DIMENSION = "dimension"
"""``dimension<ID>``: one parameter per custom dimension."""
_PRODUCT = {"sku": "_pks", "name": "_pkn", "category": "_pkc", "price": "_pkp"}
"""A product view's parts (``AppTracking.product``, from ``names.PRODUCT_*``) -> Matomo's parameters."""


def action_name(request: HttpRequest, settings: Settings) -> str:
    """``"GET /items/{item_id}"``, or Matomo's error-page title for 4xx/5xx answers.

    The route template, not the raw path, so that one route is one row in Matomo's page titles report.
    Error titles follow the convention of Matomo's JavaScript tracker FAQ and its log importer:
    ``404/URL = <encoded path?query>/From = <encoded referrer>``. With Matomo 5's default (empty)
    ``action_title_category_delimiter`` each such title is its own row, found by its ``404/URL = `` prefix; the
    path, query and referrer in it are redacted like ``url`` and ``urlref``.
    """
    names = settings.redact_query_params
    if settings.error_page_titles and request.status is not None and request.status >= 400:
        path, query = redact_url(request.path, names), redact_query(request.query, names)  # ;jsessionid=, %3F
        title = f"{request.status}/URL = {_encode_component(path + (f'?{query}' if query else ''))}"
        if request.referrer:
            title += f"/From = {_encode_component(redact_url(request.referrer, names))}"
        return title
    return f"{request.method} {request.route or redact_url(request.path, names)}"


def page_url(request: HttpRequest, settings: Settings) -> str:
    """The full URL as the visitor requested it (scheme, Host header, path, query), credentials removed.

    The query is redacted before the URL is put together: a ``#`` in the path would otherwise hide it from a
    parser as part of the fragment.
    """
    scheme, host = forwarded_origin(request, settings.trusted_proxies, settings.forwarded_header)
    return _page_url(scheme, host, request.path, request.query, settings.redact_query_params)


@text_cache(maxsize=2048)  # one page is requested again and again, and its URL is put together the same way
def _page_url(scheme: str, host: str | None, path: str, query: str, words: tuple[str, ...]) -> str:
    scheme = {"https": "https", "wss": "https"}.get(scheme, "http")
    host = host or "localhost"
    default_port = _DEFAULT_PORTS[scheme]
    if host.endswith(default_port):
        host = host[: -len(default_port)]
    path = redact_url(path if path.startswith("/") else "/" + path, words)
    query = redact_query(query, words)
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


_HINTS = frozenset(names.CLIENT_HINT_HEADERS)


def _hints_length(hints: tuple[str | None, ...]) -> int:
    return text_length(*hints)


@text_cache(maxsize=1024, size=_hints_length)  # one browser sends the same hints on every request
def _client_hints(headers: tuple[str | None, ...]) -> str | None:
    """``Sec-CH-UA*`` request headers (values in ``CLIENT_HINT_HEADERS`` order) as the JSON ``uadata`` Matomo's
    JavaScript tracker sends."""
    brands, mobile, platform, platform_version, model, full_version_list = headers
    hints: dict[str, object] = {}
    if brands is not None:
        hints["brands"] = [{"brand": brand, "version": version} for brand, version in _BRAND.findall(brands)]
    if full_version_list is not None:
        hints["fullVersionList"] = [
            {"brand": brand, "version": version} for brand, version in _BRAND.findall(full_version_list)
        ]
    if mobile is not None:
        hints["mobile"] = mobile.strip() == "?1"
    for value, key in ((platform, "platform"), (platform_version, "platformVersion"), (model, "model")):
        if value is not None:
            hints[key] = value.strip().strip('"')
    return json.dumps(hints, separators=(",", ":")) if hints else None


@text_cache(maxsize=2048)  # error titles repeat (one broken link, one referrer), and quote() is slow
def _encode_component(text: str) -> str:
    """JavaScript's ``encodeURIComponent``, which Matomo's convention is written in."""
    return quote(text, safe="!*'()")

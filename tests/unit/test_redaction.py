"""Credentials in URLs (issue 17, row 6): each one, through the whole translation (span attributes -> hit), never
reaches ``url``, ``urlref`` or ``action_name``; innocent parameters and Matomo's campaign parameters do.

The properties over generated names, encodings and separators are in ``test_redaction_properties.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from otel_matomo import ConfigurationError
from otel_matomo._hits import request_hit
from otel_matomo._policy import skip_reason
from otel_matomo._redact import CAMPAIGN_PARAMS, is_credential, redact_query, redact_url
from otel_matomo._request import http_request_from_span_data
from otel_matomo._settings import DEFAULT_REDACTED_PARAMS, Settings
from tests import factories

NAMES = DEFAULT_REDACTED_PARAMS
SECRET = "Zq9SeCrEt7"
NOW_NS = 1_714_560_000_000_000_000
SETTINGS = factories.settings(site_id=4)

ROW_6 = [
    "PHPSESSID",
    "jsessionid",
    "JSESSIONID",
    "accesstoken",
    "authtoken",
    "tokens",
    "mytoken",
    "pass",
    "pin",
    "bearer",
    "ticket",
    "SAMLResponse",
    "oauth_verifier",
    "hash",
    "utm_token",
    "mtm_key",
]
"""The names issue 17 found kept."""
ALREADY_REMOVED = [
    "token",
    "password",
    "api_key",
    "access_token",
    "client_secret",
    "session",
    "code",
    "TOKEN",
    "Access_Token",
    "to%6Ben",
    "access%5Ftoken",
    "user[password]",
    "user%5Bpassword%5D",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
]
"""What was already removed, which must stay removed."""
INNOCENT = ["q", "page", "passage", "spin", "pinned", "hashtag", "keyboard", "author", "sort", "tickets", "lang"]


def hit_for(
    path: str = "/items/7", query: str = "", referrer: str | None = None, status: int = 200, route: str | None = None
) -> dict[str, str]:
    """The hit of one request, from span attributes as an instrumentation records them."""
    attributes: dict[str, Any] = {
        "http.request.method": "GET",
        "url.scheme": "https",
        "url.path": path,
        "url.query": query,
        "server.address": "shop.example",
        "network.peer.address": "203.0.113.9",
        "http.response.status_code": status,
    }
    if referrer is not None:
        attributes["http.request.header.referer"] = (referrer,)
    if route is not None:
        attributes["http.route"] = route
    request = http_request_from_span_data("GET", attributes, NOW_NS, NOW_NS + 1_000_000, 7)
    assert request is not None
    assert skip_reason(request, SETTINGS) is None
    return request_hit(request, SETTINGS)


def assert_no_secret(hit: dict[str, str]) -> None:
    for key in ("url", "urlref", "action_name"):
        assert SECRET not in hit.get(key, ""), (key, hit.get(key))


# --- every row-6 name, through span -> hit ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ROW_6 + ALREADY_REMOVED)
def test_a_credential_in_the_query_never_reaches_url(name: str) -> None:
    hit = hit_for(query=f"q=shoes&{name}={SECRET}&utm_source=mail")
    assert hit["url"] == "https://shop.example/items/7?q=shoes&utm_source=mail"
    assert_no_secret(hit)


@pytest.mark.parametrize("name", ROW_6 + ALREADY_REMOVED)
def test_a_credential_in_the_referrer_never_reaches_urlref(name: str) -> None:
    hit = hit_for(referrer=f"https://login.example/cb?{name}={SECRET}&lang=en")
    assert hit["urlref"] == "https://login.example/cb?lang=en"
    assert_no_secret(hit)


@pytest.mark.parametrize("name", ROW_6 + ALREADY_REMOVED)
@pytest.mark.parametrize("status", [404, 500])
def test_a_credential_never_reaches_an_error_title(name: str, status: int) -> None:
    hit = hit_for(query=f"{name}={SECRET}&a=1", referrer=f"https://r.example/?{name}={SECRET}", status=status)
    assert hit["action_name"] == f"{status}/URL = %2Fitems%2F7%3Fa%3D1/From = https%3A%2F%2Fr.example%2F"
    assert_no_secret(hit)


@pytest.mark.parametrize("name", ROW_6 + ALREADY_REMOVED)
def test_a_credential_as_a_path_parameter_never_reaches_url_nor_title(name: str) -> None:
    for status in (200, 404):
        hit = hit_for(path=f"/shop;{name}={SECRET}/cart;v=2", status=status)
        assert hit["url"] == "https://shop.example/shop/cart;v=2"
        assert hit["action_name"] in ("GET /shop/cart;v=2", f"{status}/URL = %2Fshop%2Fcart%3Bv%3D2")
        assert_no_secret(hit)


@pytest.mark.parametrize("name", ROW_6 + ALREADY_REMOVED)
def test_a_credential_after_a_semicolon_never_reaches_url(name: str) -> None:
    hit = hit_for(query=f"a=1;{name}={SECRET}&b=2", referrer=f"https://r.example/?a=1;{name}={SECRET}")
    assert hit["url"] == "https://shop.example/items/7?a=1&b=2"
    assert hit["urlref"] == "https://r.example/?a=1"
    assert_no_secret(hit)


def test_a_referrer_fragment_and_userinfo_never_reach_urlref() -> None:
    hit = hit_for(referrer=f"https://user:{SECRET}@idp.example/cb#access_token={SECRET}&token_type=bearer&x=1")
    assert hit["urlref"] == "https://idp.example/cb#x=1"
    assert_no_secret(hit)


def test_a_decoded_question_mark_in_the_path_cannot_carry_a_credential() -> None:
    """ASGI servers decode ``%3F`` into the path: ``/a%3Ftoken=s`` arrives as ``/a?token=s``."""
    for status in (200, 404):
        hit = hit_for(path=f"/a?token={SECRET}&x=1", status=status)
        assert hit["url"] == "https://shop.example/a?x=1"
        assert_no_secret(hit)


def test_an_event_name_carries_no_path_credential() -> None:
    settings = factories.settings(site_id=4, event_routes=["/api/*"])
    attributes = {"http.request.method": "POST", "url.path": f"/api/x;jsessionid={SECRET}", "server.address": "s"}
    request = http_request_from_span_data("POST", attributes, NOW_NS, NOW_NS + 1, 7)
    assert request is not None
    hit = request_hit(request, settings)
    assert (hit["e_a"], hit["e_n"]) == ("POST /api/x", "/api/x")


# --- what stays ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", INNOCENT)
def test_innocent_names_stay(name: str) -> None:
    hit = hit_for(query=f"{name}=v&token={SECRET}", referrer=f"https://r.example/?{name}=v")
    assert hit["url"] == f"https://shop.example/items/7?{name}=v"
    assert hit["urlref"] == f"https://r.example/?{name}=v"


@pytest.mark.parametrize("name", sorted(CAMPAIGN_PARAMS))
def test_every_matomo_campaign_parameter_stays(name: str) -> None:
    assert not is_credential(name, NAMES)
    assert redact_query(f"{name}=autumn&mtm_key={SECRET}", NAMES) == f"{name}=autumn"


def test_kept_parameters_are_written_back_as_they_were() -> None:
    query = "q=a%20b+c&flag&&c=%E2%9C%93;d=1"
    assert redact_query(query, NAMES) == query
    assert redact_query(f"{query}&token=1", NAMES) == query
    assert redact_query(f"token=1;{query}", NAMES) == query  # no separator left in front
    assert redact_url("https://s.example/p?", NAMES) == "https://s.example/p?"  # nothing removed: untouched
    assert redact_url("https://s.example/p?token=1#token=2", NAMES) == "https://s.example/p"
    assert redact_url("/users/@me", NAMES) == "/users/@me"  # an @ in a path is not userinfo


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://u:p@s.example/", "https://s.example/"),
        ("https://u@s.example:8443/a", "https://s.example:8443/a"),
        ("//u:p@s.example/a", "//s.example/a"),
        ("https://a@b@s.example/@c", "https://s.example/@c"),
        ("https://s.example/a;jsessionid=1", "https://s.example/a"),
        ("https://s.example/a;x=1;PHPSESSID=2;y=3/b", "https://s.example/a;x=1;y=3/b"),
        ("https://s.example/#/route?page=2", "https://s.example/#/route?page=2"),
        ("https://s.example/#section-2", "https://s.example/#section-2"),
    ],
)
def test_userinfo_path_parameters_and_fragments(url: str, expected: str) -> None:
    assert redact_url(url, NAMES) == expected


# --- the list: whole words, *stems*, and +names added to the defaults ---------------------------------------------


def test_listed_words_match_whole_words_and_stars_match_inside_words() -> None:
    assert is_credential("pin", ("pin",))
    assert is_credential("user_pin2", ("pin",))
    assert not is_credential("spin", ("pin",))
    assert is_credential("spin", ("*pin",))
    assert is_credential("pinned", ("pin*",))
    assert not is_credential("pinned", ("*pin",))
    assert is_credential("X_IBAN_number", ("*iban*",))
    assert is_credential("myiban", ("*iban*",))


def _from_env(value: str, **arguments: Any) -> Settings:
    return Settings.from_env({"OTEL_EXPORTER_MATOMO_REDACT_QUERY_PARAMS": value}, dry_run=True, **arguments)


def test_plus_names_are_added_to_the_defaults() -> None:
    assert _from_env("+SSN, +*iban*").redact_query_params == (*NAMES, "ssn", "*iban*")
    assert _from_env("+pin").redact_query_params == NAMES  # already listed: not twice
    added = Settings.from_env({}, dry_run=True, redact_query_params=["+ssn"])
    assert added.redact_query_params == (*NAMES, "ssn")
    assert _from_env("ssn").redact_query_params == ("ssn",)  # without +, the list replaces the defaults
    assert _from_env("none").redact_query_params == ()


def test_mixing_added_and_replacing_names_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"REDACT_QUERY_PARAMS\) mixes \+names"):
        _from_env("ssn,+iban")


def test_added_names_are_redacted_with_the_defaults() -> None:
    settings = factories.settings(site_id=4, redact_query_params=["+ssn"])
    attributes = {"http.request.method": "GET", "url.path": "/", "url.query": f"ssn=1&token={SECRET}&q=2"}
    request = http_request_from_span_data("GET", attributes, NOW_NS, NOW_NS + 1, 7)
    assert request is not None
    assert request_hit(request, settings)["url"].endswith("/?q=2")

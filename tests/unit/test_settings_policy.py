"""``Settings.from_env`` for the traffic-policy options: every ``OTEL_EXPORTER_MATOMO_*`` variable and argument,
``none`` and the defaults, errors that name the variable and the expected form, and a ``repr`` without secrets.

Every test passes an ``environ`` dict: the process environment is never read or changed.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from otel_matomo._options import ConfigurationError
from otel_matomo._settings import (
    DEFAULT_EXCLUDED_EXTENSIONS,
    DEFAULT_EXCLUDED_PATHS,
    DEFAULT_REDACTED_PARAMS,
    Settings,
)

TOKEN = "0123456789abcdefFEDCBA9876543210"
SECRET = "policy-visitor-secret-of-some-length"
PREFIX = "OTEL_EXPORTER_MATOMO_"
BASE = {f"{PREFIX}ENDPOINT": "https://matomo.example.com", f"{PREFIX}SITE_ID": "1"}


def env(**variables: str) -> dict[str, str]:
    return {**BASE, **{PREFIX + name: value for name, value in variables.items()}}


def build(environ: dict[str, str] | None = None, **arguments: Any) -> Settings:
    return Settings.from_env(environ if environ is not None else env(), visitor_id_secret=SECRET, **arguments)


def nets(*items: str) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(item) for item in items)


def test_defaults() -> None:
    settings = build()
    assert settings.trusted_proxies == nets("127.0.0.0/8", "::1/128")
    assert settings.anonymize_ip == 0
    assert settings.daily_visitor_id is False
    assert settings.honor_gpc is True
    assert settings.honor_dnt is True
    assert settings.redact_query_params == DEFAULT_REDACTED_PARAMS
    assert {"*token*", "*password*", "*secret*", "key", "session", "code", "*signature*", "auth"} <= set(
        DEFAULT_REDACTED_PARAMS
    )
    assert settings.exclude_paths == DEFAULT_EXCLUDED_PATHS
    assert {"/health", "/healthz", "/livez", "/readyz", "/metrics"} <= set(DEFAULT_EXCLUDED_PATHS)
    assert settings.exclude_extensions == DEFAULT_EXCLUDED_EXTENSIONS
    assert {"css", "js", "png", "jpg", "gif", "ico", "svg", "woff", "woff2"} <= set(DEFAULT_EXCLUDED_EXTENSIONS)
    assert settings.exclude_methods == ("OPTIONS", "HEAD")
    assert settings.exclude_status == ()
    assert settings.event_routes == ()
    assert settings.event_category == "API"
    assert settings.track_bots is False
    assert settings.skip_synthetic is False


@pytest.mark.parametrize(
    "variable",
    [
        "TRUSTED_PROXIES",
        "ANONYMIZE_IP",
        "VISITOR_ID",
        "HONOR_GPC",
        "HONOR_DNT",
        "REDACT_QUERY_PARAMS",
        "EXCLUDE_PATHS",
        "EXCLUDE_EXTENSIONS",
        "EXCLUDE_METHODS",
        "EXCLUDE_STATUS",
        "EVENT_ROUTES",
        "EVENT_CATEGORY",
        "TRACK_BOTS",
        "SKIP_SYNTHETIC",
    ],
)
@pytest.mark.parametrize("blank", ["", "   "])
def test_an_empty_variable_is_the_default(variable: str, blank: str) -> None:
    assert build(env(**{variable: blank})) == build()


# --- trusted proxies --------------------------------------------------------------------------------------------


def test_trusted_proxies_from_env() -> None:
    settings = build(env(TRUSTED_PROXIES="10.0.0.0/8, 2001:db8::/32,192.0.2.1 ,"))
    assert settings.trusted_proxies == nets("10.0.0.0/8", "2001:db8::/32", "192.0.2.1/32")


def test_trusted_proxies_host_bits_are_tolerated() -> None:
    assert build(env(TRUSTED_PROXIES="10.1.2.3/8")).trusted_proxies == nets("10.0.0.0/8")


@pytest.mark.parametrize("none", ["none", "NONE", " None "])
def test_trusted_proxies_none_trusts_nobody(none: str) -> None:
    assert build(env(TRUSTED_PROXIES=none)).trusted_proxies == ()


def test_trusted_proxies_argument_wins() -> None:
    settings = build(env(TRUSTED_PROXIES="10.0.0.0/8"), trusted_proxies=["172.16.0.0/12", "fd00::/8"])
    assert settings.trusted_proxies == nets("172.16.0.0/12", "fd00::/8")
    assert build(env(TRUSTED_PROXIES="10.0.0.0/8"), trusted_proxies=[]).trusted_proxies == ()


# --- privacy ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", ["0", "1", "2", "3"])
def test_anonymize_ip_from_env(mask: str) -> None:
    assert build(env(ANONYMIZE_IP=mask)).anonymize_ip == int(mask)


def test_anonymize_ip_argument_wins() -> None:
    assert build(env(ANONYMIZE_IP="1"), anonymize_ip=3).anonymize_ip == 3
    assert build(env(ANONYMIZE_IP="2"), anonymize_ip=0).anonymize_ip == 0


@pytest.mark.parametrize(("raw", "daily"), [("daily", True), ("DAILY", True), ("stable", False), ("Stable", False)])
def test_visitor_id_mode_from_env(raw: str, daily: bool) -> None:
    assert build(env(VISITOR_ID=raw)).daily_visitor_id is daily


def test_visitor_id_mode_argument_wins() -> None:
    assert build(env(VISITOR_ID="daily"), visitor_id="stable").daily_visitor_id is False
    assert build(env(VISITOR_ID="stable"), visitor_id="daily").daily_visitor_id is True


@pytest.mark.parametrize(("variable", "field"), [("HONOR_GPC", "honor_gpc"), ("HONOR_DNT", "honor_dnt")])
def test_privacy_signal_switches(variable: str, field: str) -> None:
    assert getattr(build(env(**{variable: "false"})), field) is False
    assert getattr(build(env(**{variable: "0"})), field) is False
    assert getattr(build(env(**{variable: "true"})), field) is True
    assert getattr(build(env(**{variable: "false"}), **{field: True}), field) is True
    assert getattr(build(env(**{variable: "true"}), **{field: False}), field) is False


def test_redact_query_params_from_env_lower_cased() -> None:
    assert build(env(REDACT_QUERY_PARAMS="Ticket, TOKEN,,")).redact_query_params == ("ticket", "token")
    assert build(env(REDACT_QUERY_PARAMS="none")).redact_query_params == ()


def test_redact_query_params_argument_wins() -> None:
    settings = build(env(REDACT_QUERY_PARAMS="ticket"), redact_query_params=["Otp", "pin"])
    assert settings.redact_query_params == ("otp", "pin")
    assert build(env(REDACT_QUERY_PARAMS="ticket"), redact_query_params=[]).redact_query_params == ()


# --- what becomes a hit -----------------------------------------------------------------------------------------


def test_exclude_paths() -> None:
    assert build(env(EXCLUDE_PATHS="/internal/*, /status,*/ping")).exclude_paths == (
        "/internal/*",
        "/status",
        "*/ping",
    )
    assert build(env(EXCLUDE_PATHS="none")).exclude_paths == ()
    assert build(env(EXCLUDE_PATHS="/a"), exclude_paths=["/b"]).exclude_paths == ("/b",)
    assert build(env(EXCLUDE_PATHS="/a"), exclude_paths=[]).exclude_paths == ()


def test_exclude_extensions_lower_cased_without_dots() -> None:
    assert build(env(EXCLUDE_EXTENSIONS=".PDF, txt")).exclude_extensions == ("pdf", "txt")
    assert build(env(EXCLUDE_EXTENSIONS="none")).exclude_extensions == ()
    assert build(env(EXCLUDE_EXTENSIONS="pdf"), exclude_extensions=[".Zip"]).exclude_extensions == ("zip",)


def test_exclude_methods_upper_cased() -> None:
    assert build(env(EXCLUDE_METHODS="head, Trace")).exclude_methods == ("HEAD", "TRACE")
    assert build(env(EXCLUDE_METHODS="none")).exclude_methods == ()
    assert build(env(EXCLUDE_METHODS="head"), exclude_methods=["options", "PUT"]).exclude_methods == (
        "OPTIONS",
        "PUT",
    )


def test_exclude_status_codes_and_classes() -> None:
    assert build(env(EXCLUDE_STATUS="404, 5xx,1XX")).exclude_status == ((404, 404), (500, 599), (100, 199))
    assert build(env(EXCLUDE_STATUS="none")).exclude_status == ()
    assert build(env(EXCLUDE_STATUS="404"), exclude_status=[410, "4xx"]).exclude_status == ((410, 410), (400, 499))
    assert build(env(EXCLUDE_STATUS="404"), exclude_status=[]).exclude_status == ()


def test_event_routes_and_category() -> None:
    settings = build(env(EVENT_ROUTES="/api/*, */json", EVENT_CATEGORY="JSON API"))
    assert settings.event_routes == ("/api/*", "*/json")
    assert settings.event_category == "JSON API"
    settings = build(env(EVENT_ROUTES="/api/*", EVENT_CATEGORY="x"), event_routes=["/rpc"], event_category="RPC")
    assert settings.event_routes == ("/rpc",)
    assert settings.event_category == "RPC"
    assert build(env(EVENT_ROUTES="none")).event_routes == ()


@pytest.mark.parametrize(("variable", "field"), [("TRACK_BOTS", "track_bots"), ("SKIP_SYNTHETIC", "skip_synthetic")])
def test_bot_switches(variable: str, field: str) -> None:
    assert getattr(build(env(**{variable: "yes"})), field) is True
    assert getattr(build(env(**{variable: "off"})), field) is False
    assert getattr(build(env(**{variable: "on"}), **{field: False}), field) is False
    assert getattr(build(env(**{variable: "off"}), **{field: True}), field) is True


# --- errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "expected_form"),
    [
        ("TRUSTED_PROXIES", "abc", "IP addresses or CIDR networks"),
        ("TRUSTED_PROXIES", "10.0.0.0/33", "IP addresses or CIDR networks"),
        ("TRUSTED_PROXIES", "127.0.0.1,localhost", "IP addresses or CIDR networks"),
        ("ANONYMIZE_IP", "4", "0, 1, 2 or 3"),
        ("ANONYMIZE_IP", "-1", "0, 1, 2 or 3"),
        ("ANONYMIZE_IP", "yes", "0, 1, 2 or 3"),
        ("VISITOR_ID", "weekly", "stable or daily"),
        ("HONOR_GPC", "maybe", "true or false"),
        ("HONOR_DNT", "2", "true or false"),
        ("TRACK_BOTS", "sometimes", "true or false"),
        ("SKIP_SYNTHETIC", "x", "true or false"),
        ("EXCLUDE_STATUS", "6xx", "status codes or classes, e.g. 404,5xx"),
        ("EXCLUDE_STATUS", "abc", "status codes or classes, e.g. 404,5xx"),
        ("EXCLUDE_STATUS", "600", "status codes or classes, e.g. 404,5xx"),
        ("EXCLUDE_STATUS", "404,4x", "status codes or classes, e.g. 404,5xx"),
        ("EXCLUDE_PATHS", "health", "path globs starting with / or *"),
        ("EXCLUDE_PATHS", "/ok,metrics", "path globs starting with / or *"),
        ("EVENT_ROUTES", "api/*", "path globs starting with / or *"),
    ],
)
def test_invalid_env_value_names_variable_and_expected_form(variable: str, value: str, expected_form: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        build(env(**{variable: value}))
    message = str(raised.value)
    assert PREFIX + variable in message
    assert variable.lower() in message
    assert expected_form in message


@pytest.mark.parametrize(
    ("argument", "value", "variable"),
    [
        ("trusted_proxies", ["abc"], "TRUSTED_PROXIES"),
        ("anonymize_ip", 4, "ANONYMIZE_IP"),
        ("anonymize_ip", True, "ANONYMIZE_IP"),
        ("visitor_id", "weekly", "VISITOR_ID"),
        ("exclude_status", ["6xx"], "EXCLUDE_STATUS"),
        ("exclude_status", [99], "EXCLUDE_STATUS"),
        ("exclude_paths", ["health"], "EXCLUDE_PATHS"),
        ("event_routes", ["api"], "EVENT_ROUTES"),
        ("honor_gpc", "maybe", "HONOR_GPC"),
    ],
)
def test_invalid_argument_names_argument_and_variable(argument: str, value: object, variable: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        build(**{argument: value})
    message = str(raised.value)
    assert argument in message
    assert PREFIX + variable in message


def test_an_argument_error_wins_over_a_valid_variable() -> None:
    with pytest.raises(ConfigurationError, match="ANONYMIZE_IP"):
        build(env(ANONYMIZE_IP="1"), anonymize_ip=7)


def test_a_bare_string_argument_is_a_list_or_an_error() -> None:
    for argument, value in (
        ("redact_query_params", "token,password"),
        ("exclude_methods", "OPTIONS"),
        ("exclude_extensions", "css"),
    ):
        try:
            settings = build(**{argument: value})
        except ConfigurationError:
            continue
        assert all(len(item) > 1 for item in getattr(settings, argument)), (argument, getattr(settings, argument))


# --- repr -------------------------------------------------------------------------------------------------------


def test_repr_shows_the_policy_but_never_the_token_or_secret() -> None:
    settings = Settings.from_env(
        env(TRUSTED_PROXIES="10.0.0.0/8", EXCLUDE_STATUS="5xx", EVENT_ROUTES="/api/*"),
        endpoint="https://matomo.example.com",
        token_auth=TOKEN,
        visitor_id_secret=SECRET,
        anonymize_ip=2,
        visitor_id="daily",
        honor_dnt=False,
        track_bots=True,
    )
    shown = repr(settings)
    for fragment in (
        "trusted_proxies=(IPv4Network('10.0.0.0/8'),)",
        "anonymize_ip=2",
        "daily_visitor_id=True",
        "honor_gpc=True",
        "honor_dnt=False",
        "redact_query_params=(",
        "exclude_paths=(",
        "exclude_extensions=(",
        "exclude_methods=('OPTIONS', 'HEAD')",
        "exclude_status=((500, 599),)",
        "event_routes=('/api/*',)",
        "event_category='API'",
        "track_bots=True",
        "skip_synthetic=False",
        "token_auth='***'",
    ):
        assert fragment in shown
    assert TOKEN not in shown
    assert SECRET not in shown
    assert repr(settings.visitor_id_secret) not in shown

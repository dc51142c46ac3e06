"""``Settings.from_env``: arguments and ``OTEL_EXPORTER_MATOMO_*``, validation, and keeping secrets out of sight.

Every test passes an ``environ`` dict: the process environment is never read or changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from datetime import timedelta

import pytest

from otel_matomo._options import ConfigurationError
from otel_matomo._settings import Settings, read_flag

TOKEN = "0123456789abcdefFEDCBA9876543210"
SECRET = "a-visitor-id-secret-of-some-length"
BASE = {
    "OTEL_EXPORTER_MATOMO_ENDPOINT": "https://matomo.example.com",
    "OTEL_EXPORTER_MATOMO_SITE_ID": "1",
    "OTEL_EXPORTER_MATOMO_VISITOR_ID_SECRET": SECRET,
}
PREFIX = "OTEL_EXPORTER_MATOMO_"


def env(**overrides: str) -> dict[str, str]:
    """``BASE`` with ``OTEL_EXPORTER_MATOMO_<KEY>`` overrides; a value of ``None`` removes the variable."""
    result = dict(BASE)
    for key, value in overrides.items():
        name = PREFIX + key
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def plain_http_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "plain http://" in r.getMessage()]


def public_key_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "public constant" in r.getMessage()]


# --- every variable, from the environment and as an argument ---------------------------------------------------


def test_defaults_with_only_the_required_variables() -> None:
    settings = Settings.from_env(env())
    assert settings.endpoint == "https://matomo.example.com/matomo.php"
    assert settings.site_id == 1
    assert settings.token_auth is None
    assert settings.timeout == 10.0
    assert settings.visitor_id_secret == SECRET.encode()
    assert settings.error_page_titles is True
    assert settings.dry_run is False


def test_endpoint_from_env_and_argument_wins() -> None:
    environ = env(ENDPOINT="https://env.example")
    assert Settings.from_env(environ).endpoint == "https://env.example/matomo.php"
    assert Settings.from_env(environ, endpoint="https://arg.example").endpoint == "https://arg.example/matomo.php"


@pytest.mark.parametrize(("raw", "expected"), [("3", 3), (" 42 ", 42), ("1", 1)])
def test_site_id_from_env(raw: str, expected: int) -> None:
    assert Settings.from_env(env(SITE_ID=raw)).site_id == expected


@pytest.mark.parametrize("argument", [5, "5"])
def test_site_id_argument_wins(argument: int | str) -> None:
    assert Settings.from_env(env(SITE_ID="3"), site_id=argument).site_id == 5


def test_token_from_env_and_argument_wins() -> None:
    other = "b" * 32
    assert Settings.from_env(env(TOKEN_AUTH=TOKEN)).token_auth == TOKEN
    assert Settings.from_env(env(TOKEN_AUTH=TOKEN), token_auth=other).token_auth == other


def test_token_surrounding_whitespace_is_ignored() -> None:
    assert Settings.from_env(env(TOKEN_AUTH=f"  {TOKEN}\n")).token_auth == TOKEN


def test_timeout_env_is_milliseconds_argument_is_a_timedelta_and_wins() -> None:
    assert Settings.from_env(env(TIMEOUT="2500")).timeout == 2.5
    assert Settings.from_env(env(TIMEOUT="1e3")).timeout == 1.0
    assert Settings.from_env(env(TIMEOUT="2500"), timeout=timedelta(seconds=4)).timeout == 4.0
    assert Settings.from_env(env(TIMEOUT="2500"), timeout=timedelta(milliseconds=250)).timeout == 0.25


def test_empty_variable_counts_as_unset() -> None:
    settings = Settings.from_env(env(TIMEOUT="  ", ERROR_PAGE_TITLES="", DRY_RUN=""))
    assert settings.timeout == 10.0
    assert settings.error_page_titles is True
    assert settings.dry_run is False


def test_visitor_secret_from_env_and_argument_wins() -> None:
    assert Settings.from_env(env()).visitor_id_secret == SECRET.encode()
    assert Settings.from_env(env(), visitor_id_secret="x" * 20).visitor_id_secret == b"x" * 20
    assert Settings.from_env(env(), visitor_id_secret=b"\x00\xff" * 8).visitor_id_secret == b"\x00\xff" * 8


def test_error_page_titles_from_env_and_argument_wins() -> None:
    assert Settings.from_env(env(ERROR_PAGE_TITLES="false")).error_page_titles is False
    assert Settings.from_env(env(ERROR_PAGE_TITLES="false"), error_page_titles=True).error_page_titles is True
    assert Settings.from_env(env(), error_page_titles=False).error_page_titles is False


def test_dry_run_from_env_and_argument_wins() -> None:
    assert Settings.from_env(env(DRY_RUN="true")).dry_run is True
    assert Settings.from_env(env(DRY_RUN="true"), dry_run=False).dry_run is False
    assert Settings.from_env(env(), dry_run=True).dry_run is True


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "Yes", "on", " true "])
def test_true_spellings(raw: str) -> None:
    assert Settings.from_env(env(DRY_RUN=raw)).dry_run is True
    assert read_flag("SOMETHING", default=False, environ={PREFIX + "SOMETHING": raw}) is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "NO", "off"])
def test_false_spellings(raw: str) -> None:
    assert Settings.from_env(env(ERROR_PAGE_TITLES=raw)).error_page_titles is False
    assert read_flag("SOMETHING", default=True, environ={PREFIX + "SOMETHING": raw}) is False


def test_settings_are_frozen() -> None:
    settings = Settings.from_env(env())
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.site_id = 2  # type: ignore[misc]


# --- endpoint normalisation ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://matomo.example.com", "https://matomo.example.com/matomo.php"),
        ("https://matomo.example.com/", "https://matomo.example.com/matomo.php"),
        ("https://example.com/analytics", "https://example.com/analytics/matomo.php"),
        ("https://example.com/analytics/", "https://example.com/analytics/matomo.php"),
        ("https://example.com/matomo.php", "https://example.com/matomo.php"),
        ("https://example.com/analytics/matomo.php", "https://example.com/analytics/matomo.php"),
        ("https://example.com/piwik.php", "https://example.com/piwik.php"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/matomo.php"),
        ("  https://matomo.example.com  ", "https://matomo.example.com/matomo.php"),
    ],
)
def test_endpoint_normalisation(given: str, expected: str) -> None:
    assert Settings.from_env(env(ENDPOINT=given)).endpoint == expected
    assert Settings.from_env({}, endpoint=given.strip(), site_id=1, visitor_id_secret=SECRET).endpoint == expected


# --- invalid values ---------------------------------------------------------------------------------------------

INVALID = [
    pytest.param("SITE_ID", "abc", "a positive whole number", id="site-abc"),
    pytest.param("SITE_ID", "0", "a positive whole number", id="site-0"),
    pytest.param("SITE_ID", "-1", "a positive whole number", id="site-negative"),
    pytest.param("SITE_ID", "1.5", "a positive whole number", id="site-fraction"),
    pytest.param("ENDPOINT", "matomo.example.com", "the Matomo base URL", id="endpoint-no-scheme"),
    pytest.param("ENDPOINT", "ftp://matomo.example.com", "the Matomo base URL", id="endpoint-ftp"),
    pytest.param("ENDPOINT", "https://", "the Matomo base URL", id="endpoint-no-host"),
    pytest.param("ENDPOINT", "https://matomo.example.com/matomo.php?idsite=1", "the Matomo base URL", id="query"),
    pytest.param("ENDPOINT", "https://matomo.example.com/#x", "the Matomo base URL", id="endpoint-fragment"),
    pytest.param("TIMEOUT", "abc", "a positive number of milliseconds", id="timeout-abc"),
    pytest.param("TIMEOUT", "0", "a positive number of milliseconds", id="timeout-0"),
    pytest.param("TIMEOUT", "-5", "a positive number of milliseconds", id="timeout-negative"),
    pytest.param("TIMEOUT", "inf", "a positive number of milliseconds", id="timeout-inf"),
    pytest.param("TIMEOUT", "nan", "a positive number of milliseconds", id="timeout-nan"),
    pytest.param("DRY_RUN", "maybe", "true or false", id="dry-run-maybe"),
    pytest.param("DRY_RUN", "2", "true or false", id="dry-run-2"),
    pytest.param("ERROR_PAGE_TITLES", "enabled", "true or false", id="titles-enabled"),
    pytest.param("TOKEN_AUTH", "abc def", "letters and digits only", id="token-space"),
    pytest.param("TOKEN_AUTH", "abc;def", "letters and digits only", id="token-punctuation"),
    pytest.param("TOKEN_AUTH", "t\u00f6ken", "letters and digits only", id="token-non-ascii"),
    pytest.param("VISITOR_ID_SECRET", "too-short", "at least 16 characters", id="secret-short"),
]


@pytest.mark.parametrize(("variable", "value", "expected_form"), INVALID)
def test_invalid_env_value_names_variable_and_expected_form(variable: str, value: str, expected_form: str) -> None:
    environ = env(**{variable: value})
    if variable != "TOKEN_AUTH":
        environ[PREFIX + "TOKEN_AUTH"] = TOKEN
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env(environ)
    message = str(raised.value)
    assert PREFIX + variable in message
    assert expected_form in message.partition(": expected ")[2]
    assert TOKEN not in message
    if variable in ("TOKEN_AUTH", "VISITOR_ID_SECRET"):
        assert value not in message  # secrets are never echoed, even mistyped


@pytest.mark.parametrize(
    ("argument", "value", "variable"),
    [
        ("site_id", 0, "SITE_ID"),
        ("site_id", -1, "SITE_ID"),
        ("site_id", "abc", "SITE_ID"),
        ("site_id", True, "SITE_ID"),
        ("endpoint", "ftp://matomo.example.com", "ENDPOINT"),
        ("dry_run", "maybe", "DRY_RUN"),
        ("token_auth", "has space", "TOKEN_AUTH"),
        ("visitor_id_secret", b"short", "VISITOR_ID_SECRET"),
    ],
)
def test_invalid_argument_names_argument_and_variable(argument: str, value: object, variable: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env(env(), **{argument: value})  # type: ignore[arg-type]
    message = str(raised.value)
    assert message.startswith(f"Settings.from_env: {argument} ({PREFIX}{variable})")
    assert "expected" in message


@pytest.mark.parametrize("value", [0, -5, "10", True, float("inf"), float("nan"), timedelta(0), timedelta(-1)])
def test_invalid_timeout_argument(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"^Settings.from_env: timeout is .*expected a positive datetime"):
        Settings.from_env(env(), timeout=value)  # type: ignore[arg-type]


def test_superscript_site_id_gives_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_MATOMO_SITE_ID"):
        Settings.from_env(env(SITE_ID="\u00b2"))


def test_missing_endpoint_and_site_id_are_named() -> None:
    with pytest.raises(ConfigurationError, match=r"OTEL_EXPORTER_MATOMO_ENDPOINT\) is not set"):
        Settings.from_env(env(ENDPOINT=None))
    with pytest.raises(ConfigurationError, match=r"OTEL_EXPORTER_MATOMO_SITE_ID\) is not set"):
        Settings.from_env(env(SITE_ID=None))


def test_endpoint_errors_never_show_a_token_or_password_from_the_url() -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env(env(ENDPOINT=f"https://matomo.example.com/matomo.php?token_auth={TOKEN}"))
    assert TOKEN not in str(raised.value)
    assert "query" in str(raised.value)
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env(env(ENDPOINT="ftp://user:hunter2secret@matomo.example.com"))
    assert "hunter2secret" not in str(raised.value)
    assert "matomo.example.com" in str(raised.value)


# --- keeping the token out of sight -----------------------------------------------------------------------------


def test_token_and_secret_absent_from_repr() -> None:
    settings = Settings.from_env(env(TOKEN_AUTH=TOKEN))
    text = repr(settings) + str(settings)
    assert TOKEN not in text
    assert SECRET not in text
    assert "site_id=1" in text


def test_derived_secret_absent_from_repr() -> None:
    settings = Settings.from_env(env(TOKEN_AUTH=TOKEN, VISITOR_ID_SECRET=None))
    assert repr(settings.visitor_id_secret) not in repr(settings)
    assert TOKEN not in repr(settings)


def test_endpoint_for_logs_is_the_endpoint_and_shows_a_dry_run() -> None:
    settings = Settings.from_env(env(ENDPOINT="https://matomo.example.com:8443/a/", TOKEN_AUTH=TOKEN))
    assert settings.endpoint_for_logs == "https://matomo.example.com:8443/a/matomo.php"
    assert Settings.from_env({PREFIX + "DRY_RUN": "true"}).endpoint_for_logs == "(dry run)"


# --- token over plain http -------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["http://matomo.example.com", "http://10.1.2.3:8080/analytics"])
def test_token_over_plain_http_to_remote_host_warns(caplog: pytest.LogCaptureFixture, endpoint: str) -> None:
    caplog.set_level(logging.WARNING, logger="otel_matomo")
    Settings.from_env(env(ENDPOINT=endpoint, TOKEN_AUTH=TOKEN))
    warnings = plain_http_warnings(caplog)
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert warnings[0].name == "otel_matomo"
    assert TOKEN not in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("endpoint", "token"),
    [
        ("https://matomo.example.com", TOKEN),
        ("http://127.0.0.1:8080", TOKEN),
        ("http://localhost:8080", TOKEN),
        ("http://[::1]:8080", TOKEN),
        ("http://matomo.example.com", None),
    ],
)
def test_no_plain_http_warning(caplog: pytest.LogCaptureFixture, endpoint: str, token: str | None) -> None:
    caplog.set_level(logging.DEBUG, logger="otel_matomo")
    environ = env(ENDPOINT=endpoint)
    if token is not None:
        environ[PREFIX + "TOKEN_AUTH"] = token
    settings = Settings.from_env(environ)
    assert settings.endpoint is not None
    assert plain_http_warnings(caplog) == []


# --- visitor id secret -------------------------------------------------------------------------------------------


def test_secret_derived_from_token_when_unset(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="otel_matomo")
    one = Settings.from_env(env(VISITOR_ID_SECRET=None, TOKEN_AUTH=TOKEN))
    again = Settings.from_env(env(VISITOR_ID_SECRET=None), token_auth=TOKEN)
    other = Settings.from_env(env(VISITOR_ID_SECRET=None, TOKEN_AUTH="z" * 32))
    assert one.visitor_id_secret == again.visitor_id_secret  # stable across processes sharing the token
    assert one.visitor_id_secret != other.visitor_id_secret
    assert len(one.visitor_id_secret) == 32
    assert TOKEN.encode() not in one.visitor_id_secret
    assert one.visitor_id_secret != hashlib.sha256(TOKEN.encode()).digest()
    assert public_key_warnings(caplog) == []


def test_explicit_secret_wins_over_token_derivation() -> None:
    settings = Settings.from_env(env(TOKEN_AUTH=TOKEN))
    assert settings.visitor_id_secret == SECRET.encode()


def test_public_constant_secret_warns_without_secret_or_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="otel_matomo")
    one = Settings.from_env(env(VISITOR_ID_SECRET=None))
    two = Settings.from_env(env(VISITOR_ID_SECRET=None, SITE_ID="2"))
    assert one.visitor_id_secret == two.visitor_id_secret
    assert len(one.visitor_id_secret) >= 16
    warnings = public_key_warnings(caplog)
    assert len(warnings) == 2
    assert "OTEL_EXPORTER_MATOMO_VISITOR_ID_SECRET" in warnings[0].getMessage()


def test_no_public_constant_warning_in_dry_run(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="otel_matomo")
    settings = Settings.from_env({}, dry_run=True)
    assert settings.visitor_id_secret
    assert public_key_warnings(caplog) == []


@pytest.mark.parametrize("secret", ["x" * 15, b"y" * 15, "\u00e9" * 7])
def test_too_short_secret_is_refused(secret: str | bytes) -> None:
    with pytest.raises(ConfigurationError, match="visitor_id_secret") as raised:
        Settings.from_env(env(), visitor_id_secret=secret)
    assert "16" in str(raised.value)


def test_secret_length_counts_bytes() -> None:
    assert Settings.from_env(env(), visitor_id_secret="x" * 16).visitor_id_secret == b"x" * 16
    assert len(Settings.from_env(env(), visitor_id_secret="\u00e9" * 8).visitor_id_secret) == 16


# --- dry run ---------------------------------------------------------------------------------------------------


def test_dry_run_needs_no_endpoint_and_defaults_site_1() -> None:
    settings = Settings.from_env({PREFIX + "DRY_RUN": "1"})
    assert settings.dry_run is True
    assert settings.endpoint is None
    assert settings.site_id == 1
    assert settings.endpoint_for_logs == "(dry run)"


def test_dry_run_still_reads_and_validates_the_others() -> None:
    settings = Settings.from_env({PREFIX + "SITE_ID": "4", PREFIX + "ENDPOINT": "https://m.example"}, dry_run=True)
    assert settings.site_id == 4
    assert settings.endpoint == "https://m.example/matomo.php"
    with pytest.raises(ConfigurationError, match="SITE_ID"):
        Settings.from_env({PREFIX + "SITE_ID": "0"}, dry_run=True)


def test_settings_do_not_read_process_environment_when_environ_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PREFIX + "SITE_ID", "77")
    assert Settings.from_env(env()).site_id == 1


def test_trusted_proxies_hash_once_and_still_compare_as_a_tuple() -> None:
    # They key the policy's caches; ipaddress networks hash in Python code on every call otherwise.
    import ipaddress

    from otel_matomo._kinds import Networks

    trusted = Settings.from_env({}, dry_run=True, trusted_proxies=["10.0.0.0/8", "::1"]).trusted_proxies
    assert isinstance(trusted, Networks)
    plain = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert trusted == plain
    assert hash(trusted) == hash(plain) == hash(trusted)
    assert isinstance(Settings.from_env({}, dry_run=True).trusted_proxies, Networks)

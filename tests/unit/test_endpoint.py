"""The endpoint, validated in full at start-up: what passes is a URL every export can send to, and credentials
pasted into it are refused without being repeated, so that neither our logs nor httpx's can ever show them.

Every test passes an ``environ`` dict: the process environment is never read or changed.
"""

from __future__ import annotations

import dataclasses
import logging

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from otel_matomo import ConfigurationError, MatomoSpanExporter, Settings
from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn

PREFIX = "OTEL_EXPORTER_MATOMO_"
SECRET = "an-endpoint-test-secret-of-some-length"
PASSWORD = "Pa55w0rdXyz"
BASE = {PREFIX + "SITE_ID": "1", PREFIX + "VISITOR_ID_SECRET": SECRET}
FORM = "the Matomo base URL or its matomo.php URL, http(s)://host[:port][/path]"


def from_env(endpoint: str) -> Settings:
    return Settings.from_env({**BASE, PREFIX + "ENDPOINT": endpoint})


@pytest.fixture
def every_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of every logger at DEBUG, httpx's and httpcore's included."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


# --- what passes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://matomo.example.com", "https://matomo.example.com/matomo.php"),
        ("http://10.0.0.5:8080/matomo.php", "http://10.0.0.5:8080/matomo.php"),
        ("http://[::1]:65535/analytics/", "http://[::1]:65535/analytics/matomo.php"),
        ("http://[fe80::1%25eth0]:1", "http://[fe80::1%25eth0]:1/matomo.php"),
        ("https://matomo.example.com.:443/piwik.php", "https://matomo.example.com.:443/piwik.php"),
        ("http://matomo_1:80", "http://matomo_1:80/matomo.php"),
        ("https://münchen.example/", "https://münchen.example/matomo.php"),
        ("HTTPS://Matomo.Example.com", "https://Matomo.Example.com/matomo.php"),
    ],
)
def test_a_valid_endpoint_is_one_httpx_sends_to(given: str, expected: str) -> None:
    endpoint = from_env(given).endpoint

    assert endpoint == expected
    assert httpx.URL(endpoint).host  # what the sender will be given parses, with its port


# --- what does not ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "problem", "form"),
    [
        ("http://host:notaport", "has the port 'notaport'", "the port a number from 1 to 65535"),
        ("http://host:0", "has the port '0'", "the port a number from 1 to 65535"),
        ("http://host:65536", "has the port '65536'", "the port a number from 1 to 65535"),
        ("http://host:", "has the port ''", "the port a number from 1 to 65535"),
        ("http://host:+80", "has the port '+80'", "the port a number from 1 to 65535"),
        ("http://host:\uff18\uff10", "has the port '\uff18\uff10'", "the port a number from 1 to 65535"),  # full-width
        ("http://ho st", "has the host 'ho st'", "the host a name or an IP address"),
        ("http://a..b", "has the host 'a..b'", "the host a name or an IP address"),
        ("http://ex!ample.com", "has the host 'ex!ample.com'", "the host a name or an IP address"),
        ("http://::1:8080", "has the host '::1:8080'", "an IPv6 address in brackets (http://[::1]:8080)"),
        ("http://[::g]:80", "is 'http://[::g]:80', which is no URL", "e.g. https://matomo.example.com"),
        ("http://[::1:80", "is 'http://[::1:80', which is no URL", "e.g. https://matomo.example.com"),
        ("http://:8080", "has the host ':8080'", "an IPv6 address in brackets"),
        ("matomo.example.com", "is 'matomo.example.com', which has no http:// or https:// and host", "e.g. "),
        ("ftp://matomo.example.com", "is 'ftp://matomo.example.com', which has no http:// or https://", "e.g. "),
        ("https://", "is 'https://', which has no http:// or https:// and host", "e.g. "),
        ("https://matomo.example.com/#top", "is 'https://matomo.example.com/' with a query or fragment", "without"),
        ("https://matomo.example.com/?idsite=1", "is 'https://matomo.example.com/' with a query", "without them"),
    ],
)
def test_an_invalid_endpoint_names_the_variable_the_problem_and_the_form(given: str, problem: str, form: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        from_env(given)

    message = str(raised.value)
    assert message.startswith(f"endpoint ({PREFIX}ENDPOINT) {problem}")
    assert f": expected {FORM}" in message
    assert form in message.partition(": expected ")[2]


def test_as_an_argument_the_error_names_the_class_called() -> None:
    with pytest.raises(ConfigurationError) as raised:
        MatomoSpanExporter(endpoint="http://host:notaport", site_id=1, visitor_id_secret=SECRET)

    assert str(raised.value) == (
        f"MatomoSpanExporter: endpoint ({PREFIX}ENDPOINT) has the port 'notaport': expected {FORM}, the port a "
        "number from 1 to 65535"
    )


# --- credentials ----------------------------------------------------------------------------------------------------

CREDENTIALS = [
    f"http://tracker:{PASSWORD}@matomo.example.com",
    f"https://tracker:{PASSWORD}@matomo.example.com:8443/matomo.php",
    f"http://{PASSWORD}@127.0.0.1:9",
    f"http://tracker:{PASSWORD}/x@matomo.example.com",  # a '/' in the password ends urlsplit's netloc early
    f"http://tracker:{PASSWORD}?x@matomo.example.com",
    f"http://tracker:{PASSWORD}#x@matomo.example.com",
    f"http://tracker:{PASSWORD}@x@matomo.example.com",
    f"http://tracker:{PASSWORD}@matomo.example.com?token_auth={PASSWORD}",
]


@pytest.mark.parametrize("endpoint", CREDENTIALS)
def test_credentials_in_the_endpoint_are_refused_and_never_repeated(
    endpoint: str, every_log: pytest.LogCaptureFixture
) -> None:
    for build in (
        lambda: from_env(endpoint),
        lambda: Settings.from_env(BASE, endpoint=endpoint),
        lambda: MatomoSpanExporter(endpoint=endpoint, site_id=1, visitor_id_secret=SECRET),
    ):
        with pytest.raises(ConfigurationError) as raised:
            build()
        message = str(raised.value)
        assert "holds credentials before the host ('…@" in message
        assert f"{PREFIX}TOKEN_AUTH" in message
        assert PASSWORD not in message
        assert "tracker" not in message
    assert not [record for record in every_log.records if PASSWORD in record.getMessage()]


@pytest.mark.parametrize("separator", ["?", "#", "?idsite=1&"])
def test_a_token_pasted_into_the_query_is_refused_and_never_repeated(separator: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        from_env(f"https://matomo.example.com/matomo.php{separator}token_auth={WRITE_TOKEN}")

    message = str(raised.value)
    assert message.startswith(
        f"endpoint ({PREFIX}ENDPOINT) is 'https://matomo.example.com/matomo.php' with a token_auth in its query"
    )
    assert f"{PREFIX}TOKEN_AUTH, sent in POST bodies only" in message
    assert WRITE_TOKEN not in message


def test_a_settings_built_by_hand_or_replaced_never_holds_credentials() -> None:
    settings = from_env("https://matomo.example.com")
    endpoint = f"https://tracker:{PASSWORD}@matomo.example.com/matomo.php"

    for build in (
        lambda: dataclasses.replace(settings, endpoint=endpoint),
        lambda: Settings(endpoint=endpoint, site_id=1, token_auth=None),
    ):
        with pytest.raises(ConfigurationError) as raised:
            build()
        assert str(raised.value).startswith(f"Settings: endpoint ({PREFIX}ENDPOINT) holds credentials")
        assert PASSWORD not in str(raised.value)


def test_nothing_we_or_httpx_log_while_sending_shows_the_token_or_the_endpoints_userinfo(
    standin: MatomoStandIn, every_log: pytest.LogCaptureFixture
) -> None:
    exporter = MatomoSpanExporter(
        endpoint=standin.url, site_id=1, token_auth=WRITE_TOKEN, visitor_id_secret=SECRET, batch_size=10
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    attributes = {"http.request.method": "GET", "url.path": "/", "url.scheme": "http", "http.response.status_code": 200}
    provider.get_tracer("test").start_span("GET /", kind=SpanKind.SERVER, attributes=attributes).end()
    provider.shutdown()

    httpx_lines = [record.getMessage() for record in every_log.records if record.name.startswith("httpx")]
    assert any(f"POST {standin.url}/matomo.php" in line for line in httpx_lines), "httpx logged the request"
    assert standin.tracked
    for record in every_log.records:
        assert WRITE_TOKEN not in record.getMessage()
        assert "@" not in record.getMessage()

"""Unknown ``OTEL_EXPORTER_MATOMO_*`` variables: each is reported once at start-up with the known name it most
likely meant, since a misspelt variable is otherwise ignored in silence and its option keeps its default.

Every test passes an ``environ`` dict: the process environment is never read or changed.
"""

from __future__ import annotations

import logging

import pytest

from otel_matomo import ConfigurationError, Settings
from otel_matomo._settings import SETTINGS_OPTIONS, SWITCHES
from otel_matomo.gateway._config import GATEWAY_OPTIONS

PREFIX = "OTEL_EXPORTER_MATOMO_"
BASE = {
    PREFIX + "ENDPOINT": "https://matomo.example.com",
    PREFIX + "SITE_ID": "1",
    PREFIX + "VISITOR_ID_SECRET": "variables-visitor-secret-of-some-length",
    PREFIX + "TOKEN_AUTH": "0123456789abcdef0123456789abcdef",
}


def reported(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if "is not a variable otel-matomo reads" in record.msg]


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="otel_matomo")
    return caplog


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("EXCLUDE_PATH", "EXCLUDE_PATHS"),
        ("TOKEN", "TOKEN_AUTH"),
        ("SITEID", "SITE_ID"),
        ("site_id", "SITE_ID"),  # variables are case-sensitive: the lower-case one is never read
        ("BATCHSIZE", "BATCH_SIZE"),
        ("PROCESOR", "PROCESSOR"),  # a switch read outside Settings is a known name too
    ],
)
def test_a_misspelt_variable_is_reported_with_the_name_it_meant(
    typo: str, meant: str, warnings: pytest.LogCaptureFixture
) -> None:
    Settings.from_env({**BASE, PREFIX + typo: "1"})

    assert reported(warnings) == [
        f"otel-matomo: {PREFIX}{typo} is not a variable otel-matomo reads, so it changes nothing: "
        f"did you mean {PREFIX}{meant}?"
    ]


def test_a_variable_like_no_known_one_points_to_the_reference(warnings: pytest.LogCaptureFixture) -> None:
    Settings.from_env({**BASE, PREFIX + "COMPRESSION": "gzip"})

    assert reported(warnings) == [
        f"otel-matomo: {PREFIX}COMPRESSION is not a variable otel-matomo reads, so it changes nothing: "
        "the README's configuration reference lists every variable"
    ]


def test_every_known_variable_and_every_other_prefix_pass_in_silence(warnings: pytest.LogCaptureFixture) -> None:
    environ = {PREFIX + option.suffix: "" for table in (SETTINGS_OPTIONS, SWITCHES) for option in table.options}
    environ.update({f"OTEL_MATOMO_GATEWAY_{option.suffix}": "x" for option in GATEWAY_OPTIONS.options})
    environ.update({"OTEL_EXPORTER_OTLP_ENDPOINT": "x", "OTEL_EXPORTER_MATOMO": "x", **BASE})

    Settings.from_env(environ)

    assert reported(warnings) == []


def test_each_unknown_variable_gets_one_line_and_they_come_before_a_configuration_error(
    warnings: pytest.LogCaptureFixture,
) -> None:
    environ = {key: value for key, value in BASE.items() if key != PREFIX + "SITE_ID"}

    with pytest.raises(ConfigurationError, match=r"OTEL_EXPORTER_MATOMO_SITE_ID\) is not set"):
        Settings.from_env({**environ, PREFIX + "SITEID": "1", PREFIX + "EXCLUDE_PATH": "/x"})

    assert [message.split(" ")[1] for message in reported(warnings)] == [PREFIX + "EXCLUDE_PATH", PREFIX + "SITEID"]

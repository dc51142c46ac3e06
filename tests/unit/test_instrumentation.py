"""What the HTTP instrumentation records in a given environment: the request headers it captures and redacts
(as otel-matomo adds them under opentelemetry-instrument), and the semantic conventions it writes."""

from __future__ import annotations

import pytest

from otel_matomo._instrumentation import header_capture, header_capture_messages, semconv_mode
from otel_matomo._names import CAPTURE_ENV, REQUEST_HEADERS, SANITIZE_ENV
from otel_matomo._options import ConfigurationError


def test_nothing_configured() -> None:
    capture = header_capture({})

    assert capture.captured == ()
    assert capture.missing == REQUEST_HEADERS
    assert not capture.added_by_otel_matomo
    (message,) = header_capture_messages(capture)
    assert "no request headers are captured" in message
    assert "no referrer and no language" in message
    assert "configure_header_capture()" in message


@pytest.mark.parametrize("exporters", ["matomo", "otlp,matomo", " otlp , Matomo "])
def test_otel_matomo_adds_its_headers_when_the_traces_exporter_names_it(exporters: str) -> None:
    capture = header_capture({"OTEL_TRACES_EXPORTER": exporters, CAPTURE_ENV: "x-request-id"})

    assert capture.added_by_otel_matomo
    assert capture.captured == REQUEST_HEADERS
    assert capture.patterns[0] == "x-request-id"
    assert header_capture_messages(capture) == []


def test_capture_opt_out() -> None:
    capture = header_capture({"OTEL_TRACES_EXPORTER": "matomo", "OTEL_EXPORTER_MATOMO_CAPTURE_HEADERS": "false"})

    assert not capture.added_by_otel_matomo
    assert capture.captured == ()


def test_invalid_opt_out_value_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_MATOMO_CAPTURE_HEADERS"):
        header_capture({"OTEL_TRACES_EXPORTER": "matomo", "OTEL_EXPORTER_MATOMO_CAPTURE_HEADERS": "perhaps"})


def test_patterns_match_whole_names_case_insensitively() -> None:
    capture = header_capture({CAPTURE_ENV: "Referer, accept-.*, sec-ch-ua.*, host, x-forwarded-.*, forwarded, dnt"})

    assert "referer" in capture.captured
    assert "accept-language" in capture.captured
    assert "sec-ch-ua-platform-version" in capture.captured
    assert capture.missing == ("sec-gpc",)
    (message,) = header_capture_messages(capture)
    assert message.startswith("request headers not captured: sec-gpc (")
    assert "opt-out signals" in message
    assert "referrer" not in message


def test_a_partial_pattern_does_not_capture() -> None:
    capture = header_capture({CAPTURE_ENV: "refer,accept"})  # the instrumentation uses fullmatch

    assert capture.captured == ()


def test_missing_client_hint_variants_name_their_consequence() -> None:
    everything_but_model = ",".join(header for header in REQUEST_HEADERS if header != "sec-ch-ua-model")

    (message,) = header_capture_messages(header_capture({CAPTURE_ENV: everything_but_model}))

    assert "sec-ch-ua-model" in message
    assert "client hints" in message


def test_sanitized_headers_are_reported() -> None:
    # The instrumentation redacts when a sanitize pattern is found anywhere in the name (re.search).
    capture = header_capture({CAPTURE_ENV: ".*", SANITIZE_ENV: "refer,language"})

    assert capture.sanitized == ("referer", "accept-language")
    (message,) = header_capture_messages(capture)
    assert "redacts referer, accept-language" in message
    assert "[REDACTED]" in message


def test_invalid_regular_expressions_are_reported() -> None:
    capture = header_capture({CAPTURE_ENV: "referer,(unclosed"})

    assert capture.invalid_patterns == ("(unclosed",)
    assert any("'(unclosed'" in message for message in header_capture_messages(capture))


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (None, "old"),
        ("", "old"),
        ("http", "new"),
        ("http/dup", "dup"),
        ("http,http/dup", "dup"),
        ("database, http", "new"),
        ("database/dup", "old"),
        ("HTTP", "new"),
    ],
)
def test_semconv_mode(value: str | None, mode: str) -> None:
    env = {} if value is None else {"OTEL_SEMCONV_STABILITY_OPT_IN": value}

    assert semconv_mode(env) == mode

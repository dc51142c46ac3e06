"""What the OpenTelemetry HTTP instrumentation records in a given environment: which of the request headers
otel-matomo reads it captures (and redacts), and which HTTP attribute names (semantic conventions) it writes.

Pure functions of an environment mapping that return facts and messages, apart from the exporter's runtime
diagnostics because only ``otel-matomo check`` and the tests ask them, before any span exists.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from otel_matomo._names import CAPTURE_ENV, REQUEST_HEADERS, SANITIZE_ENV, SEMCONV_ENV, traces_exporters
from otel_matomo._settings import read_flag

_CONSEQUENCES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("referer",), "no referrer (urlref): every visit counts as a direct entry"),
    (("accept-language",), "no browser language (lang)"),
    (("host",), "page URLs may show the server's own address instead of the host the visitor asked for"),
    (
        ("x-forwarded-for", "forwarded", "x-forwarded-proto", "x-forwarded-host"),
        "behind a proxy, the visitor's IP, scheme and host are the proxy's",
    ),
    (("sec-gpc", "dnt"), "visitors' opt-out signals (Sec-GPC, DNT) cannot be honoured"),
    (("sec-ch-ua",), "no client hints (uadata): less precise browser and OS versions"),
)


@dataclass(frozen=True)
class HeaderCapture:
    """The request-header capture that a process with this environment would run with."""

    configured: tuple[str, ...]
    """The patterns of ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST`` as set."""
    added_by_otel_matomo: bool
    """``opentelemetry-instrument`` would add :data:`REQUEST_HEADERS` (``OTEL_TRACES_EXPORTER`` names matomo)."""
    patterns: tuple[str, ...]
    """The effective patterns (case-insensitive regular expressions, each matching a whole header name)."""
    captured: tuple[str, ...]
    """The headers of :data:`REQUEST_HEADERS` that reach spans."""
    missing: tuple[str, ...]
    """The headers of :data:`REQUEST_HEADERS` that do not."""
    sanitized: tuple[str, ...]
    """Captured headers whose values the instrumentation replaces with ``[REDACTED]``."""
    invalid_patterns: tuple[str, ...] = ()


def _patterns(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _compiled(patterns: Sequence[str]) -> tuple[list[re.Pattern[str]], tuple[str, ...]]:
    good, bad = [], []
    for pattern in patterns:
        try:
            good.append(re.compile(pattern, re.IGNORECASE))
        except re.error:
            bad.append(pattern)
    return good, tuple(bad)


def header_capture(environ: Mapping[str, str] | None = None) -> HeaderCapture:
    """What header capture the environment produces, as the instrumentation matches it.

    The instrumentation keeps a header when the joined patterns match its whole name (case-insensitive) and
    redacts it when a ``..._SANITIZE_FIELDS`` pattern is found anywhere in the name. Under
    ``opentelemetry-instrument`` with ``OTEL_TRACES_EXPORTER`` naming ``matomo``, otel-matomo's hook adds
    :data:`REQUEST_HEADERS` unless ``OTEL_EXPORTER_MATOMO_CAPTURE_HEADERS`` is false. Raises
    :class:`~otel_matomo.ConfigurationError` for an invalid ``CAPTURE_HEADERS`` value.
    """
    env = os.environ if environ is None else environ
    configured = _patterns(env.get(CAPTURE_ENV, ""))
    added = "matomo" in traces_exporters(env) and read_flag("CAPTURE_HEADERS", True, env)
    patterns = configured
    if added:
        known = {item.lower() for item in configured}
        patterns = configured + tuple(header for header in REQUEST_HEADERS if header not in known)
    compiled, invalid = _compiled(patterns)
    captured = tuple(header for header in REQUEST_HEADERS if any(regex.fullmatch(header) for regex in compiled))
    missing = tuple(header for header in REQUEST_HEADERS if header not in captured)
    sanitizers, bad_sanitizers = _compiled(_patterns(env.get(SANITIZE_ENV, "")))
    sanitized = tuple(header for header in captured if any(regex.search(header) for regex in sanitizers))
    return HeaderCapture(configured, added, patterns, captured, missing, sanitized, invalid + bad_sanitizers)


def header_capture_messages(capture: HeaderCapture) -> list[str]:
    """Warnings about headers otel-matomo needs that the configuration does not capture or redacts."""
    messages = []
    if not capture.captured:
        messages.append(
            f"no request headers are captured ({CAPTURE_ENV} is "
            + ("unset" if not capture.configured else "without any header otel-matomo reads")
            + "), so hits carry no referrer and no language, and URLs may show the server's own address. "
            "Call otel_matomo.configure_header_capture() before instrumenting the app, or run under "
            "opentelemetry-instrument with OTEL_TRACES_EXPORTER=matomo (ignore this if you pass "
            "http_capture_headers_server_request to the middleware yourself)"
        )
    elif capture.missing:
        consequences = [
            text
            for headers, text in _CONSEQUENCES
            if any(
                missing == header or missing.startswith(header + "-")
                for header in headers
                for missing in capture.missing
            )
        ]
        messages.append(
            f"request headers not captured: {', '.join(capture.missing)} ("
            + "; ".join(consequences)
            + "). Add them to "
            + CAPTURE_ENV
            + " or call otel_matomo.configure_header_capture()"
        )
    if capture.sanitized:
        messages.append(
            f"{SANITIZE_ENV} redacts {', '.join(capture.sanitized)}: Matomo receives '[REDACTED]' instead of "
            "their values"
        )
    if capture.invalid_patterns:
        messages.append(
            f"invalid regular expressions in {CAPTURE_ENV} or {SANITIZE_ENV}: "
            + ", ".join(repr(pattern) for pattern in capture.invalid_patterns)
        )
    return messages


def semconv_mode(environ: Mapping[str, str] | None = None) -> str:
    """``old``, ``new`` or ``dup``: the HTTP semantic conventions the instrumentations will record.

    As ``opentelemetry-instrumentation`` reads ``OTEL_SEMCONV_STABILITY_OPT_IN``: ``http/dup`` wins over
    ``http``; anything else keeps the old names. otel-matomo reads all three.
    """
    env = os.environ if environ is None else environ
    values = {item.strip().lower() for item in env.get(SEMCONV_ENV, "").split(",")}
    if "http/dup" in values:
        return "dup"
    if "http" in values:
        return "new"
    return "old"

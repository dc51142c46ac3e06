"""Start-up diagnostics: configuration mistakes that lose analytics silently, explained once per process.

Each diagnosis is a pure function of its inputs (an environment mapping, span counts, Matomo's answers) that
returns messages, so ``otel-matomo check`` and the tests use them directly; the ``report_*`` functions log
those messages once per process on the ``otel_matomo`` logger, through :func:`log_once`. Nothing here raises
into its caller: a diagnostic that fails is a diagnostic not given.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points

from otel_matomo._names import (
    CAPTURE_ENV,
    HEADER_ATTRIBUTE_PREFIX,
    REQUEST_HEADERS,
    SANITIZE_ENV,
    SEMCONV_ENV,
    TRACES_EXPORTER_ENV,
    traces_exporters,
)
from otel_matomo._settings import read_flag

_logger = logging.getLogger("otel_matomo")


class OnceLog:
    """Logs each key at most once for the life of the object (the module's instance: once per process)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self._done: set[str] = set()

    def log(self, key: str, level: int, message: str, *args: object) -> bool:
        """Log ``message % args`` unless ``key`` was logged before; ``True`` when it was logged now."""
        with self._lock:
            if key in self._done:
                return False
            self._done.add(key)
        try:
            self._logger.log(level, message, *args)
        except Exception:  # noqa: BLE001 - a broken handler must not break the exporter
            return False
        return True

    def logged(self, key: str) -> bool:
        """Whether ``key`` was logged already."""
        with self._lock:
            return key in self._done


_once = OnceLog(_logger)


def log_once(key: str, level: int, message: str, *args: object) -> bool:
    """Log on the ``otel_matomo`` logger once per process per ``key``; ``True`` when it was logged now."""
    return _once.log(key, level, message, *args)


# --- Request-header capture --------------------------------------------------------------------------------

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


# --- Spans without HTTP attributes, or without captured headers ------------------------------------------

_HEADERS_MIN_SPANS = 10
"""How many HTTP server spans without any captured header make the "no capture" diagnosis."""


def span_count_messages(server_spans: int, without_http: int, without_headers: int = 0) -> list[tuple[str, str]]:
    """``(key, message)`` for what the counts reveal.

    ``server_spans``: SERVER spans seen; ``without_http``: those with no HTTP method attribute (they produce no
    hit); ``without_headers``: HTTP server spans with no ``http.request.header.*`` attribute at all. A request
    always has a Host header, so when capture works at least that one is there.
    """
    messages = []
    if without_http > 0:
        share = "all" if without_http == server_spans else f"{without_http} of {server_spans}"
        messages.append(
            (
                "spans-without-http",
                f"{share} SERVER spans carried no HTTP method (http.request.method or http.method) and produce "
                "no Matomo hit. Expected for gRPC, websocket or message-queue server spans; if these are web "
                "requests, check that an HTTP server instrumentation (asgi, wsgi, fastapi, flask, django ...) "
                "creates the spans and that no other SERVER span wraps them",
            )
        )
    http_spans = server_spans - without_http
    if http_spans >= _HEADERS_MIN_SPANS and without_headers >= http_spans:
        messages.append(
            (
                "spans-without-headers",
                f"none of {http_spans} HTTP server spans carried a captured request header "
                f"(http.request.header.*): header capture is not configured, so hits have no referrer and no "
                f"language. Call otel_matomo.configure_header_capture() before instrumenting the app, or run "
                f"under opentelemetry-instrument with OTEL_TRACES_EXPORTER=matomo",
            )
        )
    return messages


def report_span_counts(server_spans: int, without_http: int, without_headers: int = 0) -> None:
    """Log :func:`span_count_messages` once per process (each kind of message once)."""
    try:
        for key, message in span_count_messages(server_spans, without_http, without_headers):
            log_once(key, logging.WARNING, "otel-matomo: %s", message)
    except Exception:  # noqa: BLE001 - diagnostics never break the export
        return


class SpanDiagnostics:
    """Counts the shapes of the first server spans of the process and reports what they reveal, once.

    :meth:`observe` takes finished spans (anything with ``kind`` and ``attributes``), costs a few attribute
    look-ups per SERVER span while it watches, and nothing once ``limit`` server spans were seen or both
    diagnoses were given.
    """

    def __init__(self, limit: int = 1000) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._server = 0
        self._without_http = 0
        self._without_headers = 0
        self._headers_seen = False
        self._done = False

    def observe(self, spans: Iterable[object]) -> None:
        """Count ``spans`` and report; never raises."""
        if self._done:
            return
        try:
            server = without_http = without_headers = 0
            headers_seen = False
            for span in spans:
                if getattr(getattr(span, "kind", None), "name", None) != "SERVER":
                    continue
                server += 1
                attributes: Mapping[str, object] = getattr(span, "attributes", None) or {}
                if "http.request.method" not in attributes and "http.method" not in attributes:
                    without_http += 1
                elif any(key.startswith(HEADER_ATTRIBUTE_PREFIX) for key in attributes):
                    headers_seen = True
                else:
                    without_headers += 1
            if not server:
                return
            with self._lock:
                self._server += server
                self._without_http += without_http
                self._without_headers += without_headers
                self._headers_seen = self._headers_seen or headers_seen
                counts = (self._server, self._without_http, 0 if self._headers_seen else self._without_headers)
                self._done = self._server >= self._limit or (
                    _once.logged("spans-without-http") and (self._headers_seen or _once.logged("spans-without-headers"))
                )
            report_span_counts(*counts)
        except Exception:  # noqa: BLE001 - diagnostics never break the export
            self._done = True


# --- The SDK's exporters under opentelemetry-instrument --------------------------------------------------

_SIGNALS: tuple[tuple[str, str, str], ...] = (
    ("traces", TRACES_EXPORTER_ENV, "opentelemetry_traces_exporter"),
    ("metrics", "OTEL_METRICS_EXPORTER", "opentelemetry_metrics_exporter"),
    ("logs", "OTEL_LOGS_EXPORTER", "opentelemetry_logs_exporter"),
)
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}

Finder = Callable[[str, str], "str | None"]
"""``find(group, name)``: ``None`` when the entry point is there, else what is wrong with it."""


def _find_entry_point(group: str, name: str, *, load: bool) -> str | None:
    found = [point for point in entry_points(group=group) if point.name == name]
    if not found:
        return "is not installed"
    if load:
        try:
            found[0].load()
        except Exception as error:  # noqa: BLE001 - any import failure is the diagnosis
            return f"fails to import ({type(error).__name__}: {error})"
    return None


def _distro_installed() -> bool:
    return any(True for _ in entry_points(group="opentelemetry_distro"))


def sdk_exporter_problems(
    environ: Mapping[str, str] | None = None,
    *,
    distro: bool | None = None,
    find: Finder | None = None,
    load: bool = False,
) -> list[str]:
    """Why ``opentelemetry-instrument`` would fail to set up the SDK (and run the application untraced).

    The SDK imports every exporter that ``OTEL_{TRACES,METRICS,LOGS}_EXPORTER`` names before it sets anything
    up, and one missing makes the whole set-up fail. ``opentelemetry-distro`` defaults the three variables to
    ``otlp`` (gRPC) when they are unset, so without ``opentelemetry-exporter-otlp`` an application that only
    asked for ``OTEL_TRACES_EXPORTER=matomo`` runs untraced. ``distro`` says whether the distro is installed
    (looked up when ``None``); ``find`` replaces the entry-point look-up (tests); ``load`` also imports each
    exporter found.
    """
    env = os.environ if environ is None else environ
    with_distro = _distro_installed() if distro is None else distro

    def default_find(group: str, name: str) -> str | None:
        return _find_entry_point(group, name, load=load)

    lookup = find or default_find
    problems = []
    for signal, variable, group in _SIGNALS:
        raw = env.get(variable)
        defaulted = raw is None and with_distro
        value = "otlp" if defaulted else (raw or "")
        if value.strip().lower() in ("", "none"):
            continue
        for name in (item.strip() for item in value.split(",") if item.strip()):
            resolved = name
            if name == "otlp":
                protocol = (
                    env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
                    or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                    or "grpc"
                ).strip()
                if protocol not in _OTLP_BY_PROTOCOL:
                    problems.append(f"the OTLP protocol {protocol!r} is not one the SDK knows (grpc, http/protobuf)")
                    continue
                resolved = _OTLP_BY_PROTOCOL[protocol]
            problem = lookup(group, resolved)
            if problem is None:
                continue
            origin = (
                f"{variable} is unset, which opentelemetry-distro turns into 'otlp'"
                if defaulted
                else f"{variable} names {name!r}"
            )
            fix = (
                "set OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none (or pip install opentelemetry-exporter-otlp)"
                if signal != "traces"
                else f"install the exporter or remove {name!r} from {variable}"
            )
            problems.append(
                f"{origin}, but the {signal} exporter {resolved!r} {problem}: opentelemetry-instrument will fail "
                f"to set up the SDK and the application will run untraced, sending no hit to Matomo. Fix: {fix}"
            )
    return problems


def report_sdk_exporters(environ: Mapping[str, str] | None = None) -> None:
    """Log :func:`sdk_exporter_problems` once per process."""
    try:
        for index, problem in enumerate(sdk_exporter_problems(environ)):
            log_once(f"sdk-exporters-{index}", logging.ERROR, "otel-matomo: %s", problem)
    except Exception:  # noqa: BLE001 - diagnostics never break start-up
        return

"""Runtime diagnostics: configuration mistakes that lose analytics silently, logged once per process.

The exporter and the processor run these: :class:`SpanDiagnostics` judges the shapes of the first server spans
(no HTTP attributes, no captured header), :func:`watch_start_up` the frameworks the process imports
(``_frameworks``) and :func:`report_sdk_exporters` the configurator and the SDK exporters
``opentelemetry-instrument`` would load (``_sdk_exporters``). Each diagnosis is a pure function that returns
messages, so ``otel-matomo check`` and the tests use them directly; the ``report_*`` functions log those
messages once per process on the ``otel_matomo`` logger, through :func:`log_once`. Nothing here raises into its
caller: a diagnostic that fails is a diagnostic not given.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping

from otel_matomo._frameworks import watch as watch_frameworks
from otel_matomo._names import HEADER_ATTRIBUTE_PREFIX
from otel_matomo._sdk_exporters import configurator_problem, sdk_exporter_problems

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
                f"language. Pass request_hook=otel_matomo.request_hook to the instrumentation (or call "
                f"otel_matomo.configure_header_capture() before instrumenting the app), or run under "
                f"opentelemetry-instrument with OTEL_TRACES_EXPORTER=matomo",
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
    diagnoses were given. Building one (the exporter and the processor do, at start-up) also starts the
    process's start-up diagnoses (:func:`watch_start_up`): a set-up that sends nothing produces no span to judge.
    """

    def __init__(self, limit: int = 1000) -> None:
        watch_start_up()
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


def watch_start_up() -> None:
    """Report, once per process, a framework that nothing will trace (``_frameworks.watch``); never raises."""
    try:
        watch_frameworks(_report_error)
    except Exception:  # noqa: BLE001 - diagnostics never break start-up
        return


def _report_error(key: str, message: str) -> None:
    log_once(key, logging.ERROR, "otel-matomo: %s", message)


def report_sdk_exporters(environ: Mapping[str, str] | None = None) -> None:
    """Log :func:`configurator_problem` and :func:`sdk_exporter_problems` once per process.

    Without a configurator, the pre-instrument hook's import of ``otel_matomo`` is the only code of ours that
    runs, and this (called when ``otel_matomo.exporter`` is imported) the only word the user gets.
    """
    try:
        problems = [problem for problem in (configurator_problem(environ),) if problem is not None]
        for index, problem in enumerate(problems + sdk_exporter_problems(environ)):
            log_once(f"sdk-exporters-{index}", logging.ERROR, "otel-matomo: %s", problem)
    except Exception:  # noqa: BLE001 - diagnostics never break start-up
        return

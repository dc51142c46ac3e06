"""The checks that need no network: the configuration as the exporter reads it, and what the application's
process would run with (the configurator and SDK exporters ``opentelemetry-instrument`` loads, the
instrumentation of the installed frameworks, the request-header capture, the HTTP semantic conventions).

Apart from the checks of the live Matomo because they judge the environment alone, through the same pure
diagnoses the exporter logs at start-up, and run the same with or without an endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from otel_matomo._frameworks import (
    ASGI_INSTRUMENTATION,
    ASGI_SERVERS,
    FRAMEWORKS,
    django_asgi_message,
    importable,
    installed,
    installed_instrumentors,
    why_untraced,
)
from otel_matomo._instrumentation import header_capture, header_capture_messages, semconv_mode
from otel_matomo._names import CAPTURE_ENV, ENV_PREFIX, SEMCONV_ENV, traces_exporters
from otel_matomo._options import ConfigurationError
from otel_matomo._sdk_exporters import configurator_problem, sdk_exporter_problems
from otel_matomo._settings import Settings, read_flag
from otel_matomo.cli._check_report import Check, Verdict

_SEMCONV_NAMES = {
    "old": "the old HTTP attribute names (http.method, http.target ...)",
    "new": "the stable HTTP attribute names (http.request.method, url.path ...)",
    "dup": "both the old and the stable HTTP attribute names",
}


def configuration_checks(settings: Settings, warnings: tuple[str, ...] = ()) -> Iterator[Check]:
    """The configuration read (never the token itself), dry run, and the ``warnings`` logged while reading it."""
    token = "set" if settings.token_auth else "not set"
    yield Check(
        "configuration",
        Verdict.OK,
        f"endpoint {settings.endpoint_for_logs}, site {settings.site_id}, token_auth {token}, "
        f"timeout {settings.timeout:g} s",
    )
    if settings.dry_run:
        yield Check(
            "configuration",
            Verdict.WARN,
            f"{ENV_PREFIX}DRY_RUN is on: hits are printed on standard error instead of being sent",
        )
    for warning in warnings:
        yield Check("configuration", Verdict.WARN, warning)


def environment_checks(env: Mapping[str, str]) -> Iterator[Check]:
    """SDK start-up under ``opentelemetry-instrument``, header capture and semantic conventions for ``env``."""
    yield from _sdk_start_up(env)
    yield from _instrumentation(env)
    yield from _django_asgi()
    yield from _header_capture(env)
    setting = env.get(SEMCONV_ENV, "unset")
    names = _SEMCONV_NAMES[semconv_mode(env)]
    yield Check("semconv", Verdict.OK, f"{SEMCONV_ENV}={setting}: spans carry {names}; otel-matomo reads all of them")


def _sdk_start_up(env: Mapping[str, str]) -> Iterator[Check]:
    if "matomo" not in traces_exporters(env):
        yield Check(
            "sdk start-up",
            Verdict.SKIP,
            "OTEL_TRACES_EXPORTER does not name matomo: otel-matomo runs only where the application builds "
            "MatomoSpanExporter in code",
        )
        return
    configurator = configurator_problem(env)
    problems = ([configurator] if configurator else []) + sdk_exporter_problems(env, load=True)
    for problem in problems:
        yield Check("sdk start-up", Verdict.FAIL, problem)
    if not problems:
        shown = ", ".join(
            f"{variable}={env.get(variable, 'unset')}"
            for variable in ("OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER")
        )
        yield Check(
            "sdk start-up", Verdict.OK, f"every exporter opentelemetry-instrument would load is there ({shown})"
        )


def _instrumentation(env: Mapping[str, str]) -> Iterator[Check]:
    """Under ``opentelemetry-instrument``: is each installed framework instrumented? FAIL when none is; WARN
    beside one that is (the process may be running that one: ``check`` cannot tell which)."""
    if "matomo" not in traces_exporters(env) and not _processor(env):
        return
    present = [
        framework
        for framework in FRAMEWORKS
        if installed(framework.module) and not (framework.module == "starlette" and installed("fastapi"))
    ]
    instrumentors = installed_instrumentors()
    verdicts = [(framework, why_untraced(framework, instrumentors, env)) for framework in present]
    traced = [framework.name for framework, why in verdicts if why is None]
    for framework, why in verdicts:
        if why is None:
            yield Check("instrumentation", Verdict.OK, f"{framework.name}: opentelemetry-instrument will trace it")
        elif traced:
            yield Check(
                "instrumentation",
                Verdict.WARN,
                f"{framework.name} is installed, but {why} (ignore this if the application is a "
                f"{' or '.join(traced)} application)",
            )
        else:
            yield Check("instrumentation", Verdict.FAIL, f"{framework.name} is installed, but {why}")


def _processor(env: Mapping[str, str]) -> bool:
    try:
        return read_flag("PROCESSOR", False, env)
    except ConfigurationError:
        return False


def _django_asgi() -> Iterator[Check]:
    """Django beside an ASGI server, without the ASGI instrumentation (in code as under opentelemetry-instrument)."""
    servers = [server for server in ASGI_SERVERS if installed(server)]
    if installed("django") and servers and not importable(ASGI_INSTRUMENTATION):
        yield Check(
            "instrumentation",
            Verdict.FAIL,
            f"Django and {', '.join(servers)} are installed, but {django_asgi_message()}",
        )


def _header_capture(env: Mapping[str, str]) -> Iterator[Check]:
    capture = header_capture(env)
    messages = header_capture_messages(capture)
    for message in messages:
        yield Check("header capture", Verdict.WARN, message)
    if not messages:
        source = (
            "handed over by otel-matomo under opentelemetry-instrument: its request_hook, or the capture where an "
            "instrumentation takes no hook"
            if capture.added_by_otel_matomo
            else f"from {CAPTURE_ENV}"
        )
        yield Check(
            "header capture",
            Verdict.OK,
            f"all {len(capture.captured)} request headers otel-matomo reads are captured ({source})",
        )

"""Why ``opentelemetry-instrument`` would fail to set up the SDK: no configurator is installed (opentelemetry-distro
forgotten), or an exporter that an ``OTEL_*_EXPORTER`` variable names (or that opentelemetry-distro defaults to)
is not installed or fails to import.

A pure diagnosis of an environment mapping and the installed entry points, apart from the span diagnostics
because it is about the process's start-up, not its spans; the exporter logs it once
(``_diagnostics.report_sdk_exporters``) and ``otel-matomo check`` prints it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from importlib.metadata import entry_points

from otel_matomo._names import TRACES_EXPORTER_ENV

_SIGNALS: tuple[tuple[str, str, str], ...] = (
    ("traces", TRACES_EXPORTER_ENV, "opentelemetry_traces_exporter"),
    ("metrics", "OTEL_METRICS_EXPORTER", "opentelemetry_metrics_exporter"),
    ("logs", "OTEL_LOGS_EXPORTER", "opentelemetry_logs_exporter"),
)
CONFIGURATOR_ENV = "OTEL_PYTHON_CONFIGURATOR"
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


def configurator_problem(
    environ: Mapping[str, str] | None = None, *, configurators: Collection[str] | None = None
) -> str | None:
    """Why ``opentelemetry-instrument`` would set up no SDK at all, or ``None``.

    ``opentelemetry-instrument`` runs the instrumentations (and otel-matomo's pre-instrument hook) without any
    configurator, but only a configurator (opentelemetry-distro's) builds the tracer provider and the exporters
    ``OTEL_TRACES_EXPORTER`` names: without one the application runs untraced, silently. ``configurators``: the
    names installed (looked up when ``None``).
    """
    env = os.environ if environ is None else environ
    installed = (
        {point.name for point in entry_points(group="opentelemetry_configurator")}
        if configurators is None
        else configurators
    )
    chosen = env.get(CONFIGURATOR_ENV, "").strip()
    if chosen and chosen not in installed:
        return (
            f"{CONFIGURATOR_ENV} names the configurator {chosen!r}, which is not installed: opentelemetry-instrument "
            f"will set up no SDK and the application will run untraced, sending no hit to Matomo. Fix: unset "
            f"{CONFIGURATOR_ENV} (opentelemetry-distro's is 'configurator') or install {chosen!r}"
        )
    if not installed:
        return (
            "no OpenTelemetry configurator is installed (opentelemetry-distro is missing): opentelemetry-instrument "
            "will instrument the application but set up no SDK, so nothing is traced and no hit is sent to Matomo. "
            "Fix: pip install opentelemetry-distro (or otel-matomo[django], [flask], [fastapi] or [starlette])"
        )
    return None


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

"""Zero code without the header capture: ``opentelemetry-instrument``'s instrumentors get otel-matomo's
``request_hook``, and the capture is arranged only when an instrumentation that takes no such hook will run.

``opentelemetry-instrument`` calls each instrumentor's ``instrument()`` with no hook and offers no variable to
name one, and OpenTelemetry's header capture is one process-wide variable that every instrumentation reads
(the WSGI ones on every request): it cannot be turned off for the instrumentations that take the hook alone.
So, between the ``pre_instrument`` and ``post_instrument`` hooks, ``BaseInstrumentor.instrument`` adds
``request_hook`` to the arguments of the instrumentors in :data:`_HOOK_ARGUMENTS`, run before the hook the
caller passed (a custom distro's), which still runs; every other instrumentor is called as it was.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from opentelemetry.trace import Span

from otel_matomo._hooks import request_hook

_HOOK_ARGUMENTS = {
    "opentelemetry.instrumentation.fastapi:FastAPIInstrumentor": "server_request_hook",
    "opentelemetry.instrumentation.starlette:StarletteInstrumentor": "server_request_hook",
    "opentelemetry.instrumentation.flask:FlaskInstrumentor": "request_hook",
    "opentelemetry.instrumentation.django:DjangoInstrumentor": "request_hook",
    "opentelemetry.instrumentation.falcon:FalconInstrumentor": "request_hook",
}
"""Instrumentor class -> the ``instrument()`` argument of its server request hook, called with what
``request_hook`` reads (an ASGI scope, a WSGI environ, a Django or Falcon request)."""

_HOOKLESS_SERVERS = frozenset({"tornado", "pyramid", "aiohttp-server"})
"""``opentelemetry_instrumentor`` entry points of HTTP servers whose hook ``request_hook`` cannot read, or that
take none: while one of them runs, the header capture is arranged (for every instrumentation)."""

_DISABLED_ENV = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"

Hook = Callable[[Span, Any], None]


_LEAVE_OUT_ARGUMENTS = {
    "opentelemetry.instrumentation.fastapi:FastAPIInstrumentor": "exclude_spans",
}
"""Instrumentor class -> its ``instrument()`` argument that leaves out the ASGI middleware's ``http send`` and
``http receive`` spans (two or more per request, each started, ended and handed to every span processor)."""


class _Patch:
    """The original ``BaseInstrumentor.instrument`` while it is wrapped, and what the wrapper adds."""

    original: Callable[..., Any] | None = None
    hook = False
    leave_out_internal_spans = False


def hand_over_headers() -> None:
    """Until :func:`restore_instrumentors`, instrumentors of :data:`_HOOK_ARGUMENTS` get ``request_hook``."""
    _Patch.hook = True
    _wrap_instrument()


def leave_out_internal_spans() -> None:
    """Until :func:`restore_instrumentors`, instrumentors of :data:`_LEAVE_OUT_ARGUMENTS` record no ``http send``
    or ``http receive`` span, unless the caller chose which to leave out. Only for a provider whose one processor
    is otel-matomo's: no exporter would see those spans, and they cost the application about as much CPU as
    otel-matomo does (``benchmarks/RESULTS.md``, issue 18)."""
    _Patch.leave_out_internal_spans = True
    _wrap_instrument()


def _wrap_instrument() -> None:
    if _Patch.original is not None:
        return
    base = _base_instrumentor()
    original = _Patch.original = base.instrument

    def instrument(self: object, **kwargs: Any) -> Any:
        name = f"{type(self).__module__}:{type(self).__qualname__}"
        hook = _HOOK_ARGUMENTS.get(name)
        if _Patch.hook and hook is not None:
            kwargs[hook] = chain(kwargs.get(hook))
        leave_out = _LEAVE_OUT_ARGUMENTS.get(name)
        if (
            _Patch.leave_out_internal_spans
            and leave_out is not None
            and kwargs.get(leave_out) is None
            and _takes(self, leave_out)
        ):
            kwargs[leave_out] = ["receive", "send"]
        return original(self, **kwargs)

    base.instrument = instrument


def _takes(instrumentor: object, argument: str) -> bool:
    """Whether this version's ``instrument_app`` takes ``argument``: an older one would fail on it, at the
    application's ``FastAPI()``."""
    method = getattr(instrumentor, "instrument_app", None)
    try:
        return method is not None and argument in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def restore_instrumentors() -> None:
    """Put ``BaseInstrumentor.instrument`` back: instrumentors the application calls itself are its own."""
    _Patch.hook = _Patch.leave_out_internal_spans = False
    if _Patch.original is None:
        return
    _base_instrumentor().instrument = _Patch.original
    _Patch.original = None


def _base_instrumentor() -> Any:
    """``BaseInstrumentor``, imported here only (``opentelemetry-instrumentation`` is there under zero code) and
    typed ``Any``: its module opts out of type checking."""
    return importlib.import_module("opentelemetry.instrumentation.instrumentor").BaseInstrumentor


def chain(hook: Hook | None) -> Hook:
    """``request_hook``, then ``hook`` (the caller's own, with its own errors) when there is one."""
    if hook is None or hook is request_hook:
        return request_hook

    def both(span: Span, request: Any) -> None:
        """otel-matomo's hook (which never raises), then the hook the instrumentor was given."""
        request_hook(span, request)
        hook(span, request)

    return both


def hookless_servers() -> list[str]:
    """The enabled ``opentelemetry_instrumentor`` entry points of :data:`_HOOKLESS_SERVERS` whose library is
    installed: ``opentelemetry-instrument`` will run them, and they need the header capture."""
    disabled = {name.strip() for name in os.environ.get(_DISABLED_ENV, "").split(",")}
    if "*" in disabled:
        return []
    return sorted(
        point.name
        for point in entry_points(group="opentelemetry_instrumentor")
        if point.name in _HOOKLESS_SERVERS and point.name not in disabled and _loads(point.dist)
    )


def _loads(dist: Any) -> bool:
    """Whether ``opentelemetry-instrument`` would load the instrumentation (its library is installed)."""
    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts  # noqa: PLC0415

    try:
        return dist is not None and get_dist_dependency_conflicts(dist) is None
    except Exception:  # noqa: BLE001 - when in doubt it loads, and the capture costs only time
        return True

"""Which web framework the process runs, and whether anything will trace its requests.

Two set-ups send nothing and say nothing: under ``opentelemetry-instrument``, a framework whose instrumentation
is not installed (or is disabled) is simply not instrumented; and Django served over ASGI without
``opentelemetry-instrumentation-asgi`` is skipped, request by request, by the Django instrumentation itself.
The facts and messages here are pure functions, so that ``otel-matomo check`` judges what is installed and a
running process judges what it imports: :func:`watch` notices a framework (or Django's ASGI entry point) when
it is imported, at start-up, and hands the message to its caller's ``report``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from importlib.metadata import entry_points
from types import ModuleType

DISABLED_ENV = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
ASGI_INSTRUMENTATION = "opentelemetry.instrumentation.asgi"
DJANGO_ASGI = "django.core.asgi"
"""Imported by a Django project's ``asgi.py`` (``get_asgi_application``) and by nothing Django serves over WSGI."""
ASGI_SERVERS = ("uvicorn", "daphne", "hypercorn", "granian")
_AUTO_INSTRUMENTATION = "opentelemetry.instrumentation.auto_instrumentation"
"""In ``sys.modules`` when ``opentelemetry-instrument`` (or its ``initialize()``) set the process up."""


@dataclass(frozen=True)
class Framework:
    """A web framework and what traces its requests under ``opentelemetry-instrument``."""

    name: str
    module: str
    instrumentors: tuple[str, ...]
    """The ``opentelemetry_instrumentor`` entry points that instrument it (FastAPI's covers Starlette's import)."""
    package: str
    """The instrumentation to install."""

    @property
    def extra(self) -> str:
        """The otel-matomo extra that installs everything this framework needs."""
        return self.module


FRAMEWORKS: tuple[Framework, ...] = (
    Framework("Django", "django", ("django",), "opentelemetry-instrumentation-django"),
    Framework("Flask", "flask", ("flask",), "opentelemetry-instrumentation-flask"),
    Framework("FastAPI", "fastapi", ("fastapi",), "opentelemetry-instrumentation-fastapi"),
    Framework("Starlette", "starlette", ("starlette", "fastapi"), "opentelemetry-instrumentation-starlette"),
)


def installed_instrumentors() -> frozenset[str]:
    """The names of the installed ``opentelemetry_instrumentor`` entry points."""
    return frozenset(point.name for point in entry_points(group="opentelemetry_instrumentor"))


def why_untraced(framework: Framework, instrumentors: Collection[str], environ: Mapping[str, str]) -> str | None:
    """Why ``opentelemetry-instrument`` would not instrument ``framework``, with the fix; ``None`` when it would."""
    disabled = {item.strip() for item in environ.get(DISABLED_ENV, "").split(",") if item.strip()}
    present = [name for name in framework.instrumentors if name in instrumentors]
    if not present:
        return (
            f"{framework.package} is not installed, so no request is traced and no hit is sent to Matomo. "
            f"Fix: pip install 'otel-matomo[{framework.extra}]'"
        )
    if "*" in disabled or all(name in disabled for name in present):
        return (
            f"{DISABLED_ENV} disables {framework.module}, so no request is traced and no hit is sent to Matomo. "
            f"Fix: remove {framework.module} from {DISABLED_ENV}"
        )
    return None


def django_asgi_message() -> str:
    """What happens to Django over ASGI without the ASGI instrumentation, and the fix."""
    return (
        "opentelemetry-instrumentation-asgi is not installed: the Django instrumentation skips every request "
        "served over ASGI, so no hit is sent to Matomo. Fix: pip install opentelemetry-instrumentation-asgi "
        "(or 'otel-matomo[django]')"
    )


def importable(module: str) -> bool:
    """Whether ``module`` imports: how the Django instrumentation itself decides that ASGI is supported."""
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any failure means the instrumentation will not have it either
        return False
    return True


def installed(module: str) -> bool:
    """Whether ``module`` could be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# --- the running process -------------------------------------------------------------------------------------

Report = Callable[[str, str], None]
"""``report(key, message)``: log ``message`` once per process per ``key``."""


class _ImportWatch(importlib.abc.MetaPathFinder):
    """Runs an action the first time each watched module is imported; finds nothing itself."""

    def __init__(self, actions: dict[str, Callable[[], None]]) -> None:
        self._actions = actions

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,  # noqa: ARG002 - the finder protocol's signature
        target: ModuleType | None = None,  # noqa: ARG002
    ) -> ModuleSpec | None:
        """Run the action for ``fullname`` (once) and let the real finders find it."""
        action = self._actions.pop(fullname, None)
        if action is not None:
            if not self._actions and self in sys.meta_path:
                sys.meta_path.remove(self)
            action()
        return None


_watching = False
_watch_lock = threading.Lock()


def watch(report: Report, environ: Mapping[str, str] | None = None) -> None:
    """Report the silent set-ups of this process as its frameworks are imported (now for those already imported).

    Once per process. Django over ASGI is judged in code and under ``opentelemetry-instrument``; a framework
    without its instrumentation only under ``opentelemetry-instrument``, because in code the application
    imports the instrumentation itself (and fails loudly without it). Never raises.
    """
    global _watching  # noqa: PLW0603 - one watch per process
    with _watch_lock:
        if _watching:
            return
        _watching = True
    env = os.environ if environ is None else environ
    actions = {DJANGO_ASGI: lambda: _judge_django_asgi(report)}
    if _AUTO_INSTRUMENTATION in sys.modules:
        for framework in FRAMEWORKS:
            actions[framework.module] = _framework_action(framework, report, env)
    for module in [module for module in actions if module in sys.modules]:
        actions.pop(module)()
    if actions:
        sys.meta_path.insert(0, _ImportWatch(actions))


def _framework_action(framework: Framework, report: Report, env: Mapping[str, str]) -> Callable[[], None]:
    def judge() -> None:
        if framework.module == "starlette" and "fastapi" in sys.modules:
            return  # FastAPI imports Starlette: FastAPI's own verdict was given
        try:
            why = why_untraced(framework, installed_instrumentors(), env)
            if why is not None:
                report(
                    f"untraced-{framework.module}", f"{framework.name} runs under opentelemetry-instrument, but {why}"
                )
        except Exception:  # noqa: BLE001 - a diagnosis never breaks the application's imports
            return

    return judge


def _judge_django_asgi(report: Report) -> None:
    try:
        if not importable(ASGI_INSTRUMENTATION):
            report("django-asgi", f"Django is served over ASGI, but {django_asgi_message()}")
    except Exception:  # noqa: BLE001 - see above
        return

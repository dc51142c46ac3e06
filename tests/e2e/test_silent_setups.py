"""Set-ups that would send nothing say so: one ``otel-matomo:`` line at start-up and a FAIL line in ``check``.

Each child runs ``opentelemetry-instrument`` (as tests/e2e/test_zero_code.py does) with a package made absent
without touching the venv: a stub ``<name>-0.0.0.dist-info`` early on ``PYTHONPATH`` shadows the installed
distribution's metadata, so its entry points vanish (``importlib.metadata`` keeps the first distribution of a
name), and a stub package that raises ``ImportError`` hides a module, as a missing one would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn
from tests.servers import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
INSTRUMENTATIONS = [f"opentelemetry-instrumentation-{name}" for name in ("django", "flask", "fastapi", "starlette")]


def hidden(root: Path, dists: tuple[str, ...] = (), modules: tuple[str, ...] = ()) -> str:
    """A ``PYTHONPATH`` entry under which ``dists`` have no entry points and ``modules`` fail to import."""
    for dist in dists:
        info = root / f"{dist.replace('-', '_')}-0.0.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.0\n")
    for module in modules:
        package = root.joinpath(*module.split("."))
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"raise ImportError('{module} is hidden by the test')\n")
    return str(root)


def _env(standin: MatomoStandIn, pythonpath: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "DJANGO_"))}
    env.update(
        OTEL_TRACES_EXPORTER="matomo",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_EXPORTER_MATOMO_ENDPOINT=standin.url,
        OTEL_EXPORTER_MATOMO_SITE_ID="1",
        OTEL_EXPORTER_MATOMO_TOKEN_AUTH=WRITE_TOKEN,
        PYTHONPATH=os.pathsep.join([pythonpath, str(EXAMPLES)]),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def _instrument() -> str:
    found = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    assert found is not None
    return found


def _run(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_instrument(), sys.executable, "-c", code],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otel_matomo", "check"], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _said(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("otel-matomo:")]


def test_without_a_configurator_one_line_and_check_fails(standin: MatomoStandIn, tmp_path: Path) -> None:
    env = _env(standin, hidden(tmp_path, dists=("opentelemetry-distro",)))

    result = _run(env, "from opentelemetry import trace; print('app ran', type(trace.get_tracer_provider()).__name__)")

    assert "app ran ProxyTracerProvider" in result.stdout, "no SDK was set up, as without the distro"
    assert _said(result.stderr) == [
        "otel-matomo: no OpenTelemetry configurator is installed (opentelemetry-distro is missing): "
        "opentelemetry-instrument will instrument the application but set up no SDK, so nothing is traced and no "
        "hit is sent to Matomo. Fix: pip install opentelemetry-distro (or otel-matomo[django], [flask], [fastapi] "
        "or [starlette])"
    ]
    check = _check(env)
    assert check.returncode == 1
    assert "FAIL  sdk start-up    no OpenTelemetry configurator is installed" in check.stdout


def test_a_framework_without_its_instrumentation_one_line_and_check_fails(
    standin: MatomoStandIn, tmp_path: Path
) -> None:
    env = _env(standin, hidden(tmp_path, dists=tuple(INSTRUMENTATIONS)))

    result = _run(env, "import flask; print('app ran')")

    assert "app ran" in result.stdout
    assert _said(result.stderr) == [
        "otel-matomo: Flask runs under opentelemetry-instrument, but opentelemetry-instrumentation-flask is not "
        "installed, so no request is traced and no hit is sent to Matomo. Fix: pip install 'otel-matomo[flask]'"
    ]
    check = _check(env)
    assert check.returncode == 1
    assert (
        "FAIL  instrumentation Flask is installed, but opentelemetry-instrumentation-flask is not installed"
        in check.stdout
    )


def test_a_disabled_instrumentation_is_named(standin: MatomoStandIn, tmp_path: Path) -> None:
    env = _env(standin, str(tmp_path), OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="flask")

    result = _run(env, "import flask")

    assert _said(result.stderr) == [
        "otel-matomo: Flask runs under opentelemetry-instrument, but OTEL_PYTHON_DISABLED_INSTRUMENTATIONS disables "
        "flask, so no request is traced and no hit is sent to Matomo. Fix: remove flask from "
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
    ]


def test_django_over_asgi_without_the_asgi_instrumentation(standin: MatomoStandIn, tmp_path: Path) -> None:
    env = _env(
        standin,
        hidden(tmp_path, modules=("opentelemetry.instrumentation.asgi",)),
        DJANGO_SETTINGS_MODULE="django_app",
    )
    port = free_port()
    process = subprocess.Popen(
        [_instrument(), sys.executable, "-m", "uvicorn", "django_app:asgi_application", "--port", str(port)],
        cwd=EXAMPLES,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def answers() -> bool:
            assert process.poll() is None, "the app exited"
            try:
                return httpx.get(f"http://127.0.0.1:{port}/items/7", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, "the Django app did not start")
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)

    assert standin.tracked == [], "the Django instrumentation skipped the ASGI requests"
    assert _said(output) == [
        "otel-matomo: Django is served over ASGI, but opentelemetry-instrumentation-asgi is not installed: the "
        "Django instrumentation skips every request served over ASGI, so no hit is sent to Matomo. Fix: pip "
        "install opentelemetry-instrumentation-asgi (or 'otel-matomo[django]')"
    ]
    check = _check(env)
    assert check.returncode == 1
    assert "FAIL  instrumentation Django and uvicorn" in check.stdout
    assert "pip install opentelemetry-instrumentation-asgi" in check.stdout

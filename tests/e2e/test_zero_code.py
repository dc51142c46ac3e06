"""The zero-code path: ``opentelemetry-instrument`` with only environment variables, no OpenTelemetry code in the app.

The package's entry points must select the exporter (``OTEL_TRACES_EXPORTER=matomo``, also beside another
exporter) and get the request headers to Matomo without the user listing headers: through the processor and the
request hook they set up in place of the SDK's batch processor and OpenTelemetry's header capture. A Matomo
misconfiguration costs one line and Matomo alone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn
from tests.servers import free_port, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


class App:
    def __init__(self, process: subprocess.Popen[str], base_url: str) -> None:
        self.process = process
        self.base_url = base_url

    def get(self, path: str, **headers: str) -> int:
        return httpx.get(self.base_url + path, headers={"User-Agent": UA, **headers}).status_code

    def stop(self) -> str:
        self.process.send_signal(signal.SIGTERM)
        output, _ = self.process.communicate(timeout=20)
        return output


def _start(standin: MatomoStandIn, **extra_env: str) -> App:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(
        OTEL_TRACES_EXPORTER="matomo",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_EXPORTER_MATOMO_ENDPOINT=standin.url,
        OTEL_EXPORTER_MATOMO_SITE_ID="1",
        OTEL_EXPORTER_MATOMO_TOKEN_AUTH=WRITE_TOKEN,
        OTEL_EXPORTER_MATOMO_VISITOR_ID_SECRET="zero-code-secret-0123456789",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env)
    instrument = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    assert instrument is not None, "opentelemetry-instrument is not installed beside this Python"
    process = subprocess.Popen(
        [instrument, sys.executable, "-m", "uvicorn", "fastapi_app:app", "--port", str(port), "--log-level", "warning"],
        cwd=EXAMPLES,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the app exited: {process.communicate()[0]}")
        try:
            httpx.get(base_url + "/healthz-probe-not-a-route", timeout=0.5)
        except httpx.HTTPError:
            return False
        return True

    wait_until(answers, "the instrumented app did not start")
    return App(process, base_url)


@pytest.fixture
def running() -> Iterator[list[App]]:
    apps: list[App] = []
    yield apps
    for app in apps:
        if app.process.poll() is None:
            app.process.kill()


def test_env_only_app_sends_hits_with_captured_headers(standin: MatomoStandIn, running: list[App]) -> None:
    app = _start(standin)
    running.append(app)
    assert (
        app.get(
            "/items/3?utm_source=zero",
            Referer="https://duckduckgo.com/",
            **{"Accept-Language": "nl-NL"},
            Host="shop.example",
        )
        == 200
    )
    hits = standin.wait_for_hits(2)  # the start-up probe (a 404) and the page view
    page = hits[-1]
    assert page["action_name"] == "GET /items/{item_id}"
    assert page["url"] == "http://shop.example/items/3?utm_source=zero"
    assert page["urlref"] == "https://duckduckgo.com/"
    assert page["lang"] == "nl-NL"
    assert page["ua"] == UA
    assert page["cip"] == "127.0.0.1"
    app.stop()


def test_beside_another_exporter_and_merged_with_the_users_capture_list(
    standin: MatomoStandIn, running: list[App]
) -> None:
    app = _start(
        standin,
        OTEL_TRACES_EXPORTER="console,matomo",
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST="x-request-id",
    )
    running.append(app)
    assert app.get("/items/4", **{"X-Request-Id": "req-42", "Accept-Language": "sv-SE"}) == 200
    page = standin.wait_for_hits(2)[-1]
    assert page["lang"] == "sv-SE"
    output = app.stop()
    assert '"http.request.header.x_request_id"' in output, "the console exporter shows the user's own header"
    assert "req-42" in output


def test_header_capture_opt_out(standin: MatomoStandIn, running: list[App]) -> None:
    app = _start(standin, OTEL_EXPORTER_MATOMO_CAPTURE_HEADERS="false")
    running.append(app)
    assert app.get("/items/5", Referer="https://example.org/", **{"Accept-Language": "it-IT"}) == 200
    page = standin.wait_for_hits(2)[-1]
    assert page["action_name"] == "GET /items/{item_id}"
    assert "lang" not in page
    assert "urlref" not in page
    app.stop()


SPAN_APP = """
from opentelemetry import trace
with trace.get_tracer("app").start_as_current_span("checkout"):
    print("app ran")
"""


def _run_short_app(code: str = "print('app ran')", **env_vars: str) -> subprocess.CompletedProcess[str]:
    """``opentelemetry-instrument python -c code`` with only ``env_vars`` of the OTEL_ kind."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(env_vars)
    instrument = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    assert instrument is not None
    return subprocess.run(
        [instrument, sys.executable, "-c", code],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_invalid_configuration_names_the_variable(standin: MatomoStandIn) -> None:
    result = _run_short_app(
        OTEL_TRACES_EXPORTER="matomo",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_MATOMO_ENDPOINT=standin.url,
        OTEL_EXPORTER_MATOMO_SITE_ID="abc",
    )
    assert "OTEL_EXPORTER_MATOMO_SITE_ID" in result.stderr
    assert "positive whole number" in result.stderr
    assert "app ran" in result.stdout, "a configuration error must not stop the application"


@pytest.mark.parametrize("exporters", ["matomo,console", "console,matomo"])
def test_a_matomo_misconfiguration_is_one_line_and_the_other_exporter_keeps_exporting(
    standin: MatomoStandIn, exporters: str
) -> None:
    result = _run_short_app(
        OTEL_TRACES_EXPORTER=exporters,
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_MATOMO_ENDPOINT=standin.url,
        OTEL_EXPORTER_MATOMO_SITE_ID="abc",
        code=SPAN_APP,
    )
    assert result.stderr.splitlines() == [
        "otel-matomo: site_id (OTEL_EXPORTER_MATOMO_SITE_ID) is 'abc': expected a positive whole number, the "
        "Matomo idsite, e.g. 1. Matomo export is off; the application and the other exporters keep running."
    ]
    assert "app ran" in result.stdout
    assert '"name": "checkout"' in result.stdout, "the console exporter still prints the span"


def test_missing_default_metrics_exporter_is_explained(standin: MatomoStandIn) -> None:
    # opentelemetry-distro defaults metrics and logs to OTLP; without that package the SDK set-up fails and
    # the app runs untraced. Our module is imported first, so it can say why and how to fix it.
    result = _run_short_app(
        OTEL_TRACES_EXPORTER="matomo", OTEL_EXPORTER_MATOMO_ENDPOINT=standin.url, OTEL_EXPORTER_MATOMO_SITE_ID="1"
    )
    assert "OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none" in result.stderr
    assert "app ran" in result.stdout


# The cheap path: under opentelemetry-instrument, the processor and the request hook instead of the exporter in a
# BatchSpanProcessor and OpenTelemetry's header capture.

PROBE_APP = """
import json, os
import fastapi
from fastapi.testclient import TestClient
from opentelemetry import trace

from opentelemetry.sdk.trace import SpanProcessor

class SpanNames(SpanProcessor):
    # Added after the zero-code set-up, as an application's own processor would be: sees every span started.

    started = set()

    def on_start(self, span, parent_context=None):
        self.started.add(span.name)

trace.get_tracer_provider().add_span_processor(SpanNames())
app = fastapi.FastAPI()

@app.get("/items/{item_id}")
def item(item_id: int) -> dict:
    return {"item": item_id}

with TestClient(app, base_url="http://shop.example") as client:
    client.get("/items/3?utm_source=zero", headers={"Referer": "https://duckduckgo.com/", "Accept-Language": "nl-NL"})
processors = trace.get_tracer_provider()._active_span_processor._span_processors
print(json.dumps({
    "processors": [type(processor).__name__ for processor in processors if not isinstance(processor, SpanNames)],
    "started": sorted(SpanNames.started),
    "capture": os.environ.get("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"),
}))
"""

USER_DISTRO = '''
from opentelemetry.distro import OpenTelemetryDistro


def user_hook(span, scope):
    span.set_attribute("app.user_hook", scope["path"])


class UserDistro(OpenTelemetryDistro):
    """What a zero-code user writes to give an instrumentor a hook: opentelemetry-instrument has no variable."""

    def load_instrumentor(self, entry_point, **kwargs):
        if entry_point.name == "fastapi":
            kwargs["server_request_hook"] = user_hook
        super().load_instrumentor(entry_point, **kwargs)
'''


def _probe(standin: MatomoStandIn, **env_vars: str) -> tuple[dict[str, object], subprocess.CompletedProcess[str]]:
    result = _run_short_app(
        code=PROBE_APP,
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_MATOMO_ENDPOINT=standin.url,
        OTEL_EXPORTER_MATOMO_SITE_ID="1",
        OTEL_EXPORTER_MATOMO_TOKEN_AUTH=WRITE_TOKEN,
        OTEL_EXPORTER_MATOMO_VISITOR_ID_SECRET="zero-code-secret-0123456789",
        **env_vars,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(next(line for line in result.stdout.splitlines() if line.startswith('{"processors"'))), result


def _page(standin: MatomoStandIn) -> dict[str, str]:
    (page,) = standin.wait_for_hits(1)
    assert page["action_name"] == "GET /items/{item_id}"
    assert page["url"] == "http://shop.example/items/3?utm_source=zero"
    assert page["urlref"] == "https://duckduckgo.com/"
    assert page["lang"] == "nl-NL"
    return page


def test_zero_code_runs_the_processor_and_the_request_hook(standin: MatomoStandIn) -> None:
    probe, result = _probe(standin, OTEL_TRACES_EXPORTER="console,matomo")
    assert probe["processors"] == ["BatchSpanProcessor", "MatomoSpanProcessor"]
    assert probe["capture"] is None
    assert "GET /items/{item_id} http send" in probe["started"], "the console exporter gets every span"
    _page(standin)  # the headers came through the hook: nothing captured them
    printed = _printed_server_span(result.stdout)
    assert not [key for key in printed["attributes"] if key.startswith("http.request.header.")]
    assert printed["attributes"]["http.route"] == "/items/{item_id}", "the console exporter still exports"
    assert "otel-matomo" not in result.stderr, result.stderr


def test_as_the_only_exporter_the_spans_no_exporter_reads_are_not_recorded(standin: MatomoStandIn) -> None:
    """FastAPI's http send/receive spans cost the application about what otel-matomo costs it (benchmarks/RESULTS.md,
    issue 18); with Matomo the provider's only exporter nothing would read them. The hit is the same."""
    probe, _ = _probe(standin, OTEL_TRACES_EXPORTER="matomo")
    assert probe["processors"] == ["MatomoSpanProcessor"]
    assert probe["started"] == ["GET /items/{item_id}"]
    page = _page(standin)
    assert "pf_srv" in page


def test_the_header_capture_opt_out_turns_the_hook_off_too(standin: MatomoStandIn) -> None:
    probe, _ = _probe(standin, OTEL_TRACES_EXPORTER="matomo", OTEL_EXPORTER_MATOMO_CAPTURE_HEADERS="false")
    assert probe["processors"] == ["MatomoSpanProcessor"]
    assert probe["capture"] is None
    (page,) = standin.wait_for_hits(1)
    assert "urlref" not in page
    assert "lang" not in page


def test_a_users_own_request_hook_still_runs(standin: MatomoStandIn, tmp_path: Path) -> None:
    (tmp_path / "userdistro.py").write_text(USER_DISTRO)
    info = tmp_path / "userdistro-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: userdistro\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[opentelemetry_distro]\nuser = userdistro:UserDistro\n")
    probe, result = _probe(
        standin, OTEL_TRACES_EXPORTER="matomo,console", OTEL_PYTHON_DISTRO="user", PYTHONPATH=str(tmp_path)
    )
    assert probe["processors"] == ["MatomoSpanProcessor", "BatchSpanProcessor"]
    _page(standin)
    assert _printed_server_span(result.stdout)["attributes"]["app.user_hook"] == "/items/3"


def _printed_server_span(text: str) -> dict[str, Any]:
    """The server span the console exporter printed (JSON objects one after another, then the probe's line)."""
    decoder = json.JSONDecoder()
    index = text.find("{")
    while index != -1:
        span, end = decoder.raw_decode(text, index)
        if span.get("kind") == "SpanKind.SERVER":
            return dict(span)
        index = text.find("{", end)
    raise AssertionError(f"no server span printed: {text}")


def test_dry_run_prints_one_line_per_hit_with_no_logging_set_up(standin: MatomoStandIn, running: list[App]) -> None:
    """Under opentelemetry-instrument and uvicorn nothing shows an INFO record of ours, so a dry run showed nothing
    (first-hour issue, row 4): each hit is now one line on standard error, and nothing reaches Matomo."""
    app = _start(standin, OTEL_EXPORTER_MATOMO_DRY_RUN="true")
    running.append(app)
    assert app.get("/items/1") == 200
    assert app.get("/items/2?color=red") == 200
    output = app.stop()
    prefix = "otel-matomo: dry run, not sent: "
    urls = [json.loads(line.removeprefix(prefix))["url"] for line in output.splitlines() if line.startswith(prefix)]
    pages = [url.rpartition("/")[2] for url in urls if "healthz-probe" not in url]  # the start-up probe aside
    assert pages == ["1", "2?color=red"], output
    assert standin.received == []

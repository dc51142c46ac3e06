"""Trace sampling at 10 % while Matomo sees 100 % of the requests, in code and with ``opentelemetry-instrument``.

In code: ``TracerProvider(sampler=parentbased_traceidratio("0.1"))`` with ``MatomoSpanProcessor`` beside a
``BatchSpanProcessor`` into an in-memory exporter. Zero code: ``OTEL_EXPORTER_MATOMO_PROCESSOR=true`` with the
SDK's (or our) ratio sampler and the console exporter (alone, or beside ``matomo``), whose printed spans are
counted. 1000 real requests each:
1000 hits, and about 100 traces (binomial(1000, 0.1): mean 100, sd 9.5; the bounds 50..160 are over 5 sd wide).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import fastapi_app
import httpx
import pytest
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_matomo import REQUEST_HEADERS, MatomoSpanProcessor, Settings
from otel_matomo.sampling import parentbased_traceidratio
from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn
from tests.servers import free_port, serve_asgi, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REQUESTS = 1000
TRACES = range(50, 161)
SECRET = "sampling-visitor-secret-0123456789"


def _browse(base_url: str, count: int = REQUESTS) -> None:
    with httpx.Client(base_url=base_url, headers={"Accept-Language": "en"}) as client:
        for n in range(count):
            assert client.get(f"/items/{n % 100}?n={n}").status_code == 200


def _request_numbers(hits: list[dict[str, str]]) -> list[int]:
    return sorted(int(hit["url"].rpartition("?n=")[2]) for hit in hits if "?n=" in hit["url"])


def test_in_code_a_ratio_sampler_keeps_every_request_for_matomo(standin: MatomoStandIn) -> None:
    memory = InMemorySpanExporter()
    processor = MatomoSpanProcessor(
        settings=Settings.from_env(
            {},
            endpoint=standin.url,
            site_id=1,
            token_auth=WRITE_TOKEN,
            visitor_id_secret=SECRET,
            schedule_delay=timedelta(milliseconds=100),
        )
    )
    provider = TracerProvider(sampler=parentbased_traceidratio("0.1"), shutdown_on_exit=False)
    provider.add_span_processor(processor)
    provider.add_span_processor(BatchSpanProcessor(memory, schedule_delay_millis=100))
    app = fastapi_app.create_app()
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, http_capture_headers_server_request=list(REQUEST_HEADERS)
    )
    try:
        with serve_asgi(app) as base_url:
            _browse(base_url)
            hits = standin.wait_for_hits(REQUESTS, timeout=30)
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()
    time.sleep(0.3)
    assert len(standin.tracked) == REQUESTS, "no hit twice"
    assert _request_numbers(hits) == list(range(REQUESTS))
    assert all(hit["lang"] == "en" for hit in hits), "unsampled spans carry the captured headers too"
    spans = memory.get_finished_spans()
    servers = [span for span in spans if span.kind is SpanKind.SERVER]
    traces = {span.context.trace_id for span in spans}
    print(f"\nin code, parentbased_traceidratio(0.1): {REQUESTS} requests -> {len(hits)} hits, {len(traces)} traces")
    assert len(traces) in TRACES
    assert len(servers) == len(traces), "one server span per sampled trace"
    assert all(span.context.trace_flags.sampled for span in spans), "only sampled spans reach the exporter"
    children = [span for span in spans if span.kind is not SpanKind.SERVER]
    assert {span.context.trace_id for span in children} <= traces, "children of unsampled requests are dropped"
    stats = processor.stats
    assert stats.requests == stats.tracked == REQUESTS


# Zero code.


@dataclass
class App:
    process: subprocess.Popen[bytes]
    base_url: str
    stdout: Path
    stderr: Path

    def stop(self) -> tuple[str, str]:
        """SIGTERM, as an orchestrator does: the SDK flushes its exporters at exit."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        return self.stdout.read_text(), self.stderr.read_text()


def _start(standin: MatomoStandIn, workdir: Path, **extra_env: str) -> App:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_BSP_SCHEDULE_DELAY="100",
        OTEL_EXPORTER_MATOMO_ENDPOINT=standin.url,
        OTEL_EXPORTER_MATOMO_SITE_ID="1",
        OTEL_EXPORTER_MATOMO_TOKEN_AUTH=WRITE_TOKEN,
        OTEL_EXPORTER_MATOMO_VISITOR_ID_SECRET=SECRET,
        OTEL_EXPORTER_MATOMO_SCHEDULE_DELAY="100",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env)
    instrument = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    assert instrument is not None, "opentelemetry-instrument is not installed beside this Python"
    stdout, stderr = workdir / "stdout.txt", workdir / "stderr.txt"
    with stdout.open("wb") as out, stderr.open("wb") as err:  # files: a pipe would fill up and stall the exporter
        process = subprocess.Popen(
            [instrument, sys.executable, "-m", "uvicorn", "fastapi_app:app", "--port", str(port)],
            cwd=EXAMPLES,
            env=env,
            stdout=out,
            stderr=err,
        )
    app = App(process, f"http://127.0.0.1:{port}", stdout, stderr)

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the app exited: {stderr.read_text()}")
        try:
            httpx.get(app.base_url + "/healthz", timeout=0.5)  # excluded from Matomo by default
        except httpx.HTTPError:
            return False
        return True

    wait_until(answers, "the instrumented app did not start", timeout=30)
    return app


@pytest.fixture
def running() -> Iterator[list[App]]:
    apps: list[App] = []
    yield apps
    for app in apps:
        if app.process.poll() is None:
            app.process.kill()
            app.process.wait(timeout=10)


def _printed_spans(text: str) -> list[dict[str, Any]]:
    """The JSON objects ``ConsoleSpanExporter`` printed, one after another."""
    decoder = json.JSONDecoder()
    spans, index = [], text.find("{")
    while index != -1:
        span, end = decoder.raw_decode(text, index)
        spans.append(span)
        index = text.find("{", end)
    return spans


def _item_traces(spans: list[dict[str, Any]]) -> set[str]:
    """Trace ids of the printed server spans of ``/items`` requests (not the start-up probes)."""
    return {
        span["context"]["trace_id"]
        for span in spans
        if span["kind"] == "SpanKind.SERVER" and any("/items/" in str(value) for value in span["attributes"].values())
    }


@pytest.mark.parametrize(
    ("sampler", "exporters"),
    [
        ("parentbased_traceidratio", "console"),
        ("matomo_parentbased_traceidratio", "console"),
        ("parentbased_traceidratio", "matomo,console"),
    ],
)
def test_zero_code_every_request_reaches_matomo_and_a_tenth_the_trace_exporter(
    standin: MatomoStandIn, running: list[App], tmp_path: Path, sampler: str, exporters: str
) -> None:
    app = _start(
        standin,
        tmp_path,
        OTEL_TRACES_EXPORTER=exporters,
        OTEL_EXPORTER_MATOMO_PROCESSOR="true",
        OTEL_TRACES_SAMPLER=sampler,
        OTEL_TRACES_SAMPLER_ARG="0.1",
    )
    running.append(app)
    _browse(app.base_url)
    hits = standin.wait_for_hits(REQUESTS, timeout=30)
    stdout, stderr = app.stop()
    assert len(standin.tracked) == REQUESTS, "no hit twice, and the probes are excluded"
    assert _request_numbers(hits) == list(range(REQUESTS))
    assert all(hit["lang"] == "en" for hit in hits), "the request headers reach the processor"
    traces = _item_traces(_printed_spans(stdout))
    print(f"\nzero code, {sampler}=0.1: {REQUESTS} requests -> {len(hits)} hits, {len(traces)} traces printed")
    assert len(traces) in TRACES, stderr
    assert "Traceback" not in stderr, stderr


@pytest.mark.parametrize("sampler", ["parentbased_traceidratio", "matomo_parentbased_traceidratio"])
def test_zero_code_without_the_switch_matomo_gets_what_the_sampler_records(
    standin: MatomoStandIn, running: list[App], tmp_path: Path, sampler: str
) -> None:
    # OTEL_TRACES_EXPORTER=matomo alone now runs the processor too, with the sampler untouched: a plain ratio
    # sampler gives Matomo the sampled requests (as the exporter did), an AnalyticsSampler every request.
    app = _start(
        standin,
        tmp_path,
        OTEL_TRACES_EXPORTER="matomo,console",
        OTEL_TRACES_SAMPLER=sampler,
        OTEL_TRACES_SAMPLER_ARG="0.1",
    )
    running.append(app)
    _browse(app.base_url)
    if sampler.startswith("matomo_"):
        standin.wait_for_hits(REQUESTS, timeout=30)
    stdout, stderr = app.stop()
    traces = _item_traces(_printed_spans(stdout))
    numbers = _request_numbers(standin.tracked)
    print(f"\nzero code, {sampler}=0.1, no switch: {REQUESTS} requests -> {len(numbers)} hits, {len(traces)} traces")
    assert len(traces) in TRACES, stderr
    assert len(numbers) == len(set(numbers)), "no hit twice"
    assert len(numbers) == (REQUESTS if sampler.startswith("matomo_") else len(traces))
    assert "Traceback" not in stderr, stderr


def test_zero_code_processor_switch_beside_the_matomo_exporter_sends_each_request_once(
    standin: MatomoStandIn, running: list[App], tmp_path: Path
) -> None:
    # The switch used to be refused beside OTEL_TRACES_EXPORTER=matomo; the processor now takes the place of the
    # exporter's BatchSpanProcessor, so the two together are one processor.
    app = _start(standin, tmp_path, OTEL_TRACES_EXPORTER="matomo", OTEL_EXPORTER_MATOMO_PROCESSOR="true")
    running.append(app)
    _browse(app.base_url, 30)
    standin.wait_for_hits(30, timeout=15)
    time.sleep(1.0)  # a second copy would have come by now (both paths send within 100 ms)
    assert len(standin.tracked) == 30
    _, stderr = app.stop()
    assert len(standin.tracked) == 30, "nothing more at shutdown either"
    assert _request_numbers(standin.tracked) == list(range(30))
    assert "otel-matomo" not in stderr, stderr

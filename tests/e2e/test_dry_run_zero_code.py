"""Dry run shows what would be sent where a new user looks, with no logging set up (the first-hour issue, row 4).

Under ``opentelemetry-instrument`` and uvicorn nothing configures logging for our loggers, so a hit logged at INFO
was shown nowhere; each hit is now one line on standard error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.servers import free_port, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PREFIX = "otel-matomo: dry run, not sent: "


def test_zero_code_dry_run_prints_one_line_per_hit_on_stderr() -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(
        OTEL_TRACES_EXPORTER="matomo",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_EXPORTER_MATOMO_DRY_RUN="true",
        OTEL_EXPORTER_MATOMO_SCHEDULE_DELAY="50",
        PYTHONUNBUFFERED="1",
    )
    instrument = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    assert instrument is not None
    process = subprocess.Popen(
        [instrument, sys.executable, "-m", "uvicorn", "fastapi_app:app", "--port", str(port), "--log-level", "warning"],
        cwd=EXAMPLES,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            assert process.poll() is None, "the app exited"
            try:
                httpx.get(base_url + "/", timeout=0.5)
            except httpx.HTTPError:
                return False
            return True

        wait_until(answers, "the instrumented app did not start")
        for path in ("/items/1", "/items/2?color=red"):
            httpx.get(base_url + path, headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"})
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    lines = [line for line in stderr.splitlines() if line.startswith(PREFIX)]
    urls = [json.loads(line.removeprefix(PREFIX))["url"] for line in lines]
    assert any(url.endswith("/items/1") for url in urls), stderr
    assert any(url.endswith("/items/2?color=red") for url in urls), stderr
    assert len(lines) == len(urls) >= 3  # the probe "/" too: one line per hit, nothing merged or split
    assert PREFIX not in stdout

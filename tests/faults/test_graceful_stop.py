"""Graceful stop: the signal a deploy sends (SIGTERM from Docker, Kubernetes, systemd) delivers every hit.

Zero code, as users run it: ``opentelemetry-instrument <server>`` with environment variables only. Before the
exit hooks of ``otel_matomo._stop``, uvicorn (which dies of the SIGTERM it re-raises after its graceful shutdown)
and granian (whose workers end with ``os._exit``) lost the whole last batch, nothing logged. In code
(``in_code_app.py``, no lifespan): each ``uvicorn --workers N`` worker imports the app while uvicorn's own
SIGTERM handler is in place, and died of the re-raised signal with its last batch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.faults.conftest import FaultRow
from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn
from tests.servers import free_port, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
IN_CODE = "uvicorn --workers 2, in code, no lifespan"
BIN = Path(sys.executable).parent
REQUESTS = 4


def _command(server: str, port: int) -> list[str]:
    python = [sys.executable, "-m"]
    return {
        "uvicorn": [*python, "uvicorn", "fastapi_app:app", "--port", str(port)],
        "gunicorn": [str(BIN / "gunicorn"), "-w", "2", "-b", f"127.0.0.1:{port}", "flask_app:app"],
        "granian": [str(BIN / "granian"), "--interface", "asgi", "--port", str(port), "fastapi_app:app"],
        "django runserver --noreload": [*python, "django", "runserver", "--noreload", f"127.0.0.1:{port}"],
        "django runserver, Ctrl-C": [*python, "django", "runserver", f"127.0.0.1:{port}"],
        IN_CODE: [
            *python, "uvicorn", "in_code_app:app", "--workers", "2", "--port", str(port),
            "--app-dir", str(Path(__file__).parent),
        ],
    }[server]  # fmt: skip


def _serve_and_stop(standin: MatomoStandIn, server: str, delivery: str) -> tuple[int, str]:
    """Start the app, make the probe request and ``REQUESTS`` page views, stop it at once; return (exit, output)."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(
        OTEL_TRACES_EXPORTER="none" if delivery == "processor" else "matomo",
        OTEL_EXPORTER_MATOMO_PROCESSOR="true" if delivery == "processor" else "false",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_MATOMO_ENDPOINT=standin.url,
        OTEL_EXPORTER_MATOMO_SITE_ID="1",
        OTEL_EXPORTER_MATOMO_TOKEN_AUTH=WRITE_TOKEN,
        OTEL_EXPORTER_MATOMO_VISITOR_ID_SECRET="graceful-stop-secret-0123456789",
        DJANGO_SETTINGS_MODULE="django_app",
        PYTHONUNBUFFERED="1",
        IN_CODE_DELIVERY=delivery,
    )
    zero_code = [] if server == IN_CODE else [str(BIN / "opentelemetry-instrument")]
    # As a terminal starts a server, Ctrl-C's SIGINT at its default action. A test run started in the background
    # of a non-interactive shell (`nohup ... &`) ignores SIGINT, and an ignored signal stays ignored through exec:
    # the server would not even see the Ctrl-C. A handled one is reset to the default in the new program.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            [*zero_code, *_command(server, port)],
            cwd=EXAMPLES,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    base = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert process.poll() is None, f"the app exited: {process.communicate()[0]}"
        try:
            # A worker of ``--workers N`` answers what the parent's socket queued while it started.
            httpx.get(base + "/probe-not-a-route", timeout=httpx.Timeout(10.0, connect=0.5))
        except httpx.HTTPError:
            return False
        return True

    try:
        wait_until(answers, f"{server} did not start", timeout=30)
        for _ in range(REQUESTS):
            assert httpx.get(base + "/", headers={"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"}).status_code == 200
        # Ctrl-C in a terminal signals the whole process group; a deploy signals the server's process.
        if server.endswith("Ctrl-C"):
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=40)
        except subprocess.TimeoutExpired as timeout:
            # What each process of the group waits in: a server that ignores the signal sleeps on (hrtimer_nanosleep
            # for Django's reloader), one that handles it waits for its flush.
            raise AssertionError(
                f"{server} still runs 40 s after the signal; its processes:\n{_processes(process.pid)}\n"
                f"output:\n{timeout.output}"
            ) from None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, output


SERVERS = ["uvicorn", "gunicorn", "granian", IN_CODE]


def _processes(group: int) -> str:
    """``ps`` of the process group: state and the kernel function each process waits in."""
    listing = subprocess.run(
        ["ps", "-o", "pid,ppid,stat,wchan:32,etimes,nlwp,cmd", "-g", str(group)],
        capture_output=True,
        text=True,
        check=False,
    )
    return listing.stdout or listing.stderr


@pytest.mark.parametrize(
    ("server", "delivery"),
    [
        *((server, delivery) for server in SERVERS for delivery in ("exporter", "processor")),
        ("django runserver --noreload", "exporter"),
        ("django runserver, Ctrl-C", "exporter"),
    ],
)
def test_stopping_the_server_delivers_every_hit(
    standin: MatomoStandIn, faults: list[FaultRow], server: str, delivery: str
) -> None:
    code, output = _serve_and_stop(standin, server, delivery)
    offered = REQUESTS + 1  # the page views and the start-up probe (a 404)
    ids = [hit["rand"] for hit in standin.tracked]
    delivered = len(set(ids))
    faults.append(
        FaultRow(
            f"{server}: SIGTERM, {delivery}" if "Ctrl-C" not in server else f"{server}, {delivery}",
            offered,
            delivered,
            duplicated=len(ids) - delivered,
            lost={"lost": offered - delivered},
        )
    )
    assert delivered == offered, f"{server} (exit {code}) delivered {delivered} of {offered} hits:\n{output[-3000:]}"
    assert len(ids) == delivered, "no hit twice"
    assert [hit["url"].rpartition("/")[2] for hit in standin.tracked].count("") == REQUESTS, "the page views"

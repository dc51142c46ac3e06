"""A real fastify 5 app, instrumented by ``@fastify/otel`` and ``@opentelemetry/sdk-node``, exports OTLP/HTTP to a
real ``otel-matomo gateway`` process on loopback; real HTTP requests with browser headers drive it, and the exact
hits are checked at the matomo.php stand-in.

Everything is real and separate: the Node.js process (``tests/e2e/fastify/app.js``, npm packages installed from
the lock file when ``node_modules`` is missing), the gateway started by its command line with its environment
variables (bearer token, service.name -> site mapping), and its graceful stop on SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from otel_matomo._visitor import visitor_id
from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn
from tests.servers import free_port

APP_DIR = Path(__file__).parent / "fastify"
SECRET = "fastify-e2e-visitor-secret"
BEARER = "fastify-e2e-bearer-token-0123456789"
SITE = "2"
DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
MOBILE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36"
)


@pytest.fixture(scope="module")
def node_app() -> Path:
    """The fastify app with its npm packages, installed exactly from package-lock.json when missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("the fastify end-to-end test needs Node.js 20+ and npm on the PATH")
    if not (APP_DIR / "node_modules").is_dir():
        # --ignore-scripts: nothing the app needs builds at install time, and no package runs code here.
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=APP_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}\n{installed.stderr}"
    return APP_DIR


def _wait_for_port(port: int, process: subprocess.Popen[str], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}:\n{process.communicate()[1]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


def _stop(process: subprocess.Popen[str], timeout: float = 15.0) -> tuple[int, str]:
    """SIGTERM, as a service manager would; the exit code and stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
        raise AssertionError(f"pid {process.pid} did not stop within {timeout} s after SIGTERM:\n{stderr}") from None
    return process.returncode, stderr


@pytest.fixture
def gateway(standin: MatomoStandIn) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """``otel-matomo gateway`` as a process, configured only by its environment."""
    port = free_port()
    env = {
        **os.environ,
        "OTEL_EXPORTER_MATOMO_ENDPOINT": standin.url,
        "OTEL_EXPORTER_MATOMO_TOKEN_AUTH": WRITE_TOKEN,
        "OTEL_EXPORTER_MATOMO_VISITOR_ID_SECRET": SECRET,
        "OTEL_MATOMO_GATEWAY_PORT": str(port),
        "OTEL_MATOMO_GATEWAY_TOKEN": BEARER,
        "OTEL_MATOMO_GATEWAY_SITES": f"fastify-shop={SITE}",
    }
    env.pop("OTEL_EXPORTER_MATOMO_SITE_ID", None)  # unmapped services are rejected
    process = subprocess.Popen(
        [sys.executable, "-m", "otel_matomo", "gateway"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_port(port, process, "the gateway")
        yield port, process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture(params=["json", "protobuf-gzip"])
def fastify(
    request: pytest.FixtureRequest, node_app: Path, gateway: tuple[int, subprocess.Popen[str]]
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The shop on a free port, exporting to the gateway: OTLP/JSON as by default, or protobuf with gzip."""
    gateway_port, _ = gateway
    port = free_port()
    encoding, _, compression = str(request.param).partition("-")
    env = {
        **os.environ,
        "PORT": str(port),
        "OTLP_ENCODING": encoding,
        "OTEL_SERVICE_NAME": "fastify-shop",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{gateway_port}/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"Authorization=Bearer%20{BEARER}",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": compression or "none",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    process = subprocess.Popen(
        ["node", "app.js"], cwd=node_app, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for_port(port, process, "the fastify app")
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _browse(base_url: str) -> None:
    alice = {
        "Host": "shop.fastify.test",
        "User-Agent": DESKTOP,
        "Accept-Language": "en-GB,en;q=0.9",
        "X-Forwarded-For": "198.51.100.20",
    }
    bob = {
        "Host": "shop.fastify.test:8080",
        "User-Agent": MOBILE,
        "Accept-Language": "de-DE,de;q=0.9",
        "X-Forwarded-For": "203.0.113.66",
    }
    steps: list[tuple[str, str, dict[str, str]]] = [
        (
            "GET",
            "/items/7?utm_source=newsletter&utm_campaign=autumn",
            {**alice, "Referer": "https://www.google.com/search?q=boots"},
        ),
        ("POST", "/api/cart", {**alice, "Referer": "http://shop.fastify.test/items/7"}),
        ("GET", "/items/8?q=red%20boots", {**alice, "Referer": "http://shop.fastify.test/"}),
        ("GET", "/items/500?color=red", {**alice, "Referer": "http://shop.fastify.test/items/7"}),
        ("GET", "/old-home", bob),
        ("GET", "/boom", bob),
    ]
    with httpx.Client(base_url=base_url) as client:
        for method, path, headers in steps:
            client.request(method, path, headers=headers)
            time.sleep(0.002)  # distinct start times keep the expected order unambiguous


def test_fastify_requests_become_the_exact_hits(
    fastify: tuple[str, subprocess.Popen[str]],
    gateway: tuple[int, subprocess.Popen[str]],
    standin: MatomoStandIn,
) -> None:
    base_url, node = fastify
    started = int(time.time())
    _browse(base_url)
    node_exit, node_errors = _stop(node)  # the Node SDK flushes its last batch on shutdown
    hits = standin.wait_for_hits(6, timeout=20)
    finished = int(time.time())

    assert node_exit == 0, node_errors
    alice_id = visitor_id(SECRET.encode(), "198.51.100.20", DESKTOP)
    bob_id = visitor_id(SECRET.encode(), "203.0.113.66", MOBILE)
    common = {"idsite": SITE, "rec": "1", "apiv": "1"}
    alice = {**common, "cid": alice_id, "cip": "198.51.100.20", "ua": DESKTOP, "lang": "en-GB,en;q=0.9"}
    bob = {**common, "cid": bob_id, "cip": "203.0.113.66", "ua": MOBILE, "lang": "de-DE,de;q=0.9"}
    expected = [
        {
            **alice,
            "action_name": "GET /items/:id",
            "url": "http://shop.fastify.test/items/7?utm_source=newsletter&utm_campaign=autumn",
            "urlref": "https://www.google.com/search?q=boots",
        },
        {
            **alice,
            "action_name": "POST /api/cart",
            "url": "http://shop.fastify.test/api/cart",
            "urlref": "http://shop.fastify.test/items/7",
        },
        {
            **alice,
            "action_name": "GET /items/:id",
            # Node's instrumentation re-serialises the query (URLSearchParams): %20 arrives as '+'.
            "url": "http://shop.fastify.test/items/8?q=red+boots",
            "urlref": "http://shop.fastify.test/",
        },
        {
            **alice,
            "action_name": "404/URL = %2Fitems%2F500%3Fcolor%3Dred/From = http%3A%2F%2Fshop.fastify.test%2Fitems%2F7",
            "url": "http://shop.fastify.test/items/500?color=red",
            "urlref": "http://shop.fastify.test/items/7",
        },
        {**bob, "action_name": "404/URL = %2Fold-home", "url": "http://shop.fastify.test:8080/old-home"},
        {**bob, "action_name": "500/URL = %2Fboom", "url": "http://shop.fastify.test:8080/boom"},
    ]
    volatile = {"cdt", "pf_srv", "rand"}
    assert [{k: v for k, v in hit.items() if k not in volatile} for hit in hits] == expected
    for hit in hits:
        assert started <= int(hit["cdt"]) <= finished
        assert 0 <= int(hit["pf_srv"]) < 5000
    assert len({hit["rand"] for hit in hits}) == 6
    assert all(received.body["token_auth"] == WRITE_TOKEN for received in standin.received)

    _, gateway_process = gateway
    exit_code, log = _stop(gateway_process)
    assert exit_code == 0, log
    assert f"gateway (site {SITE}) stopped: 6 requests, 6 hits tracked by Matomo, 0 invalid; not sent: none" in log

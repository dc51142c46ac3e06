"""Helpers for ``test_frameworks.py``: the visitors, their browsing, the hits it must produce, and servers run as
subprocesses (gunicorn, uvicorn with workers, granian, ``opentelemetry-instrument``), started all at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from otel_matomo._visitor import visitor_id
from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
BIN = Path(sys.executable).parent

SECRET = "frameworks-visitor-secret-0123456789"
DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
MOBILE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36"
)
ALICE_IP = "198.51.100.20"
BOB_IP = "203.0.113.66"
ALICE = {
    "Host": "shop.example",
    "User-Agent": DESKTOP,
    "Accept-Language": "en-GB,en;q=0.9",
    "X-Forwarded-For": ALICE_IP,
}
BOB = {
    "Host": "shop.example:8080",
    "User-Agent": MOBILE,
    "Accept-Language": "de-DE,de;q=0.9",
    "X-Forwarded-For": BOB_IP,
}
VOLATILE = frozenset({"cdt", "pf_srv", "rand"})
READY_PATH = "/healthz"
"""Excluded by the default policy, so readiness probes produce no hit."""

STEPS: list[tuple[str, str, dict[str, str]]] = [
    (
        "GET",
        "/items/7?utm_source=newsletter&utm_campaign=autumn",
        {**ALICE, "Referer": "https://www.google.com/search?q=boots"},
    ),
    ("POST", "/api/cart", {**ALICE, "Referer": "http://shop.example/items/7"}),
    ("GET", "/items/500?color=red", {**ALICE, "Referer": "http://shop.example/items/7"}),
    ("GET", "/old-home", BOB),
    ("GET", "/boom", BOB),
]
"""A page with a route parameter, a JSON API call, a 404, a redirect and an unhandled exception."""


def fresh_connections() -> httpx.Client:
    """A client opening one connection per request, so that multi-worker servers spread the requests."""
    return httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=10)


def browse(base_url: str) -> list[httpx.Response]:
    """The two visitors' requests, in order, each on a new connection."""
    responses = []
    with fresh_connections() as client:
        for method, path, headers in STEPS:
            responses.append(client.request(method, base_url + path, headers=headers))
            time.sleep(0.002)  # distinct start times keep the expected order unambiguous
    return responses


def visitor(ip: str, user_agent: str, language: str) -> dict[str, str]:
    """The parameters every hit of one visitor carries (with a token, so ``cip`` is sent)."""
    return {
        "rec": "1",
        "apiv": "1",
        "cid": visitor_id(SECRET.encode(), ip, user_agent),
        "cip": ip,
        "ua": user_agent,
        "lang": language,
    }


def expected_hits(site: int, item_title: str) -> list[dict[str, str]]:
    """The hits :data:`STEPS` must produce, without :data:`VOLATILE` parameters."""
    alice = {"idsite": str(site), **visitor(ALICE_IP, DESKTOP, "en-GB,en;q=0.9")}
    bob = {"idsite": str(site), **visitor(BOB_IP, MOBILE, "de-DE,de;q=0.9")}
    return [
        {
            **alice,
            "action_name": item_title,
            "url": "http://shop.example/items/7?utm_source=newsletter&utm_campaign=autumn",
            "urlref": "https://www.google.com/search?q=boots",
        },
        {
            **alice,
            "action_name": "POST /api/cart",
            "url": "http://shop.example/api/cart",
            "urlref": "http://shop.example/items/7",
        },
        {
            **alice,
            "action_name": "404/URL = %2Fitems%2F500%3Fcolor%3Dred/From = http%3A%2F%2Fshop.example%2Fitems%2F7",
            "url": "http://shop.example/items/500?color=red",
            "urlref": "http://shop.example/items/7",
        },
        {**bob, "action_name": "GET /old-home", "url": "http://shop.example:8080/old-home"},
        {**bob, "action_name": "500/URL = %2Fboom", "url": "http://shop.example:8080/boom"},
    ]


def stable(hit: dict[str, str]) -> dict[str, str]:
    """A hit without the parameters that differ on every run."""
    return {key: value for key, value in hit.items() if key not in VOLATILE}


def in_order(hits: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Hits in a canonical order, for servers whose workers export independently."""
    return sorted(hits, key=lambda hit: json.dumps(hit, sort_keys=True))


@dataclass
class HitLog:
    """The stand-in's hits per site, each taken once, so that tests sharing the stand-in see only their own."""

    standin: MatomoStandIn
    _taken: dict[str, int] = field(default_factory=dict)

    def of(self, site: int) -> list[dict[str, str]]:
        with self.standin._lock:
            return [hit for hit in self.standin.tracked if hit.get("idsite") == str(site)]

    def take(self, site: int, count: int, timeout: float = 15.0, settle: float = 0.0) -> list[dict[str, str]]:
        """Wait for exactly ``count`` new hits of ``site``; fail on fewer (after ``timeout``) or more.

        ``settle``: then wait that long for hits that should not come (to show that a request made none).
        """
        start = self._taken.get(str(site), 0)
        deadline = time.monotonic() + timeout
        while len(self.of(site)) - start < count and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(settle)
        hits = self.of(site)[start:]
        self._taken[str(site)] = start + len(hits)
        assert len(hits) == count, f"site {site}: expected {count} new hits, got {len(hits)}: {hits}"
        return hits

    def pending(self, site: int) -> int:
        """Hits of ``site`` that arrived and were not taken yet."""
        return len(self.of(site)) - self._taken.get(str(site), 0)


@dataclass
class Server:
    """A server process on loopback; its output goes to a log file."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 45.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.output()}")
            try:
                httpx.get(self.base_url + READY_PATH, timeout=1)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            return self.base_url
        raise AssertionError(f"{self.name} did not answer within {timeout} s:\n{self.output()}")

    def terminate(self) -> None:
        """SIGTERM without waiting (to stop several servers at once)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (a graceful shutdown for gunicorn, uvicorn and granian) and wait; SIGKILL if it hangs."""
        self.terminate()
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode


def tool(name: str) -> str | None:
    """An executable installed beside this Python (gunicorn, granian, opentelemetry-instrument)."""
    return shutil.which(name, path=str(BIN))


def server_env(standin: MatomoStandIn, site: int, **extra: str) -> dict[str, str]:
    """The environment of a deployment: the exporter configured by ``OTEL_EXPORTER_MATOMO_*`` only."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "DJANGO_"))}
    env.update(
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_EXPORTER_MATOMO_ENDPOINT=standin.url,
        OTEL_EXPORTER_MATOMO_SITE_ID=str(site),
        OTEL_EXPORTER_MATOMO_TOKEN_AUTH=WRITE_TOKEN,
        OTEL_EXPORTER_MATOMO_VISITOR_ID_SECRET=SECRET,
        PYTHONPATH=os.pathsep.join([str(REPO), str(EXAMPLES)]),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def launch(name: str, argv: list[str], env: dict[str, str], port: int, cwd: Path, logs: Path) -> Server:
    """Start a server without waiting for it (so that several boot in parallel)."""
    log = logs / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT)
    return Server(name, process, f"http://127.0.0.1:{port}", log)


@contextlib.contextmanager
def serve_asgi_under_root_path(app: Any, root_path: str) -> Iterator[str]:
    """uvicorn ``--root-path``: the app is served behind a proxy that strips ``root_path`` from the URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off", root_path=root_path)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

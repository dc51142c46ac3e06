"""The real ``otel-matomo gateway`` as a subprocess on loopback, a valid request to measure it by, and the timing
of one attack; every process started here is killed by its PID however the test ends."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import httpx

from tests.attacks.conftest import AttackRow
from tests.factories import otlp_payload, otlp_server_span
from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn, _params
from tests.servers import free_port

BIN = Path(sys.executable).parent
BEARER = "attack-suite-bearer-0123456789abcdef"
START_TIMEOUT_S = 30.0
ATTACK_TIMEOUT_S = 15.0
"""Longest an attack may take to be answered: far above linear time for 16 MiB, far below what quadratic took."""
LINEAR_TIME_S = 5.0
"""Longest decoding (gzip included) of a body within the 16 MiB limit may take: linear time, with room for a slow
CI machine (quadratic gzip took minutes, and decoding 7.5 M spans 45 s)."""
PROBE_TIMEOUT_S = 5.0
DELIVERY_TIMEOUT_S = 5.0
JSON = {"content-type": "application/json"}
_probe_numbers = count(1)


@dataclass(frozen=True)
class Probe:
    """A valid request sent during an attack: answered in ``latency_s`` (``None``: not at all), delivered?"""

    delivered: bool
    latency_s: float | None


def base_environment(standin: MatomoStandIn, **variables: str) -> dict[str, str]:
    """This process's environment without any OTEL_/MATOMO setting, pointed at the stand-in."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "MATOMO"))}
    env.update(
        OTEL_EXPORTER_MATOMO_ENDPOINT=standin.url,
        OTEL_EXPORTER_MATOMO_SITE_ID="1",
        OTEL_EXPORTER_MATOMO_TOKEN_AUTH=WRITE_TOKEN,
        OTEL_EXPORTER_MATOMO_VISITOR_ID_SECRET="attack-suite-secret-0123456789",
        OTEL_EXPORTER_MATOMO_SCHEDULE_DELAY="100",
    )
    env.update(variables)
    return env


def items_received(standin: MatomoStandIn) -> list[dict[str, str]]:
    """Every hit that reached the stand-in, valid or not: what left the gateway."""
    items: list[object] = []
    for received in list(standin.received):
        requests = received.body.get("requests")
        items += requests if isinstance(requests, list) else []
    return [params for params in map(_params, items) if params is not None]


class GatewayProcess:
    """``otel-matomo gateway`` on a free loopback port, its output in a file, its memory read from /proc."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, output: Path, standin: MatomoStandIn) -> None:
        self.process = process
        self.port = port
        self.output_path = output
        self.standin = standin
        self.bearer: str | None = None
        self.idle_rss_kb = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")

    def memory_kb(self, field: str) -> int:
        """``VmRSS`` or ``VmHWM`` (the peak) of the gateway process, in kB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} for the gateway (pid {self.process.pid}): did it exit?")

    def rss_growth_mb(self) -> float:
        """Peak RSS since start, over the RSS measured once the gateway was idle and warm."""
        return max(0, self.memory_kb("VmHWM") - self.idle_rss_kb) / 1024

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        auth = {"authorization": f"Bearer {self.bearer}"} if self.bearer else {}
        return {**JSON, **auth, **(extra or {})}

    def probe(self) -> Probe:
        """Send one valid span and wait for its hit at the stand-in."""
        path = f"/probe/{next(_probe_numbers)}"
        body = json.dumps(otlp_payload(otlp_server_span(path, span_id=0xFFFF, route=None))).encode()
        started = time.monotonic()
        try:
            answer = httpx.post(self.url, content=body, headers=self.headers(), timeout=PROBE_TIMEOUT_S)
        except httpx.HTTPError:
            return Probe(False, None)
        latency = time.monotonic() - started
        if answer.status_code != 200:
            return Probe(False, latency)
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(hit.get("url", "").endswith(path) for hit in list(self.standin.tracked)):
                return Probe(True, latency)
            time.sleep(0.02)
        return Probe(False, latency)

    def wait_started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.process.poll() is None, f"the gateway exited: {self.output()[-3000:]}"
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=0.5)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.05)
        warm = self.probe()  # the first request imports and allocates what every later one reuses
        assert warm.delivered, f"a valid request was not delivered before any attack: {self.output()[-3000:]}"
        self.idle_rss_kb = self.memory_kb("VmRSS")


def start(
    standin: MatomoStandIn,
    tmp_path: Path,
    args: Sequence[str] = (),
    *,
    env: dict[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """Start the gateway (or ``command``) with its output in a file; the caller kills it by PID."""
    port = free_port()
    output = tmp_path / f"gateway-{port}.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [*(command or [str(BIN / "otel-matomo")]), "gateway", "--port", str(port), *args],
            env=env if env is not None else base_environment(standin),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return process, port, output


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL by PID if the gateway has not drained within a few seconds (a gateway stuck in a
    decode would otherwise wait for it)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=8)


@contextmanager
def running_gateway(
    standin: MatomoStandIn, tmp_path: Path, args: Sequence[str] = (), *, bearer: str | None = None, **variables: str
) -> Iterator[GatewayProcess]:
    """A started, warm gateway; stopped (killed if need be) on the way out."""
    env = base_environment(standin, **variables)
    if bearer is not None:
        env["OTEL_MATOMO_GATEWAY_TOKEN"] = bearer
    process, port, output = start(standin, tmp_path, args, env=env)
    gateway = GatewayProcess(process, port, output, standin)
    gateway.bearer = bearer
    try:
        gateway.wait_started()
        yield gateway
    finally:
        kill(process)


def run_attack(
    gateway: GatewayProcess, name: str, attack: Callable[[threading.Event], str], timeout: float = ATTACK_TIMEOUT_S
) -> AttackRow:
    """Run ``attack`` in a thread; once it sets its event (its load is in place) send a valid request.

    The attack returns what the gateway answered; if it takes longer than ``timeout`` the row says so (the
    thread is a daemon, and the gateway is killed by its fixture).
    """
    answer: list[str] = []
    finished: list[float] = []
    loaded = threading.Event()

    def attacking() -> None:
        try:
            answer.append(attack(loaded))
        except Exception as error:  # reported in the table, asserted by the caller
            answer.append(f"client error {type(error).__name__}")
        finally:
            finished.append(time.monotonic())
            loaded.set()

    started = time.monotonic()
    thread = threading.Thread(target=attacking, daemon=True, name=f"attack {name}")
    thread.start()
    loaded.wait(timeout)
    time.sleep(0.2)  # the gateway is now decoding, or holding the connections
    probe = gateway.probe()
    thread.join(max(0.0, timeout - (time.monotonic() - started)))
    return AttackRow(
        name,
        answer[0] if answer else f"no answer within {timeout:g} s",
        (finished[0] if finished else time.monotonic()) - started,
        gateway.rss_growth_mb(),
        probe.delivered,
        probe.latency_s,
    )


def exchange(
    port: int, request: bytes, loaded: threading.Event | None = None, timeout: float = ATTACK_TIMEOUT_S
) -> str:
    """Send raw bytes, then read the status line of the answer (``closed`` if the gateway hung up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        with suppress(ConnectionError):  # answered (413, 401) and closed before the whole body was taken
            connection.sendall(request)
        if loaded is not None:
            loaded.set()
        answer = b""
        while b"\r\n" not in answer:
            received = connection.recv(4096)
            if not received:
                return "closed without an answer" if not answer else answer.decode("latin-1")
            answer += received
        return answer.partition(b"\r\n")[0].decode("latin-1").removeprefix("HTTP/1.1 ")


def post_head(headers: dict[str, str], length: int | None) -> bytes:
    """The request line and header block of ``POST /v1/traces`` (chunked when ``length`` is ``None``)."""
    fields = {"host": "gateway", **headers}
    fields.update({"transfer-encoding": "chunked"} if length is None else {"content-length": str(length)})
    lines = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"POST /v1/traces HTTP/1.1\r\n{lines}\r\n".encode("latin-1")


def assert_targets(
    row: AttackRow, *, max_seconds: float = ATTACK_TIMEOUT_S, max_rss_mb: float = 256, max_latency_s: float = 0.5
) -> None:
    """The issue's targets for every attack on a serving gateway."""
    assert not row.answer.startswith("no answer"), f"{row.attack}: {row.answer}"
    assert row.seconds <= max_seconds, f"{row.attack}: answered after {row.seconds:.1f} s"
    assert row.rss_growth_mb is not None
    assert row.rss_growth_mb <= max_rss_mb, f"{row.attack}: RSS grew by {row.rss_growth_mb:.0f} MB"
    assert row.delivered, f"{row.attack}: the valid request sent meanwhile was not delivered"
    assert row.latency_s is not None
    assert row.latency_s <= max_latency_s, f"{row.attack}: the valid request took {row.latency_s:.2f} s"


def json_body(*spans: dict[str, Any]) -> bytes:
    return json.dumps(otlp_payload(*spans)).encode()

"""Attacks on how the gateway is started (issue 17, rows 5 and 7): an open bind without a token, a token file
others can read, and credentials in the Matomo endpoint, which must never reach the gateway's output."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.attacks.conftest import AttackRow
from tests.attacks.harness import BEARER, GatewayProcess, base_environment, kill, start
from tests.matomo_standin import MatomoStandIn

REFUSAL_TIMEOUT_S = 20.0
WITH_INFO_LOGS = [
    sys.executable,
    "-c",
    "import logging, sys; logging.basicConfig(level=logging.INFO); "
    "from otel_matomo.cli import main; sys.exit(main(sys.argv[1:]))",
]
"""``otel-matomo`` with every logger at INFO, httpx's included: the way an operator's logging may be set."""


def _exit_of(process: subprocess.Popen[bytes], started: float) -> tuple[int | None, float]:
    """The exit code (``None``: still serving after the timeout, then killed) and the seconds it took."""
    try:
        code: int | None = process.wait(timeout=REFUSAL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        kill(process)
    return code, time.monotonic() - started


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_row5_an_open_bind_without_a_token_refuses_to_start(
    standin: MatomoStandIn, tmp_path: Path, attacks: list[AttackRow], host: str
) -> None:
    started = time.monotonic()
    process, _, output = start(standin, tmp_path, ["--host", host])
    code, seconds = _exit_of(process, started)
    text = output.read_text()
    attacks.append(AttackRow(f"5: bind {host} without a token", f"exit {code}", seconds))
    assert code == 2, text
    assert "--token-file" in text, text
    assert "--allow-unauthenticated" in text, text
    assert len(text.strip().splitlines()) == 1, text  # one clear message, no traceback


@pytest.mark.parametrize("mode", [0o666, 0o644])
def test_row5_a_token_file_others_can_read_is_refused(
    standin: MatomoStandIn, tmp_path: Path, attacks: list[AttackRow], mode: int
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(BEARER)
    token_file.chmod(mode)
    started = time.monotonic()
    process, _, output = start(standin, tmp_path, ["--token-file", str(token_file)])
    code, seconds = _exit_of(process, started)
    text = output.read_text()
    attacks.append(AttackRow(f"5: token file mode {mode:04o}", f"exit {code}", seconds))
    assert code == 2, text
    assert "chmod 600" in text, text
    assert BEARER not in text


PASSWORD = "Pa55-attack-w0rd-7d1c"
PASTED = "pasted0token0auth0a1b2c3d4e5f6a7b8"


@pytest.mark.parametrize(
    ("label", "endpoint"),
    [
        ("endpoint http://user:password@matomo", "http://matomo-user:{password}@127.0.0.1:{port}"),
        ("token pasted into the endpoint", "http://127.0.0.1:{port}/matomo.php?token_auth={pasted}"),
    ],
)
def test_row7_credentials_in_the_endpoint_never_reach_the_output(
    standin: MatomoStandIn, tmp_path: Path, attacks: list[AttackRow], label: str, endpoint: str
) -> None:
    """Refused at start-up or served: either way neither secret is ever printed, even with INFO logs."""
    port = standin.url.rpartition(":")[2]
    env = base_environment(
        standin, OTEL_EXPORTER_MATOMO_ENDPOINT=endpoint.format(password=PASSWORD, port=port, pasted=PASTED)
    )
    started = time.monotonic()
    process, gateway_port, output = start(standin, tmp_path, env=env, command=WITH_INFO_LOGS)
    gateway = GatewayProcess(process, gateway_port, output, standin)
    try:
        row = _serve_or_refuse(gateway, label, started)
    finally:
        kill(process)
    text = output.read_text()
    attacks.append(row)
    assert PASSWORD not in text, text
    assert PASTED not in text, text


def _serve_or_refuse(gateway: GatewayProcess, label: str, started: float) -> AttackRow:
    """Wait until the gateway exits or answers; if it serves, send it a valid request (and let the worker log)."""
    while gateway.process.poll() is None and time.monotonic() - started < REFUSAL_TIMEOUT_S:
        try:
            httpx.get(f"http://127.0.0.1:{gateway.port}/", timeout=0.5)
        except httpx.HTTPError:
            time.sleep(0.05)
            continue
        probe = gateway.probe()
        time.sleep(0.5)
        return AttackRow(f"7: {label}", "served", time.monotonic() - started, None, probe.delivered, probe.latency_s)
    return AttackRow(f"7: {label}", f"exit {gateway.process.poll()}", time.monotonic() - started)

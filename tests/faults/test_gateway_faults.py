"""The gateway's promise: a request it answered 200 for is delivered, even when the gateway is killed before
Matomo could take its hits (with a spool: the hits are on disk before the answer)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.factories import otlp_payload, otlp_server_span
from tests.faults.conftest import FaultRow
from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn
from tests.servers import free_port, wait_until

BIN = Path(sys.executable).parent
REQUESTS = 5


def _gateway(standin: MatomoStandIn, spool: Path, port: int) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "MATOMO"))}
    env.update(
        OTEL_EXPORTER_MATOMO_ENDPOINT=standin.url,
        OTEL_EXPORTER_MATOMO_SITE_ID="1",
        OTEL_EXPORTER_MATOMO_TOKEN_AUTH=WRITE_TOKEN,
        OTEL_EXPORTER_MATOMO_VISITOR_ID_SECRET="gateway-fault-secret-0123456789",
        OTEL_EXPORTER_MATOMO_SCHEDULE_DELAY="200",
    )
    process = subprocess.Popen(
        [str(BIN / "otel-matomo"), "gateway", "--port", str(port), "--spool-dir", str(spool)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def answers() -> bool:
        assert process.poll() is None, process.communicate()[0]
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
        except httpx.HTTPError:
            return False
        return True

    wait_until(answers, "the gateway did not start", timeout=30)
    return process


def test_a_killed_gateway_with_a_spool_loses_nothing_it_answered_200_for(
    standin: MatomoStandIn, faults: list[FaultRow], tmp_path: Path
) -> None:
    standin.stop()  # Matomo down: nothing can leave before the kill
    port = free_port()
    first = _gateway(standin, tmp_path, port)
    try:
        for number in range(1, REQUESTS + 1):
            body = json.dumps(otlp_payload(otlp_server_span(f"/page/{number}", span_id=number))).encode()
            answer = httpx.post(
                f"http://127.0.0.1:{port}/v1/traces", content=body, headers={"content-type": "application/json"}
            )
            assert answer.status_code == 200
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    standin.start()
    restarted = time.monotonic()
    second = _gateway(standin, tmp_path, port)
    try:
        standin.wait_for_hits(REQUESTS, timeout=30)
        recovered = time.monotonic() - restarted
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
    ids = [hit["rand"] for hit in standin.tracked]
    faults.append(
        FaultRow(
            "gateway killed (-9) with a spool, Matomo down",
            REQUESTS,
            len(set(ids)),
            len(ids) - len(set(ids)),
            {},
            recovered,
        )
    )
    assert sorted(hit["url"].rpartition("/")[2] for hit in standin.tracked) == [str(n) for n in range(1, REQUESTS + 1)]
    assert len(ids) == len(set(ids))


def test_a_bare_matomo_event_through_the_gateway_never_fails_the_other_hits(
    standin: MatomoStandIn, faults: list[FaultRow], tmp_path: Path
) -> None:
    """Another process's span event ``matomo.event`` without category or action: Matomo answers 500 to a bulk
    request holding its hit, so it is dropped before it becomes one."""
    port = free_port()
    gateway = _gateway(standin, tmp_path, port)
    try:
        spans = [otlp_server_span(f"/page/{number}", span_id=number) for number in range(1, 6)]
        spans[2]["events"] = [{"name": "matomo.event", "timeUnixNano": spans[2]["startTimeUnixNano"]}]
        body = json.dumps(otlp_payload(*spans)).encode()
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/traces", content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 200
        standin.wait_for_hits(5, timeout=30)
    finally:
        gateway.send_signal(signal.SIGTERM)
        output, _ = gateway.communicate(timeout=30)
    assert all(received.answer_status == 200 for received in standin.received)
    assert not any(hit.get("ca") == "1" for hit in standin.tracked)
    assert "malformed 1" in output, output[-2000:]
    faults.append(
        FaultRow("gateway: a bare matomo.event beside 5 page views", 6, len(standin.tracked), 0, {"malformed": 1})
    )

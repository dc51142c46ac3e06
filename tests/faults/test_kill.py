"""``kill -9`` with a spool while Matomo answers slowly: a hit is on disk within one schedule delay of its span
ending, whatever Matomo is doing, and a process restarted on the same host sends at once, the dead process's
rows included.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.faults.conftest import FaultRow
from tests.matomo_standin import Behaviour, MatomoStandIn
from tests.servers import wait_until

APP = Path(__file__).with_name("spool_app.py")
ROOT = Path(__file__).resolve().parents[2]
RATE = 300
"""Spans per second before the kill."""
SCHEDULE_DELAY_S = 0.2
KILLED = 600
"""Spans ended before the kill."""


def _spawn(standin: MatomoStandIn, spool: Path, first: int, count: int) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env["OTEL_EXPORTER_MATOMO_SCHEDULE_DELAY"] = str(int(SCHEDULE_DELAY_S * 1000))
    env["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen(
        [sys.executable, str(APP), standin.url, str(spool), str(first), str(count), str(RATE)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def _page(hit: dict[str, str]) -> int:
    return int(hit["url"].rpartition("/")[2])


def test_kill_9_loses_at_most_one_schedule_delay_and_the_restart_sends_at_once(
    standin: MatomoStandIn, faults: list[FaultRow], tmp_path: Path
) -> None:
    standin.behaviour = Behaviour(delay=1.5)
    first = _spawn(standin, tmp_path, 1, KILLED)
    assert first.stdout is not None
    for line in first.stdout:
        if line.strip() == f"ended {KILLED}":
            break
    first.send_signal(signal.SIGKILL)
    first.wait()
    restarted = time.monotonic()
    second = _spawn(standin, tmp_path, 100_001, 50)
    try:
        wait_until(
            lambda: any(request.arrived > restarted for request in list(standin.received)),
            "the restarted process sends",
            timeout=10,
        )
        first_send = min(request.arrived for request in list(standin.received) if request.arrived > restarted)

        def drained() -> bool:
            with sqlite3.connect(tmp_path / "otel-matomo-spool.sqlite3") as db:
                (left,) = db.execute("SELECT COUNT(*) FROM hits").fetchone()
            return left == 0 and sum(_page(hit) > 100_000 for hit in list(standin.tracked)) >= 50

        wait_until(drained, "the spool drained", timeout=60)
    finally:
        assert second.stdin is not None
        second.stdin.close()
        second.wait(30)
    before_kill = [hit["rand"] for hit in standin.tracked if _page(hit) <= KILLED]
    delivered = len(set(before_kill))
    duplicated = len(before_kill) - delivered
    lost = KILLED - delivered
    faults.append(
        FaultRow(
            f"kill -9 with the spool, Matomo answering in 1.5 s ({RATE} spans/s, {SCHEDULE_DELAY_S} s delay)",
            KILLED,
            delivered,
            duplicated,
            {"not yet on disk": lost},
            first_send - restarted,
        )
    )
    assert lost <= RATE * SCHEDULE_DELAY_S + 1, "at most the hits of one schedule delay"
    assert duplicated <= 500, "at most the batch in flight"
    assert first_send - restarted <= 2.0, "the restarted process sends within 2 s"
    assert sum(_page(hit) > 100_000 for hit in standin.tracked) == 50

"""Faults between ``MatomoSpanProcessor`` and Matomo, and in its spool: every other hit still arrives, and every
hit that does not is counted under its reason.

In process, real SDK spans, the loopback stand-in misbehaving on purpose.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from otel_matomo import MatomoSpanProcessor
from tests.conftest import Processors
from tests.faults.conftest import FaultRow
from tests.matomo_standin import Behaviour, MatomoStandIn
from tests.servers import wait_until

SECRET = "fault-injection-secret-0123456789"
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SPOOL_FILE = "otel-matomo-spool.sqlite3"


class App:
    """Server spans of page views ``/page/<n>``, ended at once, through a real SDK tracer provider."""

    def __init__(self, processor: MatomoSpanProcessor) -> None:
        self.provider = TracerProvider(shutdown_on_exit=False)
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("faults")
        self.served = 0

    def serve(self, count: int, path: str = "/page") -> None:
        for _ in range(count):
            self.served += 1
            attributes = {
                "http.request.method": "GET",
                "url.scheme": "https",
                "url.path": f"{path}/{self.served}",
                "http.response.status_code": 200,
                "network.peer.address": f"203.0.113.{self.served % 250 + 1}",
                "user_agent.original": UA,
            }
            self.tracer.start_span("GET", kind=SpanKind.SERVER, attributes=attributes).end()


def _unique(standin: MatomoStandIn) -> tuple[int, int]:
    """(unique hits delivered, duplicates) by the hit's ``rand`` (one per request)."""
    ids = [hit["rand"] for hit in list(standin.tracked)]
    return len(set(ids)), len(ids) - len(set(ids))


def test_one_hit_that_matomo_refuses_never_blocks_the_others(
    standin: MatomoStandIn, processors: Processors, faults: list[FaultRow]
) -> None:
    processor = processors(batch_size=100)
    app = App(processor)
    app.serve(100)
    wait_until(lambda: len(standin.tracked) == 100, "the first 100 hits")
    standin.behaviour = Behaviour(refuse=lambda hit: hit.get("url", "").endswith("/poison/101"))
    refused_at = time.monotonic()
    app.serve(1, "/poison")
    app.serve(1000)
    first_after: list[float] = []

    def later_delivered() -> bool:
        if not first_after and len(standin.tracked) > 100:
            first_after.append(time.monotonic() - refused_at)
        return len(standin.tracked) >= 1100

    wait_until(later_delivered, "every other hit delivered", timeout=60)
    delivered, duplicated = _unique(standin)
    stats = processor.stats
    faults.append(
        FaultRow(
            "Matomo answers 500 to every batch holding one hit",
            1101,
            delivered,
            duplicated,
            {"refused": stats.refused},
            first_after[0],
        )
    )
    assert delivered == 1100
    assert stats.refused == 1
    assert first_after[0] < 30
    assert not any(url.endswith("/poison/101") for url in (hit["url"] for hit in standin.tracked))


def test_one_unreadable_spool_row_is_moved_aside_and_counted(
    standin: MatomoStandIn, processors: Processors, faults: list[FaultRow], tmp_path: Path
) -> None:
    standin.stop()
    writer = processors(spool_dir=str(tmp_path))
    App(writer).serve(20)
    assert writer.force_flush(5000) is False  # Matomo is down: the hits stay in the spool
    writer.shutdown(2000)
    with sqlite3.connect(tmp_path / SPOOL_FILE) as db:
        db.execute("UPDATE hits SET hit = ? WHERE id = (SELECT MIN(id) + 3 FROM hits)", (b"\x00\xff not json",))
    standin.start()
    processor = processors(spool_dir=str(tmp_path))
    started = time.monotonic()
    app = App(processor)
    app.served = 20
    app.serve(300)
    wait_until(lambda: len(standin.tracked) >= 319, "every other hit delivered", timeout=30)
    delivered, duplicated = _unique(standin)
    faults.append(
        FaultRow(
            "one unreadable row in the spool",
            320,
            delivered,
            duplicated,
            {"unreadable": processor.stats.unreadable},
            time.monotonic() - started,
        )
    )
    assert delivered == 319
    assert processor.stats.unreadable == 1
    with sqlite3.connect(tmp_path / SPOOL_FILE) as db:
        assert db.execute("SELECT COUNT(*) FROM unreadable").fetchone() == (1,)


@pytest.mark.parametrize("damage", ["corrupt file", "directory is a file", "parent is a file"])
def test_a_spool_that_cannot_be_used_falls_back_to_memory_and_the_app_starts(
    standin: MatomoStandIn,
    processors: Processors,
    faults: list[FaultRow],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    caplog.set_level(logging.ERROR, logger="otel_matomo")
    spool = tmp_path / "spool"
    if damage == "corrupt file":
        spool.mkdir()
        (spool / SPOOL_FILE).write_bytes(b"this is not an SQLite database" * 100)
    elif damage == "directory is a file":
        spool.write_text("a file")
    else:
        (tmp_path / "parent").write_text("a file")
        spool = tmp_path / "parent" / "spool"
    processor = processors(spool_dir=str(spool))  # must not raise: the application starts
    App(processor).serve(300)
    wait_until(lambda: len(standin.tracked) >= 300, "every hit delivered from memory", timeout=30)
    delivered, duplicated = _unique(standin)
    faults.append(FaultRow(f"spool unusable: {damage}", 300, delivered, duplicated, {}))
    assert delivered == 300
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "spool" in errors[0]
    assert "memory" in errors[0]


def test_nothing_counts_as_delivered_that_matomo_did_not_confirm(
    standin: MatomoStandIn, processors: Processors, faults: list[FaultRow]
) -> None:
    standin.behaviour = Behaviour(body=b'{"status":"success","tracked":0,"invalid":0}')
    processor = processors(batch_size=10)
    App(processor).serve(10)
    wait_until(lambda: processor.stats.unconfirmed == 10, "the answer read", timeout=30)
    stats = processor.stats
    faults.append(FaultRow('Matomo answers 200 {"tracked":0,"invalid":0}', 10, stats.tracked, 0, {"unconfirmed": 10}))
    assert (stats.tracked, stats.invalid) == (0, 0)
    assert len(standin.received) == 1, "not sent again: Matomo may have recorded them"


def test_impossible_counts_are_a_malformed_answer_retried_and_never_counted(
    standin: MatomoStandIn, processors: Processors, faults: list[FaultRow]
) -> None:
    standin.behaviour = Behaviour(body=b'{"status":"success","tracked":-5,"invalid":0}')
    processor = processors(batch_size=10)
    App(processor).serve(10)
    wait_until(lambda: processor._worker._batches.failures >= 3, "retried like a malformed answer", timeout=30)
    stats = processor.stats
    faults.append(FaultRow('Matomo answers 200 {"tracked":-5} (kept, retried)', 10, stats.tracked, 0, {}))
    assert (stats.tracked, stats.invalid, stats.unconfirmed, stats.refused) == (0, 0, 0, 0)
    assert processor._worker.waiting == 10, "the hits wait: Matomo did not say it has them"
    standin.behaviour = Behaviour()
    assert processor.force_flush(10_000)
    assert processor.stats.tracked == 10


def test_a_batch_recorded_but_unanswered_is_sent_again_and_counted_once(
    standin: MatomoStandIn, processors: Processors, faults: list[FaultRow]
) -> None:
    """No idempotency key in Matomo: a batch whose answer never came may be recorded twice (at least once)."""
    standin.behaviour = Behaviour(drop_after_record=True)
    processor = processors(batch_size=50)
    App(processor).serve(200)
    wait_until(lambda: processor._worker._batches.failures >= 2, "answers lost", timeout=30)
    started = time.monotonic()
    standin.behaviour = Behaviour()
    unanswered = processor._worker._batches.failures + 1  # and maybe the attempt in flight
    assert processor.force_flush(30_000)
    delivered, duplicated = _unique(standin)
    faults.append(
        FaultRow(
            "Matomo records a batch, then drops the connection",
            200,
            delivered,
            duplicated,
            {},
            time.monotonic() - started,
        )
    )
    assert delivered == 200
    assert processor.stats.tracked == 200, "counted once: only Matomo's answers count"
    assert duplicated <= 50 * unanswered, "at most the batch in flight, once per unanswered attempt"


def test_a_hanging_matomo_at_shutdown_is_bounded_and_the_summary_accounts_for_every_hit(
    standin: MatomoStandIn, processors: Processors, faults: list[FaultRow], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otel_matomo")
    standin.behaviour = Behaviour(delay=30.0)
    processor = processors()
    App(processor).serve(5)
    wait_until(lambda: processor._worker.waiting == 5, "the hits wait")
    started = time.monotonic()
    processor.shutdown(timeout_millis=1000)
    took = time.monotonic() - started
    summary = [record.getMessage() for record in caplog.records if "stopped:" in record.getMessage()]
    lost = processor.stats.lost + processor._worker.waiting
    faults.append(FaultRow("Matomo hangs, then shutdown (1 s)", 5, 0, 0, {"lost (in the summary line)": lost}))
    assert took < 3.0
    assert lost == 5
    assert len(summary) == 1, summary
    assert "5 requests" in summary[0]
    assert "lost 5" in summary[0] or "5 hits still waiting, lost" in summary[0], summary[0]


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A directory on a tiny file system that is full (a tmpfs of 512 KiB, filled up); needs root to mount."""
    mount = tmp_path / "full"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)]
    done = subprocess.run(command, check=False, capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"a full disk needs a tmpfs mount (root): {done.stderr.decode().strip()}")
    try:
        spool = mount / "spool"
        spool.mkdir()
        filler = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with suppress(OSError):
                while True:
                    os.write(filler, b"\0" * 4096)
        finally:
            os.close(filler)
        yield spool
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_under_the_spool_falls_back_to_memory_and_loses_nothing(
    standin: MatomoStandIn, processors: Processors, faults: list[FaultRow], full_disk: Path
) -> None:
    standin.stop()
    processor = processors(spool_dir=str(full_disk))  # the application starts
    app = App(processor)
    for _ in range(30):  # 3000 requests in about 1.5 s
        app.serve(100)
        time.sleep(0.05)
    wait_until(lambda: processor._worker.waiting == 3000, "every hit kept, in memory", timeout=30)
    time.sleep(1)  # Matomo stays unreachable a while longer
    standin.start()
    recovered = time.monotonic()
    wait_until(lambda: len(standin.tracked) >= 3000, "every hit delivered", timeout=60)
    delivered, duplicated = _unique(standin)
    faults.append(
        FaultRow(
            "spool on a full disk, Matomo down",
            3000,
            delivered,
            duplicated,
            {"lost": processor.stats.lost},
            time.monotonic() - recovered,
        )
    )
    assert delivered == 3000
    assert processor.stats.lost == processor.stats.queue_full == 0


def test_an_overloaded_matomo_is_waited_for_never_split(
    standin: MatomoStandIn, processors: Processors, faults: list[FaultRow]
) -> None:
    """503 (or 429, 502, 504) is Matomo or a proxy overloaded or down, not a hit it refuses: the batch waits whole."""
    standin.behaviour = Behaviour(status=503)
    processor = processors(batch_size=50)
    App(processor).serve(50)
    wait_until(lambda: processor._worker._batches.failures >= 4, "Matomo answered 503 four times", timeout=30)
    requests_while_down = len(standin.received)
    standin.behaviour = Behaviour()
    recovered = time.monotonic()
    assert processor.force_flush(30_000)
    delivered, duplicated = _unique(standin)
    faults.append(
        FaultRow("Matomo answers 503 for a while", 50, delivered, duplicated, {}, time.monotonic() - recovered)
    )
    assert delivered == 50
    assert processor.stats.refused == 0
    assert requests_while_down == processor.stats.batches - 1, "one request per attempt: no probe, no split"

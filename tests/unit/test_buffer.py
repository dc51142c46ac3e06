"""The hit buffers: ``MemoryBuffer`` (bounded FIFO) and ``SpoolBuffer`` (SQLite write-ahead spool with leases).

Both keep hits in arrival order and drop the oldest first, counting by reason. The spool survives a reopen and
is shared by several instances and processes: a hit is never claimed twice at once, one replays at a time, a
crashed owner's claims expire, ``release`` and ``close`` give claims back.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from otel_matomo._buffer import Batch, MemoryBuffer
from otel_matomo._spool import SpoolBuffer
from otel_matomo._types import DropReason, Hit

NOW = 1_800_000_000.0
LEASE = 30.0


def hit(n: int, cdt: float = NOW, size: int = 0) -> Hit:
    """A hit numbered ``n``; ``size`` pads it to a known byte count (keys + values)."""
    base = {"idsite": "1", "n": str(n), "cdt": str(int(cdt))}
    if size:
        used = sum(len(key) + len(value) for key, value in base.items()) + len("pad")
        base["pad"] = "x" * (size - used)
    return base


def numbers(batch: Batch) -> list[int]:
    return [int(item["n"]) for item in batch.hits]


def hit_size(item: Hit) -> int:
    return sum(len(key) + len(value) for key, value in item.items())


# MemoryBuffer.


def test_memory_is_fifo_across_adds_and_peek_leaves_hits_in_place() -> None:
    buffer = MemoryBuffer(100, 10**6, 3600)
    buffer.add([hit(1), hit(2)], NOW)
    buffer.add([hit(3)], NOW)
    assert len(buffer) == 3
    assert numbers(buffer.peek(2, NOW)) == [1, 2]
    assert numbers(buffer.peek(2, NOW)) == [1, 2], "peek does not remove"
    assert numbers(buffer.peek(10, NOW)) == [1, 2, 3]
    assert len(buffer) == 3


def test_memory_done_removes_the_peeked_batch_and_release_keeps_it_at_the_head() -> None:
    buffer = MemoryBuffer(100, 10**6, 3600)
    buffer.add([hit(n) for n in range(1, 6)], NOW)
    first = buffer.peek(2, NOW)
    buffer.release(first)
    assert numbers(buffer.peek(2, NOW)) == [1, 2]
    buffer.done(first)
    assert len(buffer) == 3
    assert numbers(buffer.peek(10, NOW)) == [3, 4, 5]
    buffer.add([hit(6)], NOW)
    batch = buffer.peek(10, NOW)
    buffer.done(batch)
    assert len(buffer) == 0
    assert buffer.size_bytes == 0
    assert buffer.peek(10, NOW).hits == []


def test_memory_drops_the_oldest_beyond_max_hits_and_counts_them() -> None:
    buffer = MemoryBuffer(5, 10**6, 3600)
    assert not buffer.add([hit(n) for n in range(1, 4)], NOW).counts
    drops = buffer.add([hit(n) for n in range(4, 11)], NOW)
    assert drops.counts == {DropReason.OUTAGE_BOUND: 5}
    assert numbers(buffer.peek(100, NOW)) == [6, 7, 8, 9, 10]


def test_memory_drops_the_oldest_beyond_max_bytes() -> None:
    buffer = MemoryBuffer(1000, 350, 3600)
    drops = buffer.add([hit(n, size=100) for n in range(1, 6)], NOW)
    assert drops.counts == {DropReason.OUTAGE_BOUND: 2}
    assert numbers(buffer.peek(100, NOW)) == [3, 4, 5]
    assert buffer.size_bytes == 300
    buffer.done(buffer.peek(1, NOW))
    assert buffer.size_bytes == 200


def test_memory_byte_accounting_matches_the_hits() -> None:
    buffer = MemoryBuffer(1000, 10**6, 3600)
    hits = [hit(n) for n in range(50)]
    buffer.add(hits, NOW)
    assert buffer.size_bytes == sum(hit_size(item) for item in hits)


def test_memory_drops_hits_older_than_max_age_and_counts_both_reasons() -> None:
    buffer = MemoryBuffer(3, 10**6, 60)
    buffer.add([hit(1, NOW - 120), hit(2, NOW - 61)], NOW - 100)  # both still young then
    assert len(buffer) == 2
    drops = buffer.add([hit(n, NOW) for n in range(3, 8)], NOW)
    assert drops.counts == {DropReason.EXPIRED: 2, DropReason.OUTAGE_BOUND: 2}
    assert numbers(buffer.peek(10, NOW)) == [5, 6, 7]


def test_memory_keeps_a_hit_exactly_max_age_old() -> None:
    buffer = MemoryBuffer(10, 10**6, 60)
    assert not buffer.add([hit(1, NOW - 60)], NOW).counts
    assert len(buffer) == 1


def test_memory_a_single_hit_over_max_bytes_is_dropped_not_kept_forever() -> None:
    buffer = MemoryBuffer(10, 50, 3600)
    assert buffer.add([hit(1, size=80)], NOW).counts == {DropReason.OUTAGE_BOUND: 1}
    assert len(buffer) == 0
    assert buffer.size_bytes == 0


# SpoolBuffer.


def spool(directory: Path, max_hits: int = 1000, max_age: float = 3600, lease: float = LEASE) -> SpoolBuffer:
    return SpoolBuffer(str(directory), max_hits, max_age, lease)


def test_spool_is_fifo_and_survives_a_reopen(tmp_path: Path) -> None:
    first = spool(tmp_path)
    first.add([hit(n) for n in range(1, 4)], NOW)
    first.add([hit(n) for n in range(4, 6)], NOW)
    first.close()
    again = spool(tmp_path)
    assert len(again) == 5
    batch = again.peek(10, NOW)
    assert batch.hits == [hit(n) for n in range(1, 6)], "the hits come back exactly, in order"
    again.done(batch)
    again.close()
    assert len(spool(tmp_path)) == 0


def test_spool_survives_a_process_that_never_closed(tmp_path: Path) -> None:
    crashed = spool(tmp_path)
    crashed.add([hit(1), hit(2)], NOW)
    # No close(): a kill -9. The rows are committed as soon as add() returns.
    with sqlite3.connect(tmp_path / "otel-matomo-spool.sqlite3") as db:
        (count,) = db.execute("SELECT COUNT(*) FROM hits").fetchone()
    assert count == 2


def test_spool_creates_its_directory(tmp_path: Path) -> None:
    buffer = spool(tmp_path / "a" / "b")
    buffer.add([hit(1)], NOW)
    assert (tmp_path / "a" / "b" / "otel-matomo-spool.sqlite3").exists()
    buffer.close()


def test_spool_peek_claims_done_deletes_release_returns(tmp_path: Path) -> None:
    buffer = spool(tmp_path)
    buffer.add([hit(n) for n in range(1, 6)], NOW)
    batch = buffer.peek(2, NOW)
    assert numbers(batch) == [1, 2]
    assert numbers(buffer.peek(2, NOW)) == [1, 2], "peeking again returns its own claims, not more"
    buffer.release(batch)
    assert numbers(buffer.peek(3, NOW)) == [1, 2, 3]
    buffer.done(buffer.peek(3, NOW))
    assert len(buffer) == 2
    assert numbers(buffer.peek(10, NOW)) == [4, 5]
    buffer.close()


def test_spool_drops_the_oldest_unclaimed_beyond_max_hits(tmp_path: Path) -> None:
    buffer = spool(tmp_path, max_hits=4)
    buffer.add([hit(n) for n in range(1, 4)], NOW)
    drops = buffer.add([hit(n) for n in range(4, 8)], NOW)
    assert drops.counts == {DropReason.OUTAGE_BOUND: 3}
    assert numbers(buffer.peek(10, NOW)) == [4, 5, 6, 7]
    buffer.close()


def test_spool_never_drops_a_batch_in_flight(tmp_path: Path) -> None:
    buffer = spool(tmp_path, max_hits=4)
    buffer.add([hit(n) for n in range(1, 5)], NOW)
    in_flight = buffer.peek(2, NOW)
    drops = buffer.add([hit(5), hit(6)], NOW)
    assert drops.counts == {DropReason.OUTAGE_BOUND: 2}
    assert numbers(in_flight) == [1, 2]
    buffer.done(in_flight)
    assert numbers(buffer.peek(10, NOW)) == [5, 6], "3 and 4 were the oldest unclaimed"
    buffer.close()


def test_spool_drops_expired_hits_and_counts_them(tmp_path: Path) -> None:
    buffer = spool(tmp_path, max_hits=3, max_age=60)
    buffer.add([hit(1, NOW - 120)], NOW - 100)
    buffer.add([hit(2, NOW - 30)], NOW - 50)  # the first has waited 50 s: kept
    drops = buffer.add([hit(n) for n in range(3, 6)], NOW)  # the first has waited 100 s; then one too many
    assert drops.counts == {DropReason.EXPIRED: 1, DropReason.OUTAGE_BOUND: 1}
    assert numbers(buffer.peek(10, NOW)) == [3, 4, 5]
    buffer.close()


def test_age_counts_from_when_a_hit_was_buffered_not_from_its_time(tmp_path: Path) -> None:
    """A day-old span forwarded by the gateway is not expired on arrival: the bound is how long a hit waits."""
    for buffer in (spool(tmp_path, max_age=60), MemoryBuffer(100, 10_000, 60)):
        assert buffer.add([hit(1, NOW - 2 * 86_400)], NOW).counts == {}
        assert buffer.add([], NOW + 61).counts == {DropReason.EXPIRED: 1}
        buffer.close()


def test_without_a_token_hits_older_than_matomo_accepts_are_dropped(tmp_path: Path) -> None:
    """Matomo refuses a cdt older than 24 hours from a sender without a token."""
    day = 86_400 - 60
    for buffer in (SpoolBuffer(str(tmp_path), 100, 3600, LEASE, day), MemoryBuffer(100, 10_000, 3600, day)):
        drops = buffer.add([hit(1, NOW - 86_400), hit(2, NOW - 60)], NOW)
        assert drops.counts == {DropReason.EXPIRED: 1}
        assert numbers(buffer.peek(10, NOW)) == [2]
        buffer.close()


def test_two_spools_on_one_directory_one_replays_at_a_time(tmp_path: Path) -> None:
    a, b = spool(tmp_path), spool(tmp_path)
    a.add([hit(n) for n in range(1, 4)], NOW)
    b.add([hit(n) for n in range(4, 7)], NOW)
    assert len(a) == len(b) == 6
    batch = a.peek(2, NOW)
    assert numbers(batch) == [1, 2]
    assert b.peek(2, NOW).hits == [], "a replays: b waits, even for hits a did not claim"
    b.done(batch)  # b cannot delete a's claims
    assert len(a) == 6
    a.done(batch)
    assert numbers(b.peek(2, NOW)) == [3, 4]
    assert a.peek(2, NOW).hits == []
    a.close()
    b.close()


def test_an_expired_lease_is_taken_over(tmp_path: Path) -> None:
    crashed, survivor = spool(tmp_path, lease=5), spool(tmp_path, lease=5)
    crashed.add([hit(n) for n in range(1, 4)], NOW)
    assert numbers(crashed.peek(2, NOW)) == [1, 2]
    assert survivor.peek(2, NOW + 4).hits == [], "the lease still runs"
    taken = survivor.peek(2, NOW + 6)
    assert numbers(taken) == [1, 2], "the crashed owner's claims expired: the oldest first"
    assert crashed.peek(2, NOW + 6).hits == [], "the old owner, back, now waits for the new one"
    crashed.done(Batch(taken.hits, taken.keys))
    assert len(survivor) == 3, "the old owner's done no longer deletes what it lost"
    survivor.done(taken)
    assert numbers(survivor.peek(5, NOW + 6)) == [3]
    survivor.close()


def test_a_lease_expired_batch_can_be_dropped_by_the_bound(tmp_path: Path) -> None:
    crashed, other = spool(tmp_path, max_hits=2, lease=5), spool(tmp_path, max_hits=2, lease=5)
    crashed.add([hit(1), hit(2)], NOW)
    crashed.peek(2, NOW)
    drops = other.add([hit(3)], NOW + 1)
    assert drops.counts == {DropReason.OUTAGE_BOUND: 1}, "claimed and alive: the next oldest goes"
    assert other.add([hit(4)], NOW + 10).counts == {DropReason.OUTAGE_BOUND: 1}, "lease expired: the oldest goes"
    assert numbers(other.peek(10, NOW + 10)) == [2, 4]
    other.close()


def test_release_returns_hits_to_other_instances(tmp_path: Path) -> None:
    a, b = spool(tmp_path), spool(tmp_path)
    a.add([hit(1), hit(2)], NOW)
    a.release(a.peek(2, NOW))
    assert numbers(b.peek(2, NOW)) == [1, 2]
    a.close()
    b.close()


def test_close_releases_claims(tmp_path: Path) -> None:
    a, b = spool(tmp_path), spool(tmp_path)
    a.add([hit(1), hit(2), hit(3)], NOW)
    a.peek(2, NOW)
    a.close()
    assert numbers(b.peek(3, NOW)) == [1, 2, 3]
    b.close()


# Several processes on one spool directory.


def _processes() -> Any:
    """Children forked from a clean server process: quick to start, and without pytest's threads or state."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _replayer(directory: str, name: str, rounds: int, results: Any, start: Any) -> None:
    """Add own hits and replay whatever can be claimed, recording every claim with its time span."""
    buffer = SpoolBuffer(directory, 100_000, 3600, 30)
    start.wait(timeout=30)  # a barrier: every process is ready before any adds
    claims = []
    for round_ in range(rounds):
        own = [{"idsite": "1", "n": f"{name}-{round_}-{k}", "cdt": str(int(time.time()))} for k in range(3)]
        buffer.add(own, time.time())
        batch = buffer.peek(4, time.time())
        if batch.hits:
            claimed_at = time.time()
            time.sleep(0.001)  # "sending"
            claims.append((claimed_at, time.time(), [item["n"] for item in batch.hits]))
            buffer.done(batch)
        time.sleep(0.002)  # the others get a turn at the lock
    while len(buffer):  # drain what is left, as the others finish
        batch = buffer.peek(50, time.time())
        if batch.hits:
            claimed_at = time.time()
            claims.append((claimed_at, time.time(), [item["n"] for item in batch.hits]))
            buffer.done(batch)
        else:
            time.sleep(0.005)
    buffer.close()
    results.put((name, claims))


def test_processes_sharing_a_spool_never_send_a_hit_twice_and_replay_one_at_a_time(tmp_path: Path) -> None:
    context = _processes()
    results = context.Queue()
    names, rounds = ["p1", "p2", "p3"], 25
    start = context.Barrier(len(names))
    processes = [
        context.Process(target=_replayer, args=(str(tmp_path), name, rounds, results, start)) for name in names
    ]
    for process in processes:
        process.start()
    collected = dict(results.get(timeout=60) for _ in names)
    for process in processes:
        process.join(timeout=10)
        assert process.exitcode == 0
    sent = [n for claims in collected.values() for _, _, batch in claims for n in batch]
    expected = {f"{name}-{round_}-{k}" for name in names for round_ in range(rounds) for k in range(3)}
    assert len(sent) == len(expected), f"{len(sent) - len(set(sent))} hits claimed twice"
    assert set(sent) == expected
    spans = sorted(
        (claimed_at, done_at, name) for name, claims in collected.items() for claimed_at, done_at, _ in claims
    )
    for (_, done_at, name), (claimed_at, _, other) in itertools.pairwise(spans):
        if name != other:
            assert claimed_at >= done_at, f"{other} claimed while {name} was still replaying"
    assert sum(bool(claims) for claims in collected.values()) >= 2, "more than one process got to replay"
    assert len(spool(tmp_path)) == 0


def test_a_killed_process_claims_are_taken_over_at_once_on_the_same_host(tmp_path: Path) -> None:
    context = _processes()
    process = context.Process(target=_claim_and_die, args=(str(tmp_path),))
    process.start()
    process.join(timeout=30)
    assert process.exitcode == 9
    survivor = spool(tmp_path)
    taken = survivor.peek(10, time.time())
    assert numbers(taken) == [1, 2, 3], "the owner's PID is gone: no need to wait for its lease"
    survivor.done(taken)
    assert len(survivor) == 0
    survivor.close()


def test_claims_of_a_process_on_another_host_wait_for_their_lease(tmp_path: Path) -> None:
    survivor = spool(tmp_path)
    survivor.add([hit(n) for n in range(1, 4)], NOW)
    with sqlite3.connect(tmp_path / "otel-matomo-spool.sqlite3") as db:
        db.execute("UPDATE hits SET owner = 'another-host:4242:0123abcd', lease_until = ?", (NOW + LEASE,))
    assert survivor.peek(10, NOW).hits == [], "a process this host cannot see keeps its lease"
    taken = survivor.peek(10, NOW + LEASE + 1)
    assert numbers(taken) == [1, 2, 3]
    survivor.close()


def test_rows_of_an_earlier_process_with_this_pid_are_taken_over(tmp_path: Path) -> None:
    """PID 1 in a container: the restarted process has the dead one's PID."""
    survivor = spool(tmp_path)
    survivor.add([hit(1)], NOW)
    owner = f"{socket.gethostname()}:{os.getpid()}:deadbeef"
    with sqlite3.connect(tmp_path / "otel-matomo-spool.sqlite3") as db:
        db.execute("UPDATE hits SET owner = ?, lease_until = ?", (owner, NOW + LEASE))
    assert numbers(survivor.peek(10, NOW)) == [1]
    survivor.close()


def _claim_and_die(directory: str) -> None:
    import os

    buffer = SpoolBuffer(directory, 100, 3600, LEASE)
    buffer.add([hit(n, time.time()) for n in range(1, 4)], time.time())
    buffer.peek(10, time.time())
    os._exit(9)


@pytest.mark.parametrize("reopen", [False, True])
def test_spool_len_counts_every_process_hits(tmp_path: Path, reopen: bool) -> None:
    a = spool(tmp_path)
    a.add([hit(1)], NOW)
    if reopen:
        a.close()
    b = spool(tmp_path)
    b.add([hit(2)], NOW)
    assert len(b) == 2
    b.close()


def test_the_spool_is_private_to_its_user(tmp_path: Path) -> None:
    """It holds visitor IPs and URLs: the directory is 0700 and the file 0600 (SQLite gives its -wal and -shm files
    the database file's mode)."""
    directory = tmp_path / "new" / "spool"
    buffer = SpoolBuffer(str(directory), 100, 3600, LEASE)
    buffer.add([hit(1)], NOW)
    assert directory.stat().st_mode & 0o777 == 0o700
    files = list(directory.iterdir())
    assert files
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in files), [(p.name, oct(p.stat().st_mode)) for p in files]
    buffer.close()

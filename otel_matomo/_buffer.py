"""Hits waiting for Matomo: a bounded FIFO in memory, or an SQLite spool that survives restarts.

Both keep hits in the order they came (so each visitor's hits reach Matomo in chronological order) and are used
by one worker thread per process: ``add``, then ``peek`` a batch, send it, then ``done`` or ``release`` it.
The spool is shared safely by several processes: a batch is *claimed* under a lease before it is sent, only one
process replays at a time, and a crashed process's claims expire so that another picks its hits up.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from otel_matomo._types import DropReason, Hit


@dataclass(frozen=True)
class Batch:
    """Hits taken from a buffer, with the keys that give them back or remove them."""

    hits: list[Hit]
    keys: tuple[int, ...] = ()


@dataclass
class Drops:
    """Hits a buffer had to drop, by reason (``EXPIRED`` or ``OUTAGE_BOUND``)."""

    counts: Counter[DropReason] = field(default_factory=Counter)

    def add(self, reason: DropReason, count: int) -> None:
        if count:
            self.counts[reason] += count


class HitBuffer(Protocol):
    """What the span processor's worker needs from a buffer."""

    def add(self, hits: Sequence[Hit], now: float) -> Drops: ...
    def peek(self, limit: int, now: float) -> Batch: ...
    def done(self, batch: Batch) -> None: ...
    def release(self, batch: Batch) -> None: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...


def _cdt(hit: Hit) -> float:
    try:
        return float(hit.get("cdt", "0"))
    except ValueError:
        return 0.0


class MemoryBuffer:
    """A FIFO bounded in hits, bytes and age; when full, the oldest hits go first (they are the least useful)."""

    def __init__(self, max_hits: int, max_bytes: int, max_age: float) -> None:
        self._max_hits = max_hits
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._items: deque[tuple[Hit, int]] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        """Approximate memory held by the hits' text."""
        return self._bytes

    def add(self, hits: Sequence[Hit], now: float) -> Drops:
        """Append ``hits``; drop what is too old, then the oldest while over a bound."""
        for hit in hits:
            size = sum(map(len, hit)) + sum(map(len, hit.values()))
            self._items.append((hit, size))
            self._bytes += size
        drops = Drops()
        drops.add(DropReason.EXPIRED, self._drop_while(lambda hit, _: now - _cdt(hit) > self._max_age))
        drops.add(
            DropReason.OUTAGE_BOUND,
            self._drop_while(lambda *_: len(self._items) > self._max_hits or self._bytes > self._max_bytes),
        )
        return drops

    def peek(self, limit: int, now: float) -> Batch:  # noqa: ARG002 - HitBuffer's signature (the spool needs it)
        """The oldest ``limit`` hits, left in place until :meth:`done`."""
        return Batch([hit for hit, _ in list(self._items)[:limit]])

    def done(self, batch: Batch) -> None:
        """Remove a batch returned by :meth:`peek` (delivered, or refused for good)."""
        for _ in batch.hits:
            _, size = self._items.popleft()
            self._bytes -= size

    def release(self, batch: Batch) -> None:
        """Keep the batch at the head for the next attempt."""

    def close(self) -> None:
        """Nothing to release."""

    def _drop_while(self, condition: Callable[[Hit, int], bool]) -> int:
        dropped = 0
        while self._items and condition(*self._items[0]):
            _, size = self._items.popleft()
            self._bytes -= size
            dropped += 1
        return dropped


_SCHEMA = """
CREATE TABLE IF NOT EXISTS hits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cdt REAL NOT NULL,
    hit TEXT NOT NULL,
    owner TEXT,
    lease_until REAL
)
"""


class SpoolBuffer:
    """Hits in an SQLite file in ``directory``, written before they are sent (a write-ahead spool).

    A hit leaves the spool only once Matomo answered for it, so a crash or ``kill -9`` loses nothing that
    reached the spool; the window for a duplicate is the moment between Matomo's answer and the delete.
    """

    def __init__(self, directory: str, max_hits: int, max_age: float, lease: float) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self._path = os.path.join(directory, "otel-matomo-spool.sqlite3")
        self._max_hits = max_hits
        self._max_age = max_age
        self._lease = lease
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._db = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def __len__(self) -> int:
        (count,) = self._db.execute("SELECT COUNT(*) FROM hits").fetchone()
        return int(count)

    def add(self, hits: Sequence[Hit], now: float) -> Drops:
        """Write ``hits`` in one transaction; drop expired hits and the oldest unclaimed beyond the bound."""
        drops = Drops()
        with self._transaction():
            self._db.executemany(
                "INSERT INTO hits (cdt, hit) VALUES (?, ?)", [(_cdt(hit), json.dumps(hit)) for hit in hits]
            )
            drops.add(
                DropReason.EXPIRED, self._db.execute("DELETE FROM hits WHERE cdt < ?", (now - self._max_age,)).rowcount
            )
            (count,) = self._db.execute("SELECT COUNT(*) FROM hits").fetchone()
            if count > self._max_hits:
                drops.add(
                    DropReason.OUTAGE_BOUND,
                    self._db.execute(
                        "DELETE FROM hits WHERE id IN (SELECT id FROM hits WHERE owner IS NULL OR lease_until < ? "
                        "ORDER BY id LIMIT ?)",
                        (now, count - self._max_hits),
                    ).rowcount,
                )
        return drops

    def peek(self, limit: int, now: float) -> Batch:
        """Claim the oldest ``limit`` hits, unless another live process is replaying (one replays at a time)."""
        with self._transaction():
            self._db.execute(
                "UPDATE hits SET owner = ?, lease_until = ? WHERE id IN ("
                " SELECT id FROM hits WHERE owner IS NULL OR owner = ? OR lease_until < ? ORDER BY id LIMIT ?)"
                " AND NOT EXISTS (SELECT 1 FROM hits WHERE owner != ? AND lease_until >= ?)",
                (self._owner, now + self._lease, self._owner, now, limit, self._owner, now),
            )
            rows = self._db.execute(
                "SELECT id, hit FROM hits WHERE owner = ? ORDER BY id LIMIT ?", (self._owner, limit)
            )
            claimed = rows.fetchall()
        return Batch([json.loads(hit) for _, hit in claimed], tuple(key for key, _ in claimed))

    def done(self, batch: Batch) -> None:
        """Delete a delivered (or refused) batch."""
        with self._transaction():
            self._db.executemany("DELETE FROM hits WHERE id = ? AND owner = ?", [(k, self._owner) for k in batch.keys])

    def release(self, batch: Batch) -> None:
        """Give a batch back for a later attempt, by this or another process."""
        with self._transaction():
            self._db.executemany(
                "UPDATE hits SET owner = NULL, lease_until = NULL WHERE id = ? AND owner = ?",
                [(key, self._owner) for key in batch.keys],
            )

    def close(self) -> None:
        """Release this process's claims and close the file."""
        try:
            with self._transaction():
                self._db.execute("UPDATE hits SET owner = NULL, lease_until = NULL WHERE owner = ?", (self._owner,))
        finally:
            self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: takes SQLite's write lock at once, so claims never race."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")

"""The SQLite spool: hits on disk before they are sent, so that a crash or ``kill -9`` loses nothing that reached it.

Several processes share one spool safely: a batch is *claimed* under a lease before it is sent, and only one
process replays at a time, so that hits reach Matomo in the order they came. A process that dies leaves its
claims behind: a process on the same host sees at once that the owner's PID is gone (or is its own, reused after a
container restart) and takes the rows over; claims of processes it cannot see (another host on a shared volume)
wait for their lease to expire.

A row that cannot be read back (damaged on disk, or written by something else) is moved aside to the
``unreadable`` table and counted; it never blocks the rows behind it. The directory is made private (0700) and
the file 0600: they hold visitor IPs and URLs.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import uuid
from collections.abc import Sequence
from pathlib import Path

from otel_matomo._buffer import Batch, Drops, cdt_seconds
from otel_matomo._types import DropReason, Hit

SPOOL_FILE = "otel-matomo-spool.sqlite3"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hits ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, cdt REAL NOT NULL, hit TEXT NOT NULL, owner TEXT, lease_until REAL,"
    " added REAL)",
    "CREATE TABLE IF NOT EXISTS unreadable (id INTEGER PRIMARY KEY, hit BLOB, moved_at REAL NOT NULL)",
)


_OWNERS_HERE: set[str] = set()
"""The owner names of the spools opened by this process (a forked child starts with its parent's: harmless, as the
parent's PID differs)."""


class SpoolError(Exception):
    """The spool cannot be used; the message says what and where, never what a hit holds."""


def open_spool_file(directory: str) -> str:
    """Create ``directory`` (0700) and the spool file in it (0600); the file's path. Raises :class:`SpoolError`."""
    path = Path(directory)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.is_dir():
            raise SpoolError(f"the spool directory {directory!r} is not a directory")
        file = path / SPOOL_FILE
        # Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the database file's mode.
        os.close(os.open(file, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as error:
        raise SpoolError(f"the spool directory {directory!r} cannot be used ({error.strerror or error})") from None
    return str(file)


class SpoolBuffer:
    """Hits in an SQLite file in ``directory``, written before they are sent (a write-ahead spool).

    A hit leaves the spool only once Matomo answered for it; the window for a duplicate is the batch in flight
    when a process dies. Every method raises :class:`SpoolError` (or ``sqlite3.Error``) when the disk fails; the
    caller falls back to memory.
    """

    def __init__(
        self, directory: str, max_hits: int, max_age: float, lease: float, max_cdt_age: float | None = None
    ) -> None:
        self._path = open_spool_file(directory)
        self._max_hits = max_hits
        self._max_age = max_age
        self._max_cdt_age = max_cdt_age
        self._lease = lease
        self._host = socket.gethostname()
        self._owner = f"{self._host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        _OWNERS_HERE.add(self._owner)
        try:
            self._db = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                self._db.execute(statement)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(hits)")}
            if "added" not in columns:  # a spool written by an earlier version: its hits count from their cdt
                self._db.execute("ALTER TABLE hits ADD COLUMN added REAL")
            self._db.execute("SELECT COUNT(*) FROM hits").fetchone()
        except sqlite3.Error as error:
            raise SpoolError(f"the spool file {self._path!r} cannot be used ({error})") from None

    @property
    def path(self) -> str:
        """The spool file."""
        return self._path

    def __len__(self) -> int:
        (count,) = self._db.execute("SELECT COUNT(*) FROM hits").fetchone()
        return int(count)

    def add(self, hits: Sequence[Hit], now: float) -> Drops:
        """Write ``hits`` in one transaction; drop expired hits and the oldest unclaimed beyond the bound."""
        drops = Drops()
        with self._transaction():
            self._db.executemany(
                "INSERT INTO hits (cdt, hit, added) VALUES (?, ?, ?)",
                [(cdt_seconds(hit), json.dumps(hit), now) for hit in hits],
            )
            oldest_cdt = -math.inf if self._max_cdt_age is None else now - self._max_cdt_age
            expired = self._db.execute(
                "DELETE FROM hits WHERE COALESCE(added, cdt) < ? OR cdt < ?", (now - self._max_age, oldest_cdt)
            ).rowcount
            drops.add(DropReason.EXPIRED, expired)
            (count,) = self._db.execute("SELECT COUNT(*) FROM hits").fetchone()
            if count > self._max_hits:
                over = self._db.execute(
                    "DELETE FROM hits WHERE id IN (SELECT id FROM hits WHERE owner IS NULL OR lease_until < ? "
                    "ORDER BY id LIMIT ?)",
                    (now, count - self._max_hits),
                ).rowcount
                drops.add(DropReason.OUTAGE_BOUND, over)
        return drops

    def peek(self, limit: int, now: float) -> Batch:
        """Claim the oldest ``limit`` hits, unless another live process is replaying (one replays at a time).

        Rows that cannot be read back are moved to the ``unreadable`` table and reported in the batch's drops.
        """
        drops = Drops()
        with self._transaction():
            self._free_claims_of_dead_owners(now)
            self._db.execute(
                "UPDATE hits SET owner = ?, lease_until = ? WHERE id IN ("
                " SELECT id FROM hits WHERE owner IS NULL OR owner = ? OR lease_until < ? ORDER BY id LIMIT ?)"
                " AND NOT EXISTS (SELECT 1 FROM hits WHERE owner != ? AND lease_until >= ?)",
                (self._owner, now + self._lease, self._owner, now, limit, self._owner, now),
            )
            rows = self._db.execute(
                "SELECT id, hit FROM hits WHERE owner = ? ORDER BY id LIMIT ?", (self._owner, limit)
            ).fetchall()
            hits, keys, unreadable = [], [], []
            for key, text in rows:
                hit = _decoded(text)
                if hit is None:
                    unreadable.append(key)
                else:
                    hits.append(hit)
                    keys.append(key)
            if unreadable:
                drops.add(DropReason.UNREADABLE, self._move_aside(unreadable, now))
        return Batch(hits, tuple(keys), drops)

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

    def _free_claims_of_dead_owners(self, now: float) -> None:
        owners = self._db.execute(
            "SELECT DISTINCT owner FROM hits WHERE owner IS NOT NULL AND owner != ? AND lease_until >= ?",
            (self._owner, now),
        ).fetchall()
        for (owner,) in owners:
            if not self._owner_alive(owner):
                self._db.execute("UPDATE hits SET owner = NULL, lease_until = NULL WHERE owner = ?", (owner,))

    def _owner_alive(self, owner: str) -> bool:
        """Whether the process that claimed rows may still send them (unknown hosts are given their lease)."""
        parts = owner.rsplit(":", 2)
        if len(parts) != 3 or parts[0] != self._host or not parts[1].isdigit():
            return True
        pid = int(parts[1])
        if pid == os.getpid():
            # This process's PID: a spool of ours, or the PID reused after a restart (PID 1 in a container).
            return owner in _OWNERS_HERE
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # a live process of another user
        return True

    def _move_aside(self, keys: list[int], now: float) -> int:
        self._db.executemany(
            "INSERT OR REPLACE INTO unreadable (id, hit, moved_at) SELECT id, hit, ? FROM hits WHERE id = ?",
            [(now, key) for key in keys],
        )
        self._db.executemany("DELETE FROM hits WHERE id = ?", [(key,) for key in keys])
        return len(keys)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


def _decoded(text: object) -> Hit | None:
    """A stored hit, or ``None`` when the row holds anything but a JSON object of strings."""
    try:
        hit = json.loads(text) if isinstance(text, (str, bytes)) else None
    except ValueError:
        return None
    if not isinstance(hit, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in hit.items()):
        return None
    return hit


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``: takes SQLite's write lock at once, so claims never race."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, *_: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")

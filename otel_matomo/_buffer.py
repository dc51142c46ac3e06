"""Hits waiting for Matomo: what every buffer offers, and the bounded FIFO in memory.

Buffers keep hits in the order they came (so each visitor's hits reach Matomo in chronological order): ``add``,
then ``peek`` a batch, send it, then ``done`` or ``release`` it, or any part of it (a batch is split to find a hit
that Matomo refuses). The SQLite spool is in ``_spool``; ``_durable`` puts the two together.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from otel_matomo._types import DropReason, Hit


@dataclass
class Drops:
    """Hits a buffer had to drop, by reason (``EXPIRED``, ``OUTAGE_BOUND``, ``UNREADABLE``)."""

    counts: Counter[DropReason] = field(default_factory=Counter)

    def add(self, reason: DropReason, count: int) -> None:
        if count:
            self.counts[reason] += count


@dataclass(frozen=True)
class Batch:
    """Hits taken from a buffer, with the keys that give them back or remove them, and what the taking dropped."""

    hits: list[Hit]
    keys: tuple[int, ...] = ()
    drops: Drops = field(default_factory=Drops)

    def split(self) -> tuple[Batch, Batch]:
        """The first and the second half, in order (each keeps its hits' keys)."""
        middle = len(self.hits) // 2
        return Batch(self.hits[:middle], self.keys[:middle]), Batch(self.hits[middle:], self.keys[middle:])


class HitBuffer(Protocol):
    """What the delivery worker needs from a buffer."""

    def add(self, hits: Sequence[Hit], now: float) -> Drops: ...
    def peek(self, limit: int, now: float) -> Batch: ...
    def done(self, batch: Batch) -> None: ...
    def release(self, batch: Batch) -> None: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...


def cdt_seconds(hit: Hit) -> float:
    """The hit's time (``cdt``, Unix seconds), 0 when it has none: the age bound reads it."""
    try:
        return float(hit.get("cdt", "0"))
    except ValueError:
        return 0.0


def hit_size(hit: Hit) -> int:
    """Characters of the hit's text: what the memory bound counts."""
    return sum(map(len, hit)) + sum(map(len, hit.values()))


class MemoryBuffer:
    """A FIFO bounded in hits, bytes and age; when full, the oldest hits go first (they are the least useful).

    ``max_age`` bounds how long a hit waits here; ``max_cdt_age``, when set, how old its own time (``cdt``) may
    be: Matomo refuses a ``cdt`` older than 24 hours from a sender without a token.
    """

    def __init__(self, max_hits: int, max_bytes: int, max_age: float, max_cdt_age: float | None = None) -> None:
        self._max_hits = max_hits
        self._max_bytes = max_bytes
        self._max_age = max_age
        self._max_cdt_age = max_cdt_age
        self._items: dict[int, tuple[Hit, int, float]] = {}
        """Key -> (hit, size, when it was added), in the order the hits came (dicts keep insertion order)."""
        self._keys = itertools.count()
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
            size = hit_size(hit)
            self._items[next(self._keys)] = (hit, size, now)
            self._bytes += size
        drops = Drops()
        drops.add(DropReason.EXPIRED, self._drop_while(lambda hit, added: self._expired(hit, added, now)))
        drops.add(
            DropReason.OUTAGE_BOUND,
            self._drop_while(lambda *_: len(self._items) > self._max_hits or self._bytes > self._max_bytes),
        )
        return drops

    def _expired(self, hit: Hit, added: float, now: float) -> bool:
        too_old = self._max_cdt_age is not None and now - cdt_seconds(hit) > self._max_cdt_age
        return too_old or now - added > self._max_age

    def peek(self, limit: int, now: float) -> Batch:  # noqa: ARG002 - HitBuffer's signature (the spool needs it)
        """The oldest ``limit`` hits, left in place until :meth:`done`."""
        head = list(itertools.islice(self._items.items(), limit))
        return Batch([item[0] for _, item in head], tuple(key for key, _ in head))

    def done(self, batch: Batch) -> None:
        """Remove hits returned by :meth:`peek` (delivered, or refused for good)."""
        for key in batch.keys:
            item = self._items.pop(key, None)
            if item is not None:
                self._bytes -= item[1]

    def release(self, batch: Batch) -> None:
        """Keep the hits in place for the next attempt."""

    def close(self) -> None:
        """Nothing to release."""

    def _drop_while(self, condition: Callable[[Hit, float], bool]) -> int:
        dropped = 0
        while self._items:
            key = next(iter(self._items))
            hit, size, added = self._items[key]
            if not condition(hit, added):
                break
            del self._items[key]
            self._bytes -= size
            dropped += 1
        return dropped

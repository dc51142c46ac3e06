"""What the gateway takes on at once: bytes of request bodies held in memory, and decodes running.

A connection cap alone does not bound memory: a thousand connections may each be sending a 16 MiB body. The
bytes actually received are counted as they arrive (a client that announces 16 MiB and sends 100 bytes holds
100), until the request is answered; decoding, the CPU-heavy part, runs a few at a time. Past either limit the
sender gets 503 with ``Retry-After``, which OTLP exporters retry. Only the event loop's thread counts, so plain
integers suffice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Busy(Exception):
    """A limit is reached: answer 503 and let the sender retry; the message says which limit."""


class Load:
    """The bodies in memory and the decodes running, against their limits."""

    def __init__(self, max_body_memory: int, max_decoding: int) -> None:
        self.max_body_memory = max_body_memory
        self.max_decoding = max_decoding
        self.body_bytes = 0
        self.decodes = 0

    @contextmanager
    def holding(self) -> Iterator[Callable[[int], None]]:
        """A function to call with each chunk's size as it is read (raises :class:`Busy` past the limit); what
        the request held is given back when the block ends, i.e. once it is answered."""
        held = 0

        def hold(size: int) -> None:
            nonlocal held
            if self.body_bytes + size > self.max_body_memory:
                raise Busy("the gateway holds as many request bodies in memory as it may")
            self.body_bytes += size
            held += size

        try:
            yield hold
        finally:
            self.body_bytes -= held

    @contextmanager
    def decoding(self) -> Iterator[None]:
        """One decode slot for the block, or :class:`Busy` when all are taken."""
        if self.decodes >= self.max_decoding:
            raise Busy("the gateway is busy decoding other requests")
        self.decodes += 1
        try:
            yield
        finally:
            self.decodes -= 1

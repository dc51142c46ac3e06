"""Read deadlines for the gateway's HTTP connections: a header block and a body must arrive in bounded time.

uvicorn has no header-read timeout and no body-read timeout: a client that opens a connection and sends half a
header block, or a ``Content-Length`` and then nothing, holds a connection (and the body read so far) for as long
as it likes, before any authentication. :class:`DeadlineProtocol` is uvicorn's h11 protocol with two deadlines:

- the header block must be complete within ``header_timeout`` of the moment the server starts waiting for it
  (the connection, or the end of the previous answer on a kept-alive connection);
- the body must be complete within ``body_timeout`` of the end of its headers.

Past a deadline the connection is closed: the application sees ``http.disconnect`` and answers no one, as nginx
does. The h11 protocol is chosen explicitly, so that installing httptools never silently removes the deadlines.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle


@dataclass(frozen=True)
class ReadDeadlines:
    """Seconds a client may take to send a request's header block, and then its body."""

    header_timeout: float
    body_timeout: float


def deadline_protocol(deadlines: ReadDeadlines) -> type[DeadlineProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``: uvicorn builds it with its own arguments only, so the
    deadlines travel as a class attribute."""
    return type("GatewayProtocol", (DeadlineProtocol,), {"deadlines": deadlines})


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose header block or body is late."""

    deadlines: ReadDeadlines
    _timer: asyncio.TimerHandle | None = None
    _phase: tuple[str, RequestResponseCycle | None] | None = None
    """What the running timer waits for: ``("headers", previous cycle)`` or ``("body", cycle)``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Arm the deadline of what the connection waits for now, once per phase: more bytes of the same header
        block or body never push it back (a client dripping one byte a second gains nothing)."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            phase, timeout = ("headers", cycle), self.deadlines.header_timeout
        elif cycle.more_body:
            phase, timeout = ("body", cycle), self.deadlines.body_timeout
        else:  # the whole request is in: the application's work is not the client's to hurry
            self._cancel()
            return
        if phase != self._phase and not self.transport.is_closing():
            self._cancel()
            self._phase = phase
            self._timer = self.loop.call_later(timeout, self._expire)

    def _expire(self) -> None:
        """Close a connection whose client is late; ``connection_lost`` tells a waiting application."""
        self._timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase = None

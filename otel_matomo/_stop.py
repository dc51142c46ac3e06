"""Deliver what is waiting when the process ends, however the server ends it.

The SDK's ``TracerProvider`` flushes its span processors from an ``atexit`` handler, and that is not enough:

- uvicorn, after its graceful shutdown on SIGTERM, restores the SIGTERM handler it found and raises the signal
  again. Where that handler is the default one, the process dies of the signal and runs no ``atexit`` handler:
  the last batch (up to the SDK's 5 s schedule delay of requests) never leaves.
- Under ``uvicorn --workers N`` (and ``--reload``), a worker imports the application inside
  ``Server.capture_signals``, while uvicorn's own handler holds SIGTERM; the handler it restores afterwards is the
  default one (a spawned worker starts with it), so an in-code set-up found no default action to take over.
- granian runs the application in ``multiprocessing`` workers; a worker's process ends with ``os._exit`` once its
  target returns, which runs ``multiprocessing``'s own finalizers but no ``atexit`` handler.

So the first exporter or processor of a process registers one flush three ways: ``atexit``, a ``multiprocessing``
finalizer (registered again in each forked or spawned worker), and a SIGTERM handler. Where SIGTERM has its default
action, that handler flushes and then dies of the signal exactly as the process would have. Where the application
or its server handles SIGTERM, its handler still runs, first and always; from then on the main thread holds SIGTERM
(blocked, pending), so that a re-raise like uvicorn's waits for the exit hooks' flush and then ends the process as
it would have. The flush shuts down the global SDK tracer provider (whose span processors hand their last spans to
their exporters) and every otel-matomo component registered here.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from collections.abc import Callable
from multiprocessing import util as multiprocessing_util
from types import FrameType
from typing import Protocol, TypeGuard

_logger = logging.getLogger("otel_matomo")

_FINALIZER_PRIORITY = 100
"""Before ``multiprocessing``'s own finalizers (priority 0 and up run at exit; higher first)."""
_FLUSH_TIMEOUT_S = 30.0
"""The longest a SIGTERM waits for the flush: the SDK's own export timeout."""


class Stoppable(Protocol):
    """An exporter or processor: ``shutdown()`` delivers what it holds, bounded by its own timeout."""

    def shutdown(self) -> object: ...


_Handler = Callable[[int, FrameType | None], object]
"""What ``signal.signal`` accepts as a Python handler."""

_components: weakref.WeakSet[Stoppable] = weakref.WeakSet()
_lock = threading.Lock()


class _Process:
    """Which process installed the hooks and which one flushed (a forked child inherits both and does its own)."""

    installed_in: int | None = None
    done_in: int | None = None
    """Every hook may fire; only the first one of a process works."""
    holding_in: int | None = None
    """The process whose main thread holds SIGTERM until the flush (see :class:`_Chained`)."""


def register(component: Stoppable) -> None:
    """Flush ``component`` (and the global tracer provider) at the end of this process, whatever ends it."""
    with _lock:
        _components.add(component)
        if _Process.installed_in == os.getpid():
            return
        _install()


def flush_at_exit() -> None:
    """Shut down the global SDK tracer provider and every registered component, once per process; never raises."""
    with _lock:
        if _Process.done_in == os.getpid():
            return
        _Process.done_in = os.getpid()
        components = list(_components)
    try:
        from opentelemetry import trace  # noqa: PLC0415 - the API is always there; imported late for the hooks

        provider = trace.get_tracer_provider()
        shutdown = getattr(provider, "shutdown", None)
        if callable(shutdown):
            shutdown()
        for component in components:
            component.shutdown()
    except Exception:
        _logger.exception("otel-matomo: failed to flush at exit")
    _release_sigterm()


def _install() -> None:
    _Process.installed_in = os.getpid()
    atexit.register(flush_at_exit)
    multiprocessing_util.Finalize(None, flush_at_exit, exitpriority=_FINALIZER_PRIORITY)
    # A multiprocessing child drops the finalizers it inherited (or registered while its interpreter started, under
    # spawn) before it runs its target; these hooks run after that and register the child's own.
    multiprocessing_util.register_after_fork(_AFTER_FORK_KEY, lambda _key: _reinstall())
    _handle_sigterm()


def _reinstall() -> None:
    with _lock:
        if _components:
            _install()


class _Key:
    """``register_after_fork`` keys its hooks by a weakly referenced object: this one lives as long as the module."""


_AFTER_FORK_KEY = _Key()


def _handle_sigterm() -> None:
    """Flush before a SIGTERM ends the process: take over its default action, or chain to the handler in place."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    try:
        current = signal.getsignal(signal.SIGTERM)
        if current is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
        elif _foreign(current) and hasattr(signal, "pthread_sigmask"):
            signal.signal(signal.SIGTERM, _Chained(current))
    except (ValueError, OSError, AttributeError):  # no SIGTERM (Windows) or no signals in this interpreter
        return


def _foreign(handler: object) -> TypeGuard[_Handler]:
    """A handler of the application or its server (not ``SIG_IGN``, not one set outside Python, not ours, which a
    forked child inherits)."""
    return callable(handler) and handler is not _on_sigterm and not isinstance(handler, _Chained)


def _on_sigterm(signum: int, frame: object) -> None:  # noqa: ARG001 - the signal module's signature
    """Where nothing else handles SIGTERM: flush, then die of the signal as the process would have."""
    _flush_within_timeout()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


class _Chained:
    """The SIGTERM handler the application or its server installed, called first: never replaced, never swallowed.

    It cannot tell whether the process will end later by itself (``sys.exit``: ``atexit`` flushes) or by raising
    SIGTERM again under its default action (uvicorn's ``capture_signals``: death, no exit hook). So the main thread,
    which ``signal.raise_signal`` targets, holds SIGTERM from the first one on; the flush releases it, and a held
    re-raise then ends the process. Threads started before (the exporters' own) still take a further SIGTERM sent
    to the process, so holding never makes it deaf to one; a child forked meanwhile is let go of the hold.
    """

    def __init__(self, handler: _Handler) -> None:
        self.handler = handler

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        """Hold SIGTERM, run the handler; if it re-raised SIGTERM to die at once, flush first and let it."""
        if _Process.done_in != os.getpid():
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
            _Process.holding_in = os.getpid()
        self.handler(signum, frame)
        if signal.SIGTERM in signal.sigpending():
            _flush_within_timeout()
            _release_sigterm()


def _release_sigterm() -> None:
    """After the flush, deliver a SIGTERM the main thread held: the process then ends as it would have."""
    if _Process.holding_in == os.getpid() and threading.current_thread() is threading.main_thread():
        _Process.holding_in = None
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _forget_hold_in_child() -> None:
    """A child forked while the main thread held SIGTERM inherits the hold, but nothing asked the child to stop."""
    if _Process.holding_in is not None:
        _Process.holding_in = None
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_hold_in_child)


def _flush_within_timeout() -> None:
    """Flush on a thread of its own, so that a lock the interrupted main thread holds cannot hang it forever."""
    flusher = threading.Thread(target=flush_at_exit, name="otel-matomo-stop", daemon=True)
    flusher.start()
    flusher.join(_FLUSH_TIMEOUT_S)

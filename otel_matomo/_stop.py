"""Deliver what is waiting when the process ends, however the server ends it.

The SDK's ``TracerProvider`` flushes its span processors from an ``atexit`` handler, and that is not enough:

- uvicorn, after its graceful shutdown on SIGTERM, restores the SIGTERM handler it found and raises the signal
  again. Where that handler is the default one, the process dies of the signal and runs no ``atexit`` handler:
  the last batch (up to the SDK's 5 s schedule delay of requests) never leaves.
- granian runs the application in ``multiprocessing`` workers; a worker's process ends with ``os._exit`` once its
  target returns, which runs ``multiprocessing``'s own finalizers but no ``atexit`` handler.

So the first exporter or processor of a process registers one flush three ways: ``atexit``, a ``multiprocessing``
finalizer (registered again in each forked or spawned worker), and, only where a SIGTERM would otherwise kill the
process outright, a SIGTERM handler that flushes and then dies of the signal exactly as it would have. A handler
the application or its server installed is never replaced. The flush shuts down the global SDK tracer provider
(whose span processors hand their last spans to their exporters) and every otel-matomo component registered here.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from multiprocessing import util as multiprocessing_util
from typing import Protocol

_logger = logging.getLogger("otel_matomo")

_FINALIZER_PRIORITY = 100
"""Before ``multiprocessing``'s own finalizers (priority 0 and up run at exit; higher first)."""
_FLUSH_TIMEOUT_S = 30.0
"""The longest a SIGTERM waits for the flush: the SDK's own export timeout."""


class Stoppable(Protocol):
    """An exporter or processor: ``shutdown()`` delivers what it holds, bounded by its own timeout."""

    def shutdown(self) -> object: ...


_components: weakref.WeakSet[Stoppable] = weakref.WeakSet()
_lock = threading.Lock()


class _Process:
    """Which process installed the hooks and which one flushed (a forked child inherits both and does its own)."""

    installed_in: int | None = None
    done_in: int | None = None
    """Every hook may fire; only the first one of a process works."""


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
    """Where SIGTERM still has its default action (death without cleanup), flush first, then die of it."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):  # no SIGTERM (Windows) or no signals in this interpreter
        return


def _on_sigterm(signum: int, frame: object) -> None:  # noqa: ARG001 - the signal module's signature
    # The flush runs on its own thread so that a lock the interrupted main thread holds cannot hang it forever.
    flusher = threading.Thread(target=flush_at_exit, name="otel-matomo-stop", daemon=True)
    flusher.start()
    flusher.join(_FLUSH_TIMEOUT_S)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)

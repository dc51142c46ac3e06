"""``otel_matomo._stop``: the exit hooks that deliver the last batch however the process ends (see
tests/faults/test_graceful_stop.py for the real servers)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

_PRELUDE = """
from otel_matomo import _stop


class Component:
    def __init__(self, says="flushed"):
        self.says = says

    def shutdown(self):
        print(self.says, flush=True)
"""
"""Every script's start: an exporter or processor stand-in that prints when it is flushed."""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` after the prelude, as a script of its own (a spawned multiprocessing worker imports its main
    module again)."""
    with tempfile.TemporaryDirectory() as directory:
        script = Path(directory) / "script.py"
        script.write_text(_PRELUDE + textwrap.dedent(code))
        return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)


def test_sigterm_with_its_default_action_flushes_then_dies_of_the_signal() -> None:
    result = _run(
        """
        import os, signal

        component = Component()
        _stop.register(component)
        assert signal.getsignal(signal.SIGTERM) is _stop._on_sigterm
        os.kill(os.getpid(), signal.SIGTERM)
        print("not reached", flush=True)
        """
    )
    assert result.stdout == "flushed\n", result.stderr
    assert result.returncode == -15, "the process still ends as SIGTERM ends it"


def test_a_sigterm_handler_of_the_application_still_runs_and_the_flush_waits_for_the_exit() -> None:
    result = _run(
        """
        import os, signal

        def mine(signum, frame):
            print("mine", flush=True)

        signal.signal(signal.SIGTERM, mine)

        component = Component()
        _stop.register(component)
        os.kill(os.getpid(), signal.SIGTERM)
        print("still serving", flush=True)
        """
    )
    assert result.stdout == "mine\nstill serving\nflushed\n", result.stderr  # flushed once, by atexit
    assert result.returncode == 0


def test_a_child_forked_while_sigterm_is_held_is_not_held() -> None:
    result = _run(
        """
        import os, signal

        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        component = Component()
        _stop.register(component)
        os.kill(os.getpid(), signal.SIGTERM)
        print("held", signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, []), flush=True)
        child = os.fork()
        if child == 0:
            print("held in child", signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, []), flush=True)
            os._exit(0)
        os.waitpid(child, 0)
        """
    )
    assert result.stdout == "held True\nheld in child False\nflushed\n", result.stderr


def test_a_handler_that_exits_still_exits_after_the_flush() -> None:
    result = _run(
        """
        import os, signal, sys

        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(3))  # Django's autoreloader does this
        component = Component()
        _stop.register(component)
        os.kill(os.getpid(), signal.SIGTERM)
        print("not reached", flush=True)
        """
    )
    assert result.stdout == "flushed\n", result.stderr
    assert result.returncode == 3


def test_a_handler_that_re_raises_to_die_at_once_dies_after_the_flush() -> None:
    result = _run(
        """
        import os, signal

        def cleanup_then_die(signum, frame):
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

        signal.signal(signal.SIGTERM, cleanup_then_die)
        component = Component()
        _stop.register(component)
        os.kill(os.getpid(), signal.SIGTERM)
        print("not reached", flush=True)
        """
    )
    assert result.stdout == "flushed\n", result.stderr
    assert result.returncode == -15


def test_a_uvicorn_worker_that_restores_the_default_action_and_re_raises_flushes_then_dies_of_it() -> None:
    """``uvicorn --workers N``: the spawned worker imports the app inside ``Server.capture_signals``, then restores
    ``SIG_DFL`` and calls ``signal.raise_signal`` (see tests/faults/test_graceful_stop.py for the real server)."""
    result = _run(
        """
        import multiprocessing, os, signal

        def serve():
            global component

            def handle_exit(signum, frame):
                print("graceful shutdown", flush=True)

            original = signal.signal(signal.SIGTERM, handle_exit)  # capture_signals
            component = Component("flushed in worker")  # config.load(): the app module sets up OpenTelemetry
            _stop.register(component)
            os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's terminate()
            signal.signal(signal.SIGTERM, original)
            signal.raise_signal(signal.SIGTERM)

        if __name__ == "__main__":
            worker = multiprocessing.get_context("spawn").Process(target=serve)
            worker.start()
            worker.join()
            print("exit", worker.exitcode, flush=True)
        """
    )
    assert result.stdout == "graceful shutdown\nflushed in worker\nexit -15\n", result.stderr


def test_a_multiprocessing_worker_flushes_when_its_target_returns() -> None:
    result = _run(
        """
        import multiprocessing

        def work():
            global component
            component = Component("flushed in worker")
            _stop.register(component)

        if __name__ == "__main__":
            for method in ("fork", "spawn"):
                worker = multiprocessing.get_context(method).Process(target=work)
                worker.start()
                worker.join()
        """
    )
    assert result.stdout.count("flushed in worker") == 2, result.stderr


def test_every_hook_may_fire_but_the_flush_runs_once_per_process() -> None:
    result = _run(
        """
        import atexit, os

        component = Component()
        _stop.register(component)
        _stop.flush_at_exit()
        _stop.flush_at_exit()
        """
    )
    assert result.stdout == "flushed\n", result.stderr

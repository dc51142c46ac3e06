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


def test_a_sigterm_handler_of_the_application_is_kept() -> None:
    result = _run(
        """
        import signal

        def mine(signum, frame):
            pass

        signal.signal(signal.SIGTERM, mine)

        component = Component()
        _stop.register(component)
        print(signal.getsignal(signal.SIGTERM) is mine, flush=True)
        """
    )
    assert result.stdout == "True\nflushed\n", result.stderr  # flushed once, by atexit
    assert result.returncode == 0


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

"""Offering the GIL back to the application from our background threads."""

from __future__ import annotations

import os
import time


def yield_gil() -> None:
    """Let the application's threads run now if they are waiting for the interpreter.

    Translation and encoding run on background threads but under the GIL. Without a yield they would hold the
    interpreter for a whole batch (milliseconds, up to the 5 ms switch interval at a time), and every request
    arriving meanwhile would wait, which shows in the application's tail latency. ``os.sched_yield()`` releases
    the GIL and takes it back after any thread that was waiting for it, and returns at once when none was;
    ``time.sleep(0)`` does the same but pays a real sleep's timer slack on Linux.
    """
    _sched_yield()


_sched_yield = getattr(os, "sched_yield", lambda: time.sleep(0))

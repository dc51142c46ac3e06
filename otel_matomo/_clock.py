"""The span processor's sense of time, replaceable so that tests step it instead of sleeping through schedule
delays and backoffs."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time for delays, wall time for the age of hits, and a wait that ends when either the event is
    set or ``timeout`` seconds of this clock have passed."""

    def monotonic(self) -> float: ...
    def time(self) -> float: ...
    def wait(self, event: threading.Event, timeout: float) -> bool: ...


class SystemClock:
    """The real clocks: ``time.monotonic``, ``time.time`` and ``Event.wait``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(timeout)

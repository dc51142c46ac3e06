"""Rate-limited warnings: every loss is logged, but a flood of them never floods the application's logs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    """Logs a message per key at most once per ``interval`` seconds, saying how many were held back."""

    def __init__(
        self, logger: logging.Logger, interval: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, key: str, message: str, *args: object, exc_info: bool = False) -> None:
        """Log ``message % args`` unless ``key`` was logged less than ``interval`` seconds ago."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._held[key] = self._held.get(key, 0) + 1
                return
            self._last[key] = now
            held = self._held.pop(key, 0)
        if held:
            text = message % args if args else message
            self._logger.log(level, "%s (%d similar messages were held back)", text, held, exc_info=exc_info)
        else:
            self._logger.log(level, message, *args, exc_info=exc_info)

"""The one retry schedule: how long to wait before sending a batch again, for the exporter's in-call retries and
the delivery worker's alike."""

from __future__ import annotations

import random

_MAX_BACKOFF_S = 30.0
_MAX_WAIT_S = 60.0
"""The longest wait, even when Matomo's ``Retry-After`` asks for more: delivery must resume soon after it recovers."""


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter, as the OTLP exporters do: 1, 2, 4 ... seconds (at most 30) x [0.8, 1.2]."""
    return float(min(2 ** (attempt - 1), _MAX_BACKOFF_S) * random.uniform(0.8, 1.2))


def delay(attempt: int, retry_after: float | None) -> float:
    """Seconds before attempt ``attempt + 1``: Matomo's ``Retry-After`` when it gave one, else :func:`backoff`."""
    return min(retry_after if retry_after is not None else backoff(attempt), _MAX_WAIT_S)

"""What the pipeline needs from whatever takes its batches of hits: the :class:`Sender` protocol, the result of
one batch, and the dry-run sender, which logs hits instead of sending them.

The HTTP sender is in ``_transport``; keeping this module free of it lets a dry run, a test or ``check`` use a
sender without importing an HTTP client.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from otel_matomo._types import Hit

hits_logger = logging.getLogger("otel_matomo.hits")
"""Where dry-run mode writes each hit, as JSON, with the hit itself in the record's ``hit`` attribute."""


class Outcome(enum.Enum):
    """How a batch ended; only ``DELIVERED`` and ``PARTIAL`` mean Matomo has the hits it accepted."""

    DELIVERED = "delivered"
    """Settled with no hit refused: the hits Matomo counted as tracked are stored (``SendResult.unconfirmed``: the
    ones its counts left out)."""
    PARTIAL = "partial"
    """Matomo stored some hits and refused the others for good (validation errors)."""
    REJECTED = "rejected"
    """Refused as a whole for a reason that a retry cannot fix (token, endpoint, request)."""
    GAVE_UP = "gave_up"
    """Still failing when the deadline came."""
    CANCELLED = "cancelled"
    """Shut down while waiting to retry."""


@dataclass(frozen=True)
class SendResult:
    """The outcome of one batch with the counts behind it."""

    outcome: Outcome
    tracked: int = 0
    invalid: int = 0
    attempts: int = 0
    retry_after: float | None = None
    """Matomo's ``Retry-After`` on the last attempt, for a caller that retries later itself."""
    unconfirmed: int = 0
    """Hits Matomo's answer did not account for (neither tracked nor invalid): perhaps stored, perhaps not, and
    not sent again, since a retry could store them twice."""
    answered: bool = False
    """Whether the last attempt got an HTTP answer (any status, or an HTTP 200 that is not Matomo's): with
    ``GAVE_UP`` it tells "Matomo is up but will not take this batch" (5xx, 429, a malformed answer) from
    "Matomo cannot be reached" (connection error, timeout); ``False`` when cancelled."""
    status: int = 0
    """The HTTP status of the last answer, 0 without one: a caller may treat 429 and 503 (overloaded) apart from
    a 500 (a batch Matomo will not take)."""


class Sender(Protocol):
    """Takes one batch of hits at a time; never raises for Matomo's sake (its answers are in the result)."""

    @property
    def reaches_matomo(self) -> bool:
        """Whether its batches count as sent (batches, tracked and invalid hits, the metrics): a dry run's do not."""
        ...

    def send(self, hits: Sequence[Hit], *, retry: bool = True) -> SendResult:
        """Deliver ``hits``; with ``retry=False`` a retryable failure returns ``GAVE_UP`` at once, for a caller
        that keeps the hits and retries later itself."""
        ...

    def close(self) -> None:
        """End any wait at once and release what the sender holds."""
        ...


class DryRunSender:
    """Sends nothing: logs each hit to ``otel_matomo.hits`` (``OTEL_EXPORTER_MATOMO_DRY_RUN``)."""

    reaches_matomo = False

    def send(self, hits: Sequence[Hit], *, retry: bool = True) -> SendResult:  # noqa: ARG002 - Sender's signature
        """Log ``hits``, one record each, the hit as JSON in the message and as itself in ``record.hit``."""
        for hit in hits:
            hits_logger.info("%s", json.dumps(hit), extra={"hit": hit})
        return SendResult(Outcome.DELIVERED, tracked=len(hits))

    def close(self) -> None:
        """Nothing to release."""

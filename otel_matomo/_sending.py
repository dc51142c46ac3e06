"""What the pipeline needs from whatever takes its batches of hits: the :class:`Sender` protocol, the result of
one batch, and the dry-run sender, which shows hits instead of sending them.

The HTTP sender is in ``_transport``; keeping this module free of it lets a dry run, a test or ``check`` use a
sender without importing an HTTP client.
"""

from __future__ import annotations

import enum
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from otel_matomo._types import Hit

hits_logger = logging.getLogger("otel_matomo.hits")
"""Where dry-run mode logs each hit, as JSON, with the hit itself in the record's ``hit`` attribute, when the
application's logging shows this logger's INFO records (else the hits go to standard error)."""


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
    cause: str = ""
    """Why the last attempt failed, in an operator's words ("connection refused", "HTTP 503" ...); empty when it
    did not fail. Every message about hits kept or lost says it, so that "Matomo failed" is never the whole story."""


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
    """Sends nothing: shows each hit instead (``OTEL_EXPORTER_MATOMO_DRY_RUN``).

    A dry run is how a new user sees what would be sent, often before any logging is set up (under
    ``opentelemetry-instrument``, uvicorn or gunicorn, nothing shows an INFO record of ours). So each hit is one
    line on standard error, unless the application's logging would show the ``otel_matomo.hits`` INFO record: then
    it goes there alone, once, in the application's own format.
    """

    reaches_matomo = False

    def send(self, hits: Sequence[Hit], *, retry: bool = True) -> SendResult:  # noqa: ARG002 - Sender's signature
        """Show ``hits``, one line (or one record, the hit as JSON in the message and itself in ``record.hit``) each."""
        logged = hits_logger.isEnabledFor(logging.INFO) and hits_logger.hasHandlers()
        for hit in hits:
            if logged:
                hits_logger.info("%s", json.dumps(hit), extra={"hit": hit})
            else:
                _write_stderr(f"otel-matomo: dry run, not sent: {json.dumps(hit, ensure_ascii=False)}\n")
        return SendResult(Outcome.DELIVERED, tracked=len(hits))

    def close(self) -> None:
        """Nothing to release."""


def _write_stderr(line: str) -> None:
    """Write to whatever standard error is now (tests and servers replace it); a closed one loses the line only."""
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):  # closed, detached, or None under pythonw
        return

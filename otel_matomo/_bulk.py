"""Matomo's Bulk Tracking API as data: the body of a bulk request, and what an answer to it means.

Bytes in, verdict out, with no network and no logging, so that the HTTP sender, ``otel-matomo check`` and the
tests share one reading of Matomo. Its answers have traps that decide whether a batch may be sent again:
HTTP 200 with ``"invalid": K`` means K items were refused for good; HTTP 500 means the whole batch was rolled
back even when ``tracked`` says otherwise; a batch refused item by item although a token was sent is Matomo bug
#22910 (a "secure only" token, refused inside bulk requests), which no retry can fix. Only what the counts confirm
counts: an HTTP 200 whose counts cover fewer hits than were sent leaves the rest unconfirmed, and one that is not
Matomo's JSON, or whose counts cannot be true, says nothing of what was stored, so the batch may be sent again.
"""

from __future__ import annotations

import email.utils
import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote_plus

from otel_matomo._cache import text_cache
from otel_matomo._gil import yield_gil
from otel_matomo._types import Hit

_YIELD_EVERY = 128
"""Hits encoded between two offers of the GIL (see ``yield_gil``)."""
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""Statuses after which the same batch may be sent again: Matomo stored none of it (a 500 rolls back)."""


def encode_bulk(hits: Sequence[Hit], token_auth: str | None) -> bytes:
    """The JSON body of one bulk request; ``token_auth`` travels here, never in a URL.

    Each item must start with ``?``: Matomo silently drops an item without a query part, which shifts the
    indices of every later item in its answer.
    """
    requests = []
    for start in range(0, len(hits), _YIELD_EVERY):
        if start:
            yield_gil()
        requests += ["?" + _query(hit) for hit in hits[start : start + _YIELD_EVERY]]
    body: dict[str, object] = {"requests": requests}
    if token_auth is not None:
        body["token_auth"] = token_auth
    return json.dumps(body, separators=(",", ":")).encode()


_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
_QUOTE_PLUS = {byte: "+" if byte == 0x20 else f"%{byte:02X}" for byte in range(128) if byte not in _UNRESERVED}
"""``str.translate`` table: what ``quote_plus(text, safe="")`` makes of each ASCII character."""


def _query(hit: Hit) -> str:
    """``urlencode(hit)``, byte for byte, at a fraction of its cost (the hot spot of encoding, measured in
    ``benchmarks/``): values that are letters and digits only (ids, times, durations) need no quoting, the
    values a batch repeats (user agent, URL, title of one visitor's requests) are quoted once, and ASCII
    values are quoted by one C-level ``str.translate``. Parameter names are ours and need no quoting."""
    return "&".join(
        [
            f"{name}={value if value.isalnum() and value.isascii() else _quote_plus(value)}"
            for name, value in hit.items()
        ]
    )


@text_cache(maxsize=2048)
def _quote_plus(text: str) -> str:
    return text.translate(_QUOTE_PLUS) if text.isascii() else quote_plus(text, errors="replace")


@dataclass(frozen=True)
class BulkAnswer:
    """What Matomo says it did with a bulk request."""

    tracked: int
    invalid: int
    invalid_indices: tuple[int, ...] = ()
    superuser: bool = False
    """Matomo sends ``invalid_indices`` only when the token is a Super User's: then the token is not the cause."""


class MalformedAnswer(ValueError):
    """The answer is not Matomo's bulk-tracking JSON."""


def parse_bulk_answer(body: bytes) -> BulkAnswer:
    """Read ``{"status": ..., "tracked": N, "invalid": K, "invalid_indices": [...]}``.

    ``invalid_indices`` only comes back when the token is a Super User's. Error messages never quote the body,
    which the caller logs itself, masked.
    """
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedAnswer("not JSON") from None
    if not isinstance(data, dict) or type(data.get("tracked")) is not int:
        raise MalformedAnswer("no 'tracked' count")
    invalid = data.get("invalid", 0)
    indices = data.get("invalid_indices", [])
    if type(invalid) is not int or not isinstance(indices, list):
        raise MalformedAnswer("bad 'invalid' fields")
    if data["tracked"] < 0 or invalid < 0:
        raise MalformedAnswer("negative counts")
    return BulkAnswer(
        data["tracked"], invalid, tuple(i for i in indices if type(i) is int), superuser="invalid_indices" in data
    )


class Decision(enum.Enum):
    """What to do with a batch after Matomo's answer. The first three are ``Outcome`` values."""

    DELIVERED = "delivered"
    PARTIAL = "partial"
    """Matomo stored some hits and refused the others for good (validation errors)."""
    REJECTED = "rejected"
    """Refused for a reason that a retry cannot fix (see :class:`Refusal`)."""
    RETRY = "retry"
    """Nothing was stored (a retryable status), or what was stored cannot be told (a malformed answer); the same
    batch may be sent again (after ``retry_after``, when Matomo gave one)."""


class Refusal(enum.Enum):
    """Why Matomo refused hits for good."""

    STATUS = "status"
    """An HTTP status that no retry changes (401, 403, 404 ...)."""
    SITE = "site"
    """Every hit refused with a Super User's token: the site id is not a site of this Matomo."""
    SECURE_ONLY = "secure-only"
    """Every hit refused although a token was sent: a token that may not write to the site, or a "secure only"
    token (Matomo bug #22910)."""
    INVALID = "invalid"
    """Some hits refused item by item (unknown site, a ``cip``/``cdt`` needing a valid token ...)."""


@dataclass(frozen=True)
class Verdict:
    """Matomo's answer to one bulk request of ``count`` hits, read: what to do, why, and the counts behind it."""

    decision: Decision
    refusal: Refusal | None = None
    tracked: int = 0
    invalid: int = 0
    invalid_indices: tuple[int, ...] = ()
    unconfirmed: int = 0
    """Hits that the counts of an HTTP 200 answer do not cover (``tracked + invalid < count``): perhaps stored,
    perhaps not. Not sent again, since a retry could store them twice."""
    malformed: str = ""
    """What is wrong with an HTTP 200 answer, with ``RETRY``: not Matomo's bulk-tracking JSON (the endpoint is
    probably not ``matomo.php``), or counts that cannot be true (negative, or more hits than were sent)."""
    retry_after: float | None = None
    """Seconds Matomo asked to wait (``Retry-After``), with ``RETRY``."""


def judge(
    status: int, body: bytes, *, count: int, token_sent: bool, retry_after: str | None = None, now: float = 0.0
) -> Verdict:
    """The verdict on Matomo's answer (``status``, ``body``, its ``Retry-After`` header) to ``count`` hits.

    ``now`` (``time.time()``) turns a ``Retry-After`` date into seconds.
    """
    if status in RETRYABLE_STATUS:
        return Verdict(Decision.RETRY, retry_after=parse_retry_after(retry_after, now))
    if status != 200:
        return Verdict(Decision.REJECTED, invalid=count, refusal=Refusal.STATUS)
    try:
        answer = parse_bulk_answer(body)
    except MalformedAnswer as error:
        return Verdict(Decision.RETRY, malformed=str(error))
    counted = answer.tracked + answer.invalid
    if counted > count:
        return Verdict(Decision.RETRY, malformed=f"counts for {counted} hits, {count} sent")
    unconfirmed = count - counted
    if answer.invalid == 0:
        return Verdict(Decision.DELIVERED, tracked=answer.tracked, unconfirmed=unconfirmed)
    if answer.tracked == 0 and answer.invalid == count and (answer.superuser or token_sent):
        refusal = Refusal.SITE if answer.superuser else Refusal.SECURE_ONLY
        return Verdict(Decision.REJECTED, invalid=count, refusal=refusal)
    return Verdict(
        Decision.PARTIAL if answer.tracked else Decision.REJECTED,
        tracked=answer.tracked,
        invalid=answer.invalid,
        refusal=Refusal.INVALID,
        invalid_indices=answer.invalid_indices,
        unconfirmed=unconfirmed,
    )


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds, or an HTTP date compared with ``now``),
    ``None`` if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now, 0.0)

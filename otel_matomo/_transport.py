"""Bulk Tracking API: encode a batch of hits, POST it, read Matomo's answer, retry what may be retried.

Matomo's bulk answers have traps that decide whether a batch may be sent again (see
``shared/reference/matomo-tracking.md``): HTTP 200 with ``"invalid": K`` means K items were refused for good,
HTTP 500 means the whole batch was rolled back even when ``tracked`` says otherwise, and a batch refused item by
item although a token was sent is Matomo bug #22910 (a "secure only" token), which no retry can fix.
"""

from __future__ import annotations

import email.utils
import enum
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote_plus, urlsplit

import httpx

from otel_matomo._cache import text_cache
from otel_matomo._gil import yield_gil
from otel_matomo._ratelimit import RateLimitedLog
from otel_matomo._settings import Settings
from otel_matomo._types import Hit

_logger = logging.getLogger("otel_matomo")


_YIELD_EVERY = 128
"""Hits encoded between two offers of the GIL (see ``yield_gil``)."""
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_BACKOFF_S = 30.0


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
    if requests and _json_verbatim(set().union(*hits)):
        # Values are percent-encoded, so only a parameter name could need an escape in JSON: when none does (ours
        # never do) the items are written as they are, without json.dumps's pass over each of their characters.
        token = "" if token_auth is None else ',"token_auth":' + json.dumps(token_auth)
        return "".join(['{"requests":["', '","'.join(requests), '"]', token, "}"]).encode()  # one copy of each
    body: dict[str, object] = {"requests": requests}
    if token_auth is not None:
        body["token_auth"] = token_auth
    return json.dumps(body, separators=(",", ":")).encode()


_JSON_ESCAPED = bytes(range(0x20)) + b'"\\\x7f'
"""The ASCII characters that ``json.dumps`` escapes."""


def _json_verbatim(names: set[str]) -> bool:
    """Whether ``json.dumps`` writes the names as they are, escaping none of their characters."""
    text = "".join(names)
    return text.isascii() and len(text.encode().translate(None, _JSON_ESCAPED)) == len(text)


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
    return BulkAnswer(
        data["tracked"], invalid, tuple(i for i in indices if type(i) is int), superuser="invalid_indices" in data
    )


class Outcome(enum.Enum):
    """How a batch ended; only ``DELIVERED`` and ``PARTIAL`` mean Matomo has the hits it accepted."""

    DELIVERED = "delivered"
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


class Transport:
    """Sends batches of hits to one ``matomo.php`` with one reused ``httpx.Client``.

    A batch gets one overall deadline: attempts and backoff waits share it, and :meth:`close` ends any wait
    at once, so a shutting-down application is never held by an unreachable Matomo.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.endpoint is None:
            raise ValueError("a Transport needs an endpoint; dry-run settings have none")
        self._endpoint = settings.endpoint
        self._shown_endpoint = settings.endpoint_for_logs
        self._token_auth = settings.token_auth
        self._timeout = settings.timeout
        self._site_id = settings.site_id
        self._client = client or httpx.Client(
            headers={"User-Agent": "otel-matomo"},
            # This client only ever talks to the endpoint, without following redirects. A plain-http endpoint never
            # uses TLS, so it needs no certificate store, whose loading leaves 4,000 objects for the application's
            # garbage collector to walk in every full collection (longer pauses, measured in benchmarks/).
            verify=urlsplit(self._endpoint).scheme.lower() != "http",
        )
        self._clock = clock
        self._closed = threading.Event()
        self._log = RateLimitedLog(_logger)

    def send(self, hits: Sequence[Hit], *, retry: bool = True) -> SendResult:
        """Deliver ``hits`` in one bulk request, retrying connection errors, 429 and 5xx until the deadline.

        With ``retry=False`` a retryable failure returns ``GAVE_UP`` at once: the span processor keeps the hits
        and retries later itself, so that it can go on accepting new requests during an outage.
        """
        body = encode_bulk(hits, self._token_auth)
        deadline = self._clock() + self._timeout
        attempt = 0
        while not self._closed.is_set():
            attempt += 1
            retry_after, result = self._attempt(body, len(hits), deadline, attempt)
            if result is not None:
                return result
            if not retry:
                return SendResult(Outcome.GAVE_UP, attempts=attempt, retry_after=retry_after)
            delay = retry_after if retry_after is not None else backoff(attempt)
            if self._clock() + delay >= deadline:
                self._log.log(
                    logging.WARNING,
                    "gave-up",
                    "otel-matomo lost %d hits: Matomo at %s still failed after %d attempts within the %.1fs deadline",
                    len(hits),
                    self._shown_endpoint,
                    attempt,
                    self._timeout,
                )
                return SendResult(Outcome.GAVE_UP, attempts=attempt)
            if self._closed.wait(delay):
                break
        return SendResult(Outcome.CANCELLED, attempts=attempt)

    def close(self) -> None:
        """Stop any wait at once and release the connection pool."""
        self._closed.set()
        self._client.close()

    def _attempt(
        self, body: bytes, count: int, deadline: float, attempt: int
    ) -> tuple[float | None, SendResult | None]:
        """One POST; returns ``(retry_after, None)`` to retry or ``(None, result)`` when settled."""
        remaining = max(deadline - self._clock(), 0.001)
        try:
            response = self._client.post(
                self._endpoint,
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=remaining,
            )
        except (httpx.HTTPError, RuntimeError) as error:
            # close() from another thread makes an in-flight request fail, with RuntimeError once closed.
            if self._closed.is_set():
                return None, SendResult(Outcome.CANCELLED, attempts=attempt)
            if isinstance(error, RuntimeError):
                raise
            self._log.log(
                logging.INFO,
                "connect",
                "otel-matomo could not reach Matomo at %s (%s); retrying",
                self._shown_endpoint,
                type(error).__name__,
            )
            return None, None
        if response.status_code in _RETRYABLE_STATUS:
            self._log.log(
                logging.INFO,
                f"status-{response.status_code}",
                "otel-matomo: Matomo answered HTTP %d; the batch of %d hits will be sent again",
                response.status_code,
                count,
            )
            return _retry_after(response.headers.get("Retry-After")), None
        return None, self._settle(response, count, attempt)

    def _settle(self, response: httpx.Response, count: int, attempt: int) -> SendResult:
        if response.status_code != 200:
            self._log.log(
                logging.ERROR,
                f"status-{response.status_code}",
                "otel-matomo lost %d hits: Matomo at %s refused the batch with HTTP %d (%s)",
                count,
                self._shown_endpoint,
                response.status_code,
                self._snippet(response.content),
            )
            return SendResult(Outcome.REJECTED, invalid=count, attempts=attempt)
        try:
            answer = parse_bulk_answer(response.content)
        except MalformedAnswer as error:
            self._log.log(
                logging.ERROR,
                "malformed",
                "otel-matomo lost %d hits: %s did not answer as Matomo's bulk tracking API does (%s: %s); "
                "is the endpoint the Matomo tracker URL?",
                count,
                self._shown_endpoint,
                error,
                self._snippet(response.content),
            )
            return SendResult(Outcome.REJECTED, invalid=count, attempts=attempt)
        if answer.invalid == 0:
            return SendResult(Outcome.DELIVERED, tracked=answer.tracked, attempts=attempt)
        if answer.tracked == 0 and answer.invalid == count and answer.superuser:
            self._log.log(
                logging.ERROR,
                "site",
                "otel-matomo lost %d hits: Matomo refused all of them although the token_auth is a Super User's: "
                "is idsite %d a site of this Matomo (OTEL_EXPORTER_MATOMO_SITE_ID)?",
                count,
                self._site_id,
            )
            return SendResult(Outcome.REJECTED, invalid=count, attempts=attempt)
        if answer.tracked == 0 and answer.invalid == count and self._token_auth is not None:
            self._log.log(
                logging.ERROR,
                "secure-only",
                "otel-matomo lost %d hits: Matomo refused every hit of a batch sent with a token_auth. "
                "Either the token may not write to site %d (wrong OTEL_EXPORTER_MATOMO_SITE_ID, or a view-only "
                "token), or it was created as 'secure only' (the Matomo 5 default), which Matomo refuses inside "
                "bulk requests (Matomo bug #22910). Create a token without 'Only allow secure requests' and run "
                "`otel-matomo check`; repeated failures can get this server's IP blocked by Matomo's brute-force "
                "detection.",
                count,
                self._site_id,
            )
            return SendResult(Outcome.REJECTED, invalid=count, attempts=attempt)
        outcome = Outcome.PARTIAL if answer.tracked else Outcome.REJECTED
        where = f" at indices {list(answer.invalid_indices)}" if answer.invalid_indices else ""
        self._log.log(
            logging.WARNING,
            "invalid",
            "otel-matomo: Matomo refused %d of %d hits%s (unknown site, a cip/cdt needing a valid "
            "token_auth, ...); they are not sent again",
            answer.invalid,
            count,
            where,
        )
        return SendResult(outcome, tracked=answer.tracked, invalid=answer.invalid, attempts=attempt)

    def _snippet(self, content: bytes) -> str:
        """The start of an error answer, for the log, with the token masked should Matomo echo it."""
        text = content.decode("utf-8", "replace")
        if self._token_auth:
            text = text.replace(self._token_auth, "***")  # before cutting, so no part of it survives
        return text[:200].replace("\n", " ").strip() or "empty body"


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter, as the OTLP exporters do: 1, 2, 4 ... seconds x [0.8, 1.2]."""
    return float(min(2 ** (attempt - 1), _MAX_BACKOFF_S) * random.uniform(0.8, 1.2))


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), ``None`` if absent."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)

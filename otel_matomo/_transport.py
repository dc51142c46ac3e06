"""The HTTP sender: batches of hits POSTed to one ``matomo.php``, retried while a retry can help.

What a body holds and what Matomo's answer means is ``_bulk``'s; this module adds the network (one reused
``httpx.Client``, a deadline per batch, backoff) and says in the log what each verdict means to an operator.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from otel_matomo._bulk import Decision, Refusal, Verdict, encode_bulk, judge

# Re-exported for cli/check.py only, until it imports them from _bulk (then the three aliases go).
from otel_matomo._ratelimit import RateLimitedLog
from otel_matomo._sending import Outcome, SendResult
from otel_matomo._settings import Settings
from otel_matomo._types import Hit

_logger = logging.getLogger("otel_matomo")
_MAX_BACKOFF_S = 30.0
_ALL_REFUSED = {
    Refusal.SITE: "otel-matomo lost %d hits: Matomo refused all of them although the token_auth is a Super User's: "
    "is idsite %d a site of this Matomo (OTEL_EXPORTER_MATOMO_SITE_ID)?",
    Refusal.SECURE_ONLY: "otel-matomo lost %d hits: Matomo refused every hit of a batch sent with a token_auth. "
    "Either the token may not write to site %d (wrong OTEL_EXPORTER_MATOMO_SITE_ID, or a view-only token), or it was "
    "created as 'secure only' (the Matomo 5 default), which Matomo refuses inside bulk requests (Matomo bug #22910). "
    "Create a token without 'Only allow secure requests' and run `otel-matomo check`; repeated failures can get this "
    "server's IP blocked by Matomo's brute-force detection.",
}
"""What a batch refused whole means, by who refused it: the lost count and the site id fill them in."""


class HttpSender:
    """Sends batches of hits to one ``matomo.php`` with one reused ``httpx.Client``.

    A batch gets one overall deadline: attempts and backoff waits share it, and :meth:`close` ends any wait
    at once, so a shutting-down application is never held by an unreachable Matomo.
    """

    reaches_matomo = True

    def __init__(
        self,
        settings: Settings,
        *,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.endpoint is None:
            raise ValueError("an HttpSender needs an endpoint; dry-run settings have none")
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
        verdict = judge(
            response.status_code,
            response.content,
            count=count,
            token_sent=self._token_auth is not None,
            retry_after=response.headers.get("Retry-After"),
            now=time.time(),
        )
        if verdict.decision is Decision.RETRY:
            self._log.log(
                logging.INFO,
                f"status-{response.status_code}",
                "otel-matomo: Matomo answered HTTP %d; the batch of %d hits will be sent again",
                response.status_code,
                count,
            )
            return verdict.retry_after, None
        if verdict.refusal is not None:
            level, key, message, *args = self._refusal_log(verdict, response, count)
            self._log.log(level, key, message, *args)
        outcome = Outcome(verdict.decision.value)
        return None, SendResult(outcome, tracked=verdict.tracked, invalid=verdict.invalid, attempts=attempt)

    def _refusal_log(self, verdict: Verdict, response: httpx.Response, count: int) -> tuple[Any, ...]:
        """What to log about a refusal, as ``(level, rate-limit key, message, *arguments)``: what it means to an
        operator and what to do about it."""
        if verdict.refusal is Refusal.STATUS:
            return (
                logging.ERROR,
                f"status-{response.status_code}",
                "otel-matomo lost %d hits: Matomo at %s refused the batch with HTTP %d (%s)",
                count,
                self._shown_endpoint,
                response.status_code,
                self._snippet(response.content),
            )
        if verdict.refusal is Refusal.MALFORMED:
            return (
                logging.ERROR,
                "malformed",
                "otel-matomo lost %d hits: %s did not answer as Matomo's bulk tracking API does (%s: %s); "
                "is the endpoint the Matomo tracker URL?",
                count,
                self._shown_endpoint,
                verdict.malformed,
                self._snippet(response.content),
            )
        if verdict.refusal in _ALL_REFUSED:
            return logging.ERROR, verdict.refusal.value, _ALL_REFUSED[verdict.refusal], count, self._site_id
        where = f" at indices {list(verdict.invalid_indices)}" if verdict.invalid_indices else ""
        return (
            logging.WARNING,
            "invalid",
            "otel-matomo: Matomo refused %d of %d hits%s (unknown site, a cip/cdt needing a valid "
            "token_auth, ...); they are not sent again",
            verdict.invalid,
            count,
            where,
        )

    def _snippet(self, content: bytes) -> str:
        """The start of an error answer, for the log, with the token masked should Matomo echo it."""
        text = content.decode("utf-8", "replace")
        if self._token_auth:
            text = text.replace(self._token_auth, "***")  # before cutting, so no part of it survives
        return text[:200].replace("\n", " ").strip() or "empty body"


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter, as the OTLP exporters do: 1, 2, 4 ... seconds x [0.8, 1.2]."""
    return float(min(2 ** (attempt - 1), _MAX_BACKOFF_S) * random.uniform(0.8, 1.2))

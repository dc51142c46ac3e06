"""The HTTP sender: batches of hits POSTed to one ``matomo.php``, retried while a retry can help.

What a body holds and what Matomo's answer means is ``_bulk``'s; this module adds the network (one reused
``httpx.Client``, a deadline per batch, backoff) and says in the log what each verdict means to an operator, and
why Matomo could not be reached in words an operator acts on (refused, DNS, timeout, TLS), never with the URL.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from otel_matomo import _retry
from otel_matomo._bulk import Decision, Refusal, Verdict, encode_bulk, judge
from otel_matomo._ratelimit import RateLimitedLog
from otel_matomo._sending import Outcome, SendResult
from otel_matomo._settings import Settings
from otel_matomo._types import Hit

_logger = logging.getLogger("otel_matomo")
_ALL_REFUSED = {
    Refusal.SITE: "otel-matomo: lost %d hits: Matomo refused all of them although the token_auth is a Super User's: "
    "is idsite %d a site of this Matomo (OTEL_EXPORTER_MATOMO_SITE_ID)?",
    Refusal.SECURE_ONLY: "otel-matomo: lost %d hits: Matomo refused every hit of a batch sent with a token_auth. "
    "Either the token may not write to site %d (wrong OTEL_EXPORTER_MATOMO_SITE_ID, or a view-only token), or it was "
    "created as 'secure only' (the Matomo 5 default), which Matomo refuses inside bulk requests (Matomo bug #22910). "
    "Create a token without 'Only allow secure requests' and run `otel-matomo check`; repeated failures can get this "
    "server's IP blocked by Matomo's brute-force detection.",
}
"""What a batch refused whole means, by who refused it: the lost count and the site id fill them in."""
_CAUSES: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    ((httpx.TimeoutException, TimeoutError), "timed out"),
    ((ConnectionRefusedError,), "connection refused"),
    ((socket.gaierror,), "name does not resolve (DNS)"),
    ((httpx.RemoteProtocolError,), "connection closed without an answer"),
    ((ConnectionResetError,), "connection reset"),
)
"""Why a request got no answer, by the exception httpx raised or one it was raised from (TLS: see ``_cause``)."""


@dataclass(frozen=True)
class _Retry:
    """An attempt that did not settle the batch: wait ``retry_after`` (when Matomo asked) and send it again."""

    retry_after: float | None = None
    status: int = 0
    """The HTTP status of the answer; 0 when there was none (connection error, timeout)."""
    cause: str = ""
    """Why the attempt failed, for the messages: ``_cause``'s words, or the HTTP status."""


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
            tried = self._attempt(body, len(hits), deadline, attempt)
            if isinstance(tried, SendResult):
                return tried
            if not retry:
                return self._gave_up(attempt, tried)
            delay = _retry.delay(attempt, tried.retry_after)
            if self._clock() + delay >= deadline:
                self._log.log(
                    logging.WARNING,
                    "gave-up",
                    "otel-matomo: lost %d hits: Matomo at %s still failed after %d attempts within the %.1fs deadline "
                    "(last: %s)",
                    len(hits),
                    self._shown_endpoint,
                    attempt,
                    self._timeout,
                    tried.cause,
                )
                return self._gave_up(attempt, tried)
            if self._closed.wait(delay):
                break
        return SendResult(Outcome.CANCELLED, attempts=attempt)

    @staticmethod
    def _gave_up(attempts: int, tried: _Retry) -> SendResult:
        answered = tried.status != 0
        return SendResult(
            Outcome.GAVE_UP,
            attempts=attempts,
            retry_after=tried.retry_after,
            answered=answered,
            status=tried.status,
            cause=tried.cause,
        )

    def close(self) -> None:
        """Stop any wait at once and release the connection pool."""
        self._closed.set()
        self._client.close()

    def _attempt(self, body: bytes, count: int, deadline: float, attempt: int) -> _Retry | SendResult:
        """One POST: the result when it settles the batch, else what to retry after."""
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
                return SendResult(Outcome.CANCELLED, attempts=attempt)
            if isinstance(error, RuntimeError):
                raise
            cause = _cause(error)
            self._log.log(
                logging.INFO,
                f"connect-{cause}",
                "otel-matomo: could not reach Matomo at %s: %s (%s); retrying",
                self._shown_endpoint,
                cause,
                type(error).__name__,
            )
            return _Retry(cause=cause)
        verdict = judge(
            response.status_code,
            response.content,
            count=count,
            token_sent=self._token_auth is not None,
            retry_after=response.headers.get("Retry-After"),
            now=time.time(),
        )
        if verdict.decision is Decision.RETRY:
            level, key, message, *args = self._retry_log(verdict, response, count)
            self._log.log(level, key, message, *args)
            cause = "an answer that is not Matomo's" if verdict.malformed else f"HTTP {response.status_code}"
            return _Retry(verdict.retry_after, response.status_code, cause)
        if verdict.refusal is not None:
            level, key, message, *args = self._refusal_log(verdict, response, count)
            self._log.log(level, key, message, *args)
        if verdict.unconfirmed:
            self._log.log(
                logging.WARNING,
                "unconfirmed",
                "otel-matomo: Matomo at %s accounted for %d of %d hits (tracked %d, invalid %d); the other %d may or "
                "may not be recorded and are not sent again, so that none is recorded twice",
                self._shown_endpoint,
                verdict.tracked + verdict.invalid,
                count,
                verdict.tracked,
                verdict.invalid,
                verdict.unconfirmed,
            )
        return SendResult(
            Outcome(verdict.decision.value),
            tracked=verdict.tracked,
            invalid=verdict.invalid,
            attempts=attempt,
            unconfirmed=verdict.unconfirmed,
            answered=True,
            status=response.status_code,
        )

    def _retry_log(self, verdict: Verdict, response: httpx.Response, count: int) -> tuple[Any, ...]:
        """What to log about an answer after which the batch is sent again, as :meth:`_refusal_log` does."""
        if verdict.malformed:
            # An error: nothing gets through until it is fixed, and it is most often a wrong endpoint (a web
            # server's welcome page answers 200 to any POST).
            return (
                logging.ERROR,
                "malformed",
                "otel-matomo: %s did not answer as Matomo's bulk tracking API does (%s: %s); is the endpoint the "
                "Matomo tracker URL? What it stored of the batch of %d hits is unknown; the batch will be sent again",
                self._shown_endpoint,
                verdict.malformed,
                self._snippet(response.content),
                count,
            )
        return (
            logging.INFO,
            f"status-{response.status_code}",
            "otel-matomo: Matomo answered HTTP %d; the batch of %d hits will be sent again",
            response.status_code,
            count,
        )

    def _refusal_log(self, verdict: Verdict, response: httpx.Response, count: int) -> tuple[Any, ...]:
        """What to log about a refusal, as ``(level, rate-limit key, message, *arguments)``: what it means to an
        operator and what to do about it."""
        if verdict.refusal is Refusal.STATUS:
            return (
                logging.ERROR,
                f"status-{response.status_code}",
                "otel-matomo: lost %d hits: Matomo at %s refused the batch with HTTP %d (%s)",
                count,
                self._shown_endpoint,
                response.status_code,
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


def _cause(error: BaseException) -> str:
    """Why a request got no answer, in words: what httpx raised or what it was raised from. Never the message
    itself, which may carry the URL and with it a password."""
    chain = list(_chain(error))
    for types, cause in _CAUSES:
        if any(isinstance(link, types) for link in chain):
            return cause
    for link in chain:
        if isinstance(link, ssl.SSLError):
            # verify_message ("self-signed certificate") or reason ("WRONG_VERSION_NUMBER"): OpenSSL's words.
            detail = getattr(link, "verify_message", None) or str(link.reason or "").replace("_", " ").lower()
            return f"TLS error ({detail})" if detail else "TLS error"
    return "no answer"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from or during, each once."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__

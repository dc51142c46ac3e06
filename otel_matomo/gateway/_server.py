"""The OTLP/HTTP traces receiver: an ASGI application (``otel-matomo gateway`` runs it, see :mod:`._process`).

Only ``POST /v1/traces`` exists. The request path does cheap and bounded work only (authenticate, read at most
``max_body_size`` bytes, decompress under the same cap, decode, translate, store the hits in the delivery
worker's buffer, on disk with a spool) and answers at once; Matomo is reached by the worker's threads. Status
codes follow the OTLP/HTTP specification, because they drive what the sender does: 400, 401, 413 and 415 are
never retried, 429 and 503 are retried after ``Retry-After``.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from otel_matomo._clock import SystemClock
from otel_matomo._names import GATEWAY_ENV_PREFIX as ENV_PREFIX
from otel_matomo._pipeline import Pipeline
from otel_matomo._ratelimit import RateLimitedLog
from otel_matomo._settings import Settings
from otel_matomo._types import DropReason, ExportStats, Hit
from otel_matomo._worker import Admission, DeliveryWorker
from otel_matomo.gateway._admission import Busy, Load
from otel_matomo.gateway._config import GatewayConfig
from otel_matomo.gateway._otlp import (
    Encoding,
    PayloadTooLarge,
    StatusCode,
    decode,
    export_response,
    gunzip,
    http_request_of,
    status_body,
)
from otel_matomo.gateway._otlp_limits import DecodeLimits, RequestTooLarge
from otel_matomo.gateway._otlp_records import SPAN_KIND_SERVER, MalformedPayload, SpanRecord, TraceRequest

_logger = logging.getLogger("otel_matomo.gateway")

TRACES_PATH = "/v1/traces"
_RETRY_AFTER_S = 5
"""Seconds a sender should wait after 429 or 503: about one bulk request to Matomo."""
_BUSY_RETRY_AFTER_S = 1
"""Seconds a sender should wait when the gateway is at its memory or decoding limit: a decode takes well under a
second."""
_GZIP = frozenset({"gzip", "x-gzip"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class _Disconnected(Exception):
    """The client went away before its body arrived; there is no one to answer."""


class _Site:
    """One Matomo site: its pipeline (the exporter's translation and sending) and its delivery worker, whose
    spool, when ``OTEL_EXPORTER_MATOMO_SPOOL_DIR`` is set, is the ``site-<id>`` folder in it."""

    def __init__(self, settings: Settings) -> None:
        self.pipeline = Pipeline(settings)
        spool_dir = None if settings.spool_dir is None else os.path.join(settings.spool_dir, f"site-{settings.site_id}")
        self.worker: DeliveryWorker[SpanRecord] = DeliveryWorker(
            self.pipeline,
            http_request_of,
            clock=SystemClock(),
            name=f"gateway (site {settings.site_id})",
            spool_dir=spool_dir,
        )


class Gateway:
    """The ASGI application: OTLP trace export requests in, Matomo hits stored for each site's delivery worker.

    ``settings`` are the ``OTEL_EXPORTER_MATOMO_*`` settings shared by every site; each Matomo site named in
    ``config.sites`` gets a copy with its own site id and its own :class:`Pipeline`, so translation and delivery
    are the exporter's, one code path. ``settings.site_id`` is the site of services the mapping does not name,
    unless ``default_site`` is false: their spans are then rejected. The workers start here; call :meth:`close`
    (the ASGI lifespan shutdown does) to drain them.
    """

    def __init__(self, config: GatewayConfig, settings: Settings, *, default_site: bool = True) -> None:
        self.config = config
        site_ids = set(config.sites.values()) | ({settings.site_id} if default_site else set())
        self._sites = {site_id: _Site(dataclasses.replace(settings, site_id=site_id)) for site_id in sorted(site_ids)}
        self._by_service = {service: self._sites[site_id] for service, site_id in config.sites.items()}
        self._default = self._sites[settings.site_id] if default_site else None
        self._token = config.token.encode() if config.token is not None else None
        self._limits = DecodeLimits.of(config)
        self._log = RateLimitedLog(_logger)
        self._close_lock = threading.Lock()
        self._closed = False
        self._load = Load(config.max_body_memory, config.max_decoding)

    @property
    def stats(self) -> dict[int, ExportStats]:
        """Running totals per Matomo site id."""
        return {site_id: site.pipeline.stats for site_id, site in self._sites.items()}

    def close(self) -> None:
        """Refuse new requests (503), deliver what waits within the drain timeout, then stop, each site logging
        its totals (what a spool keeps is delivered by the next start); idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        closing = [
            threading.Thread(target=site.worker.close, args=(self.config.drain_timeout,), daemon=True)
            for site in self._sites.values()
        ]
        for thread in closing:
            thread.start()
        for thread in closing:
            thread.join(self.config.drain_timeout + 2.0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            answer = await self._handle(scope, receive)
        except _Disconnected:
            return
        headers = [(b"content-type", answer.content_type.encode())]
        headers += [(name.encode(), value.encode()) for name, value in answer.headers]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # The server has stopped accepting connections and finished the requests in flight.
                await anyio.to_thread.run_sync(self.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(self, scope: Scope, receive: Receive) -> _Answer:
        if scope["path"] != TRACES_PATH:
            return _Answer(404, b"not found: OTLP/HTTP traces go to POST /v1/traces\n")
        if scope["method"] != "POST":
            return _Answer(405, b"method not allowed: use POST\n", headers=(("allow", "POST"),))
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        encoding = Encoding.of(headers.get("content-type"))
        if not self._authorized(headers.get("authorization")):
            return _error(
                encoding,
                401,
                StatusCode.UNAUTHENTICATED,
                "missing or wrong bearer token (Authorization: Bearer <token>)",
                headers=(("www-authenticate", 'Bearer realm="otel-matomo"'),),
            )
        if encoding is None:
            return _Answer(
                415, b"unsupported content type: expected application/x-protobuf or application/json (OTLP/HTTP)\n"
            )
        content_encoding = headers.get("content-encoding", "identity").strip().lower() or "identity"
        if content_encoding != "identity" and content_encoding not in _GZIP:
            return _error(
                encoding,
                415,
                StatusCode.INVALID_ARGUMENT,
                f"unsupported Content-Encoding {content_encoding!r}: use gzip",
            )
        length = headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > self.config.max_body_size:
            return self._too_large(encoding)
        if self._closed:
            return _unavailable(encoding, 503, "the gateway is shutting down")
        if any(site.worker.waiting >= self.config.queue_size for site in self._sites.values()):
            return _unavailable(encoding, 429, "the gateway's queue to Matomo is full")
        try:
            with self._load.holding() as hold:
                body = await _read_body(receive, self.config.max_body_size, hold)
                if body is None:
                    return self._too_large(encoding)
                # Decoding costs CPU and a multiple of the body in memory: a few at once, the others come back
                # soon, instead of every request of a burst (or an attack) decoding at the same time.
                with self._load.decoding():
                    return await anyio.to_thread.run_sync(self._accept, body, encoding, content_encoding in _GZIP)
        except Busy as busy:
            return _unavailable(encoding, 503, str(busy), _BUSY_RETRY_AFTER_S)

    def _authorized(self, authorization: str | None) -> bool:
        if self._token is None:
            return True
        scheme, _, credentials = (authorization or "").strip().partition(" ")
        # compare_digest: the time taken must not tell an attacker how much of a guess was right.
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self._token)

    def _accept(self, body: bytes, encoding: Encoding, gzipped: bool) -> _Answer:
        """Decode, translate and queue one export request (in a worker thread: this is the CPU-bound part)."""
        try:
            request = decode(gunzip(body, self.config.max_body_size) if gzipped else body, encoding, self._limits)
        except PayloadTooLarge:
            return self._too_large(encoding)
        except RequestTooLarge as error:
            return _error(encoding, 413, StatusCode.RESOURCE_EXHAUSTED, str(error))
        except MalformedPayload as error:
            return _error(encoding, 400, StatusCode.INVALID_ARGUMENT, str(error))
        work, rejections = self._translate(request)
        # Stored (on disk, with a spool) before the answer: a 200 is a promise that a restart keeps.
        for site, hits in work:
            admission = site.worker.accept(hits, self.config.queue_size)
            if admission is Admission.FULL:
                return _unavailable(encoding, 429, "the gateway's queue to Matomo is full")
            if admission is Admission.CLOSED:
                return _unavailable(encoding, 503, "the gateway is shutting down")
        return _Answer(200, export_response(encoding, rejections), encoding.value)

    def _translate(self, request: TraceRequest) -> tuple[list[tuple[_Site, list[Hit]]], Counter[str]]:
        """Hits per site; only SERVER spans can be requests, and the resource's service.name picks the site."""
        rejections = Counter(request.rejections)
        by_site: dict[int, tuple[_Site, list[SpanRecord]]] = {}
        for span in request.spans:
            if span.kind != SPAN_KIND_SERVER:
                continue
            site = self._by_service.get(span.service_name or "", self._default)
            if site is None:
                service = span.service_name or "(none)"
                rejections[f"SERVER spans from service.name {service!r}, which maps to no Matomo site"] += 1
                self._log.log(
                    logging.WARNING,
                    f"unmapped-{service}",
                    "otel-matomo: gateway rejected spans of service.name %r: %sSITES does not name it and "
                    "OTEL_EXPORTER_MATOMO_SITE_ID is not set",
                    service,
                    ENV_PREFIX,
                )
                continue
            by_site.setdefault(id(site), (site, []))[1].append(span)
        work: list[tuple[_Site, list[Hit]]] = []
        for site, spans in by_site.values():
            translation = site.pipeline.translate(spans, http_request_of)
            # Invalid facts count as malformed too, but their spans were accepted (their page views are sent).
            malformed = translation.dropped.get(DropReason.MALFORMED, 0) - translation.invalid_facts
            if malformed:
                rejections["SERVER spans that could not be translated (the gateway logs why)"] += malformed
            if translation.hits:
                work.append((site, translation.hits))
        return work, rejections

    def _too_large(self, encoding: Encoding) -> _Answer:
        return _error(
            encoding,
            413,
            StatusCode.RESOURCE_EXHAUSTED,
            f"the request body exceeds {self.config.max_body_size} bytes ({ENV_PREFIX}MAX_BODY_SIZE); "
            "send smaller batches",
        )


async def _read_body(receive: Receive, limit: int, hold: Callable[[int], None]) -> bytes | None:
    """The whole body, or ``None`` as soon as it exceeds ``limit`` (chunked bodies announce no length); each
    chunk is counted by ``hold`` before it is kept."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        hold(len(chunk))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _error(
    encoding: Encoding | None, status: int, code: StatusCode, message: str, headers: tuple[tuple[str, str], ...] = ()
) -> _Answer:
    if encoding is None:
        return _Answer(status, (message + "\n").encode(), headers=headers)
    return _Answer(status, status_body(encoding, code, message), encoding.value, headers)


def _unavailable(encoding: Encoding, status: int, message: str, retry_after: int = _RETRY_AFTER_S) -> _Answer:
    return _error(
        encoding,
        status,
        StatusCode.RESOURCE_EXHAUSTED if status == 429 else StatusCode.UNAVAILABLE,
        f"{message}; retry later",
        headers=(("retry-after", str(retry_after)),),
    )

"""Delivery (``MatomoSpanProcessor``) against the real Matomo 5: an outage replayed, a restart with a spool, sampling.

A tiny loopback TCP proxy stands in front of the real Matomo; ``down()`` closes its port (connections are
refused) and cuts every connection through it, ``up()`` listens on the same port again. Requests are real, in
real time, through the FastAPI example app under uvicorn, into site 1 *today* (the fidelity corpus is
yesterday's; the other tests that track today look only at their own visitor ids). Each visitor here has its own
IP and so its own visitor id, and the assertions look at those visitors only.

- Outage: two visitors browse during a ~10 s outage; the processor keeps their hits in memory and, once the
  proxy is back, delivers them by itself (its own backoff, no flush) with their original ``cdt``, exactly once,
  in order.
- Spool: a processor with ``spool_dir`` is shut down during the same outage with hits undelivered; a new
  processor on the same spool (started while Matomo is still unreachable) replays them after recovery, before
  its own.
- Sampling: ``parentbased_traceidratio(0.1)`` (``AnalyticsSampler``) keeps about one trace in ten for the trace
  backend while all 100 requests reach Matomo.
"""

from __future__ import annotations

import random
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fastapi_app
import httpx
import pytest
from opentelemetry.context import Context
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind

from otel_matomo import MatomoSpanProcessor
from otel_matomo._sending import Outcome, SendResult
from otel_matomo._transport import HttpSender
from otel_matomo._types import ExportStats, Hit
from otel_matomo._visitor import visitor_id
from otel_matomo.sampling import parentbased_traceidratio
from tests.real_matomo.conftest import Matomo
from tests.real_matomo.replay import header_capture
from tests.servers import free_port, serve_asgi, wait_until

pytestmark = pytest.mark.real_matomo

SECRET = "real-matomo-delivery-visitor-secret"
HOST = "delivery.example"
UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.{v} "
    "Safari/605.1.15"
)
OUTAGE_S = 10
SPOOL_SHUTDOWN_AT = 4
"""Outage second at which the spooling processor is shut down (after 4 requests)."""
SPOOL_RESTART_AT = 5
"""Outage second at which a new processor starts on the same spool (it serves the requests from then on)."""
RECOVERY_TIMEOUT_S = 25.0
"""The processor's backoff after ~10 s of failures is at most 8 s x 1.2 before its next attempt."""


@dataclass(frozen=True)
class Visitor:
    ip: str
    user_agent: str

    def headers(self) -> dict[str, str]:
        return {"Host": HOST, "User-Agent": self.user_agent, "Accept-Language": "en", "X-Forwarded-For": self.ip}

    @property
    def cid(self) -> str:
        return visitor_id(SECRET.encode(), self.ip, self.user_agent)


FIRST = Visitor("192.0.2.201", UA.format(v=1))
SECOND = Visitor("192.0.2.202", UA.format(v=2))
SPOOLED = Visitor("192.0.2.203", UA.format(v=3))
SAMPLED = Visitor("192.0.2.204", UA.format(v=4))


# --------------------------------------------------------------------------------------------- the proxy


class OutageProxy:
    """A loopback TCP forwarder that can refuse connections (an outage) and come back on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, args=(listener, self._stop), daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Close the port (new connections are refused) and cut every connection through the proxy."""
        assert self._thread is not None
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            cut, self._open = self._open, set()
        for sock in cut:
            _close(sock)

    def refuses(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return False

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                client.settimeout(None)
                try:
                    upstream = socket.create_connection(self._target, timeout=5)
                except OSError:
                    _close(client)
                    continue
                upstream.settimeout(None)
                with self._lock:
                    self._open.update((client, upstream))
                    self.connections += 1
                threading.Thread(target=self._relay, args=(client, upstream), daemon=True).start()
        finally:
            listener.close()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
        _pump(upstream, client)  # Matomo's server closes after each answer: the exchange is over
        with self._lock:
            self._open.difference_update((client, upstream))
        _close(client)
        _close(upstream)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    with suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv()
    sock.close()


# --------------------------------------------------------------------------------------------- the apps


class StartTimes(SpanProcessor):
    """The start (UTC seconds) of every SERVER span as it ends, in order; waits for a count."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self._condition = threading.Condition()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if span.kind is SpanKind.SERVER:
            with self._condition:
                self.starts.append((span.start_time or 0) // 1_000_000_000)
                self._condition.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> int:
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.starts) >= count, timeout):
                raise AssertionError(f"only {len(self.starts)} of {count} server spans ended")
            return self.starts[count - 1]


@dataclass
class Sent:
    """One request: who, which path, and its server span's start second (the hit's ``cdt``)."""

    visitor: Visitor
    path: str
    at: int


@dataclass
class App:
    """The FastAPI example under uvicorn, traced by its own provider into one processor."""

    provider: TracerProvider
    processor: MatomoSpanProcessor
    client: httpx.Client
    starts: StartTimes
    sent: list[Sent]

    def get(self, visitor: Visitor, path: str) -> None:
        """One request; returns once its server span ended (an ASGI span ends after the answer was sent)."""
        count = len(self.starts.starts) + 1
        assert self.client.get(path, headers=visitor.headers()).status_code == 200
        self.sent.append(Sent(visitor, path, self.starts.wait_for(count)))


@dataclass
class Send:
    """A bulk request the processors made: when (wall clock), its hits and Matomo's answer."""

    at: float
    hits: list[Hit]
    result: SendResult


@contextmanager
def record_sends(patch: pytest.MonkeyPatch) -> Iterator[list[Send]]:
    sends: list[Send] = []
    lock = threading.Lock()
    original: Callable[..., SendResult] = HttpSender.send

    def send(self: HttpSender, hits: Sequence[Hit], *args: Any, **kwargs: Any) -> SendResult:
        result = original(self, hits, *args, **kwargs)
        with lock:
            sends.append(Send(time.time(), list(hits), result))
        return result

    with patch.context() as local:
        local.setattr(HttpSender, "send", send)
        yield sends


def serve(stack: ExitStack, processor: MatomoSpanProcessor, sent: list[Sent], **provider_options: Any) -> App:
    starts = StartTimes()
    provider = TracerProvider(**provider_options)
    provider.add_span_processor(starts)
    provider.add_span_processor(processor)
    stack.callback(provider.shutdown)
    app = fastapi_app.create_app()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    base = stack.enter_context(serve_asgi(app))
    client = stack.enter_context(httpx.Client(base_url=base, timeout=10))
    return App(provider, processor, client, starts, sent)


def processor(endpoint: str, site_id: int, token: str, **options: Any) -> MatomoSpanProcessor:
    return MatomoSpanProcessor(
        endpoint=endpoint,
        site_id=site_id,
        token_auth=token,
        visitor_id_secret=SECRET,
        schedule_delay=timedelta(milliseconds=100),
        **options,
    )


def spooled_rows(spool: Path) -> int:
    [path] = spool.glob("*.sqlite3")
    with sqlite3.connect(path) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM hits").fetchone()
    return int(count)


# --------------------------------------------------------------------------------------------- the outage


@dataclass
class Outage:
    matomo: Matomo
    sent: list[Sent]
    """Every request of the memory-buffered app, in order."""
    spool_sent: list[Sent]
    """Every request of the two spooling processors' apps, in order."""
    sends: list[Send]
    down_at: float
    up_at: float
    memory: ExportStats
    """The memory-buffered processor's totals, after recovery."""
    memory_during: ExportStats
    """... and at the end of the outage."""
    first_stopped: ExportStats
    """The spooling processor shut down during the outage."""
    restarted: ExportStats
    spooled_at_shutdown: int
    spooled_at_end: int
    live_during: list[dict[str, Any]]
    """Live's visits of the outage's visitors at the end of the outage."""
    recovered_in: float

    def visit(self, visitor: Visitor, sent: list[Sent]) -> dict[str, Any]:
        day = datetime.fromtimestamp(sent[-1].at, timezone.utc).strftime("%Y-%m-%d")
        [visit] = self.matomo.visits(self.matomo.site_id, day, segment=f"visitorId=={visitor.cid}")
        return visit


@pytest.fixture(scope="module")
def outage(
    clean_matomo: Matomo, session_monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outage]:
    matomo = clean_matomo
    target = urlsplit(matomo.url)
    proxy = OutageProxy((target.hostname or "127.0.0.1", target.port or 80))
    spool = tmp_path_factory.mktemp("spool")
    site, token = matomo.site_id, matomo.token
    sent: list[Sent] = []
    spool_sent: list[Sent] = []
    with ExitStack() as stack:
        sends = stack.enter_context(record_sends(session_monkeypatch))
        stack.enter_context(header_capture(session_monkeypatch))
        proxy.up()
        stack.callback(proxy.down)
        memory = serve(stack, processor(proxy.url, site, token), sent)
        spooling = serve(stack, processor(proxy.url, site, token, spool_dir=str(spool)), spool_sent)

        # Before the outage: both visitors land, delivered at once.
        memory.get(FIRST, "/")
        memory.get(SECOND, "/")
        assert memory.processor.force_flush(10_000)
        assert memory.processor.stats.tracked == 2

        proxy.down()
        down_at = time.time()
        assert proxy.refuses()
        restarted: App | None = None
        spooled_at_shutdown = -1
        for second in range(OUTAGE_S):
            delay = down_at + second - time.time()
            if delay > 0:
                time.sleep(delay)
            memory.get((FIRST, SECOND)[second % 2], f"/items/{10 + second}")
            if second < SPOOL_SHUTDOWN_AT:
                spooling.get(SPOOLED, f"/items/{50 + second}")
            elif second == SPOOL_SHUTDOWN_AT:
                spooling.provider.shutdown()  # its last attempt fails: the hits stay in the spool file
                spooled_at_shutdown = spooled_rows(spool)
            elif second == SPOOL_RESTART_AT:
                restarted = serve(stack, processor(proxy.url, site, token, spool_dir=str(spool)), spool_sent)
            else:
                assert restarted is not None
                restarted.get(SPOOLED, f"/items/{50 + second}")
        time.sleep(max(down_at + OUTAGE_S - time.time(), 0))
        assert restarted is not None
        memory_during = memory.processor.stats
        live_during = [
            visit
            for visitor in (FIRST, SECOND, SPOOLED)
            for visit in matomo.visits(site, "today", segment=f"visitorId=={visitor.cid}")
        ]

        proxy.up()
        up_at = time.time()
        expected = len(sent), len(spool_sent)
        # No flush: the processors find Matomo back by themselves.
        wait_until(
            lambda: (memory.processor.stats.tracked, restarted.processor.stats.tracked) == expected,
            f"not every buffered hit reached Matomo within {RECOVERY_TIMEOUT_S} s of its return",
            timeout=RECOVERY_TIMEOUT_S,
        )
        recovered_in = time.time() - up_at
        assert restarted.processor.force_flush(5_000)
        yield Outage(
            matomo=matomo,
            sent=sent,
            spool_sent=spool_sent,
            sends=list(sends),
            down_at=down_at,
            up_at=up_at,
            memory=memory.processor.stats,
            memory_during=memory_during,
            first_stopped=spooling.processor.stats,
            restarted=restarted.processor.stats,
            spooled_at_shutdown=spooled_at_shutdown,
            spooled_at_end=spooled_rows(spool),
            live_during=live_during,
            recovered_in=recovered_in,
        )


def actions(visit: dict[str, Any]) -> list[tuple[str, int]]:
    return [(urlsplit(action["url"]).path, action["timestamp"]) for action in visit["actionDetails"]]


def test_outage_hits_are_kept_while_matomo_is_unreachable(outage: Outage) -> None:
    """During the outage every attempt failed (refused connections), nothing was lost, Matomo had only the
    two landing pages; the processor kept accepting requests."""
    during = [send for send in outage.sends if outage.down_at <= send.at < outage.up_at]
    assert during, "no attempt during the outage"
    assert {send.result.outcome for send in during} == {Outcome.GAVE_UP}
    assert (outage.memory_during.tracked, outage.memory_during.lost, outage.memory_during.requests) == (
        2,
        0,
        2 + OUTAGE_S,
    )
    assert sorted(len(visit["actionDetails"]) for visit in outage.live_during) == [1, 1]


def test_outage_hits_are_delivered_after_recovery_with_their_original_times(outage: Outage) -> None:
    """Live: each visitor's pages in the order requested, at the second each request started (its span's start),
    not when they were delivered; the bulk requests that carried them were made after the proxy came back."""
    for visitor in (FIRST, SECOND):
        mine = [sent for sent in outage.sent if sent.visitor is visitor]
        assert actions(outage.visit(visitor, mine)) == [(sent.path, sent.at) for sent in mine]
        assert all(sent.at < outage.up_at for sent in mine)
    outage_paths = {sent.path for sent in outage.sent[2:]}
    delivered = [
        send
        for send in outage.sends
        if send.result.outcome is Outcome.DELIVERED
        and any(hit["url"].endswith(tuple(outage_paths)) for hit in send.hits)
    ]
    assert delivered
    assert all(send.at >= outage.up_at for send in delivered)
    # Sent as recorded: each hit's cdt is its request's start, seconds before the delivery.
    cdts = [int(hit["cdt"]) for send in delivered for hit in send.hits if hit["cid"] in (FIRST.cid, SECOND.cid)]
    assert cdts == [sent.at for sent in outage.sent[2:]]
    assert max(cdts) < min(send.at for send in delivered)
    print(f"outage of {OUTAGE_S} s: recovered {outage.recovered_in:.1f} s after Matomo was reachable again")


def test_outage_hits_are_delivered_exactly_once(outage: Outage) -> None:
    """Matomo's answers and Live agree: 12 requests, 12 hits tracked once, no duplicate, nothing lost."""
    memory = outage.memory
    assert (memory.requests, memory.tracked, memory.invalid, memory.lost) == (12, 12, 0, 0)
    accepted = [
        hit["rand"]
        for send in outage.sends
        if send.result.outcome is Outcome.DELIVERED
        for hit in send.hits
        if hit["cid"] in (FIRST.cid, SECOND.cid)
    ]
    assert sorted(accepted) == sorted(set(accepted))
    assert len(accepted) == len(outage.sent)
    visits = [outage.visit(visitor, outage.sent) for visitor in (FIRST, SECOND)]
    assert [len(visit["actionDetails"]) for visit in visits] == [6, 6]
    assert [int(visit["actions"]) for visit in visits] == [6, 6]


def test_spool_replays_after_a_restart_during_the_outage(outage: Outage) -> None:
    """The spooling processor shut down with 4 hits undelivered (kept in the spool, not counted lost); a new
    processor on the same spool replayed them after recovery, then its own 4, all at their original times."""
    assert outage.spooled_at_shutdown == SPOOL_SHUTDOWN_AT
    assert (outage.first_stopped.requests, outage.first_stopped.tracked, outage.first_stopped.lost) == (4, 0, 0)
    assert (outage.restarted.requests, outage.restarted.tracked, outage.restarted.lost) == (4, 8, 0)
    assert outage.spooled_at_end == 0
    visit = outage.visit(SPOOLED, outage.spool_sent)
    assert actions(visit) == [(sent.path, sent.at) for sent in outage.spool_sent]
    assert len(outage.spool_sent) == 8
    assert all(sent.at < outage.up_at for sent in outage.spool_sent)


# --------------------------------------------------------------------------------------------- sampling


class SeededIds(IdGenerator):
    """Trace and span ids from a seeded generator, so the 10 % sample is the same on every run."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def generate_span_id(self) -> int:
        with self._lock:
            return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        with self._lock:
            return self._random.getrandbits(128) or 1


def test_sampled_traces_still_track_every_request(clean_matomo: Matomo, monkeypatch: pytest.MonkeyPatch) -> None:
    """``parentbased_traceidratio(0.1)``: the trace backend gets a tenth of the requests, Matomo all 100."""
    matomo = clean_matomo
    traces = InMemorySpanExporter()
    sent: list[Sent] = []
    with ExitStack() as stack:
        stack.enter_context(header_capture(monkeypatch))
        tracker = processor(matomo.url, matomo.site_id, matomo.token)
        app = serve(stack, tracker, sent, sampler=parentbased_traceidratio(0.1), id_generator=SeededIds(20240611))
        app.provider.add_span_processor(SimpleSpanProcessor(traces))
        for number in range(1, 101):
            app.get(SAMPLED, f"/items/{number}")
        assert tracker.force_flush(20_000)
        stats = tracker.stats
    sampled = [span for span in traces.get_finished_spans() if span.kind is SpanKind.SERVER]
    assert 0 < len(sampled) < 30, len(sampled)
    assert all(span.context.trace_flags.sampled for span in sampled)
    assert (stats.requests, stats.tracked, stats.invalid, stats.lost) == (100, 100, 0, 0)
    day = datetime.fromtimestamp(sent[-1].at, timezone.utc).strftime("%Y-%m-%d")
    [visit] = matomo.visits(matomo.site_id, day, segment=f"visitorId=={SAMPLED.cid}")
    assert [path for path, _ in actions(visit)] == [f"/items/{number}" for number in range(1, 101)]
    assert [timestamp for _, timestamp in actions(visit)] == [s.at for s in sent]

"""Matomo down, failing, slow or restarted while a real instrumented app is under a steady, bounded load.

Each request carries a unique id in its URL (``rid``) and a visitor in ``X-Forwarded-For``; the stand-in's
tracked hits are matched back to the requests sent: every request delivered exactly once, each visitor's hits in
chronological order. The figures are printed (run with ``-s`` to see them).

- ``OUTAGE_SECONDS`` (default 60): the long outage of the in-process app (FastAPI under uvicorn).
- ``MEMORY_OUTAGE_SECONDS`` (default 15): the outage of the memory test, at a few hundred requests a second.
- The spool and memory tests run ``outage_app.py`` in a process of its own (``kill -9``, ``/proc/<pid>``).
"""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import fastapi_app
import httpx
import pytest
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from otel_matomo import REQUEST_HEADERS, MatomoSpanProcessor, Settings
from tests.matomo_standin import WRITE_TOKEN, Behaviour, MatomoStandIn
from tests.servers import free_port, serve_asgi, wait_until

OUTAGE_SECONDS = float(os.environ.get("OUTAGE_SECONDS", "60"))
MEMORY_OUTAGE_SECONDS = float(os.environ.get("MEMORY_OUTAGE_SECONDS", "15"))
SECRET = "outage-visitor-secret-0123456789"
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
APP = Path(__file__).with_name("outage_app.py")
ROOT = Path(__file__).resolve().parents[2]
SCHEDULE_DELAY = 0.2
MAX_BACKOFF = 36.0
"""The processor's longest wait between two attempts (30 s with +20 % jitter): the worst recovery delay."""
_runs = itertools.count(1)


# Load, and matching hits back to requests.


@dataclass
class Sent:
    rid: str
    visitor: str
    sequence: int
    """The request's place among its visitor's requests."""
    at: float
    """``time.monotonic()`` when it was sent."""
    wall: float
    """``time.time()`` when it was sent: the hit's ``cdt``."""


@dataclass
class Load:
    """``rate`` requests a second per thread, each thread with its own visitors, each request with its own id."""

    base_url: str
    rate: float
    threads: int = 1
    visitors: int = 7
    run: str = field(default_factory=lambda: f"r{next(_runs)}x{os.getpid()}")
    sent: dict[str, Sent] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        for index in range(self.threads):
            worker = threading.Thread(target=self._send, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> Load:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)
        return self

    def _send(self, index: int) -> None:
        sequence: Counter[str] = Counter()
        interval = 1.0 / self.rate
        due = time.monotonic()
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                visitor = f"198.51.{100 + index}.{n % self.visitors + 1}"
                rid = f"{self.run}-{index}-{n}"
                sent = Sent(rid, visitor, sequence[visitor], time.monotonic(), time.time())
                sequence[visitor] += 1
                try:
                    status = client.get(
                        f"/items/{n % 100}?rid={rid}",
                        headers={"X-Forwarded-For": visitor, "User-Agent": UA, "Accept-Language": "en"},
                    ).status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                with self._lock:
                    if status == 200:
                        self.sent[rid] = sent
                    else:
                        self.failed.append(f"{rid}: {status}")
                due += interval
                pause = due - time.monotonic()
                if pause > 0:
                    self._stop.wait(pause)
                else:
                    due = time.monotonic()  # behind: never burst to catch up


def _rid(url: str) -> str | None:
    return dict(parse_qsl(urlsplit(url).query)).get("rid")


@dataclass
class Figures:
    name: str
    requests: int
    delivered: int
    duplicates: int
    missing: list[str]
    out_of_order: list[str]
    max_delay: float
    peak_buffer: int
    extra: dict[str, Any] = field(default_factory=dict)

    def show(self) -> None:
        extra = "".join(f", {key} {value}" for key, value in self.extra.items())
        print(
            f"\n[{self.name}] requests {self.requests}, delivered {self.delivered}, duplicates {self.duplicates}, "
            f"missing {len(self.missing)}, out of order {len(self.out_of_order)}, max delay {self.max_delay:.1f}s, "
            f"peak buffer {self.peak_buffer}{extra}"
        )


def delivered_rids(standin: MatomoStandIn, load: Load) -> list[str]:
    prefix = load.run + "-"
    return [rid for hit in list(standin.tracked) if (rid := _rid(hit["url"])) and rid.startswith(prefix)]


def _hits_of(standin: MatomoStandIn, load: Load) -> list[dict[str, str]]:
    return [hit for hit in list(standin.tracked) if (_rid(hit["url"]) or "").startswith(load.run + "-")]


def all_delivered(standin: MatomoStandIn, load: Load) -> bool:
    return set(load.sent) <= set(delivered_rids(standin, load))


def figures(name: str, standin: MatomoStandIn, load: Load, peak_buffer: int, **extra: Any) -> Figures:
    tracked = _hits_of(standin, load)
    counts = Counter(_rid(hit["url"]) for hit in tracked)
    out_of_order = []
    last: dict[str, int] = {}
    for hit in tracked:
        sent = load.sent.get(_rid(hit["url"]) or "")
        if sent is None:
            continue
        assert hit["cip"] == sent.visitor, "the visitor comes from X-Forwarded-For"
        if counts[sent.rid] == 1 and sent.sequence < last.get(sent.visitor, -1):
            out_of_order.append(sent.rid)
        last[sent.visitor] = max(sent.sequence, last.get(sent.visitor, -1))
    arrived: dict[str, float] = {}
    for received in list(standin.received):
        if received.answer_status != 200:
            continue
        for item in received.body.get("requests", []):  # type: ignore[union-attr]
            rid = _rid(dict(parse_qsl(str(item).lstrip("?"))).get("url", ""))
            if rid in load.sent:
                arrived.setdefault(rid, received.arrived)
    delays = [arrived[rid] - sent.at for rid, sent in load.sent.items() if rid in arrived]
    return Figures(
        name=name,
        requests=len(load.sent),
        delivered=len(counts),
        duplicates=sum(count - 1 for count in counts.values()),
        missing=sorted(set(load.sent) - set(counts)),
        out_of_order=out_of_order,
        max_delay=max(delays, default=0.0),
        peak_buffer=peak_buffer,
        extra=extra,
    )


def assert_exactly_once_in_order(result: Figures, load: Load) -> None:
    assert not load.failed, f"the app failed requests: {load.failed[:5]}"
    assert result.requests > 0
    assert not result.missing, f"{len(result.missing)} requests never reached Matomo, e.g. {result.missing[:5]}"
    assert result.duplicates == 0
    assert result.delivered == result.requests
    assert not result.out_of_order, f"visitors' hits out of order: {result.out_of_order[:5]}"


class Peak:
    """Samples a length in a thread; the peak is the largest seen."""

    def __init__(self, length: Any, every: float = 0.05) -> None:
        self.peak = 0
        self._length = length
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self.peak = max(self.peak, self._length())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak


# The in-process app.


@pytest.fixture(scope="module")
def matomo() -> Iterator[MatomoStandIn]:
    standin = MatomoStandIn().start()
    yield standin
    standin.stop()


@dataclass
class Shop:
    base_url: str
    processor: MatomoSpanProcessor


@pytest.fixture(scope="module")
def shop(matomo: MatomoStandIn) -> Iterator[Shop]:
    settings = Settings.from_env(
        {},
        endpoint=matomo.url,
        site_id=1,
        token_auth=WRITE_TOKEN,
        visitor_id_secret=SECRET,
        schedule_delay=timedelta(seconds=SCHEDULE_DELAY),
        timeout=timedelta(seconds=2),
    )
    processor = MatomoSpanProcessor(settings=settings)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    app = fastapi_app.create_app()
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        http_capture_headers_server_request=list(REQUEST_HEADERS),
        exclude_spans=["receive", "send"],
    )
    with serve_asgi(app) as base_url:
        yield Shop(base_url, processor)
    provider.shutdown()


@pytest.fixture
def healthy(matomo: MatomoStandIn, shop: Shop) -> Iterator[MatomoStandIn]:
    """The stand-in up and answering normally before and after each test; the buffer empty after it."""
    matomo.behaviour = Behaviour()
    if matomo._server is None:
        matomo.start()
    yield matomo
    matomo.behaviour = Behaviour()
    if matomo._server is None:
        matomo.start()
    assert shop.processor.force_flush(10_000), "the buffer drains once Matomo is back"


def test_a_long_outage_loses_nothing_and_sends_nothing_twice(shop: Shop, healthy: MatomoStandIn) -> None:
    load = Load(shop.base_url, rate=20).start()
    peak = Peak(lambda: len(shop.processor._worker._buffer))
    time.sleep(2)
    healthy.stop()
    down = time.monotonic()
    time.sleep(OUTAGE_SECONDS)
    healthy.start()
    up = time.monotonic()
    time.sleep(2)
    load.stop()
    wait_until(lambda: all_delivered(healthy, load), "not every request was delivered", timeout=MAX_BACKOFF + 15)
    recovered = time.monotonic() - up
    time.sleep(2 * SCHEDULE_DELAY)
    result = figures(
        "outage",
        healthy,
        load,
        peak.stop(),
        outage=f"{up - down:.0f}s",
        recovered_after=f"{recovered:.1f}s",
        stats=shop.processor.stats,
    )
    result.show()
    assert_exactly_once_in_order(result, load)
    assert result.peak_buffer >= OUTAGE_SECONDS * 20 * 0.8, "the hits of the outage waited in the buffer"
    assert result.max_delay >= OUTAGE_SECONDS
    stats = shop.processor.stats
    assert stats.outage_bound == stats.expired == stats.queue_full == stats.lost == 0


@pytest.mark.parametrize(
    ("name", "behaviour"),
    [("HTTP 500", Behaviour(status=500)), ("HTTP 503 with Retry-After: 1", Behaviour(status=503, retry_after="1"))],
    ids=["500", "503-retry-after"],
)
def test_matomo_failing_loses_nothing_and_sends_nothing_twice(
    shop: Shop, healthy: MatomoStandIn, name: str, behaviour: Behaviour
) -> None:
    refused_before = sum(received.answer_status != 200 for received in healthy.received)
    load = Load(shop.base_url, rate=20).start()
    peak = Peak(lambda: len(shop.processor._worker._buffer))
    time.sleep(1.5)
    healthy.behaviour = Behaviour(status=behaviour.status, retry_after=behaviour.retry_after)
    time.sleep(4)
    healthy.behaviour = Behaviour()
    time.sleep(1)
    load.stop()
    wait_until(lambda: all_delivered(healthy, load), "not every request was delivered", timeout=MAX_BACKOFF)
    refused = sum(received.answer_status != 200 for received in healthy.received) - refused_before
    result = figures(name, healthy, load, peak.stop(), refused_batches=refused)
    result.show()
    assert_exactly_once_in_order(result, load)
    assert refused > 0


def test_slow_answers_within_the_timeout_lose_nothing_and_send_nothing_twice(
    shop: Shop, healthy: MatomoStandIn
) -> None:
    load = Load(shop.base_url, rate=20).start()
    peak = Peak(lambda: len(shop.processor._worker._buffer))
    time.sleep(1)
    healthy.behaviour = Behaviour(delay=1.5)  # the processor's timeout is 2 s
    time.sleep(4)
    healthy.behaviour = Behaviour()
    time.sleep(1)
    load.stop()
    wait_until(lambda: all_delivered(healthy, load), "not every request was delivered", timeout=20)
    result = figures("slow answers, 1.5 s", healthy, load, peak.stop())
    result.show()
    assert_exactly_once_in_order(result, load)
    # The slow answers were in effect: a request that came just after a batch left (requests come every 50 ms)
    # waited for that batch's 1.5 s answer; the next batch leaves as soon as the answer is in.
    assert result.max_delay >= 1.5 - 0.1


def test_answers_slower_than_the_timeout_lose_nothing(shop: Shop, healthy: MatomoStandIn) -> None:
    """At least once: Matomo may have stored a batch whose answer came too late, so it can come twice."""
    load = Load(shop.base_url, rate=20).start()
    peak = Peak(lambda: len(shop.processor._worker._buffer))
    time.sleep(1)
    healthy.behaviour = Behaviour(delay=2.5)  # the processor's timeout is 2 s
    time.sleep(3)
    healthy.behaviour = Behaviour()
    time.sleep(1)
    load.stop()
    wait_until(lambda: all_delivered(healthy, load), "not every request was delivered", timeout=MAX_BACKOFF)
    time.sleep(2.6)  # the last late answers land
    result = figures("answers after the timeout, 2.5 s", healthy, load, peak.stop())
    result.show()
    assert not load.failed
    assert not result.missing


# The app in a process of its own.


@dataclass
class AppProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(self.base_url + "/_outage/stats", timeout=5).json()
        return answer

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def apps() -> Iterator[list[AppProcess]]:
    started: list[AppProcess] = []
    yield started
    for app in started:
        if app.process.poll() is None:
            app.process.terminate()
            try:
                app.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                app.process.kill()


def start_app(matomo: MatomoStandIn, log: Path, **settings: str) -> AppProcess:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        OTEL_EXPORTER_MATOMO_ENDPOINT=matomo.url,
        OTEL_EXPORTER_MATOMO_SITE_ID="1",
        OTEL_EXPORTER_MATOMO_TOKEN_AUTH=WRITE_TOKEN,
        OTEL_EXPORTER_MATOMO_VISITOR_ID_SECRET=SECRET,
        OTEL_EXPORTER_MATOMO_SCHEDULE_DELAY=str(int(SCHEDULE_DELAY * 1000)),
        OTEL_EXPORTER_MATOMO_TIMEOUT="2000",
        OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST=",".join(REQUEST_HEADERS),
        **{f"OTEL_EXPORTER_MATOMO_{name}": value for name, value in settings.items()},
    )
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, str(APP), str(port)], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    app = AppProcess(process, f"http://127.0.0.1:{port}", log)

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the app exited: {log.read_text()}")
        try:
            httpx.get(app.base_url + "/healthz", timeout=0.5)  # excluded from Matomo by default
        except httpx.HTTPError:
            return False
        return True

    wait_until(answers, "the app did not start", timeout=30)
    return app


def spooled(directory: Path) -> int:
    with sqlite3.connect(directory / "otel-matomo-spool.sqlite3", timeout=10) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM hits").fetchone()
    return int(count)


def test_the_spool_survives_kill_9_during_an_outage(
    matomo: MatomoStandIn, apps: list[AppProcess], tmp_path: Path
) -> None:
    matomo.behaviour = Behaviour()
    spool = tmp_path / "spool"
    first = start_app(matomo, tmp_path / "app.log", SPOOL_DIR=str(spool))
    apps.append(first)
    load = Load(first.base_url, rate=20).start()
    time.sleep(2)
    matomo.stop()
    time.sleep(4)
    load.stop()
    time.sleep(5 * SCHEDULE_DELAY)  # the last requests reached the spool
    before = len(set(delivered_rids(matomo, load)))
    at_kill = spooled(spool)
    first.kill()  # kill -9: no shutdown, no flush
    assert at_kill == len(load.sent) - before, "every request not yet delivered is in the spool"
    second = start_app(matomo, tmp_path / "app.log", SPOOL_DIR=str(spool))
    apps.append(second)
    matomo.start()
    up = time.monotonic()
    # Within the backoff, or the lease (34 s) should the kill have caught a batch in flight.
    wait_until(lambda: all_delivered(matomo, load), "the spool was not replayed", timeout=45)
    replayed = time.monotonic() - up
    time.sleep(3 * SCHEDULE_DELAY)
    result = figures(
        "spool, kill -9",
        matomo,
        load,
        at_kill,
        delivered_before_kill=before,
        spooled_at_kill=at_kill,
        replayed_after=f"{replayed:.1f}s",
    )
    result.show()
    assert_exactly_once_in_order(result, load)
    assert at_kill > 0
    skew = max(abs(int(hit["cdt"]) - load.sent[_rid(hit["url"]) or ""].wall) for hit in _hits_of(matomo, load))
    assert skew < 2, "replayed hits keep the time of the request (cdt)"
    wait_until(lambda: spooled(spool) == 0, "the spool was not emptied", timeout=10)


@dataclass
class Sample:
    at: float
    """Seconds since Matomo went down."""
    buffer: int
    rss_kib: int


@dataclass
class MemoryRun:
    bound: int
    load: Load
    down: float
    samples: list[Sample]
    stats: dict[str, int]
    result: Figures
    log: str
    """What the app printed (its warnings)."""

    @property
    def full(self) -> list[Sample]:
        return [sample for sample in self.samples if sample.buffer >= self.bound * 0.95]


@pytest.fixture(scope="module")
def memory_run(matomo: MatomoStandIn, tmp_path_factory: pytest.TempPathFactory) -> MemoryRun:
    """A few hundred requests a second while Matomo is down for ``MEMORY_OUTAGE_SECONDS``, buffer bound 2000."""
    bound = 2000
    matomo.behaviour = Behaviour()
    if matomo._server is None:
        matomo.start()
    log = tmp_path_factory.mktemp("memory") / "app.log"
    app = start_app(matomo, log, BUFFER_MAX_HITS=str(bound))
    try:
        load = Load(app.base_url, rate=80, threads=4, visitors=25).start()
        time.sleep(2)  # warm: imports, caches and connection pools are in place
        matomo.stop()
        down = time.monotonic()
        samples = []
        while time.monotonic() - down < MEMORY_OUTAGE_SECONDS:
            stats = app.stats()
            samples.append(Sample(time.monotonic() - down, stats["buffer"], stats["rss_kib"]))
            time.sleep(0.5)
        load.stop()
        final = app.stats()
        matomo.start()
        assert httpx.post(app.base_url + "/_outage/flush", timeout=15).json()["flushed"]
        stats = app.stats()["stats"]
    finally:
        app.process.terminate()
        app.process.wait(timeout=15)
    result = figures("memory", matomo, load, final["buffer"])
    run = MemoryRun(bound, load, down, samples, stats, result, log.read_text())
    sent_during_outage = sum(down <= sent.at for sent in load.sent.values())
    full = run.full[0] if run.full else samples[0]
    run.result.peak_buffer = max(sample.buffer for sample in samples)
    run.result.extra.update(
        rate=f"{sent_during_outage / MEMORY_OUTAGE_SECONDS:.0f}/s",
        sent_during_outage=sent_during_outage,
        outage_bound=stats["outage_bound"],
        buffer_bytes_at_end=final["buffer_bytes"],
        rss_when_full=f"{full.rss_kib / 1024:.1f}MiB at {full.at:.0f}s",
        rss_at_end=f"{samples[-1].rss_kib / 1024:.1f}MiB at {samples[-1].at:.0f}s",
        rss_growth_while_full=f"{(samples[-1].rss_kib - full.rss_kib) / 1024:.1f}MiB",
    )
    run.result.show()
    print("  buffer, RSS MiB every 2 s:", [(sample.buffer, round(sample.rss_kib / 1024, 1)) for sample in samples[::4]])
    return run


def test_memory_the_buffer_stays_within_its_bound_and_drops_the_oldest(memory_run: MemoryRun) -> None:
    run, result, stats = memory_run, memory_run.result, memory_run.stats
    assert not run.load.failed
    sent_during_outage = sum(run.down <= sent.at for sent in run.load.sent.values())
    assert sent_during_outage >= 150 * MEMORY_OUTAGE_SECONDS, "a few hundred requests a second"
    assert run.full, f"the buffer never filled up: {[sample.buffer for sample in run.samples]}"
    assert all(sample.buffer <= run.bound for sample in run.samples)
    assert stats["outage_bound"] > 0
    assert "hits (outage_bound): too many waited while Matomo was unreachable" in run.log, "the drops are logged"
    assert stats["requests"] == stats["tracked"] + stats["outage_bound"], "every request delivered or counted"
    assert stats["queue_full"] == stats["lost"] == stats["expired"] == 0
    assert result.duplicates == 0
    assert not result.out_of_order
    assert len(result.missing) == stats["outage_bound"], "the dropped are exactly the missing"
    missing = set(result.missing)
    kept = [sent.at for rid, sent in run.load.sent.items() if rid not in missing and sent.at >= run.down]
    dropped = [run.load.sent[rid].at for rid in missing]
    assert max(dropped) <= min(kept) + 2 * SCHEDULE_DELAY, "the oldest hits were dropped first"


def test_memory_rss_stays_flat_while_the_buffer_is_full(memory_run: MemoryRun) -> None:
    """Once the buffer is full, nothing grows per request (a span kept per request showed as ~1.3 MiB/s)."""
    full = memory_run.full
    assert full
    growth_kib = memory_run.samples[-1].rss_kib - full[0].rss_kib
    assert growth_kib < 4 * 1024, f"RSS grew {growth_kib / 1024:.1f} MiB while the buffer was full"

"""``MatomoSpanExporter`` over real SDK spans, sending to the local ``matomo.php`` stand-in over loopback."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_matomo import _pipeline as pipeline_module
from otel_matomo import _retry as retry_module
from otel_matomo._hits import RequestHits, request_hits
from otel_matomo._settings import Settings
from otel_matomo._types import HttpRequest
from otel_matomo.exporter import ExportStats, MatomoSpanExporter
from tests.matomo_standin import SECURE_ONLY_TOKEN, SUPERUSER_TOKEN, WRITE_TOKEN, Behaviour, MatomoStandIn

SECRET = "a-visitor-id-secret-of-some-length"
TOKENS = (SUPERUSER_TOKEN, WRITE_TOKEN, SECURE_ONLY_TOKEN)
CLIENT_IP = "203.0.113.7"
NOW_NS = time.time_ns() - 60 * 1_000_000_000  # a minute ago: recent enough to need no token for cdt


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry_module, "backoff", lambda attempt: 0.05)


def make_exporter(
    standin: MatomoStandIn | None, token: str | None = None, timeout: float = 2.0, **kwargs: Any
) -> MatomoSpanExporter:
    settings = Settings.from_env(
        {},
        endpoint=standin.url if standin is not None else None,
        site_id=1,
        token_auth=token,
        timeout=timedelta(seconds=timeout),
        visitor_id_secret=SECRET,
        **kwargs,
    )
    return MatomoSpanExporter(settings=settings)


def http_attributes(path: str, method: str = "GET", status: int = 200, **extra: Any) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "url.scheme": "https",
        "url.path": path,
        "http.response.status_code": status,
        "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        "network.peer.address": CLIENT_IP,
        "http.request.header.host": ("shop.example",),
    }
    attributes.update(extra)
    return attributes


def record_spans(*specs: tuple[str, SpanKind, dict[str, Any], int]) -> list[ReadableSpan]:
    """Finish real SDK spans ``(name, kind, attributes, start offset in ms)``; each lasts 25 ms."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    for name, kind, attributes, offset_ms in specs:
        start = NOW_NS + offset_ms * 1_000_000
        span = tracer.start_span(name, kind=kind, attributes=attributes, start_time=start)
        span.end(end_time=start + 25_000_000)
    provider.shutdown()
    return list(memory.get_finished_spans())


def server(path: str, offset_ms: int = 0, **extra: Any) -> tuple[str, SpanKind, dict[str, Any], int]:
    return (f"GET {path}", SpanKind.SERVER, http_attributes(path, **extra), offset_ms)


def mixed_spans() -> list[ReadableSpan]:
    """Three HTTP server spans, recorded out of start order, among spans that are not page views."""
    return record_spans(
        server("/third", 300),
        ("internal work", SpanKind.INTERNAL, http_attributes("/internal"), 10),
        server("/first", 100),
        ("GET https://api.example/x", SpanKind.CLIENT, http_attributes("/x"), 20),
        ("SELECT shop", SpanKind.CLIENT, {"db.system": "postgresql", "db.statement": "SELECT 1"}, 30),
        ("/grpc.Service/Call", SpanKind.SERVER, {"rpc.system": "grpc"}, 40),
        ("publish", SpanKind.PRODUCER, http_attributes("/producer"), 50),
        server("/second", 200),
    )


def sent_items(standin: MatomoStandIn, index: int = 0) -> list[str]:
    items = standin.received[index].body["requests"]
    assert isinstance(items, list)
    return items


def assert_token_kept_secret(caplog: pytest.LogCaptureFixture, standin: MatomoStandIn | None = None) -> None:
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        for token in TOKENS:
            assert token not in text
    for received in standin.received if standin is not None else ():
        for token in TOKENS:
            assert token not in received.path
            assert token not in received.query
            assert all(token not in item for item in received.body.get("requests", []))  # type: ignore[union-attr]


# --- selection and order --------------------------------------------------------------------------------------------


def test_only_http_server_spans_become_hits_in_one_post_sorted_by_start(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture
) -> None:
    exporter = make_exporter(standin)
    assert exporter.export(mixed_spans()) is SpanExportResult.SUCCESS
    assert len(standin.received) == 1
    assert [hit["url"] for hit in standin.tracked] == [
        "https://shop.example/first",
        "https://shop.example/second",
        "https://shop.example/third",
    ]
    assert [hit["action_name"] for hit in standin.tracked] == ["GET /first", "GET /second", "GET /third"]
    assert [int(hit["cdt"]) for hit in standin.tracked] == [
        (NOW_NS + offset * 1_000_000) // 1_000_000_000 for offset in (100, 200, 300)
    ]
    assert all(item.startswith("?") for item in sent_items(standin))
    assert exporter.stats == ExportStats(requests=3, tracked=3, batches=1)
    assert_token_kept_secret(logs, standin)


def test_batch_without_http_server_spans_sends_nothing(standin: MatomoStandIn) -> None:
    spans = record_spans(
        ("internal", SpanKind.INTERNAL, http_attributes("/a"), 0),
        ("GET https://api.example", SpanKind.CLIENT, http_attributes("/b"), 1),
        ("SELECT", SpanKind.CLIENT, {"db.system": "mysql"}, 2),
        ("/grpc.Service/Call", SpanKind.SERVER, {"rpc.system": "grpc"}, 3),
    )
    exporter = make_exporter(standin)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.export([]) is SpanExportResult.SUCCESS
    assert standin.received == []
    assert exporter.stats == ExportStats()


def test_old_semantic_conventions_are_read(standin: MatomoStandIn) -> None:
    spans = record_spans(
        (
            "GET /old",
            SpanKind.SERVER,
            {"http.method": "POST", "http.target": "/old?x=1", "http.scheme": "http", "http.status_code": 201},
            0,
        )
    )
    exporter = make_exporter(standin)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    [hit] = standin.tracked
    assert hit["action_name"] == "POST /old"
    assert hit["url"] == "http://localhost/old?x=1"


# --- outcomes and counters ------------------------------------------------------------------------------------------


def test_gave_up_returns_failure_and_counts_lost(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, fast_backoff: None
) -> None:
    exporter = make_exporter(standin, token=WRITE_TOKEN, timeout=0.3)
    standin.stop()
    started = time.monotonic()
    assert exporter.export(mixed_spans()) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 0.3 + 0.3
    assert exporter.stats == ExportStats(requests=3, lost=3, batches=1)
    assert_token_kept_secret(logs)


def test_all_invalid_hits_are_counted_and_export_fails(standin: MatomoStandIn, logs: pytest.LogCaptureFixture) -> None:
    standin.sites = {2}  # site 1 is unknown: every hit is invalid, for good
    exporter = make_exporter(standin)
    assert exporter.export(mixed_spans()) is SpanExportResult.FAILURE
    assert exporter.stats == ExportStats(requests=3, invalid=3, batches=1)
    assert len(standin.received) == 1


def test_rejected_batch_returns_failure_and_counts_invalid(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture
) -> None:
    exporter = make_exporter(standin, token=SECURE_ONLY_TOKEN)
    assert exporter.export(mixed_spans()) is SpanExportResult.FAILURE
    assert exporter.stats == ExportStats(requests=3, invalid=3, batches=1)
    assert len(standin.received) == 1
    assert_token_kept_secret(logs, standin)


def test_counters_accumulate_over_exports(standin: MatomoStandIn, fast_backoff: None) -> None:
    exporter = make_exporter(standin, timeout=0.3)
    assert exporter.export(record_spans(server("/a"), server("/b", 1))) is SpanExportResult.SUCCESS
    standin.behaviour = Behaviour(status=400)
    assert exporter.export(record_spans(server("/c"))) is SpanExportResult.FAILURE
    standin.stop()
    assert exporter.export(record_spans(server("/d"), server("/e", 1))) is SpanExportResult.FAILURE
    stats = exporter.stats
    assert stats == ExportStats(requests=5, tracked=2, invalid=1, lost=2, batches=3)
    assert stats.requests == stats.tracked + stats.invalid + stats.lost


def test_stats_is_a_copy(standin: MatomoStandIn) -> None:
    exporter = make_exporter(standin)
    exporter.stats.requests = 99
    assert exporter.stats.requests == 0


# --- malformed spans and unexpected errors --------------------------------------------------------------------------


def test_span_that_cannot_be_translated_is_skipped_and_counted(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fragile_request_hits(request: HttpRequest, settings: Settings) -> RequestHits:
        if request.path == "/boom":
            raise ValueError("cannot translate this span")
        return request_hits(request, settings)

    monkeypatch.setattr(pipeline_module, "request_hits", fragile_request_hits)
    exporter = make_exporter(standin)
    spans = record_spans(server("/before", 0), server("/boom", 1), server("/after", 2))
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert [hit["url"] for hit in standin.tracked] == ["https://shop.example/before", "https://shop.example/after"]
    assert exporter.stats == ExportStats(requests=2, malformed=1, tracked=2, batches=1)
    [warning] = [r for r in logs.records if "could not translate" in r.getMessage()]
    assert "GET '/boom'" in warning.getMessage()
    assert warning.exc_info is not None


def test_span_with_odd_attribute_types_does_not_break_the_batch(standin: MatomoStandIn) -> None:
    odd = http_attributes(
        "/odd", **{"http.response.status_code": "teapot", "user_agent.original": 42, "network.peer.address": "x"}
    )
    spans = record_spans(("GET /odd", SpanKind.SERVER, odd, 0), server("/fine", 1))
    exporter = make_exporter(standin)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert len(standin.tracked) == 2


def test_export_never_raises_when_the_transport_fails_unexpectedly(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = make_exporter(standin, token=WRITE_TOKEN)

    def broken_send(hits: Sequence[dict[str, str]]) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(exporter._pipeline._sender, "send", broken_send)
    assert exporter.export(mixed_spans()) is SpanExportResult.FAILURE
    [error] = [r for r in logs.records if r.levelno >= logging.ERROR]
    assert "lost 3 hits to an unexpected error" in error.getMessage()
    assert error.exc_info is not None
    assert standin.received == []
    assert_token_kept_secret(logs)


def test_hits_of_a_batch_that_failed_unexpectedly_are_counted_lost(
    standin: MatomoStandIn, logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = make_exporter(standin)

    def broken_send(hits: Sequence[dict[str, str]]) -> None:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(exporter._pipeline._sender, "send", broken_send)
    exporter.export(mixed_spans())
    stats = exporter.stats
    assert stats.requests == 3
    assert stats.lost == 3


# --- shutdown -------------------------------------------------------------------------------------------------------


def test_export_after_shutdown_fails_without_network(standin: MatomoStandIn) -> None:
    exporter = make_exporter(standin)
    exporter.shutdown()
    assert exporter.export(mixed_spans()) is SpanExportResult.FAILURE
    assert standin.received == []
    assert exporter.stats == ExportStats()
    assert exporter.force_flush() is True


def test_dry_run_exporter_shuts_down() -> None:
    exporter = make_exporter(None, dry_run=True)
    exporter.shutdown()
    assert exporter.export(mixed_spans()) is SpanExportResult.FAILURE


# --- dry run and translate ------------------------------------------------------------------------------------------


def test_dry_run_logs_each_hit_as_json_and_sends_nothing(
    standin: MatomoStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="otel_matomo.hits")
    exporter = make_exporter(standin, dry_run=True)  # an endpoint is set, yet nothing may be sent
    assert exporter.export(mixed_spans()) is SpanExportResult.SUCCESS
    records = [r for r in caplog.records if r.name == "otel_matomo.hits"]
    assert len(records) == 3
    hits = [record.hit for record in records]  # type: ignore[attr-defined]
    assert [json.loads(record.getMessage()) for record in records] == hits
    assert [hit["url"] for hit in hits] == [f"https://shop.example/{p}" for p in ("first", "second", "third")]
    assert all(record.levelno == logging.INFO for record in records)
    assert standin.received == []
    assert exporter.stats == ExportStats(requests=3)


def test_dry_run_without_endpoint() -> None:
    exporter = make_exporter(None, dry_run=True)
    assert exporter.settings.endpoint is None
    assert exporter.export(mixed_spans()) is SpanExportResult.SUCCESS


def test_translate_returns_hits_without_sending(standin: MatomoStandIn) -> None:
    exporter = make_exporter(standin)
    hits = exporter.translate(mixed_spans())
    assert [hit["action_name"] for hit in hits] == ["GET /first", "GET /second", "GET /third"]
    for hit in hits:
        assert hit["idsite"] == "1"
        assert hit["rec"] == "1"
        assert len(hit["cid"]) == 16
        assert hit["ua"].startswith("Mozilla/5.0")
        assert hit["pf_srv"] == "25"
    assert standin.received == []
    assert exporter.stats == ExportStats()


# --- cip and the token ----------------------------------------------------------------------------------------------


def test_cip_only_with_token(standin: MatomoStandIn) -> None:
    without = make_exporter(standin).translate(mixed_spans())
    with_token = make_exporter(standin, token=WRITE_TOKEN).translate(mixed_spans())
    assert all("cip" not in hit for hit in without)
    assert [hit["cip"] for hit in with_token] == [CLIENT_IP] * 3


def test_cip_with_token_is_accepted_by_matomo(standin: MatomoStandIn, logs: pytest.LogCaptureFixture) -> None:
    exporter = make_exporter(standin, token=WRITE_TOKEN)
    assert exporter.export(mixed_spans()) is SpanExportResult.SUCCESS
    assert [hit["cip"] for hit in standin.tracked] == [CLIENT_IP] * 3
    assert standin.received[0].body["token_auth"] == WRITE_TOKEN
    assert exporter.stats.invalid == 0
    assert_token_kept_secret(logs, standin)


def test_repr_does_not_leak_the_token(standin: MatomoStandIn) -> None:
    exporter = make_exporter(standin, token=WRITE_TOKEN)
    for text in (repr(exporter), str(exporter), repr(exporter.settings), repr(exporter.stats)):
        assert WRITE_TOKEN not in text
    assert WRITE_TOKEN not in exporter.settings.endpoint_for_logs


def test_keyword_arguments_build_the_settings(standin: MatomoStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENDPOINT", "SITE_ID", "TOKEN_AUTH", "TIMEOUT", "VISITOR_ID_SECRET", "ERROR_PAGE_TITLES", "DRY_RUN"):
        monkeypatch.delenv(f"OTEL_EXPORTER_MATOMO_{name}", raising=False)
    exporter = MatomoSpanExporter(
        endpoint=standin.url,
        site_id=2,
        token_auth=WRITE_TOKEN,
        timeout=timedelta(seconds=1.5),
        visitor_id_secret=SECRET,
    )
    assert exporter.settings.endpoint == standin.url + "/matomo.php"
    assert (exporter.settings.site_id, exporter.settings.timeout) == (2, 1.5)
    assert exporter.export(record_spans(server("/kw"))) is SpanExportResult.SUCCESS
    assert [hit["idsite"] for hit in standin.tracked] == ["2"]

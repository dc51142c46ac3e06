"""The gateway's HTTP behaviour, served by a real uvicorn on loopback and delivering to the matomo.php stand-in.

Each OTLP/HTTP status code is checked with the body a client would parse (``ExportTraceServiceResponse`` or a
``google.rpc.Status`` in the request's encoding), and the hits that reach the stand-in are compared exactly.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import timedelta
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_matomo._settings import Settings
from otel_matomo._visitor import visitor_id
from otel_matomo.gateway import Gateway, GatewayConfig
from tests.factories import OTLP_UA as UA
from tests.factories import OTLP_VISITOR as VISITOR
from tests.factories import otlp_payload as payload
from tests.factories import otlp_server_span as span
from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn
from tests.servers import serve_asgi

SECRET = "gateway-visitor-secret"
BEARER = "gateway-bearer-token-0123456789"
JSON = {"content-type": "application/json"}
PROTOBUF = {"content-type": "application/x-protobuf"}


# --- payloads ---------------------------------------------------------------------------------------------------


def merged(*payloads: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [entry for each in payloads for entry in each["resourceSpans"]]}


def as_json(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def as_protobuf(data: dict[str, Any]) -> bytes:
    """Through protobuf's own JSON parser: OTLP/JSON's hex ids are base64 in proto3 JSON."""

    def proto3(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: base64.b64encode(bytes.fromhex(value)).decode() if key in ("traceId", "spanId") else proto3(value)
                for key, value in node.items()
            }
        return [proto3(item) for item in node] if isinstance(node, list) else node

    return json_format.ParseDict(proto3(data), ExportTraceServiceRequest()).SerializeToString()


def expected_hit(
    path: str = "/items/7", *, span_id: int = 1, site: int = 1, route: str = "/items/:id"
) -> dict[str, str]:
    return {
        "idsite": str(site),
        "rec": "1",
        "apiv": "1",
        "rand": f"{span_id:016x}",
        "cid": visitor_id(SECRET.encode(), VISITOR, UA),
        "cip": VISITOR,
        "url": f"https://shop.example{path}",
        "action_name": f"GET {route}",
        "pf_srv": "3",
        "ua": UA,
    }


def without_cdt(hits: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{key: value for key, value in hit.items() if key != "cdt"} for hit in hits]


# --- fixtures ---------------------------------------------------------------------------------------------------

MakeGateway = Callable[..., tuple[Gateway, httpx.Client]]


@pytest.fixture
def make_gateway(standin: MatomoStandIn) -> Iterator[MakeGateway]:
    """Start gateways on free loopback ports; each is closed (drained) at the end of the test."""
    with ExitStack() as stack:

        def make(*, default_site: bool = True, timeout: float = 5.0, **config: Any) -> tuple[Gateway, httpx.Client]:
            settings = Settings.from_env(
                {},
                endpoint=standin.url,
                site_id=1,
                token_auth=WRITE_TOKEN,
                visitor_id_secret=SECRET,
                timeout=timedelta(seconds=timeout),
            )
            gateway = Gateway(GatewayConfig(**config), settings, default_site=default_site)
            stack.callback(gateway.close)
            base_url = stack.enter_context(serve_asgi(gateway))
            client = stack.enter_context(httpx.Client(base_url=base_url, timeout=10))
            return gateway, client

        yield make


@pytest.fixture
def gateway(make_gateway: MakeGateway) -> tuple[Gateway, httpx.Client]:
    return make_gateway()


# --- accepted requests ------------------------------------------------------------------------------------------


def test_json_request_is_answered_in_json_and_becomes_hits(
    gateway: tuple[Gateway, httpx.Client], standin: MatomoStandIn
) -> None:
    _, client = gateway
    data = payload(span("/items/7", span_id=1), span("/", span_id=2, route="/"), span("/x", span_id=3, kind=1))

    response = client.post("/v1/traces", content=as_json(data), headers=JSON)

    assert (response.status_code, response.headers["content-type"], response.json()) == (200, "application/json", {})
    assert without_cdt(standin.wait_for_hits(2)) == [
        expected_hit("/items/7", span_id=1),
        expected_hit("/", span_id=2, route="/"),
    ]
    cdt = int(standin.tracked[0]["cdt"])
    assert abs(cdt - time.time()) < 5


def test_protobuf_request_is_answered_in_protobuf(
    gateway: tuple[Gateway, httpx.Client], standin: MatomoStandIn
) -> None:
    _, client = gateway

    response = client.post("/v1/traces", content=as_protobuf(payload(span())), headers=PROTOBUF)

    assert (response.status_code, response.headers["content-type"]) == (200, "application/x-protobuf")
    assert not ExportTraceServiceResponse.FromString(response.content).HasField("partial_success")
    assert without_cdt(standin.wait_for_hits(1)) == [expected_hit()]


@pytest.mark.parametrize("encode", [as_json, as_protobuf], ids=["json", "protobuf"])
def test_gzip_bodies_are_accepted(
    gateway: tuple[Gateway, httpx.Client], standin: MatomoStandIn, encode: Callable[[dict[str, Any]], bytes]
) -> None:
    _, client = gateway
    headers = {**(JSON if encode is as_json else PROTOBUF), "content-encoding": "gzip"}

    response = client.post("/v1/traces", content=gzip.compress(encode(payload(span()))), headers=headers)

    assert response.status_code == 200
    assert without_cdt(standin.wait_for_hits(1)) == [expected_hit()]


def test_chunked_bodies_without_a_length_are_accepted(
    gateway: tuple[Gateway, httpx.Client], standin: MatomoStandIn
) -> None:
    # The Node.js exporter sends Transfer-Encoding: chunked, with no Content-Length.
    _, client = gateway
    body = as_json(payload(span()))

    response = client.post("/v1/traces", content=iter([body[:10], body[10:]]), headers=JSON)

    assert response.status_code == 200
    assert len(standin.wait_for_hits(1)) == 1


def test_requests_without_server_spans_are_simply_accepted(
    gateway: tuple[Gateway, httpx.Client], standin: MatomoStandIn
) -> None:
    _, client = gateway

    for body in (b"{}", as_json(payload(span(kind=1), span(kind=3, span_id=2)))):
        assert client.post("/v1/traces", content=body, headers=JSON).json() == {}
    assert client.post("/v1/traces", content=b"", headers=PROTOBUF).content == b""
    time.sleep(0.2)
    assert standin.received == []


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_unusable_spans_come_back_as_partial_success(
    gateway: tuple[Gateway, httpx.Client], standin: MatomoStandIn, encoding: str
) -> None:
    _, client = gateway
    no_start = span("/b", span_id=3)
    del no_start["startTimeUnixNano"]
    data = payload(span("/a", span_id=2), no_start)

    if encoding == "json":
        bad_id = {**span("/c"), "spanId": "not-hex-not-hex!"}
        data["resourceSpans"][0]["scopeSpans"][0]["spans"].append(bad_id)
        response = client.post("/v1/traces", content=as_json(data), headers=JSON)
        partial = response.json()["partialSuccess"]
        rejected, message = int(partial["rejectedSpans"]), partial["errorMessage"]
        assert rejected == 2
        assert "1 without a valid spanId" in message
    else:
        response = client.post("/v1/traces", content=as_protobuf(data), headers=PROTOBUF)
        partial = ExportTraceServiceResponse.FromString(response.content).partial_success
        rejected, message = partial.rejected_spans, partial.error_message
        assert rejected == 1

    assert response.status_code == 200
    assert "1 without a startTimeUnixNano" in message
    assert without_cdt(standin.wait_for_hits(1)) == [expected_hit("/a", span_id=2)]


# --- refused requests -------------------------------------------------------------------------------------------


def test_unknown_content_types_get_415(gateway: tuple[Gateway, httpx.Client]) -> None:
    _, client = gateway

    for content_type in ("text/plain", "application/protobuf", None):
        headers = {"content-type": content_type} if content_type else {}
        response = client.post("/v1/traces", content=b"{}", headers=headers)
        assert response.status_code == 415
        assert "application/x-protobuf or application/json" in response.text


def test_unknown_content_encodings_get_415_in_the_request_encoding(gateway: tuple[Gateway, httpx.Client]) -> None:
    _, client = gateway

    response = client.post("/v1/traces", content=b"{}", headers={**JSON, "content-encoding": "br"})

    assert response.status_code == 415
    assert response.json() == {"code": 3, "message": "unsupported Content-Encoding 'br': use gzip"}


def test_bodies_above_the_limit_get_413(make_gateway: MakeGateway) -> None:
    _, client = make_gateway(max_body_size=5000)
    big = as_json(payload(*(span(span_id=i) for i in range(1, 20))))
    bomb = gzip.compress(b" " * 1_000_000)
    compressed = gzip.compress(as_protobuf(payload(*(span(span_id=i) for i in range(1, 40)))))
    assert len(big) > 5000
    assert len(bomb) < 5000
    assert len(compressed) < 5000

    announced = client.post("/v1/traces", content=big, headers=JSON)
    chunked = client.post("/v1/traces", content=iter([big[:3000], big[3000:]]), headers=JSON)
    bombed = client.post("/v1/traces", content=bomb, headers={**JSON, "content-encoding": "gzip"})
    inflated = client.post("/v1/traces", content=compressed, headers={**PROTOBUF, "content-encoding": "gzip"})

    for response in (announced, chunked, bombed):
        assert response.status_code == 413
        assert response.json()["code"] == 8
        assert "exceeds 5000 bytes (OTEL_MATOMO_GATEWAY_MAX_BODY_SIZE)" in response.json()["message"]
    assert (inflated.status_code, inflated.headers["content-type"]) == (413, "application/x-protobuf")


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        (b'{"resourceSpans": ', JSON, "the body is not JSON"),
        (b'{"resourceSpans": 3}', JSON, "resourceSpans is not a list of objects"),
        (b"\x0a\x05\x0a\x03", PROTOBUF, "the body is not a protobuf ExportTraceServiceRequest"),
        (b"not gzip", {**JSON, "content-encoding": "gzip"}, "the body is not valid gzip"),
    ],
)
def test_malformed_bodies_get_400_with_the_reason(
    gateway: tuple[Gateway, httpx.Client], body: bytes, headers: dict[str, str], reason: str
) -> None:
    _, client = gateway

    response = client.post("/v1/traces", content=body, headers=headers)

    assert response.status_code == 400
    if headers is JSON or headers.get("content-encoding"):
        assert response.json()["code"] == 3
        assert response.json()["message"].startswith(reason)
    else:
        assert reason.encode() in response.content  # a google.rpc.Status (see test_gateway_otlp)


def test_a_bearer_token_is_required_when_configured(make_gateway: MakeGateway, standin: MatomoStandIn) -> None:
    _, client = make_gateway(token=BEARER)
    body = as_json(payload(span()))

    missing = client.post("/v1/traces", content=body, headers=JSON)
    wrong = client.post("/v1/traces", content=body, headers={**JSON, "authorization": f"Bearer {BEARER}x"})
    basic = client.post("/v1/traces", content=body, headers={**JSON, "authorization": f"Basic {BEARER}"})
    unknown_type = client.post("/v1/traces", content=body, headers={"content-type": "text/plain"})
    right = client.post("/v1/traces", content=body, headers={**JSON, "authorization": f"bearer {BEARER}"})

    for refused in (missing, wrong, basic):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Bearer realm="otel-matomo"'
        assert refused.json()["code"] == 16
    assert unknown_type.status_code == 401  # nothing about the gateway is told before authentication
    assert right.status_code == 200
    assert len(standin.wait_for_hits(1)) == 1


def test_other_paths_and_methods(gateway: tuple[Gateway, httpx.Client]) -> None:
    _, client = gateway

    assert client.post("/v1/metrics", content=b"", headers=PROTOBUF).status_code == 404
    assert client.post("/", content=b"", headers=PROTOBUF).status_code == 404
    response = client.get("/v1/traces")
    assert (response.status_code, response.headers["allow"]) == (405, "POST")


# --- sites ------------------------------------------------------------------------------------------------------


def test_service_name_selects_the_site(make_gateway: MakeGateway, standin: MatomoStandIn) -> None:
    _, client = make_gateway(sites={"shop": 1, "blog": 2}, default_site=False)
    data = merged(
        payload(span("/items/7", span_id=1), service="shop"),
        payload(span("/posts/3", span_id=2, route="/posts/:id"), service="blog"),
        payload(span("/admin", span_id=3, route="/admin"), span("/x", span_id=4, kind=1), service="backoffice"),
        payload(span("/healthz", span_id=5, route="/healthz"), service=""),
    )

    response = client.post("/v1/traces", content=as_json(data), headers=JSON)

    assert response.json() == {
        "partialSuccess": {
            "rejectedSpans": "2",
            "errorMessage": "rejected spans: 1 SERVER spans from service.name '(none)', which maps to no Matomo "
            "site; 1 SERVER spans from service.name 'backoffice', which maps to no Matomo site",
        }
    }
    hits = standin.wait_for_hits(2)
    time.sleep(0.2)
    assert sorted(without_cdt(hits), key=lambda hit: hit["idsite"]) == [
        expected_hit("/items/7", span_id=1, site=1),
        expected_hit("/posts/3", span_id=2, site=2, route="/posts/:id"),
    ]
    assert len(standin.received) == 2  # one bulk request per site


def test_unmapped_services_go_to_the_default_site(make_gateway: MakeGateway, standin: MatomoStandIn) -> None:
    _, client = make_gateway(sites={"blog": 2})
    data = merged(payload(span(span_id=1), service="shop"), payload(span(span_id=2), service="blog"))

    assert client.post("/v1/traces", content=as_json(data), headers=JSON).json() == {}
    assert sorted(hit["idsite"] for hit in standin.wait_for_hits(2)) == ["1", "2"]


# --- delivery ---------------------------------------------------------------------------------------------------


def test_the_answer_does_not_wait_for_matomo(gateway: tuple[Gateway, httpx.Client], standin: MatomoStandIn) -> None:
    _, client = gateway
    standin.behaviour.delay = 1.5

    started = time.monotonic()
    response = client.post("/v1/traces", content=as_json(payload(span())), headers=JSON)

    assert response.status_code == 200
    assert time.monotonic() - started < 0.5
    assert len(standin.wait_for_hits(1)) == 1


def test_a_full_queue_answers_429_with_retry_after(make_gateway: MakeGateway, standin: MatomoStandIn) -> None:
    _, client = make_gateway(queue_size=2)
    standin.behaviour.delay = 0.5
    two = [payload(span(span_id=i), span(span_id=i + 1)) for i in (1, 3, 5)]

    first = client.post("/v1/traces", content=as_json(two[0]), headers=JSON)  # two hits wait: the queue is full
    second = client.post("/v1/traces", content=as_json(two[1]), headers=JSON)

    assert first.status_code == 200
    assert (second.status_code, second.headers["retry-after"]) == (429, "5")
    assert second.json() == {"code": 8, "message": "the gateway's queue to Matomo is full; retry later"}
    assert len(standin.wait_for_hits(2)) == 2
    for request in two[1:]:
        statuses: list[int] = []
        while 200 not in statuses:  # as an OTLP exporter does after 429: again, until there is room
            assert len(statuses) < 100, statuses
            statuses.append(client.post("/v1/traces", content=as_json(request), headers=JSON).status_code)
            time.sleep(0.05)
        assert set(statuses) <= {200, 429}
    assert sorted(hit["rand"] for hit in standin.wait_for_hits(6)) == [f"{i:016x}" for i in range(1, 7)]


def test_close_drains_the_queue_then_refuses_with_503(
    gateway: tuple[Gateway, httpx.Client], standin: MatomoStandIn
) -> None:
    gateway_app, client = gateway
    standin.behaviour.delay = 0.3
    for i in range(1, 4):
        assert client.post("/v1/traces", content=as_json(payload(span(span_id=i))), headers=JSON).status_code == 200

    gateway_app.close()

    assert len(standin.tracked) == 3  # delivered before close returned
    response = client.post("/v1/traces", content=as_json(payload(span(span_id=9))), headers=JSON)
    assert (response.status_code, response.headers["retry-after"]) == (503, "5")
    assert response.json()["message"] == "the gateway is shutting down; retry later"
    assert gateway_app.stats[1].tracked == 3


def test_close_gives_up_after_the_drain_timeout_and_says_what_was_lost(
    make_gateway: MakeGateway, standin: MatomoStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    gateway_app, client = make_gateway(drain_timeout=0.5, timeout=30.0)
    standin.stop()  # Matomo down: the worker retries within its 30 s export deadline
    for i in range(1, 3):
        assert client.post("/v1/traces", content=as_json(payload(span(span_id=i))), headers=JSON).status_code == 200
    time.sleep(0.1)

    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="otel_matomo.gateway"):
        gateway_app.close()

    assert time.monotonic() - started < 2.0
    stats = gateway_app.stats[1]
    assert stats.tracked == 0
    queued = [
        re.search(r"lost (\d+) hits still queued after the 0.5 s drain timeout", r.message) for r in caplog.records
    ]
    lost_in_queue = sum(int(match.group(1)) for match in queued if match)
    # The batch in the worker's hands is cancelled and counted lost by its pipeline; what waited behind it is
    # reported by the gateway: together, every hit.
    assert stats.lost + lost_in_queue == 2


def test_the_gateway_does_not_trace_its_own_calls_to_matomo(make_gateway: MakeGateway, standin: MatomoStandIn) -> None:
    # As under opentelemetry-instrument with the httpx instrumentation: every Matomo call would become a span.
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        _, client = make_gateway()  # its Matomo client is built while httpx is instrumented
        with httpx.Client() as probe:  # proves the instrumentation is active in this process
            probe.post(f"{standin.url}/matomo.php", content=b"{}")
        client.post("/v1/traces", content=as_json(payload(span())), headers=JSON)
        standin.wait_for_hits(1)
    finally:
        instrumentor.uninstrument()
    urls = [
        str(span.attributes.get("url.full", span.attributes.get("http.url"))) for span in spans.get_finished_spans()
    ]
    # The probe and the test's own call to the gateway are traced; the gateway's call to Matomo is not.
    assert len(urls) == 2
    assert urls[0].endswith("/matomo.php")
    assert urls[1].endswith("/v1/traces")


def test_a_bare_matomo_event_from_another_process_never_fails_the_other_hits(
    gateway: tuple[Gateway, httpx.Client], standin: MatomoStandIn
) -> None:
    # A span event named matomo.event without category or action would be a ca=1 hit that no Matomo plugin claims:
    # Matomo answers HTTP 500 to the whole bulk request, and the five page views would go with it.
    gateway_app, client = gateway
    spans = [span(f"/items/{i}", span_id=i) for i in range(1, 6)]
    spans[2]["events"] = [{"name": "matomo.event", "timeUnixNano": spans[2]["startTimeUnixNano"], "attributes": []}]

    response = client.post("/v1/traces", content=as_json(payload(*spans)), headers=JSON)

    assert response.status_code == 200
    assert without_cdt(standin.wait_for_hits(5)) == [expected_hit(f"/items/{i}", span_id=i) for i in range(1, 6)]
    assert [received.answer_status for received in standin.received] == [200]
    gateway_app.close()  # the worker counts Matomo's answer after the stand-in has the hits
    stats = gateway_app.stats[1]
    assert (stats.requests, stats.malformed, stats.tracked) == (5, 1, 5)

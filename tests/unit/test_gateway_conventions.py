"""Server spans as the Node.js, Java and Go instrumentations send them over OTLP, through the gateway's path
(OTLP/JSON -> records -> ``Pipeline.translate``) to the exact hit.

Every case is the same visit: ``GET http://shop.example/items/7?color=red`` by 203.0.113.50 with a Referer and
an Accept-Language. Node.js (new conventions) was recorded from a real fastify app (see test_gateway_otlp); the
others follow the attribute sets those instrumentations document for each semantic-convention version:

- Node.js ``@opentelemetry/instrumentation-http`` < 0.200 (old conventions): ``http.target``, ``net.peer.ip``.
- Java agent 2.x (stable conventions) and 1.x (old, semconv 1.20: ``net.sock.peer.addr``, ``http.client_ip``,
  captured header names with underscores).
- Go ``otelhttp`` >= 0.59 (stable: span named after the handler, ``client.address`` from X-Forwarded-For, no
  header capture at all) and < 0.50 (semconv 1.20: ``net.sock.peer.addr``, ``http.target`` without the query).

Each case is a span as that language's instrumentation really sends it.
``client.address`` is deliberately not believed behind a proxy (see the test that says why).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from otel_matomo._pipeline import Pipeline
from otel_matomo._settings import Settings
from otel_matomo._types import Hit
from otel_matomo._visitor import visitor_id
from otel_matomo.gateway._otlp import Encoding, decode, http_request_of

SECRET = "conventions-visitor-secret"
TOKEN = "0123456789abcdef0123456789abcdef"
VISITOR = "203.0.113.50"
PROXY = "127.0.0.1"
UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
REFERER = "https://www.google.com/"
LANGUAGE = "fr-FR,fr;q=0.8"
START_NS = 1795832717302000000
END_NS = START_NS + 11_568_890
SPAN_ID = "2016a8876acbf3c0"


def _headers(separator: str, *names: str) -> dict[str, list[str]]:
    values = {"referer": REFERER, "accept-language": LANGUAGE, "x-forwarded-for": VISITOR, "host": "shop.example"}
    return {f"http.request.header.{name.replace('-', separator)}": [values[name]] for name in names}


CAPTURED = ("referer", "accept-language", "x-forwarded-for")

NODE_NEW = {
    "http.request.method": "GET",
    "url.scheme": "http",
    "server.address": "shop.example",
    "network.peer.address": PROXY,
    "network.peer.port": 37050,
    "network.protocol.version": "1.1",
    "user_agent.original": UA,
    "url.path": "/items/7",
    "url.query": "color=red",
    "client.address": VISITOR,
    "server.port": 80,
    **_headers("-", *CAPTURED, "host"),
    "http.response.status_code": 200,
    "http.route": "/items/:id",
}
NODE_OLD = {
    "http.url": "http://shop.example/items/7?color=red",
    "http.host": "shop.example",
    "net.host.name": "shop.example",
    "http.method": "GET",
    "http.scheme": "http",
    "http.target": "/items/7?color=red",
    "http.user_agent": UA,
    "http.flavor": "1.1",
    "net.transport": "ip_tcp",
    "net.host.ip": "127.0.0.1",
    "net.host.port": 3000,
    "net.peer.ip": PROXY,
    "net.peer.port": 37050,
    **_headers("-", *CAPTURED),
    "http.status_code": 200,
    "http.status_text": "OK",
    "http.route": "/items/:id",
}
JAVA_NEW = {
    "http.request.method": "GET",
    "url.scheme": "http",
    "url.path": "/items/7",
    "url.query": "color=red",
    "server.address": "shop.example",
    "network.peer.address": PROXY,
    "network.peer.port": 51234,
    "network.protocol.version": "1.1",
    "client.address": VISITOR,
    "user_agent.original": UA,
    **_headers("-", *CAPTURED),
    "http.route": "/items/{id}",
    "http.response.status_code": 200,
}
JAVA_OLD = {
    "http.method": "GET",
    "http.scheme": "http",
    "http.target": "/items/7?color=red",
    "net.host.name": "shop.example",
    "net.sock.peer.addr": PROXY,
    "net.sock.peer.port": 51234,
    "net.sock.host.addr": "127.0.0.1",
    "net.protocol.name": "http",
    "net.protocol.version": "1.1",
    "http.client_ip": VISITOR,
    "user_agent.original": UA,
    **_headers("_", *CAPTURED),
    "http.route": "/items/{id}",
    "http.status_code": 200,
}
GO_NEW_DIRECT = {
    "http.request.method": "GET",
    "url.scheme": "http",
    "server.address": "shop.example",
    "network.peer.address": VISITOR,
    "network.peer.port": 51234,
    "user_agent.original": UA,
    "client.address": VISITOR,
    "url.path": "/items/7",
    "url.query": "color=red",
    "network.protocol.version": "1.1",
    "http.route": "/items/{id}",
    "http.response.status_code": 200,
}
GO_NEW_BEHIND_PROXY = {**GO_NEW_DIRECT, "network.peer.address": PROXY}
GO_OLD_DIRECT = {
    "http.method": "GET",
    "http.scheme": "http",
    "net.host.name": "shop.example",
    "net.sock.peer.addr": VISITOR,
    "net.sock.peer.port": 51234,
    "user_agent.original": UA,
    "http.target": "/items/7",
    "net.protocol.version": "1.1",
    "http.status_code": 200,
}


def _any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, int):
        return {"intValue": value}
    return {"arrayValue": {"values": [_any_value(item) for item in value]}}


def otlp_json(name: str, attributes: dict[str, Any], service: str) -> bytes:
    span = {
        "traceId": "7e22986958b0dc987118bcaf4a65cac7",
        "spanId": SPAN_ID,
        "name": name,
        "kind": 2,
        "startTimeUnixNano": str(START_NS),
        "endTimeUnixNano": str(END_NS),
        "attributes": [{"key": key, "value": _any_value(value)} for key, value in attributes.items()],
    }
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}
    return json.dumps({"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}).encode()


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    settings = Settings.from_env(
        {}, endpoint="https://matomo.example", site_id=3, token_auth=TOKEN, visitor_id_secret=SECRET
    )
    pipeline = Pipeline(settings)
    yield pipeline
    pipeline.close()


def hits_for(pipeline: Pipeline, name: str, attributes: dict[str, Any], service: str = "shop") -> list[Hit]:
    return pipeline.translate(decode(otlp_json(name, attributes, service), Encoding.JSON).spans, http_request_of).hits


def expected(route: str | None, *, query: str = "color=red", headers: bool = True) -> Hit:
    hit = {
        "idsite": "3",
        "rec": "1",
        "apiv": "1",
        "rand": SPAN_ID,
        "cid": visitor_id(SECRET.encode(), VISITOR, UA),
        "cip": VISITOR,
        "url": "http://shop.example/items/7" + (f"?{query}" if query else ""),
        "cdt": str(START_NS // 1_000_000_000),
        "action_name": f"GET {route or '/items/7'}",
        "pf_srv": "12",
        "ua": UA,
    }
    if headers:
        hit.update(urlref=REFERER, lang=LANGUAGE)
    return hit


def test_node_new_conventions(pipeline: Pipeline) -> None:
    assert hits_for(pipeline, "GET /items/:id", NODE_NEW) == [expected("/items/:id")]


def test_node_old_conventions(pipeline: Pipeline) -> None:
    assert hits_for(pipeline, "GET /items/:id", NODE_OLD) == [expected("/items/:id")]


def test_java_new_conventions(pipeline: Pipeline) -> None:
    assert hits_for(pipeline, "GET /items/{id}", JAVA_NEW) == [expected("/items/{id}")]


def test_go_new_conventions_direct(pipeline: Pipeline) -> None:
    # otelhttp names the span after the handler ("shop"), not the route: the route comes from http.route.
    assert hits_for(pipeline, "shop", GO_NEW_DIRECT) == [expected("/items/{id}", headers=False)]


def test_java_old_conventions(pipeline: Pipeline) -> None:
    assert hits_for(pipeline, "GET /items/{id}", JAVA_OLD) == [expected("/items/{id}")]


def test_go_old_conventions_direct(pipeline: Pipeline) -> None:
    assert hits_for(pipeline, "shop", GO_OLD_DIRECT) == [expected(None, query="", headers=False)]


def test_behind_a_proxy_client_address_is_not_believed(pipeline: Pipeline) -> None:
    # Node.js, Java and Go all set client.address from the *leftmost* X-Forwarded-For entry, which the visitor
    # writes when the proxy appends to the header: believing it would let anyone choose their address. Without
    # the captured header (Go's otelhttp cannot capture any), the visitor's address is the proxy's.
    [hit] = hits_for(pipeline, "shop", GO_NEW_BEHIND_PROXY)

    assert (hit["cip"], hit["cid"]) == (PROXY, visitor_id(SECRET.encode(), PROXY, UA))


def test_a_client_address_from_an_untrusted_peer_is_not_believed(pipeline: Pipeline) -> None:
    # client.address comes from X-Forwarded-For in Node.js, Java and Go: a visitor can write anything there.
    spoofed = {**GO_NEW_DIRECT, "network.peer.address": "198.51.100.9", "client.address": "192.0.2.1"}

    [hit] = hits_for(pipeline, "shop", spoofed)

    assert (hit["cip"], hit["cid"]) == ("198.51.100.9", visitor_id(SECRET.encode(), "198.51.100.9", UA))

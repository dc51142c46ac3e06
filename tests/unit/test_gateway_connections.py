"""Connection hygiene, served exactly as ``otel-matomo gateway`` serves (``uvicorn_config``): late header blocks
and bodies are disconnected, connections and decodes are capped, and none of it slows a well-behaved sender."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest
import uvicorn

from otel_matomo._settings import Settings
from otel_matomo.gateway import Gateway, GatewayConfig
from otel_matomo.gateway._process import uvicorn_config
from tests.factories import otlp_payload, otlp_server_span
from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn
from tests.servers import free_port, wait_until

BODY = json.dumps(otlp_payload(otlp_server_span("/items/7", span_id=1))).encode()
REQUEST_HEAD = (
    b"POST /v1/traces HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BODY)
)

Serve = Callable[..., tuple[Gateway, int]]


@contextmanager
def _running(gateway: Gateway) -> Iterator[int]:
    server = uvicorn.Server(uvicorn_config(gateway))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), "the gateway did not start")
    assert server.started
    try:
        yield gateway.config.port
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def serve(standin: MatomoStandIn) -> Iterator[Serve]:
    """Start gateways under the production uvicorn configuration; each is stopped and drained after the test."""
    with ExitStack() as stack:

        def make(**config: Any) -> tuple[Gateway, int]:
            settings = Settings.from_env(
                {}, endpoint=standin.url, site_id=1, token_auth=WRITE_TOKEN, visitor_id_secret="s" * 16
            )
            gateway = Gateway(GatewayConfig(port=free_port(), **config), settings)
            stack.callback(gateway.close)
            return gateway, stack.enter_context(_running(gateway))

        yield make


def _connect(port: int, sent: bytes = b"") -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(sent)
    return connection


def _status_line(connection: socket.socket) -> bytes:
    """The status line of one whole answer (the gateway's are chunked), leaving the connection at its end."""
    answer = b""
    while not answer.endswith(b"0\r\n\r\n"):
        received = connection.recv(65536)
        assert received, answer
        answer += received
    return answer.partition(b"\r\n")[0]


def _closed_after(connection: socket.socket) -> float:
    """Seconds until the gateway closes ``connection`` having answered nothing."""
    started = time.monotonic()
    with connection:
        assert connection.recv(65536) == b""
    return time.monotonic() - started


def test_a_partial_header_block_is_disconnected_at_the_header_timeout(serve: Serve) -> None:
    _, port = serve(header_timeout=0.5, body_timeout=5)

    assert 0.3 < _closed_after(_connect(port, b"POST /v1/traces HTTP/1.1\r\nHost: gate")) < 2.5


def test_a_silent_connection_is_disconnected_at_the_header_timeout(serve: Serve) -> None:
    _, port = serve(header_timeout=0.5, body_timeout=5)

    assert 0.3 < _closed_after(_connect(port)) < 2.5


def test_dripping_header_bytes_does_not_push_the_deadline_back(serve: Serve) -> None:
    _, port = serve(header_timeout=1.0, body_timeout=5)
    connection = _connect(port, b"POST /v1/traces HTTP/1.1\r\n")
    started = time.monotonic()
    with pytest.raises(ConnectionError):  # noqa: PT012 - the drip goes on until the gateway hangs up
        for number in range(40):
            connection.sendall(b"X-Drip-%d: 1\r\n" % number)
            time.sleep(0.1)

    assert time.monotonic() - started < 3.5
    connection.close()


def test_a_partial_body_is_disconnected_at_the_body_timeout_and_never_delivered(
    serve: Serve, standin: MatomoStandIn
) -> None:
    _, port = serve(header_timeout=5, body_timeout=0.5)

    assert 0.3 < _closed_after(_connect(port, REQUEST_HEAD + BODY[:10])) < 2.5
    time.sleep(0.3)
    assert standin.tracked == []


def test_a_kept_alive_connection_gets_the_header_timeout_for_its_next_request(serve: Serve) -> None:
    _, port = serve(header_timeout=0.5, body_timeout=5)
    connection = _connect(port, REQUEST_HEAD + BODY)
    assert _status_line(connection) == b"HTTP/1.1 200 OK"

    connection.sendall(b"POST /v1/traces HTTP/1.1\r\n")
    assert _closed_after(connection) < 2.5  # well before uvicorn's own 5 s keep-alive timeout


def test_a_prompt_sender_is_not_hurried(serve: Serve, standin: MatomoStandIn) -> None:
    """Sending within the deadlines, in pieces, on one kept-alive connection: every request is answered."""
    _, port = serve(header_timeout=1.0, body_timeout=1.0)
    with _connect(port) as connection:
        for _ in range(3):
            connection.sendall(REQUEST_HEAD[:20])
            time.sleep(0.3)
            connection.sendall(REQUEST_HEAD[20:] + BODY[:5])
            time.sleep(0.3)
            connection.sendall(BODY[5:])
            assert _status_line(connection) == b"HTTP/1.1 200 OK"
    standin.wait_for_hits(1)


def test_requests_beyond_the_connection_cap_get_503(serve: Serve) -> None:
    _, port = serve(max_connections=3, header_timeout=5)
    idle = [_connect(port, b"POST /v1/traces HTTP/1.1\r\n") for _ in range(3)]
    try:
        time.sleep(0.2)
        over = httpx.post(
            f"http://127.0.0.1:{port}/v1/traces", content=BODY, headers={"content-type": "application/json"}
        )
    finally:
        for connection in idle:
            connection.close()

    assert over.status_code == 503
    wait_until(
        lambda: (
            httpx.post(
                f"http://127.0.0.1:{port}/v1/traces", content=BODY, headers={"content-type": "application/json"}
            ).status_code
            == 200
        ),
        "closing the idle connections did not free the cap",
    )


def test_requests_beyond_the_decoding_cap_get_503_with_retry_after(serve: Serve, standin: MatomoStandIn) -> None:
    gateway, port = serve(max_decoding=1)
    release = threading.Event()
    accept = gateway._accept

    def slow_accept(*args: Any) -> Any:
        release.wait(10)
        return accept(*args)

    gateway._accept = slow_accept  # type: ignore[method-assign]
    url = f"http://127.0.0.1:{port}/v1/traces"
    headers = {"content-type": "application/json"}
    first: list[httpx.Response] = []
    decoding = threading.Thread(target=lambda: first.append(httpx.post(url, content=BODY, headers=headers)))
    decoding.start()
    try:
        time.sleep(0.3)
        busy = httpx.post(url, content=BODY, headers=headers)
    finally:
        release.set()
        decoding.join(10)

    assert (busy.status_code, busy.headers["retry-after"]) == (503, "1")
    assert "busy decoding other requests" in busy.json()["message"]
    assert first[0].status_code == 200
    gateway._accept = accept  # type: ignore[method-assign]
    assert httpx.post(url, content=BODY, headers=headers).status_code == 200


def test_bodies_past_the_memory_budget_get_503_until_memory_is_given_back(serve: Serve) -> None:
    """The bytes a client really sent count, not what it announced; they are given back when it leaves."""
    _, port = serve(max_body_memory=len(BODY) + len(BODY) // 2, body_timeout=10)
    url = f"http://127.0.0.1:{port}/v1/traces"
    announced_only = _connect(port, REQUEST_HEAD.replace(b"Content-Length: %d" % len(BODY), b"Content-Length: 9999999"))
    holding = _connect(port, REQUEST_HEAD + BODY[:-10])
    try:
        time.sleep(0.3)
        busy = httpx.post(url, content=BODY, headers={"content-type": "application/json"})
    finally:
        holding.close()

    assert (busy.status_code, busy.headers["retry-after"]) == (503, "1")
    assert "as many request bodies in memory as it may" in busy.json()["message"]
    wait_until(
        lambda: httpx.post(url, content=BODY, headers={"content-type": "application/json"}).status_code == 200,
        "the memory held by a client that left was not given back",
    )
    announced_only.close()

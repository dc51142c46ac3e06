"""Attacks on the gateway's CPU, memory and connections (issue 17, rows 1 to 3): each against a fresh gateway
process, so that its peak RSS is this attack's alone."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.attacks.conftest import AttackRow
from tests.attacks.harness import (
    LINEAR_TIME_S,
    assert_targets,
    exchange,
    json_body,
    post_head,
    run_attack,
    running_gateway,
)
from tests.factories import otlp_server_span
from tests.matomo_standin import MatomoStandIn

PROTOBUF = {"content-type": "application/x-protobuf"}
EMPTY_GZIP_MEMBER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00"
"""``gzip.compress(b"", mtime=0)``: 20 bytes that decompress to nothing."""


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def empty_spans(count: int) -> bytes:
    """An ExportTraceServiceRequest of one resource, one scope and ``count`` empty spans: 2 bytes each."""
    return _field(1, _field(2, b"\x12\x00" * count))


@pytest.mark.parametrize(
    ("label", "count"),
    [("15 MB protobuf, 7.5 M empty spans", 7_500_000), ("1 MB protobuf, 500 k empty spans", 500_000)],
)
def test_row1_a_body_of_empty_spans(
    standin: MatomoStandIn, tmp_path: Path, attacks: list[AttackRow], label: str, count: int
) -> None:
    body = empty_spans(count)
    with running_gateway(standin, tmp_path) as gateway:
        row = run_attack(
            gateway, f"1: {label}", lambda loaded: exchange(gateway.port, post_head(PROTOBUF, len(body)) + body, loaded)
        )
    attacks.append(row)
    assert_targets(row, max_seconds=LINEAR_TIME_S)


@pytest.mark.parametrize(
    ("label", "members"),
    [("gzip of 100 k empty members (2 MB)", 100_000), ("gzip of 800 k empty members (16 MB)", 800_000)],
)
def test_row2_gzip_of_many_empty_members(
    standin: MatomoStandIn, tmp_path: Path, attacks: list[AttackRow], label: str, members: int
) -> None:
    body = EMPTY_GZIP_MEMBER * members
    headers = {**PROTOBUF, "content-encoding": "gzip"}
    with running_gateway(standin, tmp_path) as gateway:
        row = run_attack(
            gateway, f"2: {label}", lambda loaded: exchange(gateway.port, post_head(headers, len(body)) + body, loaded)
        )
    attacks.append(row)
    assert_targets(row, max_seconds=LINEAR_TIME_S)


HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 3.0


def _open_stalled(port: int, partial_bodies: int, partial_headers: int) -> list[socket.socket]:
    """Connections that send a header block and part of a body, or part of a header block, then nothing."""
    body = json_body(otlp_server_span("/stalled"))
    stalled = []
    for number in range(partial_bodies + partial_headers):
        connection = socket.create_connection(("127.0.0.1", port), timeout=10)
        if number < partial_bodies:
            connection.sendall(post_head({"content-type": "application/json"}, len(body)) + body[:100])
        else:
            connection.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: gateway\r\nContent-Type: appl")
        stalled.append(connection)
    return stalled


def _wait_all_closed(connections: list[socket.socket], timeout: float) -> float | None:
    """Seconds until the gateway closed every connection (each read returns end of file), ``None`` if not."""
    started = time.monotonic()
    open_ = list(connections)
    for connection in open_:
        connection.setblocking(False)
    while open_ and time.monotonic() - started < timeout:
        still = []
        for connection in open_:
            try:
                if connection.recv(4096):
                    still.append(connection)  # an answer: read on until the close
            except BlockingIOError:
                still.append(connection)
            except ConnectionError:
                pass
        open_ = still
        time.sleep(0.05)
    return None if open_ else time.monotonic() - started


def test_row3_stalled_partial_bodies_and_header_blocks(
    standin: MatomoStandIn, tmp_path: Path, attacks: list[AttackRow]
) -> None:
    """300 connections send a partial body and 200 a partial header block; none authenticates. The gateway
    runs with short deadlines so that the suite stays fast (the defaults, 10 s and 30 s, are unit-tested)."""
    args = ["--header-timeout", str(HEADER_TIMEOUT_S), "--body-timeout", str(BODY_TIMEOUT_S)]
    stalled: list[socket.socket] = []
    with running_gateway(standin, tmp_path, args) as gateway:

        def attack(loaded: threading.Event) -> str:
            stalled.extend(_open_stalled(gateway.port, 300, 200))
            loaded.set()
            closed_after = _wait_all_closed(stalled, BODY_TIMEOUT_S + HEADER_TIMEOUT_S + 5)
            if closed_after is None:
                return "connections still open"
            return f"all 500 closed in {closed_after:.1f} s"

        try:
            row = run_attack(gateway, "3: 300 partial bodies + 200 partial header blocks", attack, timeout=20)
        finally:
            for connection in stalled:
                connection.close()
    attacks.append(row)
    assert row.answer.startswith("all 500 closed"), row.answer
    assert_targets(row)

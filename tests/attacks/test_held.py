"""What held when the issue was filed, kept that way: malformed bodies, wrong content types, a gzip bomb, lying
lengths, oversized chunked bodies and the bearer token, checked before the body is read. One gateway (with a
token and short read deadlines) takes them all, so its peak RSS growth is cumulative: an upper bound per row."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.attacks.conftest import AttackRow
from tests.attacks.harness import BEARER, GatewayProcess, assert_targets, exchange, json_body, post_head, run_attack
from tests.attacks.harness import running_gateway as _running_gateway
from tests.factories import otlp_server_span
from tests.matomo_standin import MatomoStandIn

MiB = 1 << 20
LIMIT = 16 * MiB
AUTH = {"authorization": f"Bearer {BEARER}"}
JSON_NO_AUTH = {"content-type": "application/json"}
JSON = {**JSON_NO_AUTH, **AUTH}
PROTOBUF = {"content-type": "application/x-protobuf", **AUTH}
BODY_TIMEOUT_S = 2.0


def _zero_bomb(size: int) -> bytes:
    """``size`` zero bytes gzipped 1 MiB at a time (about 1 MB for 1 GiB; the test never holds the zeros)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(MiB)
    return b"".join(compressor.compress(chunk) for _ in range(size // MiB)) + compressor.flush()


def _post(headers: dict[str, str], body: bytes) -> bytes:
    return post_head(headers, len(body)) + body


def _chunked(size: int) -> bytes:
    chunk = b"x" * MiB
    return b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(size // MiB)) + b"0\r\n\r\n"


@dataclass(frozen=True)
class Case:
    name: str
    request: bytes
    expected: str
    """The start of the status line (or ``closed``) the gateway must answer."""
    max_seconds: float = 1.0


def _cases() -> list[Case]:
    valid = json_body(otlp_server_span("/held"))
    bomb = _zero_bomb(1024 * MiB)
    return [
        Case("malformed protobuf", _post(PROTOBUF, b"\xff" * 5), "400"),
        Case("malformed JSON", _post(JSON, b'{"resourceSp'), "400"),
        Case("JSON of the wrong shape", _post(JSON, b'{"resourceSpans":7}'), "400"),
        Case("wrong content type (text/plain)", _post({**AUTH, "content-type": "text/plain"}, b"{}"), "415"),
        Case("wrong content encoding (br)", _post({**JSON, "content-encoding": "br"}, b"{}"), "415"),
        Case("1 GiB gzip bomb", _post({**PROTOBUF, "content-encoding": "gzip"}, bomb), "413"),
        Case("Content-Length 1 GiB, 10 bytes sent", post_head(JSON, 1 << 30) + b"0123456789", "413"),
        Case("Content-Length shorter than the body", post_head(JSON, 10) + valid, "400"),
        Case(
            "Content-Length longer than the body",
            post_head(JSON, len(valid) + 1000) + valid,
            "closed",
            BODY_TIMEOUT_S + 1.5,
        ),
        Case("chunked body past the limit (17 MiB)", post_head(JSON, None) + _chunked(LIMIT + MiB), "413", 2.0),
        Case("no bearer token, 10 MB announced, none sent", post_head(JSON_NO_AUTH, 10**7), "401"),
        Case(
            "wrong bearer token, 10 MB announced, none sent",
            post_head({**JSON_NO_AUTH, "authorization": "Bearer " + "x" * 36}, 10**7),
            "401",
        ),
    ]


CASES = _cases()


@pytest.fixture(scope="module")
def held_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    standin = MatomoStandIn().start()
    try:
        args = ["--body-timeout", str(BODY_TIMEOUT_S)]
        with _running_gateway(standin, tmp_path_factory.mktemp("held"), args, bearer=BEARER) as gateway:
            yield gateway
    finally:
        standin.stop()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_what_held_still_holds(held_gateway: GatewayProcess, attacks: list[AttackRow], case: Case) -> None:
    def attack(loaded: threading.Event) -> str:
        return exchange(held_gateway.port, case.request, loaded)

    row = run_attack(held_gateway, f"held: {case.name}", attack)
    attacks.append(row)
    assert row.answer.startswith(case.expected), row.answer
    assert_targets(row, max_seconds=case.max_seconds)

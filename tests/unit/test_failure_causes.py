"""Every message about hits kept or lost says why Matomo failed (the first-hour issue, row 8): before, an operator
read "still failed after 4 attempts within the 10.0s deadline" and had to guess between a refused connection, a
name that does not resolve and a timeout."""

from __future__ import annotations

import logging
import socket

import pytest

from otel_matomo import _retry
from otel_matomo._sending import Outcome
from otel_matomo._transport import HttpSender
from otel_matomo._types import Hit
from tests.factories import settings
from tests.matomo_standin import Behaviour, MatomoStandIn

HIT: Hit = {"idsite": "1", "rec": "1", "apiv": "1", "url": "https://shop.example/"}


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_retry, "backoff", lambda attempt: 0.05)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _gave_up(endpoint: str, caplog: pytest.LogCaptureFixture) -> tuple[str, str]:
    caplog.set_level(logging.WARNING, logger="otel_matomo")
    sender = HttpSender(settings({"OTEL_EXPORTER_MATOMO_TIMEOUT": "400"}, endpoint=endpoint))
    try:
        result = sender.send([HIT])
    finally:
        sender.close()
    assert result.outcome is Outcome.GAVE_UP
    (message,) = [record.getMessage() for record in caplog.records if "still failed" in record.getMessage()]
    return result.cause, message


def test_a_refused_connection_is_named(caplog: pytest.LogCaptureFixture) -> None:
    cause, message = _gave_up(f"http://127.0.0.1:{_closed_port()}/matomo.php", caplog)
    assert cause == "connection refused"
    assert message.endswith("(last: connection refused)")


def test_a_name_that_does_not_resolve_is_named(caplog: pytest.LogCaptureFixture) -> None:
    cause, message = _gave_up("http://matomo.does-not-exist.invalid/matomo.php", caplog)
    assert cause == "name does not resolve (DNS)"
    assert message.endswith("(last: name does not resolve (DNS))")


def test_an_answer_that_keeps_failing_is_named_by_its_status(
    standin: MatomoStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    standin.behaviour = Behaviour(status=502)
    cause, message = _gave_up(standin.url, caplog)
    assert cause == "HTTP 502"
    assert message.endswith("(last: HTTP 502)")

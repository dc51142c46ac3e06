"""``DryRunSender``: one line per hit on standard error, or one record when the application's logging shows it."""

from __future__ import annotations

import json
import logging

import pytest

from otel_matomo._sending import DryRunSender, Outcome
from otel_matomo._types import Hit

HITS: list[Hit] = [{"idsite": "1", "url": "https://shop.example/é"}, {"idsite": "1", "url": "https://shop.example/b"}]


@pytest.fixture
def quiet_hits_logger() -> logging.Logger:
    """The logger as an application without logging set-up leaves it: no handler anywhere, level WARNING."""
    logger = logging.getLogger("otel_matomo.hits")
    root = logging.getLogger()
    saved = (logger.level, logger.propagate, root.handlers[:], root.level)
    root.handlers.clear()
    root.setLevel(logging.WARNING)
    logger.setLevel(logging.NOTSET)
    yield logger
    logger.setLevel(saved[0])
    root.handlers[:] = saved[2]
    root.setLevel(saved[3])


def test_without_logging_each_hit_is_one_line_on_stderr(
    quiet_hits_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    result = DryRunSender().send(HITS)
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert [json.loads(line.removeprefix("otel-matomo: dry run, not sent: ")) for line in lines] == HITS
    assert "é" in lines[0]  # readable, not \u-escaped
    assert result.outcome is Outcome.DELIVERED
    assert result.tracked == 2


def test_with_logging_that_shows_it_each_hit_is_one_record_and_nothing_on_stderr(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.INFO, logger="otel_matomo.hits")
    DryRunSender().send(HITS)
    records = [record for record in caplog.records if record.name == "otel_matomo.hits"]
    assert [record.hit for record in records] == HITS  # type: ignore[attr-defined]
    assert [json.loads(record.getMessage()) for record in records] == HITS
    assert capsys.readouterr().err == ""


def test_a_closed_stderr_loses_the_lines_only(
    quiet_hits_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Closed:
        def write(self, text: str) -> int:
            raise ValueError("I/O operation on closed file")

        def flush(self) -> None:
            raise ValueError("I/O operation on closed file")

    monkeypatch.setattr("sys.stderr", Closed())
    assert DryRunSender().send(HITS).tracked == 2

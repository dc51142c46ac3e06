"""``RateLimitedLog``: the first message of a key is logged, repeats within the interval are counted and reported."""

from __future__ import annotations

import logging

import pytest

from otel_matomo._ratelimit import RateLimitedLog

LOGGER = "otel_matomo.test_ratelimit"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def log(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> RateLimitedLog:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return RateLimitedLog(logging.getLogger(LOGGER), interval=60.0, clock=clock)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def test_first_message_is_logged_with_its_level_and_arguments(
    log: RateLimitedLog, caplog: pytest.LogCaptureFixture
) -> None:
    log.log(logging.WARNING, "lost", "lost %d hits at %s", 3, "here")
    assert messages(caplog) == ["lost 3 hits at here"]
    assert caplog.records[0].levelno == logging.WARNING


def test_repeats_inside_the_interval_are_held_back(
    log: RateLimitedLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    log.log(logging.WARNING, "lost", "lost %d", 1)
    for seconds in (1.0, 30.0, 59.9):
        clock.now = 1000.0 + seconds
        log.log(logging.WARNING, "lost", "lost %d", 2)
    assert messages(caplog) == ["lost 1"]


def test_next_message_after_the_interval_says_how_many_were_held(
    log: RateLimitedLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    log.log(logging.ERROR, "lost", "lost %d", 1)
    clock.now += 10
    log.log(logging.ERROR, "lost", "lost %d", 2)
    clock.now += 10
    log.log(logging.ERROR, "lost", "lost %d", 3)
    clock.now = 1060.0  # exactly one interval after the first: logged again
    log.log(logging.ERROR, "lost", "lost %d", 4)
    assert messages(caplog) == ["lost 1", "lost 4 (2 similar messages were held back)"]


def test_held_count_restarts_after_being_reported(
    log: RateLimitedLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    log.log(logging.INFO, "k", "m%d", 1)
    clock.now += 1
    log.log(logging.INFO, "k", "m%d", 2)
    clock.now += 60
    log.log(logging.INFO, "k", "m%d", 3)
    clock.now += 60
    log.log(logging.INFO, "k", "m%d", 4)
    assert messages(caplog) == ["m1", "m3 (1 similar messages were held back)", "m4"]


def test_interval_restarts_from_the_last_logged_message(
    log: RateLimitedLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    log.log(logging.INFO, "k", "first")
    clock.now += 61
    log.log(logging.INFO, "k", "second")
    clock.now += 30
    log.log(logging.INFO, "k", "third")
    assert messages(caplog) == ["first", "second"]


def test_keys_are_independent(log: RateLimitedLog, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    log.log(logging.WARNING, "a", "a%d", 1)
    log.log(logging.WARNING, "b", "b%d", 1)
    log.log(logging.WARNING, "a", "a%d", 2)
    log.log(logging.WARNING, "a", "a%d", 3)
    clock.now += 60
    log.log(logging.WARNING, "b", "b%d", 2)
    log.log(logging.WARNING, "a", "a%d", 4)
    assert messages(caplog) == ["a1", "b1", "b2", "a4 (2 similar messages were held back)"]


def test_exc_info_is_passed_on(log: RateLimitedLog, caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        log.log(logging.ERROR, "bug", "failed", exc_info=True)
    record = caplog.records[0]
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError


def test_message_with_a_literal_percent_and_no_args_survives_being_held(
    log: RateLimitedLog, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    log.log(logging.WARNING, "k", "lost 100% of hits")
    log.log(logging.WARNING, "k", "lost 100% of hits")
    clock.now += 60
    log.log(logging.WARNING, "k", "lost 100% of hits")
    assert messages(caplog) == ["lost 100% of hits", "lost 100% of hits (1 similar messages were held back)"]

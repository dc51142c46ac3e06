from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from otel_matomo import MatomoSpanProcessor, Settings
from otel_matomo._clock import Clock
from tests.factories import SECRET
from tests.matomo_standin import WRITE_TOKEN, Behaviour, MatomoStandIn

Processors = Callable[..., MatomoSpanProcessor]


@pytest.fixture
def standin() -> Iterator[MatomoStandIn]:
    """A local matomo.php stand-in on loopback."""
    server = MatomoStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def processors(standin: MatomoStandIn) -> Iterator[Processors]:
    """Build processors sending to the stand-in (fast schedule); every one is shut down after the test."""
    made: list[MatomoSpanProcessor] = []

    def make(*, token: str | None = WRITE_TOKEN, clock: Clock | None = None, **overrides: Any) -> MatomoSpanProcessor:
        options: dict[str, Any] = {
            "timeout": timedelta(seconds=5),
            "schedule_delay": timedelta(milliseconds=50),
            **overrides,
        }
        settings = Settings.from_env(
            {}, endpoint=standin.url, site_id=1, token_auth=token, visitor_id_secret=SECRET, **options
        )
        processor = MatomoSpanProcessor(settings=settings, _clock=clock)
        made.append(processor)
        return processor

    yield make
    standin.behaviour = Behaviour()
    for processor in made:
        processor.shutdown(timeout_millis=2000)

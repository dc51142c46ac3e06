from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.matomo_standin import MatomoStandIn


@pytest.fixture
def standin() -> Iterator[MatomoStandIn]:
    """A local matomo.php stand-in on loopback."""
    server = MatomoStandIn().start()
    yield server
    server.stop()

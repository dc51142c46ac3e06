"""Values cut to their caps are recorded whole by the real Matomo: what otel-matomo sends is what Matomo stores.

One visitor requests a page whose path is far longer than Matomo keeps (``page_maximum_length``, 1024 bytes
after its HTML escaping), with ``&``, an escaped ``é`` and a long Referer. The exporter cuts ``url``,
``action_name`` and ``urlref`` to their caps; Matomo's Live API must show exactly those values, not a shorter
cut of its own (which would mean the measure is wrong) nor a longer one.
"""

from __future__ import annotations

import html
import secrets
from datetime import datetime, timezone
from urllib.parse import unquote

import pytest

from otel_matomo import MatomoSpanExporter
from tests.real_matomo.conftest import Matomo
from tests.real_matomo.corpus import AGENTS, FASTAPI
from tests.real_matomo.replay import capture_deliveries, shop

pytestmark = pytest.mark.real_matomo

SEGMENT = "long-" + secrets.token_hex(4)
PATH = f"/{SEGMENT}/" + "a&b-%C3%A9-" * 200
REFERER = "https://search.example/results/" + "r" * 2000


def test_a_long_url_title_and_referrer_are_recorded_intact_up_to_their_caps(
    clean_matomo: Matomo, monkeypatch: pytest.MonkeyPatch
) -> None:
    matomo = clean_matomo
    exporter = MatomoSpanExporter(endpoint=matomo.url, site_id=matomo.other_site_id, token_auth=matomo.token)
    headers = {
        "Host": "store.example",
        "User-Agent": AGENTS[0].user_agent(120),
        "X-Forwarded-For": f"192.0.2.{secrets.randbelow(200) + 20}",
        "Referer": REFERER,
    }
    app = shop(exporter, monkeypatch, simulated_time=False, apps=(FASTAPI,))
    with capture_deliveries(monkeypatch) as delivery, app as served:
        served.clients[FASTAPI].get(PATH, headers=headers)
        served.ended.wait_for(1)
        served.flush()
    [hit] = delivery.hits
    assert exporter.stats.truncated == 1
    assert len(hit["url"]) < len(PATH)
    assert len(hit["urlref"]) == 1024
    day = datetime.fromtimestamp(int(hit["cdt"]), timezone.utc).strftime("%Y-%m-%d")
    [visit] = matomo.visits(matomo.other_site_id, day, segment=f"visitorId=={hit['cid']}")
    [action] = visit["actionDetails"]
    # The path reaches the span decoded (é, &) or escaped, depending on the server: compare what both mean.
    assert unquote(html.unescape(action["url"])) == unquote(hit["url"])
    assert html.unescape(action["pageTitle"]) == hit["action_name"]
    assert html.unescape(visit["referrerUrl"]) == hit["urlref"]

"""Credentials in query strings never reach Matomo's reports.

A visitor follows a password-reset link that has expired (404), coming from a login callback: the reset token,
a session id (as a ``;jsessionid=`` path parameter, a ``PHPSESSID`` and after a ``;`` separator), a
campaign-looking ``utm_token``, the OAuth code, an implicit-flow ``#access_token=`` and the referrer's
``user:password@`` are in the URLs. The exporter redacts credential parameters (``*token*``, ``code``,
``state``, ``*sessid*``, ... by default) and userinfo from ``url``, ``urlref`` and titles; this checks, in the
real Matomo, every place those strings could end up: the visit's pages (URL and title), its referrer, and the
page reports.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any

import pytest

from otel_matomo import MatomoSpanExporter
from tests.real_matomo.conftest import Matomo
from tests.real_matomo.corpus import AGENTS, FASTAPI
from tests.real_matomo.replay import capture_deliveries, shop

pytestmark = pytest.mark.real_matomo

RESET_TOKEN = "s3cr3t-reset-" + secrets.token_hex(4)
OAUTH_CODE = "c0de-" + secrets.token_hex(4)
SESSION_ID = "s3ss-" + secrets.token_hex(4)
ACCESS_TOKEN = "acc3ss-" + secrets.token_hex(4)
PASSWORD = "pa55-" + secrets.token_hex(4)
PATH = (
    f"/reset-password;jsessionid={SESSION_ID}?token={RESET_TOKEN}&step=2&PHPSESSID={SESSION_ID}"
    f"&utm_token={RESET_TOKEN};sid={SESSION_ID}"
)
REFERER = (
    f"https://user:{PASSWORD}@login.example/callback?code={OAUTH_CODE}&state=st4te&lang=en#access_token={ACCESS_TOKEN}"
)
SECRETS = (RESET_TOKEN, OAUTH_CODE, "st4te", SESSION_ID, ACCESS_TOKEN, PASSWORD)


@pytest.fixture(scope="module")
def leaky_visit(clean_matomo: Matomo, session_monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """One visit to an expired reset link, as Matomo recorded it (Live)."""
    matomo = clean_matomo
    exporter = MatomoSpanExporter(endpoint=matomo.url, site_id=matomo.other_site_id, token_auth=matomo.token)
    headers = {
        "Host": "store.example",
        "User-Agent": AGENTS[1].user_agent(131),
        "X-Forwarded-For": f"203.0.113.{secrets.randbelow(150) + 100}",
        "Referer": REFERER,
    }
    app = shop(exporter, session_monkeypatch, simulated_time=False, apps=(FASTAPI,))
    with capture_deliveries(session_monkeypatch) as delivery, app as served:
        assert served.clients[FASTAPI].get(PATH, headers=headers).status_code == 404
        served.ended.wait_for(1)
        served.flush()
    [hit] = delivery.hits
    day = datetime.fromtimestamp(int(hit["cdt"]), timezone.utc).strftime("%Y-%m-%d")
    [visit] = matomo.visits(matomo.other_site_id, day, segment=f"visitorId=={hit['cid']}")
    matomo.fresh_archives(matomo.other_site_id, day)
    titles = matomo.api(
        "Actions.getPageTitles", idSite=matomo.other_site_id, period="day", date=day, flat=1, filter_limit=-1
    )
    return {"visit": visit, "titles": [row["label"] for row in titles], "hit": hit}


def test_page_url_and_referrer_are_redacted_in_matomo(leaky_visit: dict[str, Any]) -> None:
    visit = leaky_visit["visit"]
    [action] = visit["actionDetails"]
    assert action["url"] == "http://store.example/reset-password?step=2"
    assert visit["referrerUrl"] == "https://login.example/callback?lang=en"
    for secret in SECRETS:
        assert secret not in action["url"]
        assert secret not in visit["referrerUrl"]


def test_error_page_title_carries_no_credential(leaky_visit: dict[str, Any]) -> None:
    """The 404 title (``404/URL = <path?query>/From = <referrer>``) is redacted like ``url`` and ``urlref``."""
    [action] = leaky_visit["visit"]["actionDetails"]
    assert action["pageTitle"].startswith("404/URL = ")
    leaks = [s for s in SECRETS if s in action["pageTitle"] or any(s in title for title in leaky_visit["titles"])]
    assert leaks == [], action["pageTitle"]

"""``otel-matomo check`` against the real Matomo 5: each token's verdict, and that its probes record nothing.

The token probe relies on one Matomo behaviour, asserted here first: a bulk item with ``cip`` but without
``rec=1`` is validated (``cip`` needs a token with write access that authenticates inside bulk bodies) and then
discarded before anything is recorded, answered ``tracked: 1`` for a good token and ``invalid: 1`` otherwise.
"""

from __future__ import annotations

import argparse
import io
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from otel_matomo._settings import Settings
from otel_matomo.cli._check_matomo import PROBE_IP, PROBE_TITLE, TEST_HIT_TITLE
from otel_matomo.cli._check_report import Verdict
from otel_matomo.cli.check import Checker, run
from tests.real_matomo.conftest import Matomo

pytestmark = pytest.mark.real_matomo


@dataclass
class Outcome:
    code: int
    out: str

    def line(self, name: str) -> tuple[str, str]:
        (found,) = [(line[:4].strip(), line[22:]) for line in self.out.splitlines() if line[6:21].strip() == name]
        return found


def environ(matomo: Matomo, token: str | None, site: int) -> dict[str, str]:
    env = {
        "OTEL_EXPORTER_MATOMO_ENDPOINT": matomo.url,
        "OTEL_EXPORTER_MATOMO_SITE_ID": str(site),
        "OTEL_EXPORTER_MATOMO_VISITOR_ID_SECRET": "a-visitor-id-secret-of-some-length",
    }
    if token is not None:
        env["OTEL_EXPORTER_MATOMO_TOKEN_AUTH"] = token
    return env


def check(matomo: Matomo, token: str | None, site: int | None = None, *, send_test_hit: bool = False) -> Outcome:
    out = io.StringIO()
    args = argparse.Namespace(endpoint=None, site_id=None, send_test_hit=send_test_hit)
    code = run(args, environ=environ(matomo, token, site or matomo.site_id), out=out, err=io.StringIO())
    text = out.getvalue()
    for secret in (matomo.token, matomo.secure_only_token, matomo.view_token, token):
        assert not secret or secret not in text
    return Outcome(code, text)


def need(token: str | None, what: str) -> str:
    if not token:
        pytest.skip(f"{what} is not configured (scripts/matomo-local prints it)")
    return token


@pytest.fixture(scope="module")
def unknown_site(matomo: Matomo) -> int:
    ids = matomo.api("SitesManager.getAllSitesId")
    return max(int(site) for site in ids) + 1000


def bulk(matomo: Matomo, item: str, token: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"requests": [item]}
    if token:
        body["token_auth"] = token
    response = httpx.post(matomo.tracker_url, json=body, timeout=30)
    assert response.status_code == 200, response.text[:300]
    answer: dict[str, Any] = response.json()
    return answer


def visits_today(matomo: Matomo) -> Iterator[dict[str, Any]]:
    """The visits of both sites of yesterday and today (UTC): a run that crosses midnight is covered too."""
    today = datetime.now(timezone.utc).date()
    for site in (matomo.site_id, matomo.other_site_id):
        for day in (today - timedelta(days=1), today):
            yield from matomo.visits(site, day.isoformat())


# --- what the check relies on ------------------------------------------------------------------------------


def test_matomo_validates_but_does_not_record_an_item_without_rec(matomo: Matomo, random_token: str) -> None:
    marker = secrets.token_hex(8)
    item = f"?idsite={matomo.site_id}&cip={PROBE_IP}&cid={marker}&action_name=probe-{marker}"

    assert bulk(matomo, item, matomo.token)["tracked"] == 1
    for token in (matomo.secure_only_token, matomo.view_token, random_token, None):
        answer = bulk(matomo, item, token)
        assert (answer["tracked"], answer["invalid"]) == (0, 1), token and token[:4]
    unknown = bulk(matomo, f"?idsite=987654&cid={marker}", None)
    assert (unknown["tracked"], unknown["invalid"]) == (0, 1)

    assert [visit for visit in visits_today(matomo) if visit["visitorId"] == marker] == []


def test_tracker_page(matomo: Matomo) -> None:
    response = httpx.get(matomo.tracker_url, timeout=30)

    assert response.status_code == 200
    assert "endpoint for the Matomo tracking API" in response.text


# --- the check's verdicts ----------------------------------------------------------------------------------


def test_good_token_passes(matomo: Matomo) -> None:
    result = check(matomo, matomo.token)

    assert result.code == 0, result.out
    assert result.line("endpoint")[0] == "OK"
    assert result.line("site")[0] == "OK"
    assert result.line("token access") == ("OK", "the token has Super User access")
    assert result.line("token in bulk")[0] == "OK"


def test_secure_only_token_fails_in_bulk(matomo: Matomo) -> None:
    result = check(matomo, need(matomo.secure_only_token, "MATOMO_SECURE_ONLY_TOKEN"))

    assert result.code == 1
    assert result.line("token access")[0] == "OK"  # the Reporting API takes it from a POST body
    verdict, message = result.line("token in bulk")
    assert verdict == "FAIL"
    assert "'secure only'" in message
    assert "#22910" in message


def test_view_token_fails_on_write_access(matomo: Matomo) -> None:
    result = check(matomo, need(matomo.view_token, "MATOMO_VIEW_TOKEN"))

    assert result.code == 1
    assert result.line("site")[0] == "OK"
    verdict, message = result.line("token access")
    assert verdict == "FAIL"
    assert f"view access only to site {matomo.site_id}" in message
    assert result.line("token in bulk")[0] == "SKIP"


def test_unknown_site_fails(matomo: Matomo, unknown_site: int) -> None:
    result = check(matomo, matomo.token, unknown_site)

    assert result.code == 1
    verdict, message = result.line("site")
    assert verdict == "FAIL"
    assert f"site {unknown_site} does not exist" in message
    assert "unexpected website" in message


def test_unknown_site_without_token_fails(matomo: Matomo, unknown_site: int) -> None:
    result = check(matomo, None, unknown_site)

    assert result.code == 1
    assert result.line("site") == (
        "FAIL",
        f"Matomo's tracker refuses site {unknown_site}: there is no site with that id",
    )


def test_unknown_token_fails(matomo: Matomo, random_token: str) -> None:
    result = check(matomo, random_token)

    assert result.code == 1
    verdict, message = result.line("site")
    assert verdict == "FAIL"
    assert "Unable to authenticate" in message


def test_no_token_warns(matomo: Matomo) -> None:
    result = check(matomo, None)

    assert result.code == 0, result.out
    assert result.line("site")[0] == "OK"
    assert result.line("token access")[0] == "WARN"


# --- nothing recorded, unless asked ------------------------------------------------------------------------


def test_checks_record_nothing_and_the_test_hit_is_recorded(matomo: Matomo) -> None:
    probes = []
    for token in (matomo.token, matomo.secure_only_token, None):
        settings = Settings.from_env(environ(matomo, token, matomo.site_id))
        checker = Checker(settings, {})
        try:
            verdicts = {item.name: item.verdict for item in checker.checks()}
        finally:
            checker.close()
        assert verdicts["site"] is Verdict.OK
        probes.append(checker.probe_visitor_id)

    sent = check(matomo, matomo.token, send_test_hit=True)
    verdict, message = sent.line("test hit")
    assert verdict == "OK", sent.out
    test_visitor = message.split(" for visitor ")[1].split()[0]

    visits = list(visits_today(matomo))
    assert [visit for visit in visits if visit["visitorId"] in probes] == []
    titles = [action.get("pageTitle") for visit in visits for action in visit["actionDetails"]]
    assert PROBE_TITLE not in titles
    # The control: a hit that is recorded shows up in the same query.
    (recorded,) = [visit for visit in visits if visit["visitorId"] == test_visitor]
    assert recorded["idSite"] in (matomo.site_id, str(matomo.site_id))
    assert [action.get("pageTitle") for action in recorded["actionDetails"]] == [TEST_HIT_TITLE]
    assert recorded["actionDetails"][0]["url"].endswith("/otel-matomo-check")

"""The real-Matomo fidelity suite: skipped with a reason unless a real Matomo is configured.

``nox -s e2e`` brings up the local Matomo 5 (``scripts/matomo-local up``, root only) and runs this directory with
the variables it prints. By hand::

    eval "$(scripts/matomo-local up)" && pytest -m real_matomo tests/real_matomo

Without ``MATOMO_URL`` every test here is skipped with the reason; ``nox -s tests`` deselects them
(``-m "not real_matomo"``).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
MATOMO_LOCAL = ROOT / "scripts" / "matomo-local"
HERE = Path(__file__).resolve().parent
SKIP_REASON = (
    "real Matomo not configured: MATOMO_URL and MATOMO_TOKEN are unset. Run `nox -s e2e` (as root: it starts the "
    'local Matomo 5 with scripts/matomo-local), or `eval "$(scripts/matomo-local up)"` before pytest'
)


def _configured() -> bool:
    return bool(os.environ.get("MATOMO_URL") and os.environ.get("MATOMO_TOKEN"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _configured():
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)


class ReportingError(AssertionError):
    """The Reporting API answered with an error."""


@dataclass(frozen=True)
class Matomo:
    """The real Matomo under test: its tracker endpoint, tokens, sites, and a Reporting API client."""

    url: str
    token: str
    secure_only_token: str | None
    view_token: str | None
    site_id: int
    other_site_id: int

    @property
    def tracker_url(self) -> str:
        return f"{self.url}/matomo.php"

    def api(self, method: str, **params: Any) -> Any:
        """One Reporting API call: POST index.php, the token in the body, JSON back."""
        data = {"module": "API", "method": method, "format": "json", "token_auth": self.token}
        data.update({key: str(value) for key, value in params.items()})
        response = httpx.post(f"{self.url}/index.php", data=data, timeout=120)
        assert response.status_code == 200, f"{method}: HTTP {response.status_code} {response.text[:300]}"
        result = response.json()
        if isinstance(result, dict) and result.get("result") == "error":
            raise ReportingError(f"{method}({params}): {result.get('message')}")
        return result

    def visits(self, site_id: int, date: str, **params: Any) -> list[dict[str, Any]]:
        """Every visit of one UTC day from ``Live.getLastVisitsDetails`` (real time, no archiving), oldest first.

        Matomo's Live API widens ``period=day`` for today's date to "since yesterday 00:00" (Live/Model.php,
        ``getStartAndEndDate``), so the day is cut here, as ``VisitsSummary`` counts it: by the visit's last action
        (the sites use UTC).
        """
        visits = self.api(
            "Live.getLastVisitsDetails",
            idSite=site_id,
            period="day",
            date=date,
            filter_limit=10000,
            filter_sort_order="asc",
            **params,
        )
        assert isinstance(visits, list)
        start = _day_start(date)
        if start is None:  # a date Matomo understands that is not one day: as Matomo answers
            return sorted(visits, key=lambda visit: (visit["firstActionTimestamp"], visit["idVisit"]))
        in_day = [visit for visit in visits if start <= int(visit["lastActionTimestamp"]) < start + 86400]
        return sorted(in_day, key=lambda visit: (visit["firstActionTimestamp"], visit["idVisit"]))

    def invalidate(self, site_id: int, date: str) -> None:
        self.api("CoreAdminHome.invalidateArchivedReports", idSites=site_id, dates=date, period="day")

    def fresh_archives(self, site_id: int, date: str, attempts: int = 6) -> dict[str, Any]:
        """``VisitsSummary.get`` for ``date`` once it agrees with the real-time Live API.

        Reports of a past day are archived once and then trusted; tracking into that day after an archive was
        made (or in the same wall-clock second: ``ts_archived`` has one-second resolution) leaves them stale.
        Invalidating the day's archives makes the next report request archive it again (browser archiving).
        """
        live = self.visits(site_id, date)
        expected = (len(live), sum(len(visit["actionDetails"]) for visit in live))
        summary: dict[str, Any] = {}
        for _attempt in range(attempts):
            self.invalidate(site_id, date)
            summary = self.api("VisitsSummary.get", idSite=site_id, period="day", date=date)
            if (summary.get("nb_visits"), summary.get("nb_actions")) == expected:
                return summary
            time.sleep(1.1)
        raise AssertionError(f"archives of {date} stay stale: {summary} while Live has (visits, actions) {expected}")


def _day_start(date: str) -> int | None:
    """00:00 UTC of ``YYYY-MM-DD``, ``today`` or ``yesterday`` as a Unix second; ``None`` for anything else."""
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    named = {"today": today, "yesterday": today - timedelta(days=1)}
    if date in named:
        return int(named[date].timestamp())
    try:
        return int(datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp())
    except ValueError:
        return None


def reset_data() -> None:
    """Empty every tracked visit and archived report of the local Matomo (sites and tokens stay)."""
    done = subprocess.run([str(MATOMO_LOCAL), "reset-data"], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        pytest.fail(f"scripts/matomo-local reset-data failed (exit {done.returncode}): {done.stderr.strip()}")


@pytest.fixture(scope="session")
def matomo() -> Matomo:
    """The configured real Matomo, checked to answer and to accept the token."""
    if not _configured():
        pytest.skip(SKIP_REASON)
    env = os.environ
    server = Matomo(
        url=env["MATOMO_URL"].rstrip("/"),
        token=env["MATOMO_TOKEN"],
        secure_only_token=env.get("MATOMO_SECURE_ONLY_TOKEN") or None,
        view_token=env.get("MATOMO_VIEW_TOKEN") or None,
        site_id=int(env.get("MATOMO_SITE_ID", "1")),
        other_site_id=int(env.get("MATOMO_ECOMMERCE_SITE_ID", "2")),
    )
    version = server.api("API.getMatomoVersion")
    assert str(version.get("value", "")).startswith("5."), f"expected Matomo 5, got {version}"
    return server


@pytest.fixture(scope="session")
def clean_matomo(matomo: Matomo) -> Matomo:
    """The real Matomo with no tracked data and no archives, once per session, before anything is tracked."""
    reset_data()
    return matomo


@pytest.fixture(scope="session")
def corpus_day() -> datetime:
    """Yesterday, 00:00 UTC: the corpus lies in one whole past day, so its cdt needs the token (> 24 h old)."""
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=1)


@pytest.fixture
def random_token() -> str:
    """32 hex characters that are nobody's token."""
    return secrets.token_hex(16)


@pytest.fixture(scope="session")
def session_monkeypatch() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch

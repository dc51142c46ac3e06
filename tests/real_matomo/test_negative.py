"""Misconfigurations against the real Matomo: no token, a wrong token, a secure-only token, an unknown site.

Each drives the FastAPI example (uvicorn, real time) with the exporter in a BatchSpanProcessor, like the
fidelity suite, into the second site of the local Matomo, and checks what Matomo did and what the exporter said.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

import pytest

from otel_matomo import MatomoSpanExporter
from otel_matomo._sending import Outcome
from otel_matomo._types import ExportStats, Hit
from otel_matomo._visitor import visitor_id
from tests.real_matomo.conftest import Matomo
from tests.real_matomo.corpus import AGENTS, FASTAPI
from tests.real_matomo.replay import capture_deliveries, shop

pytestmark = pytest.mark.real_matomo

SECRET = "real-matomo-negative-paths-secret"
PATHS = ("/", "/items/7", "/items/8")


@dataclass(frozen=True)
class Run:
    """One short browse through an instrumented app with a given exporter configuration."""

    ip: str
    user_agent: str
    hits: list[Hit]
    outcomes: list[Outcome]
    stats: ExportStats
    records: list[logging.LogRecord]

    @property
    def cid(self) -> str:
        return self.hits[0]["cid"]

    @property
    def day(self) -> str:
        return datetime.fromtimestamp(int(self.hits[0]["cdt"]), timezone.utc).strftime("%Y-%m-%d")

    def messages(self, level: int = logging.WARNING) -> list[str]:
        return [
            record.getMessage()
            for record in self.records
            if record.levelno >= level and record.name.startswith("otel_matomo")
        ]


class Browse(Protocol):
    def __call__(self, **exporter_arguments: object) -> Run: ...


@pytest.fixture
def browse(clean_matomo: Matomo, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Browse:
    """``browse(**exporter_arguments)``: three page views by one new visitor, exported, with the logs."""
    caplog.set_level(logging.INFO, logger="otel_matomo")

    def run(**arguments: object) -> Run:
        ip = f"198.51.100.{secrets.randbelow(200) + 20}"
        user_agent = AGENTS[0].user_agent(100 + secrets.randbelow(50))
        settings = {"endpoint": clean_matomo.url, "site_id": clean_matomo.other_site_id, **arguments}
        caplog.clear()
        exporter = MatomoSpanExporter(**settings)  # type: ignore[arg-type]
        app = shop(exporter, monkeypatch, simulated_time=False, apps=(FASTAPI,))
        with capture_deliveries(monkeypatch) as delivery, app as served:
            headers = {"Host": "store.example", "User-Agent": user_agent, "X-Forwarded-For": ip}
            for count, path in enumerate(PATHS, start=1):
                assert served.clients[FASTAPI].get(path, headers=headers).status_code == 200
                served.ended.wait_for(count)
            served.flush()
        batches = list(delivery.batches)
        return Run(
            ip=ip,
            user_agent=user_agent,
            hits=[hit for hits, _ in batches for hit in hits],
            outcomes=[result.outcome for _, result in batches],
            stats=exporter.stats,
            records=list(caplog.records),
        )

    return run


def visits_of(matomo: Matomo, run: Run) -> list[dict[str, object]]:
    return matomo.visits(matomo.other_site_id, run.day, segment=f"visitorId=={run.cid}")


def test_without_token_no_cip_is_sent_and_matomo_records_the_servers_ip(browse: Browse, matomo: Matomo) -> None:
    """No token: the exporter sends no ``cip``, and Matomo records the sender's IP (here 127.0.0.1) as the visitor's."""
    run = browse(visitor_id_secret=SECRET)
    assert len(run.hits) == len(PATHS)
    assert all("cip" not in hit for hit in run.hits)
    assert run.cid == visitor_id(SECRET.encode(), run.ip, run.user_agent)
    assert run.stats.tracked == len(PATHS)
    [visit] = visits_of(matomo, run)
    assert visit["visitIp"] == "127.0.0.1"
    assert visit["visitIp"] != run.ip
    assert len(visit["actionDetails"]) == len(PATHS)  # type: ignore[arg-type]


def test_without_token_a_warning_says_visitor_ips_will_be_the_servers(browse: Browse) -> None:
    run = browse(visitor_id_secret=SECRET)
    said = [m for m in run.messages() if "token_auth" in m.lower() and re.search(r"\bIP", m)]
    assert said, f"no warning about visitor IPs among: {run.messages()}"


def test_wrong_token_with_cip_is_refused_with_a_clear_error(browse: Browse, matomo: Matomo, random_token: str) -> None:
    """A token Matomo does not know: every hit (each carries ``cip``) is refused, counted invalid, one error."""
    run = browse(token_auth=random_token)
    assert all(hit["cip"] == run.ip for hit in run.hits)
    assert run.outcomes == [Outcome.REJECTED]
    assert (run.stats.tracked, run.stats.invalid, run.stats.lost) == (0, len(PATHS), 0)
    # One clear error for the batch (whatever else may be logged), naming the token as the cause.
    [error] = [m for m in run.messages(logging.ERROR) if "refused" in m]
    assert "refused every hit" in error
    assert "token" in error
    assert random_token not in "".join(run.messages(logging.DEBUG))
    assert visits_of(matomo, run) == []


def test_secure_only_token_is_refused_with_the_secure_only_error(browse: Browse, matomo: Matomo) -> None:
    """A "secure only" token (Matomo 5's default, refused in bulk bodies: #22910): the exporter says so."""
    if matomo.secure_only_token is None:
        pytest.skip("MATOMO_SECURE_ONLY_TOKEN is not set")
    run = browse(token_auth=matomo.secure_only_token)
    assert run.outcomes == [Outcome.REJECTED]
    assert (run.stats.tracked, run.stats.invalid) == (0, len(PATHS))
    [error] = [m for m in run.messages(logging.ERROR) if "refused" in m]
    assert "secure only" in error
    assert "#22910" in error
    assert matomo.secure_only_token not in "".join(run.messages(logging.DEBUG))
    assert visits_of(matomo, run) == []


@pytest.fixture
def unknown_site(matomo: Matomo) -> int:
    sites = matomo.api("SitesManager.getSitesIdWithAtLeastViewAccess")
    return max(int(site) for site in sites) + 1000


def test_unknown_site_is_counted_invalid(browse: Browse, matomo: Matomo, unknown_site: int) -> None:
    """An idsite Matomo does not have: every hit is refused and counted invalid, nothing is lost or retried."""
    run = browse(site_id=unknown_site, token_auth=matomo.token)
    assert all(hit["idsite"] == str(unknown_site) for hit in run.hits)
    assert run.outcomes == [Outcome.REJECTED]
    assert (run.stats.tracked, run.stats.invalid, run.stats.lost, run.stats.batches) == (0, len(PATHS), 0, 1)


def test_unknown_site_error_names_the_site_not_the_token(browse: Browse, matomo: Matomo, unknown_site: int) -> None:
    run = browse(site_id=unknown_site, token_auth=matomo.token)
    messages = run.messages()
    assert messages
    assert not [m for m in messages if "secure only" in m]
    assert [m for m in messages if str(unknown_site) in m]

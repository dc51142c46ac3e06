"""A hit the real Matomo refuses never blocks the others: the delivery worker splits the failing batch, drops that
hit alone (counted ``refused``) and the real Matomo records every other one.

The refused hit is one that no longer leaves otel-matomo's own translation (a goal conversion carrying ``ca=1``,
for which Matomo 5.3.1 answers HTTP 500 to the whole bulk request): it is handed to the worker directly, as a hit
of another sender's making would be.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timedelta, timezone

import pytest

from otel_matomo._clock import SystemClock
from otel_matomo._pipeline import Pipeline
from otel_matomo._sending import Outcome
from otel_matomo._settings import Settings
from otel_matomo._transport import HttpSender
from otel_matomo._worker import Admission, DeliveryWorker
from tests.real_matomo.conftest import Matomo
from tests.servers import wait_until

pytestmark = pytest.mark.real_matomo

PAGES = 20


def _page(site_id: int, visitor: str, number: int) -> dict[str, str]:
    return {
        "idsite": str(site_id),
        "rec": "1",
        "apiv": "1",
        "cid": visitor,
        "rand": secrets.token_hex(8),
        "url": f"https://refused.example/page/{number}",
        "action_name": f"refused-hit test page {number}",
        "cdt": str(int(time.time())),
    }


def test_the_real_matomo_fails_the_whole_batch_for_this_hit(matomo: Matomo) -> None:
    settings = Settings.from_env({}, endpoint=matomo.url, site_id=matomo.site_id, token_auth=matomo.token)
    sender = HttpSender(settings)
    poison = {**_page(matomo.site_id, secrets.token_hex(8), 0), "idgoal": "1", "ca": "1"}
    try:
        result = sender.send([_page(matomo.site_id, secrets.token_hex(8), 1), poison], retry=False)
    finally:
        sender.close()
    assert (result.outcome, result.answered, result.status) == (Outcome.GAVE_UP, True, 500)


def test_a_refused_hit_is_dropped_alone_and_the_real_matomo_records_the_others(matomo: Matomo) -> None:
    settings = Settings.from_env(
        {},
        endpoint=matomo.url,
        site_id=matomo.site_id,
        token_auth=matomo.token,
        schedule_delay=timedelta(milliseconds=200),
    )
    pipeline = Pipeline(settings)
    worker: DeliveryWorker[object] = DeliveryWorker(pipeline, lambda _: None, clock=SystemClock(), name="test")
    visitor = secrets.token_hex(8)
    pages = [_page(matomo.site_id, visitor, number) for number in range(1, PAGES + 1)]
    poison = {**_page(matomo.site_id, visitor, 0), "idgoal": "1", "ca": "1"}
    started = time.monotonic()
    try:
        assert worker.accept([*pages[:7], poison, *pages[7:]], capacity=1000) is Admission.ACCEPTED
        wait_until(lambda: pipeline.stats.tracked >= PAGES, "the other hits recorded", timeout=60)
        took = time.monotonic() - started
    finally:
        worker.close(5.0)
    assert pipeline.stats.refused == 1
    assert took < 30
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    visits = [visit for visit in matomo.visits(matomo.site_id, today) if visit["visitorId"] == visitor]
    titles = sorted(action.get("title", "") for visit in visits for action in visit["actionDetails"])
    assert titles == sorted(page["action_name"] for page in pages), "every other hit, once"

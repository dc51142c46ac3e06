"""The stand-in (``tests/matomo_standin.py``) answers bulk requests as the real Matomo does.

The unit and end-to-end tests trust the stand-in's rules; this sends the same bulk bodies to the real Matomo and
to the stand-in and compares the answers (HTTP status, ``tracked``, ``invalid``, ``invalid_indices``), so a rule
the stand-in gets wrong fails here instead of locking a wrong assumption into the package.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import pytest

from tests.matomo_standin import SECURE_ONLY_TOKEN, SUPERUSER_TOKEN, MatomoStandIn
from tests.real_matomo.conftest import Matomo

pytestmark = pytest.mark.real_matomo

UNKNOWN_SITE = 999


def item(**params: object) -> str:
    """One bulk item for the second site (known to both), ``?`` first, as the exporter writes them."""
    base: dict[str, object] = {"idsite": 2, "rec": 1, "apiv": 1, "url": "http://store.example/p", "action_name": "p"}
    base.update(params)
    return "?" + urlencode({key: str(value) for key, value in base.items()})


def hours_ago(hours: float) -> int:
    return int(time.time() - hours * 3600)


@dataclass(frozen=True)
class Case:
    name: str
    token: str
    """``none``, ``superuser``, ``secure-only``, ``view`` (no write access) or ``random``."""
    items: Callable[[], object]
    raw: bytes | None = None


CASES = [
    Case("plain hit, no token", "none", lambda: [item()]),
    Case("cip without token", "none", lambda: [item(cip="198.51.100.7")]),
    Case("cdt 25 h old without token", "none", lambda: [item(cdt=hours_ago(25))]),
    Case("cdt 25 h old as a date without token", "none", lambda: [item(cdt=_date(hours_ago(25)))]),
    Case("cdt 1 h old without token", "none", lambda: [item(cdt=hours_ago(1))]),
    Case(
        "cip and old cdt with the superuser token", "superuser", lambda: [item(cip="198.51.100.7", cdt=hours_ago(30))]
    ),
    Case("unknown site among good hits", "superuser", lambda: [item(), item(idsite=UNKNOWN_SITE), item()]),
    Case("unknown site without token: no indices", "none", lambda: [item(), item(idsite=UNKNOWN_SITE)]),
    Case("missing idsite", "superuser", lambda: ["?rec=1&url=http%3A%2F%2Fstore.example%2F"]),
    Case(
        "item without '?' is dropped, indices shift", "superuser", lambda: ["idsite=2&rec=1", item(idsite=UNKNOWN_SITE)]
    ),
    Case("item '?' alone is dropped", "superuser", lambda: ["?", item(idsite=UNKNOWN_SITE)]),
    Case(
        "JSON object item is tracked",
        "superuser",
        lambda: [{"idsite": "2", "rec": "1", "url": "http://store.example/o"}],
    ),
    Case("secure-only token, no cip: tracked", "secure-only", lambda: [item(), item()]),
    Case("secure-only token with cip: refused, no indices", "secure-only", lambda: [item(cip="198.51.100.7"), item()]),
    Case("secure-only token with old cdt", "secure-only", lambda: [item(cdt=hours_ago(25))]),
    Case("view-only token with cip", "view", lambda: [item(cip="198.51.100.7"), item()]),
    Case("random token, no cip: never checked", "random", lambda: [item()]),
    Case("random token with cip", "random", lambda: [item(cip="198.51.100.7")]),
    Case("cid of 15 characters", "superuser", lambda: [item(cid="0123456789abcde"), item()]),
    Case("cid of 17 characters", "superuser", lambda: [item(cid="0123456789abcdef0")]),
    Case("upper-case hex cid", "superuser", lambda: [item(cid="0123456789ABCDEF")]),
    Case("16 non-hex characters as cid", "superuser", lambda: [item(cid="zzzzzzzzzzzzzzzz")]),
    Case("empty cid", "superuser", lambda: [item(cid="")]),
    Case("rec=0 counts as tracked", "superuser", lambda: [item(rec=0)]),
    Case("empty list", "superuser", list),
    Case("requests not a list", "superuser", lambda: "abc"),
    Case("no requests key", "superuser", lambda: None),
    Case("not JSON", "none", list, raw=b"this is not json"),
]


def _date(unix: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(unix))


@pytest.fixture(scope="module")
def standin() -> Iterator[MatomoStandIn]:
    server = MatomoStandIn().start()
    yield server
    server.stop()


def _answer(url: str, body: bytes) -> tuple[int, object]:
    response = httpx.post(f"{url}/matomo.php", content=body, headers={"Content-Type": "application/json"}, timeout=30)
    try:
        parsed: object = response.json()
    except ValueError:
        parsed = "not JSON: " + response.headers.get("content-type", "")
    if isinstance(parsed, dict):
        parsed = {key: parsed[key] for key in ("tracked", "invalid", "invalid_indices") if key in parsed}
    return response.status_code, parsed


def _body(case: Case, token: str | None) -> bytes:
    if case.raw is not None:
        return case.raw
    requests = case.items()
    body: dict[str, object] = {} if requests is None else {"requests": requests}
    if token is not None:
        body["token_auth"] = token
    return json.dumps(body).encode()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_standin_answers_as_matomo(case: Case, clean_matomo: Matomo, standin: MatomoStandIn, random_token: str) -> None:
    real_tokens = {
        "none": None,
        "superuser": clean_matomo.token,
        "secure-only": clean_matomo.secure_only_token,
        "view": clean_matomo.view_token,
        "random": random_token,
    }
    standin_tokens = {
        "none": None,
        "superuser": SUPERUSER_TOKEN,
        "secure-only": SECURE_ONLY_TOKEN,
        "view": "d" * 32,  # a token the stand-in does not know: no write access
        "random": random_token,
    }
    if case.token != "none" and real_tokens[case.token] is None:
        pytest.skip(f"the real Matomo has no {case.token} token configured")
    real = _answer(clean_matomo.url, _body(case, real_tokens[case.token]))
    stand_in = _answer(standin.url, _body(case, standin_tokens[case.token]))
    assert stand_in == real

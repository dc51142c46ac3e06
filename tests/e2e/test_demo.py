"""The README's first command: `otel-matomo demo` serves, browses and prints the hits, with no Matomo needed."""

from __future__ import annotations

import json

import pytest

from otel_matomo.cli import main
from tests.matomo_standin import WRITE_TOKEN, MatomoStandIn


def test_demo_prints_the_hits_without_matomo(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_MATOMO_ENDPOINT", raising=False)
    assert main(["demo", "--json"]) == 0
    out, err = capsys.readouterr()
    hits = [json.loads(line) for line in out.splitlines()]  # standard output is JSON alone, one hit per line
    assert [hit["action_name"] for hit in hits] == [
        "GET /",
        "GET /items/{item_id}",
        "POST /api/cart",
        "GET /items/{item_id}",
        "404/URL = %2Fno%2Fsuch%2Fpage/From = http%3A%2F%2Fshop.example%2Fitems%2F12",
    ]
    assert len({hit["cid"] for hit in hits}) == 2, "two visitors"
    assert "nothing was sent" in err


def test_demo_sends_when_an_endpoint_is_configured(
    standin: MatomoStandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_MATOMO_ENDPOINT", standin.url)
    monkeypatch.setenv("OTEL_EXPORTER_MATOMO_SITE_ID", "1")
    monkeypatch.setenv("OTEL_EXPORTER_MATOMO_TOKEN_AUTH", WRITE_TOKEN)
    assert main(["demo"]) == 0
    assert "tracked 5, invalid 0, lost 0" in capsys.readouterr().out
    assert len(standin.tracked) == 5

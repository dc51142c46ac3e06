"""``otel-matomo``'s argument parsing: every gateway flag reaches ``run_gateway`` as its keyword argument."""

from __future__ import annotations

from importlib.metadata import version

import pytest

import otel_matomo.gateway
from otel_matomo.cli import main


def test_every_gateway_flag_is_passed_on(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[dict[str, object]] = []

    def run_gateway(**kwargs: object) -> int:
        received.append(kwargs)
        return 7

    monkeypatch.setattr(otel_matomo.gateway, "run_gateway", run_gateway)
    argv = [
        "gateway",
        "--host=0.0.0.0",
        "--port=4319",
        "--token-file=/run/token",
        "--sites=shop=1,blog=2",
        "--max-body-size=1024",
        "--queue-size=50",
        "--drain-timeout=2.5",
        "--header-timeout=3",
        "--body-timeout=7.5",
        "--max-connections=20",
        "--max-body-memory=4096",
        "--max-decoding=2",
        "--allow-unauthenticated",
        "--spool-dir=/var/spool/otel-matomo",
    ]

    assert main(argv) == 7
    assert received == [
        {
            "host": "0.0.0.0",
            "port": 4319,
            "token_file": "/run/token",
            "sites": "shop=1,blog=2",
            "max_body_size": 1024,
            "queue_size": 50,
            "drain_timeout": 2.5,
            "header_timeout": 3.0,
            "body_timeout": 7.5,
            "max_connections": 20,
            "max_body_memory": 4096,
            "max_decoding": 2,
            "allow_unauthenticated": True,
            "spool_dir": "/var/spool/otel-matomo",
        }
    ]


def test_gateway_flags_left_out_are_none(monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[dict[str, object]] = []
    monkeypatch.setattr(otel_matomo.gateway, "run_gateway", lambda **kwargs: received.append(kwargs) or 0)

    assert main(["gateway"]) == 0
    assert received == [
        dict.fromkeys(
            (
                "host",
                "port",
                "token_file",
                "sites",
                "max_body_size",
                "queue_size",
                "drain_timeout",
                "header_timeout",
                "body_timeout",
                "max_connections",
                "max_body_memory",
                "max_decoding",
                "allow_unauthenticated",
                "spool_dir",
            )
        )
    ]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"otel-matomo {version('otel-matomo')}"

"""Gateway options (``OTEL_MATOMO_GATEWAY_*`` and flags) and the per-site Matomo settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_matomo._options import ConfigurationError
from otel_matomo.gateway._config import GatewayConfig, matomo_settings

TOKEN = "s3cret-token-0123456789"


def test_defaults_listen_on_loopback_on_the_otlp_port() -> None:
    config = GatewayConfig.from_env({})

    assert (config.host, config.port, config.token, dict(config.sites)) == ("127.0.0.1", 4318, None, {})
    assert (config.max_body_size, config.queue_size, config.drain_timeout) == (16 * 1024 * 1024, 10_000, 10.0)


def test_variables_are_read_and_flags_win() -> None:
    environ = {
        "OTEL_MATOMO_GATEWAY_HOST": "0.0.0.0",
        "OTEL_MATOMO_GATEWAY_PORT": "14318",
        "OTEL_MATOMO_GATEWAY_TOKEN": TOKEN,
        "OTEL_MATOMO_GATEWAY_SITES": " shop=1, blog = 2 ,",
        "OTEL_MATOMO_GATEWAY_MAX_BODY_SIZE": "1048576",
        "OTEL_MATOMO_GATEWAY_QUEUE_SIZE": "50",
        "OTEL_MATOMO_GATEWAY_DRAIN_TIMEOUT": "2500",
    }

    config = GatewayConfig.from_env(environ)
    overridden = GatewayConfig.from_env(environ, host="::1", port=9999, sites="api=7", drain_timeout=1.5)

    assert (config.host, config.port, config.token, dict(config.sites)) == (
        "0.0.0.0",
        14318,
        TOKEN,
        {"shop": 1, "blog": 2},
    )
    assert (config.max_body_size, config.queue_size, config.drain_timeout) == (1048576, 50, 2.5)
    assert (overridden.host, overridden.port, dict(overridden.sites), overridden.drain_timeout) == (
        "::1",
        9999,
        {"api": 7},
        1.5,
    )


def test_the_token_comes_from_a_file_and_never_shows(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")

    config = GatewayConfig.from_env({}, token_file=str(token_file))
    from_variable = GatewayConfig.from_env({"OTEL_MATOMO_GATEWAY_TOKEN_FILE": str(token_file)})

    assert config.token == from_variable.token == TOKEN
    assert TOKEN not in repr(config)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_MATOMO_GATEWAY_PORT": "http"}, "--port (OTEL_MATOMO_GATEWAY_PORT) is 'http': expected a TCP port"),
        ({"OTEL_MATOMO_GATEWAY_PORT": "70000"}, "--port (OTEL_MATOMO_GATEWAY_PORT) is '70000'"),
        ({"OTEL_MATOMO_GATEWAY_MAX_BODY_SIZE": "16M"}, "--max-body-size (OTEL_MATOMO_GATEWAY_MAX_BODY_SIZE)"),
        ({"OTEL_MATOMO_GATEWAY_QUEUE_SIZE": "0"}, "--queue-size (OTEL_MATOMO_GATEWAY_QUEUE_SIZE) is '0'"),
        ({"OTEL_MATOMO_GATEWAY_DRAIN_TIMEOUT": "soon"}, "--drain-timeout (OTEL_MATOMO_GATEWAY_DRAIN_TIMEOUT)"),
        ({"OTEL_MATOMO_GATEWAY_SITES": "shop"}, "--sites (OTEL_MATOMO_GATEWAY_SITES) has the entry 'shop'"),
        ({"OTEL_MATOMO_GATEWAY_SITES": "shop=x"}, "has the entry 'shop=x': expected service.name=site id pairs"),
        ({"OTEL_MATOMO_GATEWAY_SITES": "=3"}, "has the entry '=3'"),
        ({"OTEL_MATOMO_GATEWAY_SITES": "shop=1,shop=2"}, "names 'shop' twice"),
        ({"OTEL_MATOMO_GATEWAY_TOKEN": "short"}, "OTEL_MATOMO_GATEWAY_TOKEN) is not a usable bearer token"),
        ({"OTEL_MATOMO_GATEWAY_TOKEN": "has a space in it 0123456"}, "is not a usable bearer token"),
        (
            {"OTEL_MATOMO_GATEWAY_TOKEN": TOKEN, "OTEL_MATOMO_GATEWAY_TOKEN_FILE": "/etc/token"},
            "both OTEL_MATOMO_GATEWAY_TOKEN and a token file",
        ),
        ({"OTEL_MATOMO_GATEWAY_TOKEN_FILE": "/nonexistent/token"}, "--token-file (OTEL_MATOMO_GATEWAY_TOKEN_FILE)"),
    ],
)
def test_invalid_options_name_the_flag_and_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")) as raised:
        GatewayConfig.from_env(environ)
    assert "has a space" not in str(raised.value)  # a mistyped secret is never echoed


def test_a_negative_drain_timeout_flag_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="--drain-timeout is -1"):
        GatewayConfig.from_env({}, drain_timeout=-1)


MATOMO = {"OTEL_EXPORTER_MATOMO_ENDPOINT": "https://matomo.example", "OTEL_EXPORTER_MATOMO_VISITOR_ID_SECRET": "x" * 16}


def test_the_exporter_site_id_is_the_default_site() -> None:
    settings, default_site = matomo_settings({"shop": 1}, {**MATOMO, "OTEL_EXPORTER_MATOMO_SITE_ID": "5"})

    assert (settings.site_id, default_site) == (5, True)
    assert settings.endpoint == "https://matomo.example/matomo.php"


def test_with_a_mapping_the_site_id_is_optional_and_unmapped_services_have_no_site() -> None:
    settings, default_site = matomo_settings({"shop": 4, "blog": 2}, MATOMO)

    assert default_site is False
    assert settings.site_id == 4  # a stand-in for validation; every site gets its own copy


def test_without_a_mapping_the_site_id_is_required_as_for_the_exporter() -> None:
    with pytest.raises(ConfigurationError, match="OTEL_EXPORTER_MATOMO_SITE_ID"):
        matomo_settings({}, MATOMO)

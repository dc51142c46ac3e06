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
    assert (config.header_timeout, config.body_timeout) == (10.0, 30.0)
    assert (config.max_connections, config.max_decoding, config.allow_unauthenticated) == (1000, 4, False)
    assert config.max_body_memory == 128 * 1024 * 1024


def test_connection_limits_are_read_like_the_other_durations() -> None:
    environ = {
        "OTEL_MATOMO_GATEWAY_HEADER_TIMEOUT": "2000",
        "OTEL_MATOMO_GATEWAY_BODY_TIMEOUT": "4500",
        "OTEL_MATOMO_GATEWAY_MAX_CONNECTIONS": "64",
        "OTEL_MATOMO_GATEWAY_MAX_DECODING": "2",
        "OTEL_MATOMO_GATEWAY_MAX_BODY_MEMORY": "33554432",
    }

    config = GatewayConfig.from_env(environ)
    overridden = GatewayConfig.from_env(environ, header_timeout=0.5, body_timeout=1.5, max_connections=8)

    assert (config.header_timeout, config.body_timeout, config.max_connections, config.max_decoding) == (
        2.0,
        4.5,
        64,
        2,
    )
    assert (overridden.header_timeout, overridden.body_timeout, overridden.max_connections) == (0.5, 1.5, 8)
    assert (config.max_body_memory, overridden.max_body_memory) == (32 * 1024 * 1024, 32 * 1024 * 1024)


def test_body_memory_below_the_body_limit_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"--max-body-memory \(OTEL_MATOMO_GATEWAY_MAX_BODY_MEMORY\) is below"):
        GatewayConfig.from_env({"OTEL_MATOMO_GATEWAY_MAX_BODY_SIZE": "2048"}, max_body_memory=1024)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "gateway.internal"])
def test_a_non_loopback_bind_without_a_token_is_refused_naming_the_fix(host: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        GatewayConfig.from_env({"OTEL_MATOMO_GATEWAY_HOST": host})

    message = str(refused.value)
    assert f"--host {host} listens beyond this machine without a bearer token" in message
    assert "--token-file" in message
    assert "--allow-unauthenticated" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_needs_no_token(host: str) -> None:
    assert GatewayConfig.from_env({}, host=host).host == host


def test_an_open_bind_is_served_when_the_operator_says_so_or_with_a_token() -> None:
    by_flag = GatewayConfig.from_env({}, host="0.0.0.0", allow_unauthenticated=True)
    by_variable = GatewayConfig.from_env(
        {"OTEL_MATOMO_GATEWAY_HOST": "::", "OTEL_MATOMO_GATEWAY_ALLOW_UNAUTHENTICATED": "true"}
    )
    with_token = GatewayConfig.from_env({"OTEL_MATOMO_GATEWAY_TOKEN": TOKEN}, host="0.0.0.0")

    assert (by_flag.token, by_flag.allow_unauthenticated, by_variable.host) == (None, True, "::")
    assert with_token.token == TOKEN


@pytest.mark.parametrize("mode", [0o666, 0o644, 0o640, 0o604, 0o620, 0o602])
def test_a_token_file_others_may_read_or_write_is_refused_without_echoing_it(tmp_path: Path, mode: int) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(mode)

    with pytest.raises(ConfigurationError) as refused:
        GatewayConfig.from_env({}, token_file=str(token_file))

    message = str(refused.value)
    assert f"is open to group or others (mode {mode:04o})" in message
    assert f"chmod 600 {token_file}" in message
    assert TOKEN not in message


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_token_file_only_its_owner_can_read_is_accepted(tmp_path: Path, mode: int) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(mode)

    assert GatewayConfig.from_env({}, token_file=str(token_file)).token == TOKEN


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
    token_file.chmod(0o600)

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
        ({"OTEL_MATOMO_GATEWAY_HEADER_TIMEOUT": "0"}, "--header-timeout (OTEL_MATOMO_GATEWAY_HEADER_TIMEOUT) is '0'"),
        ({"OTEL_MATOMO_GATEWAY_BODY_TIMEOUT": "-5"}, "--body-timeout (OTEL_MATOMO_GATEWAY_BODY_TIMEOUT) is '-5'"),
        ({"OTEL_MATOMO_GATEWAY_MAX_CONNECTIONS": "0"}, "--max-connections (OTEL_MATOMO_GATEWAY_MAX_CONNECTIONS)"),
        ({"OTEL_MATOMO_GATEWAY_MAX_DECODING": "1.5"}, "--max-decoding (OTEL_MATOMO_GATEWAY_MAX_DECODING) is '1.5'"),
        ({"OTEL_MATOMO_GATEWAY_ALLOW_UNAUTHENTICATED": "maybe"}, "(OTEL_MATOMO_GATEWAY_ALLOW_UNAUTHENTICATED)"),
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

"""``otel-matomo gateway`` as a process: configure from the flags and the environment, serve under uvicorn with
read deadlines and a connection cap, stop gracefully on a signal and drain."""

from __future__ import annotations

import dataclasses
import logging
import signal

import uvicorn

from otel_matomo._settings import Settings
from otel_matomo.gateway._config import GatewayConfig, matomo_settings
from otel_matomo.gateway._connections import ReadDeadlines, deadline_protocol
from otel_matomo.gateway._server import TRACES_PATH, Gateway

_logger = logging.getLogger("otel_matomo.gateway")


def serve(gateway: Gateway) -> None:
    """Serve ``gateway`` under uvicorn until SIGTERM or SIGINT, then drain it.

    On a signal uvicorn stops accepting connections, lets the requests in flight finish (within the drain
    timeout), then sends the ASGI lifespan shutdown, on which the gateway drains its queue to Matomo.
    """
    server = uvicorn.Server(uvicorn_config(gateway))
    try:
        server.run()
    finally:
        gateway.close()  # when the lifespan shutdown did not run (a second Ctrl-C), or the server failed


def uvicorn_config(gateway: Gateway) -> uvicorn.Config:
    """How uvicorn serves ``gateway``: clients late with their headers or body are disconnected
    (:mod:`._connections`), and requests on connections beyond ``max_connections`` are answered 503 (uvicorn's
    limit counts the connection asking, hence the one more)."""
    config = gateway.config
    return uvicorn.Config(
        gateway,
        host=config.host,
        port=config.port,
        http=deadline_protocol(ReadDeadlines(config.header_timeout, config.body_timeout)),
        limit_concurrency=config.max_connections + 1,
        lifespan="on",
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=max(1, round(config.drain_timeout)),
    )


def run_gateway(
    *,
    host: str | None = None,
    port: int | None = None,
    token_file: str | None = None,
    sites: str | None = None,
    max_body_size: int | None = None,
    queue_size: int | None = None,
    drain_timeout: float | None = None,
    spool_dir: str | None = None,
    header_timeout: float | None = None,
    body_timeout: float | None = None,
    max_connections: int | None = None,
    max_body_memory: int | None = None,
    max_decoding: int | None = None,
    allow_unauthenticated: bool | None = None,
) -> int:
    """``otel-matomo gateway``: configure from the flags and the environment, serve, drain; the exit code.

    ``spool_dir`` (``--spool-dir``) overrides ``OTEL_EXPORTER_MATOMO_SPOOL_DIR``: with it, the hits of every
    request answered 200 are on disk before the answer, and a restart delivers what the last run could not.
    """
    config = GatewayConfig.from_env(
        host=host,
        port=port,
        token_file=token_file,
        sites=sites,
        max_body_size=max_body_size,
        queue_size=queue_size,
        drain_timeout=drain_timeout,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_connections=max_connections,
        max_body_memory=max_body_memory,
        max_decoding=max_decoding,
        allow_unauthenticated=allow_unauthenticated,
    )
    settings, default_site = matomo_settings(config.sites)
    if spool_dir is not None:
        settings = dataclasses.replace(settings, spool_dir=spool_dir)
    # The gateway is a service: its start line and each site's totals at the end belong in its output.
    logging.getLogger("otel_matomo").setLevel(logging.INFO)
    gateway = Gateway(config, settings, default_site=default_site)
    # uvicorn re-raises the signal that stopped it once it is done; after a graceful drain that is a normal
    # end, not a KeyboardInterrupt traceback or a death by SIGTERM.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, _exit_normally)
    _logger.info(
        "otel-matomo: gateway: OTLP/HTTP traces on http://%s:%d%s -> %s, sites %s",
        config.host,
        config.port,
        TRACES_PATH,
        settings.endpoint_for_logs,
        _describe_sites(config, settings, default_site),
    )
    serve(gateway)
    return 0


def _exit_normally(signum: int, frame: object) -> None:  # noqa: ARG001 - the signal handler signature
    raise SystemExit(0)


def _describe_sites(config: GatewayConfig, settings: Settings, default_site: bool) -> str:
    mapped = [f"{service}={site_id}" for service, site_id in config.sites.items()]
    fallback = f"other services={settings.site_id}" if default_site else "other services rejected"
    return ", ".join([*mapped, fallback])

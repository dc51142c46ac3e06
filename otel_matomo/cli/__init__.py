"""The ``otel-matomo`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from otel_matomo._options import ConfigurationError
from otel_matomo._version import package_version

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``otel-matomo <command>``; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="otel-matomo",
        description="Server-side Matomo analytics from OpenTelemetry HTTP server spans.",
    )
    parser.add_argument("--version", action="version", version=f"otel-matomo {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="run a small instrumented web app, browse it, and show the Matomo hits it produces",
        description=(
            "Starts an OpenTelemetry-instrumented FastAPI app on loopback, drives a short browsing session "
            "through it and prints the exact Matomo hits. With OTEL_EXPORTER_MATOMO_ENDPOINT and "
            "OTEL_EXPORTER_MATOMO_SITE_ID set, it also sends them to that Matomo."
        ),
    )
    demo.add_argument("--json", action="store_true", help="print the hits as JSON lines instead of a table")
    _add_gateway_command(commands)
    # --- `otel-matomo check` (otel_matomo/cli/check.py) ---
    from otel_matomo.cli import check  # noqa: PLC0415 - next to its use, apart from the other commands

    check.add_parser(commands)
    # --- end of `check` ---
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "check":
        return check.run(args)
    try:
        if args.command == "gateway":
            from otel_matomo.gateway import run_gateway  # noqa: PLC0415 - needs the optional [gateway] extra

            return run_gateway(**{_dest(flag): getattr(args, _dest(flag)) for flag, _ in _GATEWAY_FLAGS})
        from otel_matomo.cli.demo import run_demo  # noqa: PLC0415 - needs the optional [demo] extra

        return run_demo(as_json=args.json)
    except ConfigurationError as error:
        print(f"otel-matomo: invalid configuration: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        extra = args.command
        print(
            f"otel-matomo {extra} needs the {extra} extra: pip install 'otel-matomo[{extra}]' ({error})",
            file=sys.stderr,
        )
        return 2


_GATEWAY_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--host", {"help": "address to listen on (default 127.0.0.1; OTEL_MATOMO_GATEWAY_HOST)"}),
    ("--port", {"type": int, "help": "TCP port (default 4318; OTEL_MATOMO_GATEWAY_PORT)"}),
    (
        "--token-file",
        {
            "metavar": "PATH",
            "help": "file holding the bearer token senders must present (OTEL_MATOMO_GATEWAY_TOKEN_FILE; or the "
            "token itself in OTEL_MATOMO_GATEWAY_TOKEN)",
        },
    ),
    (
        "--sites",
        {
            "metavar": "SERVICE=ID,...",
            "help": "Matomo site id per resource service.name, e.g. shop=1,blog=2 (OTEL_MATOMO_GATEWAY_SITES); other "
            "services go to OTEL_EXPORTER_MATOMO_SITE_ID, or are rejected when it is unset",
        },
    ),
    (
        "--max-body-size",
        {
            "type": int,
            "metavar": "BYTES",
            "help": "largest request body, before and after gzip (default 16 MiB; OTEL_MATOMO_GATEWAY_MAX_BODY_SIZE)",
        },
    ),
    (
        "--queue-size",
        {
            "type": int,
            "metavar": "HITS",
            "help": "hits waiting for Matomo before senders get 429 (default 10000; OTEL_MATOMO_GATEWAY_QUEUE_SIZE)",
        },
    ),
    (
        "--drain-timeout",
        {
            "type": float,
            "metavar": "SECONDS",
            "help": "time to deliver the queue at shutdown (default 10; OTEL_MATOMO_GATEWAY_DRAIN_TIMEOUT in ms)",
        },
    ),
    (
        "--header-timeout",
        {
            "type": float,
            "metavar": "SECONDS",
            "help": "time a client has to send a request's headers, then it is disconnected (default 10; "
            "OTEL_MATOMO_GATEWAY_HEADER_TIMEOUT in ms)",
        },
    ),
    (
        "--body-timeout",
        {
            "type": float,
            "metavar": "SECONDS",
            "help": "time a client has to send a request's body after its headers, then it is disconnected "
            "(default 30; OTEL_MATOMO_GATEWAY_BODY_TIMEOUT in ms)",
        },
    ),
    (
        "--max-connections",
        {
            "type": int,
            "metavar": "N",
            "help": "connections served at once; requests on more get 503 (default 1000; "
            "OTEL_MATOMO_GATEWAY_MAX_CONNECTIONS)",
        },
    ),
    (
        "--max-body-memory",
        {
            "type": int,
            "metavar": "BYTES",
            "help": "bytes of request bodies held at once while read and decoded; more get 503 with Retry-After "
            "(default 128 MiB; OTEL_MATOMO_GATEWAY_MAX_BODY_MEMORY)",
        },
    ),
    (
        "--max-decoding",
        {
            "type": int,
            "metavar": "N",
            "help": "request bodies decoded at once; more get 503 with Retry-After (default 4; "
            "OTEL_MATOMO_GATEWAY_MAX_DECODING)",
        },
    ),
    (
        "--allow-unauthenticated",
        {
            "action": "store_true",
            "default": None,
            "help": "serve a non-loopback --host without a bearer token, when a network policy or a proxy keeps "
            "strangers out (OTEL_MATOMO_GATEWAY_ALLOW_UNAUTHENTICATED); refused otherwise",
        },
    ),
    (
        "--spool-dir",
        {
            "metavar": "DIR",
            "help": "hits stay on disk until Matomo has them, across restarts (OTEL_EXPORTER_MATOMO_SPOOL_DIR)",
        },
    ),
)
"""``otel-matomo gateway``'s flags, each the keyword argument of ``run_gateway`` it is named after (``--max-body-size``
is ``max_body_size``): one table, so that no flag is parsed and then not passed on."""


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def _add_gateway_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``otel-matomo gateway``; each flag overrides its ``OTEL_MATOMO_GATEWAY_*`` variable (see the README)."""
    gateway = commands.add_parser(
        "gateway",
        help="receive OTLP/HTTP traces from any language and send their HTTP server spans to Matomo",
        description=(
            "An OTLP/HTTP traces receiver (POST /v1/traces, protobuf or JSON, gzip) for back ends in any language "
            "or an OpenTelemetry Collector. HTTP server spans become Matomo hits exactly as with the exporter, "
            "configured by the same OTEL_EXPORTER_MATOMO_* variables. Stops gracefully on SIGTERM."
        ),
    )
    for flag, options in _GATEWAY_FLAGS:
        gateway.add_argument(flag, **options)

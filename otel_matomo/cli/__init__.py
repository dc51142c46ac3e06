"""The ``otel-matomo`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from otel_matomo.settings import ConfigurationError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``otel-matomo <command>``; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="otel-matomo",
        description="Server-side Matomo analytics from OpenTelemetry HTTP server spans.",
    )
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from otel_matomo.cli.demo import run_demo  # noqa: PLC0415 - needs the optional [demo] extra

        return run_demo(as_json=args.json)
    except ConfigurationError as error:
        print(f"otel-matomo: invalid configuration: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        print(f"otel-matomo demo needs the demo extra: pip install 'otel-matomo[demo]' ({error})", file=sys.stderr)
        return 2

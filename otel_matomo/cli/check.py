"""``otel-matomo check``: is the exporter's configuration one that gets hits into Matomo?

One line per check, each with a verdict (OK, WARN, FAIL, SKIP), from the same configuration as the exporter:
the configuration itself and the application's environment (``_check_environment``), the live Matomo
(``_check_matomo``), printed as ``_check_report`` formats them. This module is the command: its arguments,
the order of the checks, and the exit code. Nothing is recorded in Matomo unless ``--send-test-hit`` is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TextIO

import httpx

from otel_matomo._names import ENV_PREFIX
from otel_matomo._options import ConfigurationError
from otel_matomo._settings import Settings, read_flag
from otel_matomo.cli._check_environment import configuration_checks, environment_checks
from otel_matomo.cli._check_http import MatomoClient
from otel_matomo.cli._check_matomo import NAMES, TEST_HIT_TITLE, MatomoChecks
from otel_matomo.cli._check_report import Check, Redactor, Verdict, format_check, summary, use_colour

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIGURATION = 2

_HELP = "check that the configured Matomo answers, the site exists and the token works for bulk tracking"
_DESCRIPTION = (
    "Reads the exporter's configuration (OTEL_EXPORTER_MATOMO_* variables; --endpoint and --site-id override "
    "them) and checks, one line each: that the endpoint answers as Matomo's tracker; that the site exists and "
    "the token may write to it (Reporting API, token in the POST body); that Matomo accepts the token inside "
    "bulk requests (the 'secure only' token trap), with a probe that Matomo validates but does not record; the "
    "SDK exporters opentelemetry-instrument would load; the request-header capture and the HTTP semantic "
    "conventions the instrumentation would use. Run it with the application's environment. Nothing is "
    "recorded in Matomo unless --send-test-hit is given. The token is never printed."
)
_EPILOG = """verdicts:
  OK    works as needed
  WARN  works, but some analytics will be missing or wrong
  FAIL  hits will be lost
  SKIP  not checked (not configured, or an earlier check failed)

exit codes:
  0  no check failed (warnings allowed)
  1  at least one check failed
  2  configuration error (an invalid OTEL_EXPORTER_MATOMO_* value or argument)

Colour is used only when standard output is a terminal and NO_COLOR is unset."""


class Checker:
    """Runs the checks for one configuration; :meth:`checks` yields each line as soon as it is known."""

    def __init__(
        self,
        settings: Settings,
        environ: Mapping[str, str],
        *,
        client: httpx.Client | None = None,
        configuration_warnings: tuple[str, ...] = (),
    ) -> None:
        self._settings = settings
        self._environ = environ
        self._warnings = configuration_warnings
        self._probe_id = secrets.token_hex(8)
        self._matomo = None if settings.endpoint is None else MatomoClient(settings, client)

    @property
    def probe_visitor_id(self) -> str:
        """The ``cid`` of this run's non-recording probe (to look it up in Matomo's Live API)."""
        return self._probe_id

    def close(self) -> None:
        """Release the HTTP connections."""
        if self._matomo is not None:
            self._matomo.close()

    def checks(self, *, send_test_hit: bool = False) -> Iterator[Check]:
        """Every check, in order."""
        yield from configuration_checks(self._settings, self._warnings)
        if self._matomo is None:
            for name in NAMES:
                yield Check(name, Verdict.SKIP, "no endpoint configured (dry run)")
        else:
            yield from MatomoChecks(self._settings, self._matomo, self._probe_id).checks(send_test_hit=send_test_hit)
        yield from environment_checks(self._environ)


@contextmanager
def _collected_warnings() -> Iterator[list[str]]:
    """Warnings the settings log while being read, to show as WARN lines instead of log records."""
    logger = logging.getLogger("otel_matomo")
    found: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                found.append(record.getMessage())

    handler = Collect()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield found
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``check`` to the ``otel-matomo`` sub-commands."""
    parser = commands.add_parser(
        "check",
        help=_HELP,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--endpoint", metavar="URL", help=f"the Matomo URL (overrides {ENV_PREFIX}ENDPOINT)")
    parser.add_argument("--site-id", metavar="ID", help=f"the Matomo site id (overrides {ENV_PREFIX}SITE_ID)")
    parser.add_argument(
        "--send-test-hit",
        action="store_true",
        help=f"also send one real page view titled {TEST_HIT_TITLE!r}, recorded in the site's reports",
    )


def run(
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``otel-matomo check`` with parsed ``args``; returns the exit code."""
    env = os.environ if environ is None else environ
    stdout = sys.stdout if out is None else out
    stderr = sys.stderr if err is None else err
    warnings: list[str] = []
    try:
        with _collected_warnings() as warnings:
            # No caller: an invalid flag is named as its variable, which --help says it overrides.
            settings = Settings.from_env(env, _caller=None, endpoint=args.endpoint, site_id=args.site_id)
            read_flag("CAPTURE_HEADERS", True, env)
    except ConfigurationError as error:
        for warning in warnings:  # e.g. a misspelt variable, often why a required one is unset
            print(warning, file=stderr)
        print(f"otel-matomo check: invalid configuration: {error}", file=stderr)
        return EXIT_CONFIGURATION
    redact = Redactor(settings)
    colour = use_colour(stdout, env)
    checker = Checker(settings, env, configuration_warnings=tuple(warnings))
    counts = dict.fromkeys(Verdict, 0)
    try:
        for check in checker.checks(send_test_hit=args.send_test_hit):
            counts[check.verdict] += 1
            print(redact(format_check(check, colour=colour)), file=stdout, flush=True)
        print(summary(counts), file=stdout)
        stdout.flush()
    except BrokenPipeError:  # `otel-matomo check | head`: the reader left; say nothing more
        if out is None:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        checker.close()
    return EXIT_FAILED if counts[Verdict.FAIL] else EXIT_OK

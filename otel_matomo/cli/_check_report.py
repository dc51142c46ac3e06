"""The lines ``otel-matomo check`` prints: one verdict per check, aligned, coloured on a terminal, secrets removed.

Apart from the checks so that every kind of check (the configuration, the live Matomo, the application's
environment) yields the same :class:`Check` and none of them knows how it is shown.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import NamedTuple, TextIO
from urllib.parse import urlsplit

from otel_matomo._settings import Settings

_NAME_WIDTH = 15


class Verdict(enum.Enum):
    """How one check came out."""

    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


_COLOURS = {Verdict.OK: "32", Verdict.WARN: "33", Verdict.FAIL: "31;1", Verdict.SKIP: "2"}


class Check(NamedTuple):
    """One line of the report."""

    name: str
    verdict: Verdict
    message: str


class Redactor:
    """Removes the token (and any password of the endpoint URL) from every line printed."""

    def __init__(self, settings: Settings) -> None:
        secrets_ = [settings.token_auth or ""]
        if settings.endpoint:
            secrets_.append(urlsplit(settings.endpoint).password or "")
        self._secrets = sorted((item for item in secrets_ if len(item) >= 4), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def use_colour(out: TextIO, environ: Mapping[str, str]) -> bool:
    """Colour only for a terminal, and only when ``NO_COLOR`` is unset and ``TERM`` is not ``dumb``."""
    if environ.get("NO_COLOR", "") != "":
        return False
    isatty = getattr(out, "isatty", None)
    try:
        return bool(isatty and isatty()) and environ.get("TERM") != "dumb"
    except ValueError:  # closed stream
        return False


def format_check(check: Check, *, colour: bool) -> str:
    """``VERDICT  name           message``, the verdict coloured when ``colour``."""
    verdict = f"{check.verdict.value:<4}"
    if colour:
        verdict = f"\033[{_COLOURS[check.verdict]}m{verdict}\033[0m"
    return f"{verdict}  {check.name:<{_NAME_WIDTH}} {check.message}"


def summary(counts: Mapping[Verdict, int]) -> str:
    """The last line: how many checks failed and warned, or that all passed."""
    failed, warned = counts[Verdict.FAIL], counts[Verdict.WARN]
    if not failed and not warned:
        return "otel-matomo check: all checks passed"
    return f"otel-matomo check: {failed} failed, {warned} warning{'s' if warned != 1 else ''}"

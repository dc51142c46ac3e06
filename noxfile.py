"""Sessions: ``tests`` (unit + end-to-end against the stand-in), ``e2e`` (the real Matomo), ``lint``, ``typecheck``.

``nox`` with no arguments runs everything CI runs.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit and end-to-end tests against the local matomo.php stand-in (loopback only)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "not real_matomo", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "otel_matomo")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "--strict", "otel_matomo")

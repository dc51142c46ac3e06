"""Sessions: ``tests`` (unit + end-to-end against the stand-in), ``e2e`` (the real Matomo), ``lint``, ``typecheck``.

``nox`` with no arguments runs everything CI runs.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "e2e", "release"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
# Every session installs against the lock: pip then never backtracks through the contrib instrumentations' versions.
LOCK = ("-c", "constraints.txt")
MATOMO_LOCAL = Path(__file__).resolve().parent / "scripts" / "matomo-local"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit and end-to-end tests against the local matomo.php stand-in (loopback only)."""
    session.install(*LOCK, "-e", ".[test]")
    session.run("pytest", "-m", "not real_matomo", *session.posargs)


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """The fidelity suite against a real Matomo 5 on loopback (``scripts/matomo-local``; root only).

    Brings the local Matomo up (building it the first time, ~75 s), runs ``pytest -m real_matomo
    tests/real_matomo`` with the variables ``up`` prints, and brings it down again unless it was already running
    (a developer's instance is left as it was). Skips, saying why, when not root or when the Debian mirror that the
    first build needs is unreachable; any other failure fails.
    """
    geteuid = getattr(os, "geteuid", None)
    if geteuid is None or geteuid() != 0:
        session.skip(
            "the real-Matomo suite needs root (scripts/matomo-local builds a Debian chroot and runs MariaDB and "
            "PHP in it); run `sudo nox -s e2e`"
        )
    session.install(*LOCK, "-e", ".[test]")
    already_running = subprocess.run([str(MATOMO_LOCAL), "status"], capture_output=True, check=False).returncode == 0
    try:
        env = _matomo_up(session)
        started = time.monotonic()
        try:
            session.run("pytest", "-m", "real_matomo", "tests/real_matomo", *session.posargs, env=env)
        finally:
            session.log(f"real-Matomo suite: {time.monotonic() - started:.1f} s (without `up`)")
    finally:
        if already_running:
            session.log("the local Matomo was running before this session: left running")
        else:
            down = subprocess.run([str(MATOMO_LOCAL), "down"], capture_output=True, text=True, check=False)
            session.log(f"scripts/matomo-local down (exit {down.returncode}): {down.stderr.strip()}")
            if down.returncode != 0:
                session.warn("scripts/matomo-local down failed; see `scripts/matomo-local status`")


def _matomo_up(session: nox.Session) -> dict[str, str]:
    """Run ``scripts/matomo-local up`` (its progress shown as it goes); return the variables it exports."""
    session.log("scripts/matomo-local up")
    started = time.monotonic()
    process = subprocess.Popen(
        [str(MATOMO_LOCAL), "up"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    assert process.stderr is not None
    assert process.stdout is not None
    progress = []
    for line in process.stderr:
        progress.append(line.rstrip())
        session.log(line.rstrip())
    output = process.stdout.read()
    code = process.wait()
    errors = [line for line in progress if "error:" in line]
    if code == 2:
        session.skip("scripts/matomo-local up needs root: " + " ".join(errors))
    if code != 0 and any("is unreachable" in line for line in errors):
        session.skip("the Debian mirror is unreachable, so the local Matomo cannot be built: " + " ".join(errors))
    if code != 0:
        session.error(f"scripts/matomo-local up failed (exit {code}): " + (" ".join(errors) or "see the log above"))
    env = {}
    for line in output.splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            env[name] = shlex.split(value)[0] if value else ""
    if "MATOMO_URL" not in env or "MATOMO_TOKEN" not in env:
        session.error(f"scripts/matomo-local up printed no MATOMO_URL/MATOMO_TOKEN: {output!r}")
    session.log(f"Matomo at {env['MATOMO_URL']} (up took {time.monotonic() - started:.1f} s)")
    return env


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install(*LOCK, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "otel_matomo")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install(*LOCK, "-e", ".[test]", "mypy")
    session.run("mypy", "--strict", "otel_matomo")


@nox.session(python=PYTHON)
def release(session: nox.Session) -> None:
    """Release readiness: sdist and wheel build, ``twine check --strict``, the wheel installed in a fresh venv."""
    session.install(*LOCK, "build", "twine")
    session.run("bash", "scripts/check-release", env={"PYTHON": "python"}, external=True)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks, not tests: prints tables and ratios, never fails on a figure.

    ``nox -s bench`` is the full run (~13 min, writes benchmarks/RESULTS.md); CI runs ``nox -s bench -- --smoke``
    (~20 s). Needs ``wrk`` (``apt-get install wrk``).
    """
    session.install(*LOCK, "-e", ".", "-r", "benchmarks/requirements.txt")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(python=False)
def lock(session: nox.Session) -> None:
    """Refresh constraints.txt, the lock every other session installs from (needs ``uv``: ``pip install uv``).

    Users' runtime dependencies keep their loose bounds in pyproject.toml; only development, tests and benchmarks
    are pinned. Run it when a dependency is added or to test against newer releases, then run ``nox``.
    """
    header = [line for line in Path("constraints.txt").read_text().splitlines()[:2] if line.startswith("#")]
    session.run(
        "uv", "pip", "compile", "pyproject.toml", "benchmarks/requirements.txt", "--extra", "dev",
        "--python-version", PYTHON, "--universal", "--no-header", "--annotation-style", "line", "--upgrade",
        "-o", "constraints.txt", external=True,
    )
    body = Path("constraints.txt").read_text()
    Path("constraints.txt").write_text("\n".join(header) + "\n" + body)

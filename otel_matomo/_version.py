"""The installed distribution's version: what the self-metrics' meter and ``otel-matomo --version`` report."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    """``otel-matomo``'s version, ``0+unknown`` when running from a source tree that is not installed."""
    try:
        return version("otel-matomo")
    except PackageNotFoundError:
        return "0+unknown"

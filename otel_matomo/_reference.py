"""The README's configuration reference, generated from the option tables so that the two never drift.

``python -m otel_matomo._reference`` rewrites each table between its marker comments in README.md
(``<!-- options:start -->`` ... ``<!-- options:end -->``, the same for ``gateway-options``); ``--check`` only
says whether they are current, as ``tests/unit/test_options.py`` does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from otel_matomo._settings import SETTINGS_OPTIONS, SWITCHES
from otel_matomo.gateway._config import GATEWAY_OPTIONS

README = Path(__file__).resolve().parents[1] / "README.md"
COMMAND = "python -m otel_matomo._reference"

SECTIONS = {
    "options": SETTINGS_OPTIONS.markdown(SWITCHES),
    "gateway-options": GATEWAY_OPTIONS.markdown(),
}
"""Marker name -> the table written between ``<!-- name:start -->`` and ``<!-- name:end -->``."""


def render(readme: str) -> str:
    """``readme`` with every generated section replaced by the tables' current text."""
    for name, table in SECTIONS.items():
        start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
        before, found_start, rest = readme.partition(start)
        _, found_end, after = rest.partition(end)
        if not found_start or not found_end:
            raise ValueError(f"README.md has no {start.strip()} ... {end} section")
        readme = before + start + table + end + after
    return readme


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is not current, change nothing")
    parser.add_argument("--readme", type=Path, default=README, help="the file to rewrite (default: README.md)")
    args = parser.parse_args(argv)
    current = args.readme.read_text(encoding="utf-8")
    wanted = render(current)
    if wanted == current:
        return 0
    if args.check:
        sys.stderr.write(f"{args.readme} differs from the option tables: run {COMMAND}\n")
        return 1
    args.readme.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

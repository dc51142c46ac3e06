"""The fault-injection suite: every fault we measured, replayed on loopback, and one table of what each cost.

Each test records one row (``faults`` fixture); at the end of the run the rows are printed as a table, the one
the README's reliability section quotes. The assertions are the targets; the table is the evidence.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class FaultRow:
    """What one fault cost: hits offered, delivered (unique), duplicated, lost by reason, and recovery time."""

    scenario: str
    offered: int
    delivered: int
    duplicated: int = 0
    lost: dict[str, int] = field(default_factory=dict)
    recover_s: float | None = None
    """Seconds from the end of the fault (or the restart) to the first hit delivered after it."""


_ROWS: list[FaultRow] = []


@pytest.fixture
def faults() -> Iterator[list[FaultRow]]:
    """Append a :class:`FaultRow` to report it in the run's table."""
    rows: list[FaultRow] = []
    yield rows
    _ROWS.extend(rows)


def render_table(rows: list[FaultRow]) -> str:
    lines = [
        "| scenario | offered | delivered | duplicated | lost (by reason) | time to recover |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        lost = ", ".join(f"{reason} {count}" for reason, count in sorted(row.lost.items()) if count) or "0"
        recover = "-" if row.recover_s is None else f"{row.recover_s:.1f} s"
        lines.append(f"| {row.scenario} | {row.offered} | {row.delivered} | {row.duplicated} | {lost} | {recover} |")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _ROWS:
        terminalreporter.section("fault injection")
        terminalreporter.write_line(render_table(_ROWS))

"""The attack suite (issue 17): every attack on ``otel-matomo gateway`` we measured, replayed on loopback against
the real gateway process and the matomo.php stand-in, and one table of what each cost.

Each test records one row per attack (``attacks`` fixture): what the gateway answered, how long the attack took,
how much the gateway's peak RSS grew over idle, and whether a valid request sent during the attack was
delivered to the stand-in, and how fast it was answered. The table is printed at the end of the run; the
assertions are the targets.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass
class AttackRow:
    """What one attack cost; ``delivered`` and ``latency_s`` are ``None`` when no gateway was serving."""

    attack: str
    answer: str
    seconds: float
    rss_growth_mb: float | None = None
    delivered: bool | None = None
    latency_s: float | None = None


_ROWS: list[AttackRow] = []


@pytest.fixture
def attacks() -> Iterator[list[AttackRow]]:
    """Append an :class:`AttackRow` (before asserting) to report it in the run's table."""
    rows: list[AttackRow] = []
    yield rows
    _ROWS.extend(rows)


def _cell(value: float | bool | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    return f"{value:.2f}{unit}" if unit == " s" else f"{value:.0f}{unit}"


def render_table(rows: list[AttackRow]) -> str:
    lines = [
        "| attack | answer | time | peak RSS growth | valid request delivered | its latency |",
        "|---|---|---:|---:|---|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.attack} | {row.answer} | {row.seconds:.2f} s | {_cell(row.rss_growth_mb, ' MB')} | "
            f"{_cell(row.delivered)} | {_cell(row.latency_s, ' s')} |"
        )
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _ROWS:
        terminalreporter.section("attacks on the gateway")
        # In the order: labels start with the row number ("1: ..."), then come the "held: ..." rows.
        terminalreporter.write_line(render_table(sorted(_ROWS, key=lambda row: row.attack.partition(":")[0])))

"""One log format: every message otel-matomo logs starts with ``otel-matomo: `` (the first-hour issue, row 12).

Under uvicorn, gunicorn and ``opentelemetry-instrument`` nothing configures our loggers, so Python's last-resort
handler prints the bare message: the prefix is all that tells the reader whose it is. Checked on the source, so
that a message on a rare path (a refused batch, a corrupt spool) cannot escape it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "otel_matomo"
PREFIX = "otel-matomo: "
_LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical"}


def _text(node: ast.expr) -> str | None:
    """A literal message's text (an f-string's literal parts), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)
    return None


def _messages(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Literal messages of logging calls, and the literals that name us and have a placeholder (messages kept in a
    table or returned by a helper, logged later)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in _LOG_METHODS and node.args:
                candidates = node.args[:1]
            elif node.func.attr == "log":
                # logger.log(level, message, ...) and RateLimitedLog.log(level, key, message, ...)
                candidates = [arg for arg in node.args[1:3] if " " in (_text(arg) or "")]
            else:
                continue
            for candidate in candidates:
                text = _text(candidate)
                if text is not None:
                    yield node.lineno, text
        elif _kept_message(node):
            yield node.lineno, node.value  # type: ignore[attr-defined]


def _kept_message(node: ast.AST) -> bool:
    """A message kept for later (a table of messages, a tuple a helper returns for the log): a literal that names us
    and has a placeholder."""
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("otel-matomo")
        and "%" in node.value
    )


def test_every_logged_message_starts_with_the_prefix() -> None:
    wrong = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {text[:60]!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, text in _messages(ast.parse(path.read_text()))
        if not text.startswith(PREFIX) and not text.startswith("%s")
    ]
    assert wrong == []


def test_the_check_finds_messages_in_both_kinds_of_call() -> None:
    source = 'log.warning("lost %d", n)\nself._log.log(30, "key", "otel-matomo: kept")\nlog.info(f"x {y} z")'
    assert [text for _, text in _messages(ast.parse(source))] == ["lost %d", "otel-matomo: kept", "x {} z"]

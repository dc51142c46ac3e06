"""Option tables: each option written once (keyword, variable, parser, default, help), and one reader for them all.

``Settings`` (``OTEL_EXPORTER_MATOMO_*``) and the gateway (``OTEL_MATOMO_GATEWAY_*``) each declare a table of
:class:`Option` rows; :meth:`OptionTable.read` turns keyword arguments and the environment into validated values,
and :meth:`OptionTable.markdown` writes the README's reference from the same rows, so the code, the errors and
the documentation cannot disagree. Every error names ``argument (VARIABLE)`` and the expected form, and never
echoes a secret: a mistyped token is still a token.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

_T = TypeVar("_T")


class ConfigurationError(ValueError):
    """An invalid setting; the message names the variable and the expected form, never a secret's value."""

    __module__ = "otel_matomo"  # where users import it from, and what a traceback should name


class Invalid(Exception):
    """Raised by a :class:`Kind`; the table turns it into a :class:`ConfigurationError` naming the option."""

    def __init__(self, problem: str, expected: str | None = None, aside: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.expected = expected
        self.aside = aside
        """Said of the variable after the expected form, when the argument has another unit."""


class Kind(Protocol):
    """How one option's value is written and read."""

    @property
    def expected(self) -> str:
        """The accepted form, for error messages, e.g. ``a positive whole number of hits``."""
        ...

    def parse(self, raw: Any, argument: bool, /) -> Any:
        """The value of ``raw``: a stripped non-empty variable (``argument`` false) or a keyword's value."""
        ...

    def show(self, default: Any, /) -> str:
        """``default`` as a user would write it, for the README."""
        ...


@dataclass(frozen=True)
class Option:
    """One option: its keyword (and field), its variable, how it is read, its default and a line of help."""

    name: str
    suffix: str
    kind: Kind
    default: Any
    help: str
    field: str = ""
    """The field that stores the value, when it is not ``name`` (``visitor_id`` -> ``daily_visitor_id``)."""
    shown: str = ""
    """The default as the README shows it, when the kind's own rendering is not the clearest."""
    required: bool = False
    keyword: bool = True
    """False for variable-only options (a token that must never be a command-line flag)."""
    label: str = ""
    """How errors and the README name the option, when not by its keyword (``--port``)."""
    secret: bool = False
    """Kept out of the dataclass ``repr``."""

    @property
    def field_name(self) -> str:
        return self.field or self.name


@dataclass(frozen=True)
class OptionTable:
    """Options sharing a variable prefix, read by one reader and documented by one renderer."""

    owner: str
    """Who takes the keywords, for the unknown-keyword ``TypeError`` when the reader is not told who was called."""
    prefix: str
    options: tuple[Option, ...]
    labels: Callable[[str], str] = str
    """How a keyword is named in errors and in the README: itself, or ``--flag``."""
    argument_heading: str = "argument"
    _by_name: dict[str, Option] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {option.name: option for option in self.options})

    def __getitem__(self, name: str) -> Option:
        return self._by_name[name]

    def fill(self, cls: type[_T]) -> type[_T]:
        """Class decorator, under ``@dataclass``: each annotated field gets its option's default (a secret stays
        out of the ``repr``), so that a default is written in the table only. A field without an option, or an
        option without a field, fails at import."""
        annotated = set(vars(cls).get("__annotations__", {}))
        stored = {option.field_name for option in self.options}
        if annotated != stored:
            raise TypeError(f"{cls.__name__} fields and {self.owner} options differ: {sorted(annotated ^ stored)}")
        for option in self.options:
            if option.required:
                setattr(cls, option.field_name, field(repr=not option.secret))
            else:
                setattr(cls, option.field_name, field(default=option.default, repr=not option.secret))
        return cls

    def label(self, option: Option) -> str:
        return option.label or self.labels(option.name)

    def read(
        self, arguments: Mapping[str, object], environ: Mapping[str, str], caller: str | None = None
    ) -> dict[str, Any]:
        """Every option's value by name: the argument if given, else the variable, else the default.

        ``caller`` is what the user called (``MatomoSpanExporter``): errors about an argument name it, so that
        nobody hunts for a ``Settings.from_env`` they never wrote.
        """
        keywords = [option.name for option in self.options if option.keyword]
        for name in arguments:
            if name not in keywords:
                guess = nearest(name, keywords)
                hint = f". Did you mean {guess!r}?" if guess else ""
                raise TypeError(f"{caller or self.owner}() got an unexpected keyword argument {name!r}{hint}")
        return {option.name: self.value(option, arguments.get(option.name), environ, caller) for option in self.options}

    def given(self, name: str, arguments: Mapping[str, object], environ: Mapping[str, str]) -> bool:
        """Whether option ``name`` is set, by argument or variable (for rules that span two options)."""
        variable = environ.get(self.prefix + self[name].suffix, "").strip()
        return arguments.get(name) is not None or bool(variable)

    def value(self, option: Option, argument: object, environ: Mapping[str, str], caller: str | None = None) -> Any:
        if argument is not None:
            return self.parse(option, argument, argument=True, caller=caller)
        raw = environ.get(self.prefix + option.suffix, "").strip()
        return self.parse(option, raw, argument=False) if raw else option.default

    def parse(self, option: Option, raw: object, *, argument: bool, caller: str | None = None) -> Any:
        """``raw`` read by the option's kind; an invalid argument's error names ``caller`` when given."""
        try:
            return option.kind.parse(raw, argument)
        except Invalid as invalid:
            raise self._invalid(option, invalid, caller if argument else None) from None

    def _invalid(self, option: Option, invalid: Invalid, caller: str | None) -> ConfigurationError:
        expected = invalid.expected or option.kind.expected
        if invalid.aside:  # the argument's unit is not the variable's: name the variable after the form
            variable = self.prefix + option.suffix
            message = f"{self.label(option)} {invalid.problem}: expected {expected} ({variable} {invalid.aside})"
        else:
            message = str(self.error(option, invalid.problem, expected))
        return ConfigurationError(f"{caller}: {message}" if caller else message)

    def error(self, option: Option, problem: str, expected: str) -> ConfigurationError:
        return ConfigurationError(f"{self.label(option)} ({self.prefix}{option.suffix}) {problem}: expected {expected}")

    def require(self, values: Mapping[str, object]) -> None:
        """Raise for the first required option that is unset."""
        for option in self.options:
            if option.required and values[option.name] is None:
                raise self.error(option, "is not set", option.kind.expected)

    def unknown_variables(self, environ: Mapping[str, str], *more: OptionTable) -> list[tuple[str, str | None]]:
        """Each variable in ``environ`` with this table's prefix that neither it nor ``more`` reads, and the known
        variable it was most likely meant to be: a typo in a variable name is otherwise silently ignored."""
        known = {option.suffix for table in (self, *more) if table.prefix == self.prefix for option in table.options}
        found: list[tuple[str, str | None]] = []
        for name in sorted(environ):
            if not name.upper().startswith(self.prefix):
                continue
            suffix = name.upper()[len(self.prefix) :]
            if name == self.prefix + suffix and suffix in known:
                continue
            guess = nearest(suffix, known)  # the suffixes alone: the shared prefix makes every name look alike
            found.append((name, None if guess is None else self.prefix + guess))
        return found

    def fields(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` keyed by the field each one is stored in."""
        return {self._by_name[name].field_name: value for name, value in values.items()}

    def markdown(self, *more: OptionTable) -> str:
        """The reference table of these options (and of ``more``) for the README."""
        lines = [f"| variable | {self.argument_heading} | default | meaning |", "|---|---|---|---|"]
        for table in (self, *more):
            lines.extend(table._rows())
        return "\n".join(lines) + "\n"

    def _rows(self) -> Iterable[str]:
        for option in self.options:
            shown = "required" if option.required else option.shown or option.kind.show(option.default)
            named = f" `{self.label(option)}` " if option.keyword else " "
            yield f"| `{self.prefix}{option.suffix}` |{named}| {shown} | {option.help} |"


def nearest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``name`` was most likely meant to be, when one is close enough to be a typo of it."""
    found = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.65)  # COMPRESSION is no PROCESSOR
    return found[0] if found else None

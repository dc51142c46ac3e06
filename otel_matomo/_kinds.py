"""The kinds of option value (:class:`~otel_matomo._options.Kind`): how each is written, checked and shown.

A kind parses a variable's text or an argument's value, or raises :class:`~otel_matomo._options.Invalid` with
what is wrong; the option table adds which option it is. Whole numbers are digits only: truncating ``0.5`` to 0
would make a batch size that never sends and a queue that drops every span. Durations are ``timedelta``
arguments: a bare number could be the variable's milliseconds or seconds, so it is refused rather than guessed.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from otel_matomo._options import Invalid

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_SHORT_UNITS = {"milliseconds": "ms", "seconds": "s"}
_NONE = "none"
"""The value that empties a list option (an empty variable means "unset", i.e. the default)."""


class Networks(tuple[IpNetwork, ...]):
    """A tuple of networks that computes its hash once: it keys the policy's caches, and ``ipaddress`` networks
    hash in Python code every time."""

    _hash: int

    def __hash__(self) -> int:
        try:
            return self._hash
        except AttributeError:
            self._hash = super().__hash__()
            return self._hash


def _items(raw: Any, argument: bool) -> tuple[str, ...]:
    """A comma-separated list, or an argument's sequence; ``none`` in a variable is the empty list."""
    if isinstance(raw, str):
        if not argument and raw.lower() == _NONE:
            return ()
        raw = raw.split(",")  # a bare string is a list, as in the variable, not its characters
    return tuple(str(item).strip() for item in raw if str(item).strip())


def _listed(default: Sequence[object]) -> str:
    return f"`{','.join(map(str, default))}`" if default else "none"


@dataclass(frozen=True)
class Flag:
    expected: str = "true or false"

    def parse(self, raw: Any, _argument: bool) -> bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise Invalid(f"is {raw!r}")

    def show(self, default: Any) -> str:
        return "`true`" if default else "`false`"


@dataclass(frozen=True)
class Whole:
    """A whole number written with digits only: ``0.5``, ``1e3`` and ``10.0`` are refused, never truncated."""

    expected: str
    minimum: int = 1
    maximum: int | None = None

    def parse(self, raw: Any, _argument: bool) -> int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            number = raw
        elif isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():
            number = int(raw)
        else:
            raise Invalid(f"is {raw!r}")
        if number < self.minimum or (self.maximum is not None and number > self.maximum):
            raise Invalid(f"is {raw!r}")
        return number

    def show(self, default: Any) -> str:
        return f"`{default}`"


def _positive(raw: Any) -> float:
    """A positive finite number written in a variable (``0.5`` and ``1e3`` are fine: these are not counts)."""
    try:
        number = float(str(raw))
    except ValueError:
        number = math.nan
    if not 0 < number < math.inf:
        raise Invalid(f"is {raw!r}")
    return number


def _shown_duration(seconds: float, per_second: int, unit: str) -> str:
    short = _SHORT_UNITS.get(unit, unit)
    if per_second == 1:
        return f"{seconds:g} {short}"
    return f"{seconds * per_second:g} {short} ({seconds:g} s)"


@dataclass(frozen=True)
class Number:
    """A positive finite number: a variable in ``unit`` (``per_second`` of them make a second), an argument (a
    command-line flag's value) in seconds."""

    unit: str
    example: str
    per_second: int = 1

    @property
    def expected(self) -> str:
        return f"a positive number of {self.unit}, e.g. {self.example}"

    def parse(self, raw: Any, argument: bool) -> float:
        if not argument:
            return _positive(raw) / self.per_second
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 < raw < math.inf:
            raise Invalid(f"is {raw!r}", "a positive number of seconds", aside=f"takes {self.unit}")
        return float(raw)

    def show(self, default: Any) -> str:
        return _shown_duration(default, self.per_second, self.unit)


@dataclass(frozen=True)
class Duration:
    """A duration, stored in seconds: a positive ``datetime.timedelta`` as an argument, a positive number of
    ``unit`` in the variable. A bare number as argument is refused, never guessed: ``timeout=5000`` meant
    milliseconds to whoever wrote it, like the variable, and read as seconds it was 83 minutes."""

    unit: str
    """``milliseconds`` (as the OpenTelemetry exporters' variables) or ``seconds``."""
    example: str
    """The default as the variable writes it, e.g. ``10000``."""
    argument_example: str
    """The same as an argument, e.g. ``timedelta(seconds=10)``."""

    @property
    def expected(self) -> str:
        return f"a positive number of {self.unit}, e.g. {self.example}"

    @property
    def per_second(self) -> int:
        return 1000 if self.unit == "milliseconds" else 1

    def parse(self, raw: Any, argument: bool) -> float:
        if not argument:
            return _positive(raw) / self.per_second
        if isinstance(raw, timedelta) and raw > timedelta(0):
            return raw.total_seconds()
        bare = isinstance(raw, (int, float)) and not isinstance(raw, bool)
        raise Invalid(
            f"is {raw!r}, a number without a unit" if bare else f"is {raw!r}",
            f"a positive datetime.timedelta, e.g. {self.argument_example}",
            aside=f"takes {self.unit}",
        )

    def show(self, default: Any) -> str:
        return _shown_duration(default, self.per_second, self.unit)


@dataclass(frozen=True)
class Choice:
    """One of a few words, each standing for a value (``stable``/``daily`` for a boolean field)."""

    values: Mapping[str, object]

    @property
    def expected(self) -> str:
        return " or ".join(self.values)

    def parse(self, raw: Any, _argument: bool) -> object:
        text = str(raw).lower()
        if text not in self.values:
            raise Invalid(f"is {raw!r}")
        return self.values[text]

    def show(self, default: Any) -> str:
        return next(f"`{word}`" for word, value in self.values.items() if value == default)


@dataclass(frozen=True)
class Names:
    """Comma-separated names, lower-cased without leading dots (upper-cased for HTTP methods).

    With ``extends`` (the option's default), names written ``+name`` are added to it rather than replacing it, so
    that one more name does not mean copying, and then maintaining, the whole default list.
    """

    upper: bool = False
    expected: str = "comma-separated names, or none"
    extends: tuple[str, ...] = ()

    def parse(self, raw: Any, argument: bool) -> tuple[str, ...]:
        names = tuple(item.lower().lstrip(".") for item in _items(raw, argument))
        if self.upper:
            return tuple(name.upper() for name in names)
        added = [name[1:].strip() for name in names if name.startswith("+")]
        if not added or not self.extends:
            return names
        if len(added) != len(names):
            raise Invalid("mixes +names, added to the defaults, with names that replace them")
        return tuple(dict.fromkeys((*self.extends, *filter(None, added))))

    def show(self, default: Any) -> str:
        return _listed(default)


@dataclass(frozen=True)
class Globs:
    expected: str = "path globs starting with / or *, e.g. /api/*"

    def parse(self, raw: Any, argument: bool) -> tuple[str, ...]:
        items = _items(raw, argument)
        for item in items:
            if not item.startswith(("/", "*")):
                raise Invalid(f"has the pattern {item!r}")
        return items

    def show(self, default: Any) -> str:
        return _listed(default)


@dataclass(frozen=True)
class NetworkList:
    expected: str = "comma-separated IP addresses or CIDR networks, e.g. 127.0.0.1,10.0.0.0/8, or none"

    def parse(self, raw: Any, argument: bool) -> Networks:
        try:
            return Networks(ipaddress.ip_network(item, strict=False) for item in _items(raw, argument))
        except ValueError as error:
            raise Invalid(f"has an invalid address ({error})") from None

    def show(self, default: Any) -> str:
        return _listed(default)


@dataclass(frozen=True)
class StatusRanges:
    """Status codes (``404``) and classes (``5xx``), as inclusive ranges."""

    expected: str = "status codes or classes, e.g. 404,5xx"

    def parse(self, raw: Any, argument: bool) -> tuple[tuple[int, int], ...]:
        ranges = []
        for item in _items(raw, argument):
            text = item.lower()
            if re.fullmatch(r"[1-5]xx", text):
                ranges.append((int(text[0]) * 100, int(text[0]) * 100 + 99))
            elif re.fullmatch(r"[1-5][0-9]{2}", text):
                ranges.append((int(text), int(text)))
            else:
                raise Invalid(f"has {item!r}")
        return tuple(ranges)

    def show(self, _default: Any) -> str:
        return "none"


@dataclass(frozen=True)
class Pairs:
    """``key=name`` pairs (a mapping as an argument) with positive whole-number keys."""

    expected: str

    def parse(self, raw: Any, argument: bool) -> tuple[tuple[int, str], ...]:
        items = [f"{key}={name}" for key, name in raw.items()] if isinstance(raw, Mapping) else _items(raw, argument)
        pairs = []
        for item in items:
            key, sep, name = item.partition("=")
            if not sep or not (key.strip().isascii() and key.strip().isdigit()) or int(key) < 1 or not name.strip():
                raise Invalid(f"has {item!r}")
            pairs.append((int(key), name.strip()))
        return tuple(pairs)

    def show(self, _default: Any) -> str:
        return "none"


@dataclass(frozen=True)
class Text:
    expected: str = "text"
    blank_is_none: bool = False

    def parse(self, raw: Any, _argument: bool) -> str | None:
        text = str(raw)
        return None if self.blank_is_none and not text else text

    def show(self, default: Any) -> str:
        return "none" if default is None else f"`{default}`"


@dataclass(frozen=True)
class MatomoToken:
    expected: str = "the token_auth of a Matomo user with write access (letters and digits only)"

    def parse(self, raw: Any, _argument: bool) -> str:
        text = str(raw).strip()
        if not text.isascii() or not text.isalnum():
            raise Invalid("contains characters a Matomo token never has")  # never the value: it is a secret
        return text

    def show(self, _default: Any) -> str:
        return "none"


@dataclass(frozen=True)
class Secret:
    """Key material of at least ``min_bytes`` bytes (encoded as UTF-8); never echoed."""

    expected: str
    min_bytes: int = 16

    def parse(self, raw: Any, _argument: bool) -> bytes:
        secret = raw if isinstance(raw, bytes) else str(raw).encode()
        if len(secret) < self.min_bytes:
            raise Invalid(f"is shorter than {self.min_bytes} bytes")
        return secret

    def show(self, _default: Any) -> str:
        return "none"

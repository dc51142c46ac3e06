"""How long each text parameter may be: what Matomo stores of it, and a cut that leaves a valid value.

Matomo keeps page URLs and titles to ``page_maximum_length`` (1024) bytes, the referrer to 1024 (Matomo 5.3.1
records no more, though its newer releases keep 1500 characters: the smaller cap loses nothing on either), a
search category to 200 bytes, custom dimensions to 250 and the user id to 200 characters; event, content and
product names go to ``log_action.name`` (4096 characters) and the order id to ``idorder`` (100). It measures
after escaping HTML (``&`` is ``&amp;``, ``"`` and ``'`` six characters, ``<`` and ``>`` four), so that is what
is measured here: a value within its cap is recorded whole. The user agent, its client hints and the language
are not stored as sent; their caps only bound what a visitor can make every hit carry.

A longer value is cut to the longest prefix that fits and never ends inside a percent-escape or a character's
escaped UTF-8 bytes (``%C3`` without its ``%A9``), so that the cut URL still decodes.
"""

from __future__ import annotations

import re

_DIMENSION = "dimension"
_BYTES = "bytes"
_CHARACTERS = "characters"

CAPS: dict[str, tuple[int, str]] = {
    "url": (1024, _BYTES),
    "action_name": (1024, _BYTES),
    "urlref": (1024, _BYTES),
    "ua": (1024, _BYTES),
    "lang": (256, _BYTES),
    "uid": (200, _CHARACTERS),
    "e_c": (4096, _CHARACTERS),
    "e_a": (4096, _CHARACTERS),
    "e_n": (4096, _CHARACTERS),
    "c_n": (4096, _CHARACTERS),
    "c_p": (4096, _CHARACTERS),
    "c_t": (4096, _CHARACTERS),
    "search": (1024, _BYTES),
    "search_cat": (200, _BYTES),
    "_pks": (4096, _CHARACTERS),
    "_pkn": (4096, _CHARACTERS),
    "_pkc": (4096, _CHARACTERS),
    "ec_id": (100, _CHARACTERS),
    _DIMENSION: (250, _CHARACTERS),
}
"""Matomo parameter (``dimension`` for every ``dimension<ID>``) -> (cap, unit). ``uadata`` is JSON, which a cut
would break: longer than :data:`UADATA_CAP`, it is left out."""
UADATA_CAP = 2048

_EXPANSION = 6
"""The most a character can grow by: ``"`` is escaped as ``&quot;``."""
SAFE: dict[str, int] = {parameter: cap // _EXPANSION for parameter, (cap, _) in CAPS.items()}
"""Per parameter, a length no value can exceed its cap at: the cheap test that almost every value passes."""
_DIMENSION_SAFE = SAFE[_DIMENSION]
_PARTIAL_ESCAPE = re.compile(r"(?:%[0-9A-Fa-f]{2})*%[0-9A-Fa-f]?\Z|(?:%[89A-Fa-f][0-9A-Fa-f])+\Z")


Capped = tuple[tuple[str, int], ...]
"""Parameters with the length under which none of their values needs measuring (see :func:`capped`)."""


def capped(*parameters: str) -> Capped:
    """``parameters`` (``dimension<ID>`` for a custom dimension) ready for :func:`fit_values`: built once, so
    that the test of each value is one comparison."""
    return tuple((parameter, SAFE.get(parameter, _DIMENSION_SAFE)) for parameter in parameters)


def fit_values(hit: dict[str, str], parameters: Capped) -> tuple[str, ...]:
    """Cut each of ``parameters`` in ``hit`` that Matomo would not store whole; the parameters that were cut."""
    cut: tuple[str, ...] = ()
    get = hit.get
    for parameter, safe in parameters:
        value = get(parameter)
        if value is not None and len(value) > safe:
            fitted = fit(parameter if parameter in CAPS else _DIMENSION, value)
            if fitted is not value:
                hit[parameter] = fitted
                cut += (parameter,)
    return cut


def fit(parameter: str, value: str) -> str:
    """``value``, or the longest valid prefix of it that Matomo stores whole (the same object when it fits)."""
    if len(value) <= SAFE[parameter]:
        return value
    cap, unit = CAPS[parameter]
    # Every character counts at least one: a longer value never fits, and is never measured whole (7 MB ...).
    if len(value) <= cap and _stored_length(value, unit) <= cap:
        return value
    low, high = 0, min(len(value), cap)
    while low < high:
        middle = (low + high + 1) // 2
        if _stored_length(value[:middle], unit) <= cap:
            low = middle
        else:
            high = middle - 1
    return _whole_escapes(value[:low])


def _stored_length(text: str, unit: str) -> int:
    """The length of ``text`` once Matomo escaped it for HTML, in ``unit``."""
    base = len(text.encode("utf-8", "surrogatepass")) if unit == _BYTES and not text.isascii() else len(text)
    return (
        base + 4 * text.count("&") + 5 * (text.count('"') + text.count("'")) + 3 * (text.count("<") + text.count(">"))
    )


def _whole_escapes(text: str) -> str:
    """``text`` without a trailing incomplete percent-escape, nor the escaped bytes of an incomplete character."""
    match = _PARTIAL_ESCAPE.search(text)
    if match is None:
        return text
    tail = match.group()
    if tail.endswith("%") or tail[-2] == "%":  # "%" or "%C" at the very end
        return _whole_escapes(text[: text.rindex("%")])
    escaped = bytes.fromhex(tail.replace("%", ""))
    try:
        escaped.decode("utf-8")
    except UnicodeDecodeError:
        # What is left may end in a lone "%" that the input had before the escape ("%%C3"): checked again.
        return _whole_escapes(text[: match.start() + 3 * _complete_prefix(escaped)])
    return text


def _complete_prefix(data: bytes) -> int:
    """How many leading bytes of ``data`` (UTF-8 lead and continuation bytes) form whole characters."""
    for end in range(len(data), -1, -1):
        try:
            data[:end].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return end
    return 0

"""The hot path's caches, bounded whatever the visitors send.

Translation caches what repeats from request to request (one visitor's id and forwarding walk, one page's query
redaction, one browser's client hints, quoted values). Their keys are texts the visitors send, so each cache is
bounded in entries *and* takes only texts up to :data:`CACHED_LENGTH` characters: a longer text is computed
every time, and what visitors send can never make a cache big.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

CACHED_LENGTH = 512

_Text = TypeVar("_Text")
_Params = ParamSpec("_Params")
_Result = TypeVar("_Result")
_Function = Callable[Concatenate[_Text, _Params], _Result]


class _Memo(dict[Any, Any]):
    """One function's results by argument, as a plain dict: a hit is one C-level lookup (about a quarter of an
    ``lru_cache`` hit behind a Python wrapper, which a span pays a dozen times), and only a miss runs Python code,
    which is also where the text's length is checked. Emptied when full: cheaper than tracking recency, and a
    working set that fits (one application's pages and visitors of the moment) is not affected."""

    __slots__ = ("_compute", "_maxsize", "_size", "_spread")

    def __init__(self, compute: Callable[..., Any], maxsize: int, size: Callable[..., int], spread: bool) -> None:
        super().__init__()
        self._compute = compute
        self._maxsize = maxsize
        self._size = size
        self._spread = spread
        """Whether keys are argument tuples (functions of several arguments) rather than the text itself."""

    def __missing__(self, key: Any) -> Any:
        args = key if self._spread else (key,)
        result = self._compute(*args)
        if self._size(*args) <= CACHED_LENGTH:
            if len(self) >= self._maxsize:
                self.clear()
            self[key] = result
        return result


def text_length(*args: object) -> int:
    """The characters of all the text arguments: what a cache entry holds of what the visitor sent."""
    return sum(len(arg) for arg in args if isinstance(arg, str))


def text_cache(
    maxsize: int, size: Callable[..., int] = text_length
) -> Callable[[_Function[_Text, _Params, _Result]], _Function[_Text, _Params, _Result]]:
    """A bounded cache for a function of the visitor's texts, at most ``maxsize`` results; calls whose texts are
    longer than :data:`CACHED_LENGTH` (by ``size``, called with the arguments) are computed, not cached.
    Arguments must be hashable and passed by position (every caller does, on the hot path)."""

    def decorate(function: _Function[_Text, _Params, _Result]) -> _Function[_Text, _Params, _Result]:
        spread = len(inspect.signature(function).parameters) > 1
        memo = _Memo(function, maxsize, size, spread)
        if not spread:
            # The dict's own lookup is the function: no Python frame at all on a hit.
            return cast(_Function[_Text, _Params, _Result], memo.__getitem__)

        def call(*args: Any) -> _Result:
            result: _Result = memo[args]  # (not typing.cast: a function call, on the hot path)
            return result

        return cast(_Function[_Text, _Params, _Result], functools.update_wrapper(call, function))

    return decorate

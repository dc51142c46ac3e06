"""The hot path's caches, bounded whatever the visitors send.

Translation caches what repeats from request to request (one visitor's id and forwarding walk, one page's query
redaction, one browser's client hints, quoted values). Their keys are texts the visitors send, so each cache is
bounded in entries *and* takes only texts up to :data:`CACHED_LENGTH` characters: a longer text is computed
every time, and what visitors send can never make a cache big.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

__all__ = ["CACHED_LENGTH", "text_cache"]

CACHED_LENGTH = 512

_Text = TypeVar("_Text")
_Params = ParamSpec("_Params")
_Result = TypeVar("_Result")
_Function = Callable[Concatenate[_Text, _Params], _Result]


def text_cache(
    maxsize: int, size: Callable[[Any], int] = len
) -> Callable[[_Function[_Text, _Params, _Result]], _Function[_Text, _Params, _Result]]:
    """``functools.lru_cache(maxsize)`` for a function whose first argument is the visitor's text (or ``None``):
    calls whose text is longer than :data:`CACHED_LENGTH` (by ``size``) are computed, not cached."""

    def decorate(function: _Function[_Text, _Params, _Result]) -> _Function[_Text, _Params, _Result]:
        plain: Callable[..., _Result] = function
        cached: Callable[..., _Result] = functools.lru_cache(maxsize=maxsize)(function)

        # Positional arguments only: every caller passes them so, and the wrapper is on the hot path.
        def call(text: _Text, *args: Any) -> _Result:
            if text is not None and size(text) > CACHED_LENGTH:
                return plain(text, *args)
            return cached(text, *args)

        return cast(_Function[_Text, _Params, _Result], functools.update_wrapper(call, function))

    return decorate

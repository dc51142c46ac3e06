"""``_cache.text_cache``: a cached call gives what the function computes, whatever the length of its texts, and
the cache stays bounded in entries and in what it holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from otel_matomo._cache import CACHED_LENGTH, text_cache, text_length


def counting(function: Callable[..., Any]) -> tuple[Callable[..., Any], list[tuple[Any, ...]]]:
    """``function`` and the list of the argument tuples it was really called with."""
    calls: list[tuple[Any, ...]] = []

    def compute(*args: Any) -> Any:
        calls.append(args)
        return function(*args)

    return compute, calls


def test_text_length_counts_every_text_argument_and_nothing_else() -> None:
    assert text_length("ab", None, "cde", 7, b"bytes", ("tuple",)) == 5
    assert text_length() == 0


@pytest.mark.parametrize("length", [0, 1, CACHED_LENGTH - 1, CACHED_LENGTH, CACHED_LENGTH + 1, 5000])
def test_one_text_is_computed_once_up_to_the_cached_length_and_every_time_beyond(length: int) -> None:
    compute, calls = counting(lambda text: text.upper())

    @text_cache(maxsize=8)
    def upper(text: str) -> str:
        return compute(text)  # type: ignore[no-any-return]

    text = ("aé\ud800" * length)[:length]
    assert upper(text) == upper(text) == text.upper()
    assert len(calls) == (1 if length <= CACHED_LENGTH else 2)


@pytest.mark.parametrize(("first", "second"), [("x" * 300, "y" * 212), ("x" * 300, "y" * 213), (None, "z")])
def test_several_texts_count_together_and_other_arguments_not_at_all(first: str | None, second: str) -> None:
    compute, calls = counting(lambda a, b, words: (a, b, words))

    @text_cache(maxsize=8)
    def join(a: str | None, b: str, words: tuple[str, ...]) -> tuple[str | None, str, tuple[str, ...]]:
        return compute(a, b, words)  # type: ignore[no-any-return]

    words = tuple("w" * 100 for _ in range(10))  # a setting, not the visitor's: never counted
    assert join(first, second, words) == join(first, second, words) == (first, second, words)
    assert len(calls) == (1 if text_length(first, second) <= CACHED_LENGTH else 2)
    assert join(first, second, ("other",)) == (first, second, ("other",))  # every argument is part of the key
    assert calls[-1] == (first, second, ("other",))


def test_a_custom_size_sees_every_argument() -> None:
    compute, calls = counting(len)
    sizes: list[tuple[Any, ...]] = []

    def size(*args: Any) -> int:
        sizes.append(args)
        return sum(map(len, args[0]))

    @text_cache(maxsize=8, size=size)
    def count(items: tuple[str, ...]) -> int:
        return compute(items)  # type: ignore[no-any-return]

    short, long = ("a", "b"), ("a" * CACHED_LENGTH, "b")
    assert count(short) == count(short) == 2
    assert count(long) == count(long) == 2
    assert len(calls) == 3  # the short tuple once, the long one every time
    assert sizes == [(short,), (long,), (long,)]  # the size is only taken when a result is computed


def test_the_cache_never_holds_more_than_maxsize_results() -> None:
    compute, calls = counting(lambda text: text * 2)

    @text_cache(maxsize=4)
    def double(text: str) -> str:
        return compute(text)  # type: ignore[no-any-return]

    texts = [str(n) for n in range(10)]
    assert [double(text) for text in texts] == [text * 2 for text in texts]
    memo = double.__self__  # type: ignore[attr-defined]
    assert 0 < len(memo) <= 4
    assert [double(text) for text in texts] == [text * 2 for text in texts]  # forgotten ones are computed again
    assert len(memo) <= 4
    assert len(calls) > len(texts)


def test_exceptions_are_raised_and_not_cached() -> None:
    compute, calls = counting(lambda text, n: text[n])

    @text_cache(maxsize=4)
    def at(text: str, n: int) -> str:
        return compute(text, n)  # type: ignore[no-any-return]

    for _ in range(2):
        with pytest.raises(IndexError):
            at("abc", 7)
    assert len(calls) == 2
    assert at("abc", 1) == "b"


def test_a_multi_argument_cache_keeps_the_function_name_and_documentation() -> None:
    @text_cache(maxsize=4)
    def documented(text: str, n: int) -> str:
        """The documentation."""
        return text * n

    assert documented.__name__ == "documented"
    assert documented.__doc__ == "The documentation."
    assert documented("ab", 2) == "abab"

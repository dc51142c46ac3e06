"""What one sequence of span attribute keys holds: which keys are captured request headers, and whether any is a
``matomo.*`` tracking attribute.

An instrumentation records the same keys, in the same order, on every request of one kind, so one lookup by the
key sequence replaces a test of every key on every span. This is the one hot-path tuning of the request reader
that kept its place when issue 15 reverted the others: the plain scan it replaces measured clearly slower than
the benchmark's run-to-run noise (``benchmarks/RESULTS.md``, "Issue 15 reverts (translation)").
"""

from __future__ import annotations

from dataclasses import dataclass

from otel_matomo import _names as names
from otel_matomo._cache import text_cache, text_length


@dataclass(frozen=True)
class Layout:
    """What one sequence of attribute keys holds."""

    headers: tuple[tuple[str, str], ...]
    """(attribute key, header name) of each captured request header, in attribute order (a later key wins);
    the header name is lower-case with dashes (Python writes underscores, Node.js keeps the dashes)."""
    tracked: bool
    """Whether a key is a ``matomo.*`` attribute (``ATTRIBUTE_PREFIX``) that ``otel_matomo.tracking`` sets."""


def _keys_length(keys: tuple[str, ...]) -> int:
    """Keys count for an eighth of their characters: one layout serves every request of its kind, so one of up
    to eight times ``CACHED_LENGTH`` characters of keys (some 150 attribute names) is worth keeping."""
    return text_length(*keys) // 8


@text_cache(maxsize=512, size=_keys_length)  # a few dozen layouts in an application, by instrumentation and browser
def layout(keys: tuple[str, ...]) -> Layout:
    """The layout of the attribute keys ``keys``, in their order."""
    headers = []
    for key in keys:
        if key.startswith(names.HEADER_ATTRIBUTE_PREFIX):
            headers.append((key, key[len(names.HEADER_ATTRIBUTE_PREFIX) :].lower().replace("_", "-")))
    return Layout(tuple(headers), tracked=any(key.startswith(names.ATTRIBUTE_PREFIX) for key in keys))

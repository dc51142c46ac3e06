"""Scratch: proposed hot-path optimisations of otel-matomo, measured by monkeypatching (the package is untouched).

Each proposal replaces one function of ``otel_matomo`` in memory; the script checks that the bulk body stays
byte-identical to the unpatched one, then reports microseconds per span for translate+encode of the
``exporter_cost`` batch (512 recorded server spans): unpatched, each proposal alone, and all together.
Proposals whose target no longer exists (the code moved on) are reported as skipped.

    python benchmarks/proposals.py [--rounds 5]

A proposal that is applied to the package should be deleted from here.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode

from otel_matomo import exporter as exporter_module
from otel_matomo import hits as hits_module
from otel_matomo import pipeline as pipeline_module
from otel_matomo import policy, request, transport

from exporter_cost import BATCH, build_spans, make_exporter, time_per_batch, translate_and_encode

# ------------------------------------------------------------------------------------------------ proposals

_ALWAYS_SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
_QUOTE_PLUS = {byte: ("+" if byte == 0x20 else f"%{byte:02X}") for byte in range(128) if byte not in _ALWAYS_SAFE}
"""``str.translate`` table: what ``quote_plus(text, safe="")`` makes of each ASCII character."""


def fast_quote_plus(text: str, errors: str | None = None) -> str:
    """``urllib.parse.quote_plus(text, errors=errors)`` (safe="", UTF-8): one C-level ``str.translate`` for
    ASCII text, the stdlib otherwise. The stdlib walks the UTF-8 bytes in a Python list comprehension."""
    return text.translate(_QUOTE_PLUS) if text.isascii() else quote_plus(text, errors=errors)


cached_quote_plus = functools.lru_cache(maxsize=2048)(fast_quote_plus)
_REPEATING = frozenset({"ua", "uadata", "lang"})
"""Parameters shared by many visitors (browser builds, client hints, languages): worth a cache."""


def fast_urlencode(query: Any, *args: Any, errors: str | None = None, **kwargs: Any) -> str:
    """``urlencode(mapping, errors=...)`` for a mapping of str to str, as ``encode_bulk`` calls it."""
    if args or kwargs or not isinstance(query, dict):
        return urlencode(query, *args, errors=errors, **kwargs)
    return "&".join(
        [fast_quote_plus(key, errors) + "=" + fast_quote_plus(str(value), errors) for key, value in query.items()]
    )


def fast_cached_urlencode(query: Any, *args: Any, errors: str | None = None, **kwargs: Any) -> str:
    """``fast_urlencode`` with an LRU cache for the values of ``_REPEATING`` parameters.

    Parameter names are Matomo's own identifiers (``[a-z_]+``), which need no quoting.
    """
    if args or kwargs or not isinstance(query, dict):
        return urlencode(query, *args, errors=errors, **kwargs)
    return "&".join(
        [
            key + "=" + (cached_quote_plus if key in _REPEATING else fast_quote_plus)(value, errors)
            for key, value in query.items()
        ]
    )


def split_outside_quotes(original: Callable[[str, str], list[str]]) -> Callable[[str, str], list[str]]:
    """``policy._split_outside_quotes`` with a C-level ``str.split`` when the value has no quotes."""

    def split(value: str, separator: str) -> list[str]:
        if '"' in value:
            return original(value, separator)
        return [part for part in value.split(separator) if part.strip()]

    return split


_HINT_HEADERS = (
    "sec-ch-ua",
    "sec-ch-ua-full-version-list",
    "sec-ch-ua-mobile",
    "sec-ch-ua-platform",
    "sec-ch-ua-platform-version",
    "sec-ch-ua-model",
)


def cached_client_hints(original: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    @functools.lru_cache(maxsize=1024)
    def from_key(key: tuple[str | None, ...]) -> str | None:
        return original(
            _Headers({name: value for name, value in zip(_HINT_HEADERS, key, strict=True) if value is not None})
        )

    def client_hints(req: Any) -> str | None:
        get = req.headers.get
        return from_key(tuple(get(name) for name in _HINT_HEADERS))

    return client_hints


@dataclass
class _Headers:
    headers: dict[str, str]


def combined_exclusion(_original: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    """``_is_excluded`` with the path globs compiled into one regex (cached per settings tuple)."""
    import fnmatch

    @functools.lru_cache(maxsize=16)
    def matcher(patterns: tuple[str, ...]) -> Callable[[str], Any]:
        if not patterns:
            return lambda _path: None
        return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)).match

    def is_excluded(req: Any, settings: Any) -> bool:
        if req.method in settings.exclude_methods:
            return True
        status = req.status
        if status is not None and any(low <= status <= high for low, high in settings.exclude_status):
            return True
        path = req.path
        last = path.rpartition("/")[2]
        extension = last.rpartition(".")[2].lower() if "." in last else ""
        if extension and extension in settings.exclude_extensions:
            return True
        return matcher(settings.exclude_paths)(path) is not None

    return is_excluded


def fast_text(attributes: Any, *keys: str) -> str | None:
    """``request._text`` with a fast path for the common case, a plain non-empty string."""
    for key in keys:
        value = attributes.get(key)
        if value is None:
            continue
        if type(value) is str:
            stripped = value.strip()
            if stripped:
                return stripped
            continue
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    return None


@functools.lru_cache(maxsize=256)
def _header_name(key: str) -> str | None:
    prefix = request.HEADER_ATTRIBUTE_PREFIX
    return key[len(prefix) :].lower().replace("_", "-") if key.startswith(prefix) else None


def fast_headers(attributes: Any) -> dict[str, str]:
    """``request._headers`` with the attribute-name mapping cached and a fast path for one-line headers."""
    headers: dict[str, str] = {}
    redacted = request._REDACTED
    for key, value in attributes.items():
        name = _header_name(key)
        if name is None:
            continue
        if type(value) is tuple and len(value) == 1 and type(value[0]) is str:
            line = value[0].strip()
            if line and line != redacted:
                headers[name] = line
            continue
        items = value if isinstance(value, (list, tuple)) else (value,)
        lines = [item.strip() for item in items if isinstance(item, str) and item.strip()]
        lines = [line for line in lines if line != redacted]
        if lines:
            headers[name] = ", ".join(lines)
    return headers


def request_hit_without_unused_day(original: Callable[..., Any]) -> Callable[..., Any] | None:
    """``hits.request_hit`` computing the UTC day (strftime) only when ``daily_visitor_id`` is on."""
    import inspect
    import textwrap

    source = textwrap.dedent(inspect.getsource(original))
    old = 'day = time.strftime("%Y-%m-%d", time.gmtime(request.start_ns // 1_000_000_000))'
    new = (
        'day = time.strftime("%Y-%m-%d", time.gmtime(request.start_ns // 1_000_000_000)) '
        "if settings.daily_visitor_id else None"
    )
    if old not in source:
        return None
    namespace = dict(vars(hits_module))
    exec(compile(source.replace(old, new), hits_module.__file__, "exec"), namespace)
    return namespace["request_hit"]  # type: ignore[no-any-return]


def yielding(every: int = 32) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a per-span function so that the worker thread lets the GIL go (``time.sleep(0)``) every ``every``
    calls: a batch is translated in slices of a fraction of a millisecond instead of holding the GIL for
    ``sys.getswitchinterval()`` (5 ms) at a time while requests wait. Same CPU, shorter stalls (p99)."""
    calls = [0]

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] % every == 0:
                time.sleep(0)
            return original(*args, **kwargs)

        return wrapper

    return wrap


# ------------------------------------------------------------------------------------------------- harness


@dataclass
class Patch:
    name: str
    where: str
    targets: list[tuple[Any, str, Callable[[Any], Any]]]
    """(module, attribute, make(original) -> replacement or None)."""

    def available(self) -> bool:
        return all(hasattr(module, attribute) for module, attribute, _ in self.targets)

    def apply(self) -> Callable[[], None]:
        saved = []
        for module, attribute, make in self.targets:
            original = getattr(module, attribute)
            replacement = make(original)
            if replacement is None:
                raise LookupError(f"{module.__name__}.{attribute} changed")
            saved.append((module, attribute, original))
            setattr(module, attribute, replacement)

        def undo() -> None:
            for module, attribute, original in reversed(saved):
                setattr(module, attribute, original)

        return undo


PATCHES = [
    Patch(
        "P1 urlencode via str.translate",
        "transport.encode_bulk: urlencode(hit) -> str.translate quoting (same output)",
        [(transport, "urlencode", lambda _o: fast_urlencode)],
    ),
    Patch(
        "P1b P1 + cache ua/uadata/lang",
        "transport.encode_bulk: P1, names unquoted, lru_cache(2048) for the ua, uadata, lang values",
        [(transport, "urlencode", lambda _o: fast_cached_urlencode)],
    ),
    Patch(
        "P2 cache _parse_ip",
        "policy._parse_ip: functools.lru_cache(4096) (peer = the proxy, the same few addresses)",
        [(policy, "_parse_ip", functools.lru_cache(maxsize=4096))],
    ),
    Patch(
        "P3 cache _is_trusted",
        "policy._is_trusted: functools.lru_cache(4096) (with P2: the proxy check is a dict hit)",
        [(policy, "_is_trusted", functools.lru_cache(maxsize=4096))],
    ),
    Patch(
        "P4 strftime only if daily ids",
        "hits.request_hit: compute `day` only when settings.daily_visitor_id",
        [(hits_module, "request_hit", request_hit_without_unused_day)],
    ),
    Patch(
        "P5 cache client hints",
        "hits._client_hints: lru_cache keyed by the 6 Sec-CH-UA* header values",
        [(hits_module, "_client_hints", cached_client_hints)],
    ),
    Patch(
        "P6 one regex for exclude_paths",
        "policy._is_excluded: fnmatch per glob -> one compiled alternation per settings",
        [(policy, "_is_excluded", combined_exclusion)],
    ),
    Patch(
        "P7 cache _is_credential",
        "policy._is_credential: functools.lru_cache(1024) (query parameter names repeat)",
        [(policy, "_is_credential", functools.lru_cache(maxsize=1024))],
    ),
    Patch(
        "P8 _text fast path",
        "request._text: plain-str fast path before the isinstance chain",
        [(request, "_text", lambda _o: fast_text)],
    ),
    Patch(
        "P10 split without quotes",
        "policy._split_outside_quotes: str.split when the header has no quote (per-char loop otherwise)",
        [(policy, "_split_outside_quotes", split_outside_quotes)],
    ),
    Patch(
        "P11 yield the GIL every 32 spans",
        "pipeline.translate's per-span calls (read_span, request_hits): time.sleep(0) every 32 calls",
        [
            (exporter_module, "read_span", yielding()),
            (pipeline_module, "request_hits", yielding()),
        ],
    ),
    Patch(
        "P9 _headers fast path",
        "request._headers: cached name mapping, one-line tuple fast path",
        [(request, "_headers", lambda _o: fast_headers)],
    ),
]


def measure(rounds: int, min_time: float) -> None:
    exporter = make_exporter()
    spans = build_spans(BATCH, server_only=True)
    reference = translate_and_encode(exporter, spans)

    def bench() -> float:
        return time_per_batch(lambda: translate_and_encode(exporter, spans), min_time=min_time) / BATCH * 1e6

    configs: list[tuple[str, list[Patch]]] = [("unpatched", [])]
    usable = []
    for patch in PATCHES:
        if not patch.available():
            print(f"skipped {patch.name}: its target is gone")
            continue
        try:
            patch.apply()()
        except LookupError as error:
            print(f"skipped {patch.name}: {error}")
            continue
        usable.append(patch)
        configs.append((patch.name, [patch]))
    # P1b supersedes P1 (both replace transport.urlencode); P11 trades CPU for shorter GIL holds (it is about
    # p99 in the app, not about this single-threaded figure), so it is left out of the sum.
    configs.append(("all but P1, P11", [patch for patch in usable if not patch.name.startswith(("P1 ", "P11 "))]))

    samples: dict[str, list[float]] = {name: [] for name, _ in configs}
    for round_index in range(rounds):
        shift = round_index % len(configs)
        for name, patches in configs[shift:] + configs[:shift]:  # interleaved, order rotated each round
            undos = [patch.apply() for patch in patches]
            try:
                body = translate_and_encode(exporter, spans)
                if body != reference:
                    raise SystemExit(f"{name}: the bulk body differs from the unpatched one")
                samples[name].append(bench())
            finally:
                for undo in reversed(undos):
                    undo()
    base = statistics.median(samples["unpatched"])
    print(f"{'proposal':34} {'µs/span':>8} {'gain':>7}  change")
    for name, patches in configs:
        value = statistics.median(samples[name])
        where = patches[0].where if len(patches) == 1 else ""
        print(f"{name:34} {value:8.2f} {base - value:+7.2f}  {where}")
    exporter.shutdown()
    print(json.dumps({name: round(statistics.median(v), 2) for name, v in samples.items()}))


def apply_in_app(names: str) -> list[str]:
    """Apply proposals inside a benchmark app (``BENCH_PROPOSALS=all`` or ``P1b,P2,...``); the names applied."""
    wanted = {name.strip() for name in names.split(",") if name.strip()}
    applied = []
    for patch in PATCHES:
        key = patch.name.split(" ", 1)[0]
        if patch.name.startswith("P1 ") and "all" in wanted:
            continue  # P1b supersedes it
        if ("all" in wanted or key in wanted) and patch.available():
            try:
                patch.apply()
            except LookupError:
                continue
            applied.append(key)
    try:  # MatomoSpanProcessor's worker imported read_span by name
        from otel_matomo import delivery

        delivery.read_span = exporter_module.read_span  # type: ignore[attr-defined]
    except ImportError:
        pass
    return applied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-time", type=float, default=0.5)
    args = parser.parse_args()
    began = time.monotonic()
    measure(args.rounds, args.min_time)
    print(f"({time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()

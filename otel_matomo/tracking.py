"""Server-side tracking calls: events, goals, ecommerce, site search, dimensions, user id, page titles.

Each call attaches a Matomo fact to the *current request's server span*, as namespaced span attributes
(``matomo.*``, plus the standard ``enduser.id``) or span events (``matomo.event``, ``matomo.goal``, ...), so it
reaches Matomo through the same exporter or processor, shows in any other trace backend in a documented form,
and could come from a span recorded by another process. The server span is found from anywhere in the request:
inside nested spans, in a dependency, or in a thread or task that carries the request's context
(``asyncio.to_thread``, ``contextvars.copy_context().run``). With ``BatchSpanProcessor(MatomoSpanExporter())``
alone, a call inside a nested span records on that span and the exporter moves the facts to the request's
server span when it reads the batch (``_nested``); ``MatomoSpanProcessor`` and :class:`TrackingProcessor` find
the server span at once.

Outside a request, or when nothing traces requests, a call does nothing (and says so once per process).
A wrong value (empty event category, non-numeric value, negative quantity ...) raises ``ValueError`` in
development - Python's development mode (``python -X dev``, ``PYTHONDEVMODE=1``) or
``OTEL_EXPORTER_MATOMO_STRICT=true`` - and otherwise is skipped, counted in :data:`rejected` and logged
(rate-limited): a typo in analytics code must not break a checkout.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from otel_matomo import _names as names
from otel_matomo import _nested
from otel_matomo._diagnostics import log_once
from otel_matomo._options import ConfigurationError
from otel_matomo._ratelimit import RateLimitedLog
from otel_matomo._settings import read_flag

_logger = logging.getLogger("otel_matomo")
_log = RateLimitedLog(_logger)
rejected: Counter[str] = Counter()
"""Tracking calls refused in production mode, by call name (each is also logged)."""

_Builder = Callable[[], dict[str, AttributeValue]]
"""Builds a call's attributes, raising TypeError/ValueError on a wrong argument."""

_server_span: ContextVar[weakref.ref[Span] | None] = ContextVar("otel_matomo_server_span", default=None)
"""The request's server span, set in the request's context when the span starts; weakly, so that a thread's
context, which outlives the request, never keeps the span (its attributes and events) in memory."""
_by_trace: dict[int, Span] = {}
"""Trace id -> the latest live server span of that trace in this process."""
_registry_lock = threading.Lock()


@dataclass(frozen=True)
class EcommerceItem:
    """One line of an order or cart, as Matomo's ``ec_items`` wants it."""

    sku: str
    name: str = ""
    category: str = ""
    price: float = 0.0
    quantity: int = 1


class TrackingProcessor(SpanProcessor):
    """Lets tracking calls find the request's server span at once from nested spans, threads and tasks.

    ``MatomoSpanProcessor`` does this itself. Beside ``BatchSpanProcessor(MatomoSpanExporter())`` it is optional:
    without it the exporter moves facts from nested spans to their server span, except from a span that ends
    after its server span. ``opentelemetry-instrument`` adds it when ``OTEL_TRACES_EXPORTER`` names ``matomo``.
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:  # noqa: ARG002 - SDK signature
        """Remember which server span ``span`` belongs to."""
        register(span)

    def on_end(self, span: ReadableSpan) -> None:
        """Forget it."""
        unregister(span)


def register(span: Span) -> None:
    """Remember ``span`` as its request's server span, when it is one (nested spans cost nothing here).

    In the request's context, which every task, thread or dependency that carries the request's context sees;
    and by trace id, for a thread given only OpenTelemetry's context (``opentelemetry-instrumentation-threading``),
    and for spans that are not recorded (a sampler dropped them) and so never start here.
    """
    if span.kind is SpanKind.SERVER:
        _server_span.set(weakref.ref(span))
        with _registry_lock:
            _by_trace[span.context.trace_id] = span


def unregister(span: ReadableSpan) -> None:
    """Forget a server span at its end (the SDK hands ``on_end`` a new object, so compare ids, not objects).

    The context's weak reference needs no removal: it goes with the request's context, and a call after the end
    finds the span ended (``_request_span`` checks)."""
    context = span.context
    if context is None or span.kind is not SpanKind.SERVER:
        return
    with _registry_lock:
        server = _by_trace.get(context.trace_id)
        if server is not None and server.context.span_id == context.span_id:
            del _by_trace[context.trace_id]


def track_event(category: str, action: str, name: str | None = None, value: float | None = None) -> None:
    """An event in the request's visit (``e_c``, ``e_a``, ``e_n``, ``e_v``)."""
    _add_event(
        "track_event",
        names.EVENT,
        lambda: {
            names.EVENT_CATEGORY: _text("category", category),
            names.EVENT_ACTION: _text("action", action),
            **_optional_text(names.EVENT_NAME, "name", name),
            **_optional_number(names.EVENT_VALUE, "value", value),
        },
    )


def track_goal(goal_id: int, revenue: float | None = None) -> None:
    """A conversion of goal ``goal_id`` (``idgoal``, ``revenue``)."""
    _add_event(
        "track_goal",
        names.GOAL,
        lambda: {
            names.GOAL_ID: _positive_int("goal_id", goal_id),
            **_optional_number(names.GOAL_REVENUE, "revenue", revenue),
        },
    )


def track_order(
    order_id: str,
    revenue: float,
    items: Iterable[EcommerceItem] = (),
    *,
    subtotal: float | None = None,
    tax: float | None = None,
    shipping: float | None = None,
    discount: float | None = None,
) -> None:
    """An ecommerce order (``idgoal=0``, ``ec_id`` ...). Matomo refuses an order id it has seen before."""
    _add_event(
        "track_order",
        names.ORDER,
        lambda: {
            names.ORDER_ID: _text("order_id", order_id),
            names.REVENUE: _number("revenue", revenue),
            names.ITEMS: _items(items),
            **_optional_number(names.SUBTOTAL, "subtotal", subtotal),
            **_optional_number(names.TAX, "tax", tax),
            **_optional_number(names.SHIPPING, "shipping", shipping),
            **_optional_number(names.DISCOUNT, "discount", discount),
        },
    )


def track_cart_update(revenue: float, items: Iterable[EcommerceItem]) -> None:
    """The cart's new content and total (an abandoned cart in Matomo unless an order follows)."""
    _add_event(
        "track_cart_update",
        names.CART_UPDATE,
        lambda: {names.REVENUE: _number("revenue", revenue), names.ITEMS: _items(items)},
    )


def track_product_view(
    sku: str, name: str | None = None, category: str | None = None, price: float | None = None
) -> None:
    """The request's page view shows a product (``_pks``, ``_pkn``, ``_pkc``, ``_pkp``)."""
    _set_attributes(
        "track_product_view",
        lambda: {
            names.PRODUCT_SKU: _text("sku", sku),
            **_optional_text(names.PRODUCT_NAME, "name", name),
            **_optional_text(names.PRODUCT_CATEGORY, "category", category),
            **_optional_number(names.PRODUCT_PRICE, "price", price),
        },
    )


def track_site_search(keyword: str, category: str | None = None, results_count: int | None = None) -> None:
    """The request's page view becomes a site search (``search``, ``search_cat``, ``search_count``)."""
    _set_attributes(
        "track_site_search",
        lambda: {
            names.SEARCH_KEYWORD: _text("keyword", keyword),
            **_optional_text(names.SEARCH_CATEGORY, "category", category),
            **({} if results_count is None else {names.SEARCH_COUNT: _count("results_count", results_count)}),
        },
    )


def track_content_impression(name: str, piece: str | None = None, target: str | None = None) -> None:
    """A server-rendered content block was shown (``c_n``, ``c_p``, ``c_t``)."""
    _add_event(
        "track_content_impression",
        names.CONTENT_IMPRESSION,
        lambda: {
            names.CONTENT_NAME: _text("name", name),
            **_optional_text(names.CONTENT_PIECE, "piece", piece),
            **_optional_text(names.CONTENT_TARGET, "target", target),
        },
    )


def set_user_id(user_id: str) -> None:
    """The signed-in user (``uid``, the standard ``enduser.id`` attribute); Matomo derives the visitor id from it."""
    _set_attributes("set_user_id", lambda: {names.USER_ID: _text("user_id", user_id)})


def set_custom_dimension(dimension_id: int, value: str) -> None:
    """Custom dimension ``dimension_id`` of this request (``dimension<ID>``; Matomo keeps 250 characters)."""
    _set_attributes(
        "set_custom_dimension",
        lambda: {f"{names.DIMENSION_PREFIX}{_positive_int('dimension_id', dimension_id)}": _text("value", value)[:250]},
    )


def set_page_title(title: str) -> None:
    """Use ``title`` as the page view's ``action_name`` instead of ``"<METHOD> <route>"``."""
    _set_attributes("set_page_title", lambda: {names.PAGE_TITLE: _text("title", title)})


def skip_tracking() -> None:
    """Send nothing to Matomo for this request (counted as ``skipped``)."""
    _set_attributes("skip_tracking", lambda: {names.SKIP: True})


def _request_span(call: str) -> tuple[Span, bool] | None:
    """The span a call records on, and whether it is a nested one (for the exporter to move the facts).

    The request's server span: the current span, or the one the registry knows for it. Without a registry
    (``BatchSpanProcessor(MatomoSpanExporter())`` alone) the current span itself: the exporter moves its facts
    to its server span (``_nested``). Says once per process when there is no span at all or only an ended one.
    """
    current = trace.get_current_span()
    context = current.get_span_context()
    if not context.is_valid:
        _said_once(call, "no-span", "no span is active (outside a request, or nothing traces the application)")
        return None
    nested = False
    if isinstance(current, Span) and current.kind is SpanKind.SERVER:
        span: Span | None = current
    else:
        reference = _server_span.get()
        span = reference() if reference is not None else None
        if span is None or span.context.trace_id != context.trace_id:
            with _registry_lock:
                span = _by_trace.get(context.trace_id)
        if span is None and isinstance(current, Span):
            span, nested = current, True
    if span is None or not span.is_recording():
        if span is not None and span.end_time is not None:
            _said_once(call, "ended", "its span had ended (a task that outlived its request)")
        return None
    return span, nested


def _said_once(call: str, key: str, why: str) -> None:
    log_once(f"tracking-{key}", logging.WARNING, "otel-matomo: %s recorded nothing: %s", call, why)


def _add_event(call: str, name: str, build: _Builder) -> None:
    _record(call, build, lambda span, attributes: span.add_event(name, attributes))


def _set_attributes(call: str, build: _Builder) -> None:
    _record(call, build, Span.set_attributes)


def _record(call: str, build: _Builder, write: Callable[[Span, dict[str, AttributeValue]], object]) -> None:
    """Validate the call's attributes and ``write`` them on the request's span; mark a nested span's."""
    found = _request_span(call)
    if found is None:
        return
    span, nested = found
    attributes = _validated(call, build)
    if attributes is None:
        return
    write(span, attributes)
    if nested:
        _nested.mark(span.context.span_id)


def _validated(call: str, build: _Builder) -> dict[str, AttributeValue] | None:
    try:
        return build()
    except (TypeError, ValueError, ArithmeticError) as error:
        if _strict():
            raise ValueError(f"otel_matomo.{call}: {error}") from None
        rejected[call] += 1
        _log.log(logging.WARNING, call, "otel-matomo: ignored %s: %s", call, error)
        return None


def _strict() -> bool:
    try:
        return bool(sys.flags.dev_mode) or read_flag("STRICT")
    except ConfigurationError:
        return False  # a mistyped switch must not turn a tracking call into an exception


def _text(argument: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str, not {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{argument} must not be empty")
    return value


def _plain_text(argument: str, value: object) -> str:
    """A str that may be empty."""
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str, not {type(value).__name__}")
    return value


def _optional_text(key: str, argument: str, value: object) -> Mapping[str, str]:
    return {} if value is None else {key: _text(argument, value)}


def _number(argument: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argument} must be a number, not {type(value).__name__}")
    if isinstance(value, int) and abs(value) > 2**53:
        raise ValueError(f"{argument} is too large to track exactly: {value}")
    if not math.isfinite(value):
        raise ValueError(f"{argument} must be finite, not {value}")
    return float(value)


def _optional_number(key: str, argument: str, value: object) -> Mapping[str, float]:
    return {} if value is None else {key: _number(argument, value)}


def _count(argument: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{argument} must not be negative, not {value}")
    return value


def _positive_int(argument: str, value: object) -> int:
    number = _count(argument, value)
    if number == 0:
        raise ValueError(f"{argument} must be positive")
    return number


def _items(items: Iterable[EcommerceItem]) -> str:
    """Matomo's ``ec_items`` JSON: ``[[sku, name, category, price, quantity], ...]``."""
    rows = []
    for item in items:
        if not isinstance(item, EcommerceItem):
            raise TypeError(f"items must be EcommerceItem, not {type(item).__name__}")
        rows.append(
            [
                _text("item sku", item.sku),
                _plain_text("item name", item.name),
                _plain_text("item category", item.category),
                _number("item price", item.price),
                _count("item quantity", item.quantity),
            ]
        )
    return json.dumps(rows, separators=(",", ":"))

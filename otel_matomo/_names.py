"""Every name otel-matomo shares with the outside world, defined once: span attributes it reads and writes,
request headers, environment variables.

The bottom of the package: it imports nothing of ours, so any module can use it. The Matomo Tracking API
parameters themselves (``url``, ``cid``, ``pf_srv`` ...) are written in one place only, ``_hits.py``, next to
the attribute each one is taken from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Environment variables.
ENV_PREFIX = "OTEL_EXPORTER_MATOMO_"
"""Every exporter, processor and tracking option: ``OTEL_EXPORTER_MATOMO_<NAME>``."""
GATEWAY_ENV_PREFIX = "OTEL_MATOMO_GATEWAY_"
"""The gateway's own options (its Matomo options are the exporter's)."""
TRACES_EXPORTER_ENV = "OTEL_TRACES_EXPORTER"
CAPTURE_ENV = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST"
RESPONSE_CAPTURE_ENV = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE"
SANITIZE_ENV = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"
SEMCONV_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"


def traces_exporters(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The exporter names of ``OTEL_TRACES_EXPORTER``, lower-case, as the SDK's configurator splits them."""
    env = os.environ if environ is None else environ
    return tuple(name.strip().lower() for name in env.get(TRACES_EXPORTER_ENV, "").split(",") if name.strip())


# Request and response headers.
CLIENT_HINT_HEADERS: tuple[str, ...] = (
    "sec-ch-ua",
    "sec-ch-ua-mobile",
    "sec-ch-ua-platform",
    "sec-ch-ua-platform-version",
    "sec-ch-ua-model",
    "sec-ch-ua-full-version-list",
)
"""User-Agent client hints, in the order ``_hits`` reads them into ``uadata``."""

REQUEST_HEADERS: tuple[str, ...] = (
    "host",
    "referer",
    "accept-language",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "sec-gpc",
    "dnt",
    *CLIENT_HINT_HEADERS,
)
"""The request headers otel-matomo reads from spans. OpenTelemetry's HTTP instrumentation records the
User-Agent by itself, but the Referer (``urlref``), the Accept-Language (``lang``), the Host (the page URL),
the forwarding headers (the visitor behind a proxy), the privacy signals and the client hints only as captured
headers."""

RESPONSE_HEADERS: tuple[str, ...] = ("location",)
"""The response headers otel-matomo reads: a redirect's target, to tell a trailing-slash redirect from a page."""

HEADER_ATTRIBUTE_PREFIX = "http.request.header."
RESPONSE_HEADER_ATTRIBUTE_PREFIX = "http.response.header."
"""Captured headers are span attributes ``<prefix><name>`` (Python writes ``_`` for ``-``, Node.js keeps ``-``)."""

# OpenTelemetry HTTP span attributes that the semantic conventions renamed: each tuple is read in order, the first
# present wins. Newest convention first, except where a docstring says why not. Only ``_request`` reads them.
METHOD = ("http.request.method", "http.method")
SCHEME = ("url.scheme", "http.scheme")
FULL_URL = ("http.url", "url.full")
"""The old name first: the path and query are read from it only when no convention recorded them apart."""
STATUS = ("http.response.status_code", "http.status_code")
PEER_ADDRESS = ("network.peer.address", "net.sock.peer.addr", "net.peer.ip")
"""The socket peer; ``net.sock.peer.addr`` is Java agent 1.x and Go otelhttp < 0.50."""
CLIENT_ADDRESS = "client.address"
"""The visitor behind any proxies, by the conventions: Node.js, Java and Go take it from the left-most
X-Forwarded-For entry, which the visitor writes. Read only from instrumentations under ``SOCKET_SCOPE_PREFIX``."""
SOCKET_SCOPE_PREFIX = "opentelemetry.instrumentation."
"""OpenTelemetry Python's instrumentations, whose HTTP servers set ``client.address`` (and no
``network.peer.address``) from the connection, as the server reports it."""
USER_AGENT = ("user_agent.original", "http.user_agent")
RESPONSE_SIZE = ("http.response.body.size", "http.response_content_length")
SERVER_ADDRESS = ("server.address", "http.host", "net.host.name")
"""The Host header on WSGI and Node.js but the bind address ``"ip:port"`` on ASGI: the host's last resort."""
SERVER_PORT = ("server.port", "net.host.port")

# ... and those with one name, in one convention or in all.
METHOD_ORIGINAL = "http.request.method_original"
"""The method as sent when ``http.request.method`` is ``_OTHER`` (one the instrumentation does not know)."""
ROUTE = "http.route"
PATH = "url.path"
QUERY = "url.query"
TARGET = "http.target"
"""Old conventions: the path alone on ASGI (the query is only in ``http.url``), path and query on WSGI."""
OLD_FULL_URL = "http.url"
"""Built from the Host header, so the requested host when the header itself was not captured."""
ERROR_TYPE = "error.type"
"""Set when the request failed, possibly before any status code was recorded (then the visitor got a 500)."""
SYNTHETIC_TYPE = "user_agent.synthetic.type"
"""``bot`` or ``test`` when the instrumentation recognised a synthetic client."""
REDIRECT_LOCATION = RESPONSE_HEADER_ATTRIBUTE_PREFIX + "location"
"""A redirect's captured ``Location`` response header (``RESPONSE_HEADERS``)."""

# What otel_matomo.tracking writes on the server span (and another process may have written): attributes ...
ATTRIBUTE_PREFIX = "matomo."
"""Every tracking attribute and span event name starts with it (except ``enduser.id``, a semantic convention)."""
USER_ID = "enduser.id"
USER_IDS = (USER_ID, "user.id")
"""Read in this order: the semantic convention first, then the newer draft name."""
PAGE_TITLE = "matomo.page_title"
SKIP = "matomo.skip"
DIMENSION_PREFIX = "matomo.dimension."
SEARCH_KEYWORD = "matomo.search.keyword"
SEARCH_CATEGORY = "matomo.search.category"
SEARCH_COUNT = "matomo.search.results_count"
PRODUCT_SKU = "matomo.product.sku"
PRODUCT_NAME = "matomo.product.name"
PRODUCT_CATEGORY = "matomo.product.category"
PRODUCT_PRICE = "matomo.product.price"

# ... and span events, one per fact, with these attributes.
EVENT = "matomo.event"
EVENT_CATEGORY = "matomo.event.category"
EVENT_ACTION = "matomo.event.action"
EVENT_NAME = "matomo.event.name"
EVENT_VALUE = "matomo.event.value"
GOAL = "matomo.goal"
GOAL_ID = "matomo.goal.id"
GOAL_REVENUE = "matomo.goal.revenue"
ORDER = "matomo.ecommerce.order"
CART_UPDATE = "matomo.ecommerce.cart_update"
ORDER_ID = "matomo.ecommerce.order_id"
REVENUE = "matomo.ecommerce.revenue"
ITEMS = "matomo.ecommerce.items"
SUBTOTAL = "matomo.ecommerce.subtotal"
TAX = "matomo.ecommerce.tax"
SHIPPING = "matomo.ecommerce.shipping"
DISCOUNT = "matomo.ecommerce.discount"
CONTENT_IMPRESSION = "matomo.content_impression"
CONTENT_NAME = "matomo.content.name"
CONTENT_PIECE = "matomo.content.piece"
CONTENT_TARGET = "matomo.content.target"
TRACKING_EVENTS = (EVENT, GOAL, ORDER, CART_UPDATE, CONTENT_IMPRESSION)

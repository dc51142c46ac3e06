"""``HttpRequest``: what the visitor asked for, whatever semantic-convention version recorded it.

This is the only module that knows OpenTelemetry attribute names. It reads the old HTTP conventions, the new
(stable) ones and both at once (``OTEL_SEMCONV_STABILITY_OPT_IN=http/dup``), as the Python ASGI and WSGI
middleware and the Node.js instrumentation really set them, and tolerates any malformed value: a wrong type or
a missing attribute degrades one field, never the whole request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, urlsplit

from otel_matomo import _names as names
from otel_matomo._cache import text_cache
from otel_matomo._layout import Layout
from otel_matomo._layout import layout as key_layout
from otel_matomo._types import AppTracking, Attributes, HttpRequest, RawHeaders, SpanEvent, TrackedFact

_PLACEHOLDER = re.compile(r"[{<:*(]")
_REDACTED = "[REDACTED]"
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"


def http_request_from_span_data(
    name: str,
    attributes: Attributes,
    start_ns: int,
    end_ns: int | None,
    span_id: int,
    events: Iterable[SpanEvent] = (),
    *,
    failed: bool = False,
    raw_headers: RawHeaders | None = None,
    scope: str = "",
) -> HttpRequest | None:
    """Build the request view of one SERVER span; ``None`` when the span carries no HTTP request.

    Span kind is the caller's business: the exporter and the gateway read it from different structures.
    ``failed`` is the span's ERROR status: an unhandled exception can end a span before any status code was
    recorded (Starlette's instrumentation does), and the visitor then got a 500. ``raw_headers`` are those
    ``otel_matomo.request_hook`` kept instead of OpenTelemetry's header capture. ``scope`` names the
    instrumentation that recorded the span, which tells where its ``client.address`` comes from.
    """
    method = _text(attributes, *names.METHOD)
    scheme = (_text(attributes, *names.SCHEME) or "http").lower()
    if method is None and scheme in ("ws", "wss"):
        method = "GET"  # websocket spans carry no method; the handshake is a GET
    if method is None:
        return None
    if method == "_OTHER":
        method = _text(attributes, names.METHOD_ORIGINAL) or method
    route = _route_template(_text(attributes, names.ROUTE))
    path, query = _path_and_query(name, method, route, attributes)
    if route is not None and not _PLACEHOLDER.search(route) and route.rstrip("/") != path.rstrip("/"):
        # A route with no placeholder that is not the path is a mount point ("/shop" for every page of a
        # sub-application mounted there): as a title it would merge every page into one row.
        route = None
    layout = key_layout(tuple(attributes))
    headers = _headers(attributes, layout)
    if raw_headers:
        headers.update(decode_raw_headers(raw_headers))
    status = _integer(attributes, *names.STATUS)
    if status is None and (failed or _text(attributes, names.ERROR_TYPE) is not None):
        status = 500
    return HttpRequest(
        method=method.upper(),
        path=path,
        query=query,
        route=route,
        scheme=scheme,
        host=headers.get("host") or _host(attributes),
        headers=headers,
        peer_address=_text(attributes, *_peer_keys(scope)),
        user_agent=_text(attributes, *names.USER_AGENT) or headers.get("user-agent"),
        user_id=_text(attributes, *names.USER_IDS),
        synthetic_type=_text(attributes, names.SYNTHETIC_TYPE),
        status=status,
        response_size=_integer(attributes, *names.RESPONSE_SIZE),
        redirect_location=_text(attributes, names.REDIRECT_LOCATION),
        # Most requests tracked nothing: they share one empty view.
        tracking=_app_tracking(attributes, events) if layout.tracked or events else _NO_TRACKING,
        start_ns=start_ns,
        end_ns=end_ns,
        span_id=span_id,
        attributes=attributes,
    )


def _peer_keys(scope: str) -> tuple[str, ...]:
    """Where the socket peer is: ``client.address`` too, last, when the instrumentation took it from the
    connection, as OpenTelemetry Python's do; elsewhere it is the left-most X-Forwarded-For entry, which the
    visitor chooses, so it is never read."""
    return _PEER_OR_CLIENT if scope.startswith(names.SOCKET_SCOPE_PREFIX) else names.PEER_ADDRESS


_PEER_OR_CLIENT = (*names.PEER_ADDRESS, names.CLIENT_ADDRESS)


@text_cache(maxsize=1024)  # an application has a few dozen routes
def _route_template(route: str | None) -> str | None:
    """``http.route`` as a path template: Litestar's plugin writes ``"GET /items/7"`` (a route with a space is
    never a template), Django's routes have no leading slash (``"articles/<slug:slug>"``)."""
    if route is None:
        return None
    route = route.rpartition(" ")[2]
    return route if route.startswith("/") else "/" + route


_NO_TRACKING = AppTracking()


def _app_tracking(attributes: Attributes, events: Iterable[SpanEvent]) -> AppTracking:
    """The ``matomo.*`` attributes and span events that ``otel_matomo.tracking`` (or another process) set."""
    facts = tuple(
        TrackedFact(name, time_ns, event_attributes)
        for name, time_ns, event_attributes in events
        if name in names.TRACKING_EVENTS
    )
    dimensions = {}
    for key, value in attributes.items():
        suffix = key[len(names.DIMENSION_PREFIX) :]
        if key.startswith(names.DIMENSION_PREFIX) and suffix.isascii() and suffix.isdigit() and isinstance(value, str):
            dimensions[int(suffix)] = value
    product = {
        part: text
        for part, key in (
            ("sku", names.PRODUCT_SKU),
            ("name", names.PRODUCT_NAME),
            ("category", names.PRODUCT_CATEGORY),
            ("price", names.PRODUCT_PRICE),
        )
        if (text := _text(attributes, key)) is not None
    }
    return AppTracking(
        page_title=_text(attributes, names.PAGE_TITLE),
        skip=attributes.get(names.SKIP) is True,
        search_keyword=_text(attributes, names.SEARCH_KEYWORD),
        search_category=_text(attributes, names.SEARCH_CATEGORY),
        search_count=_integer(attributes, names.SEARCH_COUNT),
        product=product,
        dimensions=dimensions,
        facts=facts,
    )


def _text(attributes: Attributes, *keys: str) -> str | None:
    """The first non-empty string value among ``keys``; a sequence counts by its first item."""
    for key in keys:
        value = attributes.get(key)
        if value is None:
            continue
        if type(value) is str:  # the common case first: this runs a dozen times per span
            text = value.strip()
            if text:
                return text if text.isascii() else _scrub(text)
            continue
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if isinstance(value, str) and value.strip():
            return _scrub(value.strip())
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    return None


def _scrub(text: str) -> str:
    """Replace lone surrogates (no HTTP server decodes into them, but a span may carry anything) with U+FFFD,
    so that one odd attribute cannot make the UTF-8 encoding of a whole batch fail."""
    return text if text.isascii() else text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _integer(attributes: Attributes, *keys: str) -> int | None:
    for key in keys:
        value = attributes.get(key)
        if type(value) is int:  # the common cases first: a status code, or an absent attribute
            return value
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            return int(value)
    return None


def _headers(attributes: Attributes, layout: Layout) -> dict[str, str]:
    """The captured request headers, lower-case names with dashes."""
    headers: dict[str, str] = {}
    for key, header in layout.headers:
        line = _header_line(attributes[key])
        if line is not None:
            headers[header] = line
    return headers


def _header_line(value: object) -> str | None:
    """A captured header's lines joined by ``", "``; ``None`` when nothing of use is left."""
    if type(value) is tuple and len(value) == 1:  # the SDK's one line, as most headers are
        value = value[0]
    if type(value) is str:
        line = value.strip()
        # Sanitised values (OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS) carry nothing of use.
        if not line or line == _REDACTED:
            return None
        return line if line.isascii() else _scrub(line)
    items = value if isinstance(value, (list, tuple)) else (value,)
    lines = [_scrub(item.strip()) for item in items if isinstance(item, str) and item.strip()]
    lines = [line for line in lines if line != _REDACTED]
    return ", ".join(lines) if lines else None


_WANTED: dict[bytes, str] = {name.encode("ascii"): name for name in names.REQUEST_HEADERS}


def decode_raw_headers(raw: RawHeaders) -> dict[str, str]:
    """The headers otel-matomo reads (``REQUEST_HEADERS``), repeated lines joined by ``", "`` as in captured ones.

    ASGI values are bytes: UTF-8 as OpenTelemetry's capture decodes them, Latin-1 (every byte a character) when
    they are not valid UTF-8.
    """
    if isinstance(raw, Mapping):
        return {header: line for header, value in raw.items() if (line := _header_line(value)) is not None}
    # One pass over the server's list, joining as it goes: this runs for every request, on the worker.
    headers: dict[str, str] = {}
    for name, value in raw:
        wanted = _WANTED.get(name)
        if wanted is None or type(value) is not bytes:
            continue
        try:
            line = _header_line(value.decode())
        except UnicodeDecodeError:
            line = _header_line(value.decode("latin-1"))
        if line is not None:
            earlier = headers.get(wanted)
            headers[wanted] = line if earlier is None else f"{earlier}, {line}"
    return headers


def _path_and_query(name: str, method: str, route: str | None, attributes: Attributes) -> tuple[str, str]:
    """Path and query as requested, from the most precise attribute any convention left us.

    Old ASGI ``http.target`` is the path alone (the query is only in ``http.url``); old WSGI ``http.target``
    has both; WSGI under wsgiref in the new conventions sets neither, leaving the span name (``"GET /path"``
    on raw middleware, the route template on frameworks).
    """
    path = _text(attributes, names.PATH)
    if path is not None:
        return path, _text(attributes, names.QUERY) or ""
    full_url = _text(attributes, *names.FULL_URL)
    target = _text(attributes, names.TARGET)
    if target is not None:
        path, _, query = target.partition("?")
        if not query and full_url is not None:
            query = _safe_split(full_url)[1]
        return path or "/", query
    if full_url is not None:
        return _safe_split(full_url)
    _, _, rest = name.partition(" ")
    if name.startswith(method + " /") and rest != route:
        return rest, ""
    return route or "/", ""


@text_cache(maxsize=2048)  # the old conventions (FastAPI's default) need it for every span, and pages repeat
def _safe_split(url: str) -> tuple[str, str]:
    """Path and query of ``http.url``, re-escaped: old ASGI builds it from the *decoded* query string."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "/", ""
    return quote(parts.path, safe=_URL_SAFE) or "/", quote(parts.query, safe=_URL_SAFE)


def _host(attributes: Attributes) -> str | None:
    """The requested host when the Host header was not captured.

    ``http.url`` (old conventions) is built from the Host header. ``server.address`` is the Host header on
    WSGI and Node.js but the bind address ``"ip:port"`` on ASGI, so it is the last resort.
    """
    full_url = _text(attributes, names.OLD_FULL_URL)
    if full_url is not None:
        try:
            netloc = urlsplit(full_url).netloc.rpartition("@")[2]
        except ValueError:
            netloc = ""
        if netloc:
            return netloc
    address = _text(attributes, *names.SERVER_ADDRESS)
    if address is None:
        return None
    port = _integer(attributes, *names.SERVER_PORT)
    if port is None or ":" in address or port in (80, 443):
        return address
    return f"{address}:{port}"

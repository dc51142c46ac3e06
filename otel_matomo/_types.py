"""The plain data that flows through the pipeline: requests, hits, drop reasons and the totals that count them.

Imports nothing of ours but names: every stage can use these types without importing another stage.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Attributes = Mapping[str, object]
SpanEvent = tuple[str, int, Attributes]
"""A span event as every source can give it: name, time (ns), attributes."""
RawHeaders = Sequence[tuple[bytes, bytes]] | Mapping[str, str]
"""Request headers as ``otel_matomo.request_hook`` keeps them: an ASGI scope's ``(name, value)`` byte pairs
(names lower-case, as ASGI requires), or header name -> value as a WSGI server joined them."""


@dataclass(frozen=True, slots=True)
class TrackedFact:
    """One fact the application tracked during the request (an event, goal, order ...), from a span event."""

    kind: str
    """The span event's name, one of ``otel_matomo._names.TRACKING_EVENTS``."""
    time_ns: int
    """When the application tracked it: the span event's time, which becomes the fact hit's ``cdt``."""
    attributes: Attributes
    """The span event's attributes (``matomo.event.category``, ``matomo.goal.id`` ...)."""


@dataclass(frozen=True, slots=True)
class AppTracking:
    """What the application said about the request through ``otel_matomo.tracking``."""

    page_title: str | None = None
    skip: bool = False
    search_keyword: str | None = None
    search_category: str | None = None
    search_count: int | None = None
    product: Mapping[str, str] = field(default_factory=dict)
    """``sku``, ``name``, ``category``, ``price`` of a product view, as text."""
    dimensions: Mapping[int, str] = field(default_factory=dict)
    facts: tuple[TrackedFact, ...] = ()


@dataclass(slots=True)
class HttpRequest:
    """One HTTP request to the application, as plain data, read and never changed once built.
    ``otel_matomo._request`` builds it from a span; each field says which attributes (``otel_matomo._names``) it
    comes from, in the order they are read.

    Not frozen: a frozen dataclass sets each field through ``object.__setattr__``, and one is built per span on the
    exporter's hot path, where that measured clearly above the benchmark's noise (``benchmarks/RESULTS.md``)."""

    method: str
    """``METHOD`` (``METHOD_ORIGINAL`` for ``_OTHER``), upper-case; ``GET`` for a websocket handshake."""
    path: str
    """``PATH``, else ``TARGET``, else ``FULL_URL``, else the span name: as requested, still percent-encoded."""
    start_ns: int
    end_ns: int | None
    """``None`` while the request still runs (tracked at its start)."""
    span_id: int
    route: str | None = None
    """``ROUTE`` as a path template; ``None`` for a mount point, which is no page."""
    query: str = ""
    """``QUERY``, or the query part of ``TARGET`` or ``FULL_URL``, without the ``?``."""
    scheme: str = "http"
    """``SCHEME``, lower-case."""
    host: str | None = None
    """The host the visitor asked for, with its port: the Host header, else ``OLD_FULL_URL``'s host, else
    ``SERVER_ADDRESS`` and ``SERVER_PORT``; never the server's bind address when the header was captured."""
    peer_address: str | None = None
    """``PEER_ADDRESS``: the socket peer (or what the server already resolved from trusted proxy headers); else
    ``CLIENT_ADDRESS`` from an instrumentation that reads it from the connection (``SOCKET_SCOPE_PREFIX``)."""
    user_agent: str | None = None
    """``USER_AGENT``, else the captured User-Agent header."""
    status: int | None = None
    """``STATUS``; 500 when the span failed (``ERROR_TYPE`` or its ERROR status) before one was recorded."""
    user_id: str | None = None
    """``USER_IDS``, which ``otel_matomo.tracking.set_user_id`` sets."""
    synthetic_type: str | None = None
    """``SYNTHETIC_TYPE``: ``bot`` or ``test`` when the instrumentation recognised a synthetic client."""
    response_size: int | None = None
    """``RESPONSE_SIZE``: bytes of the response body, when the instrumentation recorded them."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Captured request headers (``HEADER_ATTRIBUTE_PREFIX``, or kept by ``otel_matomo.request_hook``),
    lower-case names with dashes, repeated lines joined by ', '."""
    redirect_location: str | None = None
    """``REDIRECT_LOCATION``: the captured ``Location`` response header of a redirect."""
    tracking: AppTracking = field(default_factory=AppTracking)
    """The ``matomo.*`` attributes and span events."""
    attributes: Attributes = field(default_factory=dict)
    """All span attributes, for dimensions configured by attribute name (``OTEL_EXPORTER_MATOMO_DIMENSIONS``)."""

    @property
    def referrer(self) -> str | None:
        """The Referer header."""
        return self.headers.get("referer")

    @property
    def accept_language(self) -> str | None:
        """The Accept-Language header."""
        return self.headers.get("accept-language")

    @property
    def duration_ns(self) -> int | None:
        """Time spent serving the request, never negative; ``None`` while it runs."""
        return None if self.end_ns is None else max(self.end_ns - self.start_ns, 0)


Hit = dict[str, str]
"""One tracking request's parameters, unencoded; the transport URL-encodes them."""


class DropReason(enum.Enum):
    """Why a request or a hit did not reach Matomo. Each value is the :class:`ExportStats` field that counts it
    and the ``reason`` attribute of the ``otel_matomo.hits.dropped`` metric."""

    QUEUE_FULL = "queue_full"
    """The span processor's queue had no room left."""
    EXCLUDED = "excluded"
    """A path, extension, method or status that is no visit (health checks, static files, OPTIONS ...)."""
    OPTED_OUT = "opted_out"
    """The visitor sent Sec-GPC: 1 or DNT: 1."""
    SYNTHETIC = "synthetic"
    """A bot or test client, by the instrumentation's ``user_agent.synthetic.type`` (with ``skip_synthetic``)."""
    SKIPPED = "skipped"
    """The application called ``otel_matomo.skip_tracking()``."""
    FOREIGN_HOST = "foreign_host"
    """A request for a host that is not in ``site_hosts`` (when set): someone else's site, or a forged Host."""
    OUTAGE_BOUND = "outage_bound"
    """Too many hits waited while Matomo was unreachable (oldest dropped first)."""
    EXPIRED = "expired"
    """Waited longer than the buffer's maximum age."""
    MALFORMED = "malformed"
    """A server span, or a fact tracked on it, that could not be translated into a hit Matomo accepts (logged)."""
    REFUSED = "refused"
    """Matomo answered HTTP 500 to every batch holding this hit, found by splitting the batch (logged): the
    other hits of the batch were delivered."""
    UNREADABLE = "unreadable"
    """A hit in the spool that could not be read back (moved aside to the spool's ``unreadable`` table)."""
    UNCONFIRMED = "unconfirmed"
    """Matomo answered, but its ``tracked`` and ``invalid`` counts do not cover these hits: they may or may not
    be recorded, and are not sent again."""
    LOST = "lost"
    """Not delivered: Matomo unreachable until the deadline, shut down while retrying, or a failure."""


class Adjustment(enum.Enum):
    """What was changed in a hit so that Matomo records it, not a drop. Each value is the :class:`ExportStats`
    field that counts the hits it changed and the ``reason`` attribute of the ``otel_matomo.hits.adjusted``
    metric."""

    TRUNCATED = "truncated"
    """A value longer than Matomo stores (``url``, ``action_name``, ``urlref``, ``ua`` ...) was cut to what it
    keeps, or the client hints (``uadata``) were left out."""
    TIME_CLAMPED = "time_clamped"
    """The time (``cdt``) was in the future or before the 20 years Matomo accepts: the hit is sent at now."""
    FORWARDED_MALFORMED = "forwarded_malformed"
    """A trusted proxy's forwarding header was malformed where the visitor's address should be: no ``cip``."""


@dataclass
class ExportStats:
    """Running totals since start; every hit that does not reach Matomo is in one of them.

    Besides the four totals below, one field per :class:`DropReason` and one per :class:`Adjustment`, named by
    its value and documented there, so that the reasons have one vocabulary.
    """

    requests: int = 0  # HTTP server requests turned into hits
    tracked: int = 0  # hits Matomo confirmed
    invalid: int = 0  # hits Matomo refused for good (validation errors, bad token)
    batches: int = 0  # bulk requests that Matomo answered or that were given up
    queue_full: int = 0
    excluded: int = 0
    opted_out: int = 0
    synthetic: int = 0
    skipped: int = 0
    foreign_host: int = 0
    outage_bound: int = 0
    expired: int = 0
    malformed: int = 0
    refused: int = 0
    unreadable: int = 0
    unconfirmed: int = 0
    lost: int = 0
    truncated: int = 0
    time_clamped: int = 0
    forwarded_malformed: int = 0

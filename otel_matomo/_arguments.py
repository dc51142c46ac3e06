"""The keyword options of ``MatomoSpanExporter``, ``MatomoSpanProcessor`` and ``Settings.from_env``, typed.

One ``TypedDict`` that all three take as ``**options: Unpack[MatomoOptions]``: keyword-only, completed by IDEs and
checked by mypy (a typo such as ``endpont=`` or ``timeout=5000`` is an error before anything runs), written once
instead of three signatures of thirty parameters. Each key is a keyword option of ``SETTINGS_OPTIONS`` (what
``test_options.py`` checks); the table holds the parsing, the default and the README's words, this holds the
types and what an IDE shows. Durations are ``datetime.timedelta``: a bare number could be seconds or the
milliseconds the variables take, so it is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Literal, TypedDict


class MatomoOptions(TypedDict, total=False):
    """Keyword options of ``MatomoSpanExporter``, ``MatomoSpanProcessor`` and ``Settings.from_env``.

    Each overrides the variable ``OTEL_EXPORTER_MATOMO_<KEY IN CAPITALS>``; left out or ``None``, the variable
    applies, else the default. Invalid values raise :class:`~otel_matomo.ConfigurationError` at construction.
    """

    # Where hits go.
    endpoint: str | None
    """Matomo base URL (``https://matomo.example.com``) or its ``matomo.php`` URL: http(s), a host, an optional
    port, no ``user:password@``, query nor fragment. Required unless ``dry_run``."""
    site_id: int | None
    """The Matomo ``idsite``, e.g. ``1``. Required unless ``dry_run``."""
    token_auth: str | None
    """A token with write access to the site, needed for the visitor IP; sent in POST bodies only."""
    timeout: timedelta | None
    """Overall deadline of one export, retries included; ``timedelta(seconds=10)`` by default."""
    visitor_id_secret: str | bytes | None
    """Key of the visitor-id HMAC, at least 16 bytes, the same for every process of the deployment."""
    error_page_titles: bool | None
    """Matomo's error-page titles for 4xx/5xx responses (default ``True``)."""
    dry_run: bool | None
    """Log each hit instead of sending it; no endpoint needed (default ``False``)."""
    # Who the visitor is.
    trusted_proxies: Sequence[str] | None
    """IPs and CIDR networks whose forwarding headers are believed (default loopback); ``[]`` trusts nobody."""
    forwarded_header: Literal["x-forwarded-for", "forwarded"] | None
    """The one forwarding header your proxies write (default ``"x-forwarded-for"``)."""
    anonymize_ip: int | None
    """Bytes of the visitor IP to zero before it leaves the process, 0 to 3 (default 0)."""
    visitor_id: Literal["stable", "daily"] | None
    """``"daily"`` rotates visitor ids every UTC day (default ``"stable"``)."""
    honor_gpc: bool | None
    """No hit for requests with ``Sec-GPC: 1`` (default ``True``)."""
    honor_dnt: bool | None
    """No hit for requests with ``DNT: 1`` (default ``True``)."""
    redact_query_params: Sequence[str] | None
    """Query parameters whose name contains one of these words are removed from ``url`` and ``urlref``."""
    # What becomes a hit.
    exclude_paths: Sequence[str] | None
    """Path globs that are not visits, e.g. ``["/internal/*"]`` (default: health checks and metrics)."""
    exclude_extensions: Sequence[str] | None
    """File extensions of static assets, which are not visits."""
    exclude_methods: Sequence[str] | None
    """HTTP methods that are not visits (default ``["OPTIONS", "HEAD"]``)."""
    exclude_status: Sequence[str | int] | None
    """Status codes or classes that produce no hit, e.g. ``[404, "5xx"]``."""
    event_routes: Sequence[str] | None
    """Route or path globs tracked as events instead of page views, e.g. ``["/api/*"]``."""
    event_category: str | None
    """The event category of ``event_routes`` requests (default ``"API"``)."""
    dimensions: Mapping[int, str] | None
    """Custom dimension id -> span attribute, e.g. ``{1: "enduser.role"}``."""
    track_bots: bool | None
    """Send ``bots=1``, so that Matomo keeps requests it classifies as bots (default ``False``)."""
    skip_synthetic: bool | None
    """Skip requests marked ``user_agent.synthetic.type`` bot or test (default ``False``)."""
    site_hosts: Sequence[str] | None
    """The site's host names, e.g. ``["shop.example", "*.shop.example"]``; other hosts are dropped (default: any)."""
    # Delivery by MatomoSpanProcessor.
    start_routes: Sequence[str] | None
    """Route or path globs tracked when the request starts, for long-lived requests."""
    queue_size: int | None
    """Finished spans waiting for the processor's worker, at most (default 2048)."""
    batch_size: int | None
    """Hits per bulk request, at most (default 500)."""
    schedule_delay: timedelta | None
    """How long the processor's worker waits to fill a batch; ``timedelta(seconds=1)`` by default."""
    buffer_max_hits: int | None
    """Hits kept while Matomo is unreachable, at most (default 50000)."""
    buffer_max_bytes: int | None
    """Bytes of hits kept in memory while Matomo is unreachable, at most (default 32 MiB)."""
    buffer_max_age: timedelta | None
    """How long a hit waits for Matomo at most; ``timedelta(days=1)`` by default."""
    spool_dir: str | os.PathLike[str] | None
    """Directory where undelivered hits survive a restart (SQLite), shared safely by several processes."""

"""One frozen ``Settings`` object, from constructor arguments and ``OTEL_EXPORTER_MATOMO_*`` variables.

Every option is one row of :data:`SETTINGS_OPTIONS` (keyword, variable, parser, default, help); the dataclass
below only gives each a field and a type, and the README's configuration reference is generated from the rows
(``python -m otel_matomo._reference``). Every validation error names the variable (and the argument) and the
expected form, so a typo fails at start-up instead of silently losing analytics. Arguments win over the
environment, as in the OTLP exporters.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from otel_matomo._endpoint import Endpoint
from otel_matomo._kinds import (
    Choice,
    Duration,
    Flag,
    Globs,
    IpNetwork,
    MatomoToken,
    Names,
    NetworkList,
    Networks,
    Pairs,
    Secret,
    StatusRanges,
    Text,
    Whole,
)
from otel_matomo._names import ENV_PREFIX
from otel_matomo._options import Option, OptionTable

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from otel_matomo._arguments import MatomoOptions

_logger = logging.getLogger("otel_matomo")

DEFAULT_TRUSTED_PROXIES: tuple[IpNetwork, ...] = Networks(
    (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
)
"""Loopback only, as uvicorn's ``--forwarded-allow-ips`` default: a proxy on the same host."""

DEFAULT_REDACTED_PARAMS: tuple[str, ...] = (
    "*token*", "*password*", "passwd", "pwd", "pass", "passcode", "passphrase", "pin", "*secret*", "key", "*apikey*",
    "*accesskey*", "*authkey*", "session", "*sessionid*", "*sessid*", "sid", "code", "state", "nonce", "otp",
    "*verifier*", "*ticket", "saml*", "*assertion", "bearer", "jwt", "auth", "authorization", "credential*",
    "*signature*", "sig", "hash", "hmac", "*csrf*", "*xsrf*",
)  # fmt: skip
"""Credential words in parameter names (see ``_redact.py``): ``pin`` matches the word ``pin`` only (``pin2``,
``user_pin``, never ``spin``); ``*token*`` matches inside words too (``accesstoken``, ``mytoken``, ``tokens``)."""

DEFAULT_EXCLUDED_PATHS: tuple[str, ...] = ("/health", "/healthz", "/livez", "/readyz", "/metrics", "/robots.txt")
"""Health checks and metrics scrapes: machine traffic that would inflate page views."""

DEFAULT_EXCLUDED_EXTENSIONS: tuple[str, ...] = (
    "gif", "jpg", "jpeg", "png", "bmp", "ico", "svg", "svgz", "ttf", "otf", "eot", "woff", "woff2", "class", "swf",
    "css", "js", "xml", "webp", "avif", "map",
)  # fmt: skip
"""Static assets: the extensions Matomo's log importer skips, plus their modern kin (woff2, webp, avif, map)."""

_PUBLIC_KEY = b"otel-matomo public visitor id key"

# fmt: off
SETTINGS_OPTIONS = OptionTable(
    "Settings.from_env",
    ENV_PREFIX,
    (
        # Where hits go.
        Option("endpoint", "ENDPOINT", Endpoint(), None,
               "Matomo base URL (`https://matomo.example.com`) or its `matomo.php` URL: http(s), a host, an optional "
               "port (1-65535), no `user:password@`, query or fragment", required=True, secret=True),
        Option("site_id", "SITE_ID", Whole("a positive whole number, the Matomo idsite, e.g. 1"), None,
               "the Matomo `idsite`", required=True),
        Option("token_auth", "TOKEN_AUTH", MatomoToken(), None,
               "a token with write access, needed for the visitor IP "
               "([why](https://github.com/otel-matomo/otel-matomo#visitor-ip-and-token_auth))", secret=True),
        Option("timeout", "TIMEOUT", Duration("milliseconds", "10000", "timedelta(seconds=10)"), 10.0,
               "overall deadline of one export, retries included (milliseconds in the variable, a `timedelta` as "
               "argument)"),
        Option("visitor_id_secret", "VISITOR_ID_SECRET",
               Secret("a random string of at least 16 characters shared by every process of the deployment"), b"",
               "key of the visitor-id HMAC, the same for every process of the deployment; without it and "
               "without a token, a public constant is used and a warning says so",
               shown="derived from the token", secret=True),
        Option("error_page_titles", "ERROR_PAGE_TITLES", Flag(), True, "Matomo's error-page titles for 4xx/5xx"),
        Option("dry_run", "DRY_RUN", Flag(), False,
               "print each hit as one line of JSON on standard error (or to the `otel_matomo.hits` logger when "
               "the application's logging shows it) instead of sending (no endpoint needed, site id 1 unless set)"),
        # Who the visitor is.
        Option("trusted_proxies", "TRUSTED_PROXIES", NetworkList(), DEFAULT_TRUSTED_PROXIES,
               "IPs/CIDRs whose forwarding headers are believed; `none` trusts nobody", shown="`127.0.0.0/8,::1`"),
        Option("forwarded_header", "FORWARDED_HEADER",
               Choice({"x-forwarded-for": "x-forwarded-for", "forwarded": "forwarded"}), "x-forwarded-for",
               "the one forwarding header your proxies write: `x-forwarded-for` (with `X-Forwarded-Proto`/"
               "`-Host`) or `forwarded` (RFC 7239); the other is never read"),
        Option("anonymize_ip", "ANONYMIZE_IP",
               Whole("0, 1, 2 or 3 (bytes of the IP to mask, as in Matomo)", minimum=0, maximum=3), 0,
               "bytes of the visitor IP to zero before `cip` leaves the process (0-3)"),
        Option("visitor_id", "VISITOR_ID", Choice({"stable": False, "daily": True}), False,
               "`daily` rotates visitor ids every UTC day, so that no id links a visitor across days",
               field="daily_visitor_id"),
        Option("honor_gpc", "HONOR_GPC", Flag(), True,
               "requests with `Sec-GPC: 1` produce no hit (counted as `opted_out`)"),
        Option("honor_dnt", "HONOR_DNT", Flag(), True,
               "requests with `DNT: 1` produce no hit (counted as `opted_out`)"),
        Option("redact_query_params", "REDACT_QUERY_PARAMS",
               Names(expected="comma-separated words or *patterns*, +word to add to the defaults, or none",
                     extends=DEFAULT_REDACTED_PARAMS), DEFAULT_REDACTED_PARAMS,
               "parameters (query, `;path` parameters, fragment) with one of these words in their name are removed "
               "from `url`, `urlref` and titles (`*token*` also matches inside words); `+ssn,+*iban*` adds to the "
               "defaults instead of replacing them"),
        # What becomes a hit.
        Option("exclude_paths", "EXCLUDE_PATHS", Globs(), DEFAULT_EXCLUDED_PATHS,
               "path globs (`/internal/*`) that are not visits"),
        Option("exclude_extensions", "EXCLUDE_EXTENSIONS", Names(), DEFAULT_EXCLUDED_EXTENSIONS,
               "file extensions of static assets, which are not visits"),
        Option("exclude_methods", "EXCLUDE_METHODS", Names(upper=True), ("OPTIONS", "HEAD"),
               "HTTP methods that are not visits (CORS pre-flights, monitors' probes)"),
        Option("exclude_status", "EXCLUDE_STATUS", StatusRanges(), (),
               "status codes or classes (`404,5xx`) that produce no hit"),
        Option("event_routes", "EVENT_ROUTES", Globs(), (),
               "route or path globs (`/api/*`) tracked as events instead of page views"),
        Option("event_category", "EVENT_CATEGORY", Text(), "API",
               "the event category (`e_c`) of `EVENT_ROUTES` requests"),
        Option("dimensions", "DIMENSIONS", Pairs("id=attribute pairs, e.g. 1=enduser.role,2=tenant"), (),
               "custom dimensions filled from span attributes: `1=enduser.role,2=tenant` (a mapping as argument)"),
        Option("track_bots", "TRACK_BOTS", Flag(), False,
               "send `bots=1`, so that Matomo keeps requests its device detector classifies as bots"),
        Option("skip_synthetic", "SKIP_SYNTHETIC", Flag(), False,
               "skip requests marked `user_agent.synthetic.type` bot or test (counted as `synthetic`)"),
        Option("site_hosts", "SITE_HOSTS", Names(), (),
               "the site's host names (`shop.example,*.shop.example`); when set, requests for any other Host are "
               "dropped (counted as `foreign_host`)"),
        # Delivery by MatomoSpanProcessor (the exporter is batched by the SDK's BatchSpanProcessor instead).
        Option("start_routes", "START_ROUTES", Globs(), (),
               "route or path globs tracked when the request starts, for long-lived requests (websockets always are)"),
        Option("queue_size", "QUEUE_SIZE", Whole("a positive whole number of spans, e.g. 2048"), 2048,
               "finished spans waiting for the processor's worker; beyond it spans are dropped (`queue_full`)"),
        Option("batch_size", "BATCH_SIZE", Whole("a positive whole number of hits, e.g. 500"), 500,
               "hits per bulk request at most"),
        Option("schedule_delay", "SCHEDULE_DELAY", Duration("milliseconds", "1000", "timedelta(seconds=1)"), 1.0,
               "how long the worker waits to fill a batch (milliseconds in the variable, a `timedelta` as argument)"),
        Option("buffer_max_hits", "BUFFER_MAX_HITS", Whole("a positive whole number of hits, e.g. 50000"), 50_000,
               "hits kept while Matomo is unreachable; beyond it the oldest are dropped (`outage_bound`)"),
        Option("buffer_max_bytes", "BUFFER_MAX_BYTES", Whole("a positive whole number of bytes, e.g. 33554432"),
               32 * 1024 * 1024, "bytes of hits kept in memory while Matomo is unreachable",
               shown="`33554432` (32 MiB)"),
        Option("buffer_max_age", "BUFFER_MAX_AGE", Duration("seconds", "86400", "timedelta(days=1)"), 86_400.0,
               "how long a hit waits for Matomo at most, older ones are dropped (`expired`) (seconds in the "
               "variable, a `timedelta` as argument)"),
        Option("spool_dir", "SPOOL_DIR", Text("a directory", blank_is_none=True), None,
               "directory where undelivered hits survive a restart (SQLite), shared safely by several processes"),
    ),
)
# fmt: on
"""Every ``Settings`` option; ``test_options.py`` checks it against the dataclass and the README."""

# fmt: off
SWITCHES = OptionTable(
    "read_flag",
    ENV_PREFIX,
    (
        Option("capture_headers", "CAPTURE_HEADERS", Flag(), True,
               "how `opentelemetry-instrument` gets the request headers to Matomo: `request_hook` where the "
               "instrumentation takes one, OpenTelemetry's header capture otherwise; `false`: neither",
               keyword=False),
        Option("processor", "PROCESSOR", Flag(), False,
               "`opentelemetry-instrument` also wraps the sampler (`AnalyticsSampler`), so that every request "
               "reaches Matomo whatever traces are sampled, and adds the processor when `OTEL_TRACES_EXPORTER` "
               "does not name matomo",
               keyword=False),
        Option("strict", "STRICT", Flag(), False,
               "a wrong tracking-API argument raises `ValueError` (as under `python -X dev`) instead of being "
               "counted and ignored",
               keyword=False),
    ),
)
# fmt: on
"""Process-wide switches read outside ``Settings`` (by ``autoconfig``, ``tracking`` and the diagnostics)."""


@dataclass(frozen=True)
@SETTINGS_OPTIONS.fill
class Settings:
    """Everything the pipeline needs to know, validated once; each field's default, variable and meaning are its
    row of :data:`SETTINGS_OPTIONS` (``daily_visitor_id`` is the ``visitor_id`` option).

    Secrets are kept out of ``repr`` (the endpoint shows without any ``user:password@``) so that a logged
    ``Settings`` never leaks them.
    """

    endpoint: str | None
    """``None`` only in dry-run mode."""
    site_id: int
    token_auth: str | None
    timeout: float
    """Seconds, as ``schedule_delay`` and ``buffer_max_age``."""
    visitor_id_secret: bytes
    error_page_titles: bool
    dry_run: bool
    # Who the visitor is (see _policy.py for the reasons behind each default).
    trusted_proxies: tuple[IpNetwork, ...]
    forwarded_header: str
    anonymize_ip: int
    daily_visitor_id: bool
    honor_gpc: bool
    honor_dnt: bool
    redact_query_params: tuple[str, ...]
    # What becomes a hit.
    exclude_paths: tuple[str, ...]
    exclude_extensions: tuple[str, ...]
    exclude_methods: tuple[str, ...]
    """Upper-case."""
    exclude_status: tuple[tuple[int, int], ...]
    """Inclusive status code ranges."""
    event_routes: tuple[str, ...]
    event_category: str
    dimensions: tuple[tuple[int, str], ...]
    """Custom dimension id -> span attribute name."""
    track_bots: bool
    skip_synthetic: bool
    site_hosts: tuple[str, ...]
    """Lower-case host names, ``*.name`` for every name under one; empty: every host."""
    # Delivery by MatomoSpanProcessor (the exporter is batched by the SDK's BatchSpanProcessor instead).
    start_routes: tuple[str, ...]
    queue_size: int
    batch_size: int
    schedule_delay: float
    buffer_max_hits: int
    buffer_max_bytes: int
    buffer_max_age: float
    spool_dir: str | None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        _caller: str | None = "Settings.from_env",
        **arguments: Unpack[MatomoOptions],
    ) -> Settings:
        """Build settings from keyword options (:class:`~otel_matomo.exporter.MatomoOptions`), falling back to
        ``OTEL_EXPORTER_MATOMO_*`` in ``environ`` (``os.environ`` by default), then to the defaults.

        Durations are ``datetime.timedelta`` arguments (the variables take milliseconds, ``BUFFER_MAX_AGE``
        seconds). An unknown keyword raises ``TypeError`` with the nearest valid one, an invalid value
        :class:`~otel_matomo.ConfigurationError`; errors about an argument name ``_caller``, the class the user
        called. An unknown ``OTEL_EXPORTER_MATOMO_*`` variable is logged with the nearest known name.
        """
        env = os.environ if environ is None else environ
        _warn_about_unknown_variables(env)
        values = SETTINGS_OPTIONS.read(arguments, env, _caller)
        dry = values["dry_run"]
        if dry and values["site_id"] is None:
            values["site_id"] = 1
        if not dry:
            SETTINGS_OPTIONS.require(values)
        token = values["token_auth"]
        if not values["visitor_id_secret"]:
            values["visitor_id_secret"] = _derived_secret(token, warn=not dry)
        settings = cls(**SETTINGS_OPTIONS.fields(values))
        settings._warn_about_plain_http()
        if token is None and not dry:
            _logger.warning(
                "otel-matomo: no token_auth (%sTOKEN_AUTH): Matomo accepts the visitor IP (cip) only with a "
                "token that may write to the site, so every visit will be recorded with this server's IP address "
                "(wrong locations). Set a token created without 'Only allow secure requests'.",
                ENV_PREFIX,
            )
        return settings

    def __post_init__(self) -> None:
        # However built (by hand, dataclasses.replace), a Settings never holds an endpoint that httpx would log
        # with its credentials or that every export would fail on.
        if self.endpoint is not None:
            SETTINGS_OPTIONS.parse(SETTINGS_OPTIONS["endpoint"], self.endpoint, argument=True, caller="Settings")

    def __repr__(self) -> str:
        shown = {
            item.name: getattr(self, item.name)
            for item in fields(self)
            if item.name not in ("endpoint", "token_auth", "visitor_id_secret")
        }
        masked = {"endpoint": self.endpoint_for_logs, "token_auth": "***" if self.token_auth else None}
        listed = ", ".join(f"{name}={value!r}" for name, value in {**masked, **shown}.items())
        return f"Settings({listed})"

    def _warn_about_plain_http(self) -> None:
        if self.token_auth is None or self.endpoint is None:
            return
        parts = urlsplit(self.endpoint)
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            _logger.warning(
                "otel-matomo: token_auth is sent over plain http:// to %s; anyone on the network path can read "
                "it. Use an https:// endpoint.",
                parts.hostname,
            )

    @property
    def endpoint_for_logs(self) -> str:
        """The endpoint, safe to log: it never holds credentials (see ``__post_init__``)."""
        return "(dry run)" if self.endpoint is None else self.endpoint


def configured(caller: str, settings: Settings | None, options: Mapping[str, Any]) -> Settings:
    """What a constructor named ``caller`` runs with: ``settings`` as given, or read from its keyword options and
    the environment, with errors that name ``caller``."""
    if settings is None:
        return Settings.from_env(_caller=caller, **options)
    if options:
        raise TypeError(f"{caller}() takes settings= or keyword options, not both")
    return settings


def _warn_about_unknown_variables(environ: Mapping[str, str]) -> None:
    """One line per ``OTEL_EXPORTER_MATOMO_*`` variable nothing reads: a misspelt name is otherwise ignored in
    silence, and the option it meant keeps its default."""
    for name, guess in SETTINGS_OPTIONS.unknown_variables(environ, SWITCHES):
        hint = f"did you mean {guess}?" if guess else "the README's configuration reference lists every variable"
        _logger.warning("otel-matomo: %s is not a variable otel-matomo reads, so it changes nothing: %s", name, hint)


def _derived_secret(token: str | None, *, warn: bool) -> bytes:
    """The visitor-id key when none is configured: from the token if there is one, else a public constant."""
    if token is not None:
        # The token is already a secret that every process of one deployment shares, so ids stay stable
        # across workers and restarts; hashing it keeps the token itself out of the key material's uses.
        return hashlib.sha256(b"otel-matomo visitor id\0" + token.encode()).digest()
    if warn:
        _logger.warning(
            "otel-matomo: no %sVISITOR_ID_SECRET (and no token_auth to derive one from): visitor "
            "ids are keyed with a public constant, so a visitor's IP and user agent could be guessed back "
            "from them. Set a random secret shared by every process of the deployment.",
            ENV_PREFIX,
        )
    return _PUBLIC_KEY


def read_flag(suffix: str, default: bool | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """A true/false ``OTEL_EXPORTER_MATOMO_<suffix>`` variable, with the same errors as :class:`Settings`.

    Without ``default``, the switch's default from :data:`SWITCHES`.
    """
    option = next((option for option in SWITCHES.options if option.suffix == suffix), None)
    if default is not None or option is None:
        if default is None:
            raise ValueError(f"{ENV_PREFIX}{suffix} is not in SWITCHES: pass its default")
        option = Option(suffix.lower(), suffix, Flag(), default, "", keyword=False)
    return bool(SWITCHES.value(option, None, os.environ if environ is None else environ))


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine: ``localhost`` or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

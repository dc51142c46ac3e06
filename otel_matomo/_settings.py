"""One frozen ``Settings`` object, from constructor arguments and ``OTEL_EXPORTER_MATOMO_*`` variables.

Every validation error names the variable (and the argument) and the expected form, so a typo fails at
start-up instead of silently losing analytics. Arguments win over the environment, as in the OTLP exporters.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit, urlunsplit

from otel_matomo._names import ENV_PREFIX

_logger = logging.getLogger("otel_matomo")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_DEFAULT_TIMEOUT_S = 10.0
_NONE = "none"
"""The value that empties a list setting (an empty variable means "unset", i.e. the default)."""

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Networks(tuple[IpNetwork, ...]):
    """A tuple of networks that computes its hash once: it keys the policy's caches, and ``ipaddress`` networks
    hash in Python code every time."""

    _hash: int

    def __hash__(self) -> int:
        try:
            return self._hash
        except AttributeError:
            self._hash = super().__hash__()
            return self._hash


DEFAULT_TRUSTED_PROXIES: tuple[IpNetwork, ...] = Networks(
    (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
)
"""Loopback only, as uvicorn's ``--forwarded-allow-ips`` default: a proxy on the same host."""

DEFAULT_REDACTED_PARAMS: tuple[str, ...] = (
    "token",
    "password",
    "passwd",
    "pwd",
    "secret",
    "key",
    "apikey",
    "session",
    "sessionid",
    "sid",
    "code",
    "signature",
    "sig",
    "auth",
    "authorization",
    "jwt",
    "credential",
    "credentials",
    "otp",
    "nonce",
    "state",
)
"""Query parameter name words that mark a credential (matched word by word: ``api_key``, ``X-Amz-Signature``)."""

DEFAULT_EXCLUDED_PATHS: tuple[str, ...] = ("/health", "/healthz", "/livez", "/readyz", "/metrics", "/robots.txt")
"""Health checks and metrics scrapes: machine traffic that would inflate page views."""

DEFAULT_EXCLUDED_EXTENSIONS: tuple[str, ...] = (
    "gif",
    "jpg",
    "jpeg",
    "png",
    "bmp",
    "ico",
    "svg",
    "svgz",
    "ttf",
    "otf",
    "eot",
    "woff",
    "woff2",
    "class",
    "swf",
    "css",
    "js",
    "xml",
    "webp",
    "avif",
    "map",
)
"""Static assets: the extensions Matomo's log importer skips, plus their modern kin (woff2, webp, avif, map)."""


class ConfigurationError(ValueError):
    """An invalid setting; the message names the variable and the expected form, never a secret's value."""


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline needs to know, validated once.

    Secrets are kept out of ``repr`` (the endpoint shows without any ``user:password@``) so that a logged
    ``Settings`` never leaks them.
    """

    endpoint: str | None = field(repr=False)
    """The full ``matomo.php`` URL; ``None`` only in dry-run mode."""
    site_id: int
    token_auth: str | None = field(default=None, repr=False)
    timeout: float = _DEFAULT_TIMEOUT_S
    """Overall deadline of one export, retries included, in seconds."""
    visitor_id_secret: bytes = field(default=b"", repr=False)
    error_page_titles: bool = True
    dry_run: bool = False
    # Who the visitor is (see policy.py for the reasons behind each default).
    trusted_proxies: tuple[IpNetwork, ...] = DEFAULT_TRUSTED_PROXIES
    forwarded_header: str = "x-forwarded-for"
    """The one forwarding header the trusted proxies write: ``x-forwarded-for`` (with ``X-Forwarded-Proto/Host``)
    or ``forwarded`` (RFC 7239). The other is ignored: a proxy passes it through from the client untouched."""
    anonymize_ip: int = 0
    """How many trailing bytes of the visitor IP to zero before ``cip`` leaves the process (0-3)."""
    daily_visitor_id: bool = False
    """Rotate visitor ids every UTC day, so that no id links a visitor across days."""
    honor_gpc: bool = True
    honor_dnt: bool = True
    redact_query_params: tuple[str, ...] = DEFAULT_REDACTED_PARAMS
    # What becomes a hit.
    exclude_paths: tuple[str, ...] = DEFAULT_EXCLUDED_PATHS
    exclude_extensions: tuple[str, ...] = DEFAULT_EXCLUDED_EXTENSIONS
    exclude_methods: tuple[str, ...] = ("OPTIONS", "HEAD")
    exclude_status: tuple[tuple[int, int], ...] = ()
    """Inclusive status code ranges that produce no hit."""
    event_routes: tuple[str, ...] = ()
    """Route or path globs tracked as events instead of page views (JSON APIs)."""
    event_category: str = "API"
    dimensions: tuple[tuple[int, str], ...] = ()
    """Custom dimension id -> span attribute name, so that dimensions need no code."""
    track_bots: bool = False
    """Send ``bots=1`` so that Matomo keeps requests its device detector classifies as bots."""
    skip_synthetic: bool = False
    """Skip requests whose ``user_agent.synthetic.type`` is ``bot`` or ``test``."""
    # Delivery by MatomoSpanProcessor (the exporter is batched by the SDK's BatchSpanProcessor instead).
    start_routes: tuple[str, ...] = ()
    """Route or path globs tracked when the request starts (websockets always are): long-lived requests."""
    queue_size: int = 2048
    """Finished spans waiting for the worker; beyond it spans are dropped and counted (``queue_full``)."""
    batch_size: int = 500
    """Hits per bulk request at most."""
    schedule_delay: float = 1.0
    """Seconds the worker waits to fill a batch (milliseconds in ``OTEL_EXPORTER_MATOMO_SCHEDULE_DELAY``)."""
    buffer_max_hits: int = 50_000
    """Hits kept in memory while Matomo is unreachable; beyond it the oldest are dropped (``outage_bound``)."""
    buffer_max_bytes: int = 32 * 1024 * 1024
    buffer_max_age: float = 86_400.0
    """Seconds a hit waits for Matomo at most; older ones are dropped (``expired``)."""
    spool_dir: str | None = None
    """Where undelivered hits survive a restart (SQLite); shared safely by several processes."""

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        endpoint: str | None = None,
        site_id: int | str | None = None,
        token_auth: str | None = None,
        timeout: float | None = None,
        visitor_id_secret: str | bytes | None = None,
        error_page_titles: bool | None = None,
        dry_run: bool | None = None,
        trusted_proxies: Sequence[str] | None = None,
        forwarded_header: str | None = None,
        anonymize_ip: int | None = None,
        visitor_id: str | None = None,
        honor_gpc: bool | None = None,
        honor_dnt: bool | None = None,
        redact_query_params: Sequence[str] | None = None,
        exclude_paths: Sequence[str] | None = None,
        exclude_extensions: Sequence[str] | None = None,
        exclude_methods: Sequence[str] | None = None,
        exclude_status: Sequence[str | int] | None = None,
        event_routes: Sequence[str] | None = None,
        event_category: str | None = None,
        track_bots: bool | None = None,
        skip_synthetic: bool | None = None,
        dimensions: Mapping[int, str] | None = None,
        start_routes: Sequence[str] | None = None,
        queue_size: int | None = None,
        batch_size: int | None = None,
        schedule_delay: float | None = None,
        buffer_max_hits: int | None = None,
        buffer_max_bytes: int | None = None,
        buffer_max_age: float | None = None,
        spool_dir: str | None = None,
    ) -> Settings:
        """Build settings from arguments, falling back to ``OTEL_EXPORTER_MATOMO_*`` in ``environ``.

        ``timeout`` is in seconds as an argument and in milliseconds as ``OTEL_EXPORTER_MATOMO_TIMEOUT``,
        matching the OpenTelemetry exporter conventions.
        """
        env = os.environ if environ is None else environ
        read = _Reader(env)
        dry = read.boolean("DRY_RUN", "dry_run", dry_run, default=False)
        url = read.endpoint(endpoint, required=not dry)
        token = read.token(token_auth)
        settings = cls(
            endpoint=url,
            site_id=read.site_id(site_id, default=1 if dry else None),
            token_auth=token,
            timeout=read.timeout(timeout),
            visitor_id_secret=read.secret(visitor_id_secret, token, warn=not dry),
            error_page_titles=read.boolean("ERROR_PAGE_TITLES", "error_page_titles", error_page_titles, True),
            dry_run=dry,
            trusted_proxies=read.networks(trusted_proxies),
            forwarded_header=read.choice(
                "FORWARDED_HEADER", "forwarded_header", forwarded_header, ("x-forwarded-for", "forwarded")
            ),
            anonymize_ip=read.mask(anonymize_ip),
            daily_visitor_id=read.choice("VISITOR_ID", "visitor_id", visitor_id, ("stable", "daily")) == "daily",
            honor_gpc=read.boolean("HONOR_GPC", "honor_gpc", honor_gpc, True),
            honor_dnt=read.boolean("HONOR_DNT", "honor_dnt", honor_dnt, True),
            redact_query_params=read.names("REDACT_QUERY_PARAMS", redact_query_params, DEFAULT_REDACTED_PARAMS),
            exclude_paths=read.globs("EXCLUDE_PATHS", exclude_paths, DEFAULT_EXCLUDED_PATHS),
            exclude_extensions=read.names("EXCLUDE_EXTENSIONS", exclude_extensions, DEFAULT_EXCLUDED_EXTENSIONS),
            exclude_methods=tuple(
                name.upper() for name in read.names("EXCLUDE_METHODS", exclude_methods, ("OPTIONS", "HEAD"))
            ),
            exclude_status=read.status_ranges(exclude_status),
            event_routes=read.globs("EVENT_ROUTES", event_routes, ()),
            event_category=read.text("EVENT_CATEGORY", event_category, "API"),
            track_bots=read.boolean("TRACK_BOTS", "track_bots", track_bots, False),
            dimensions=read.dimensions(dimensions),
            skip_synthetic=read.boolean("SKIP_SYNTHETIC", "skip_synthetic", skip_synthetic, False),
            start_routes=read.globs("START_ROUTES", start_routes, ()),
            queue_size=int(read.number("QUEUE_SIZE", queue_size, 2048, "a positive whole number of spans")),
            batch_size=int(read.number("BATCH_SIZE", batch_size, 500, "a positive whole number of hits")),
            schedule_delay=read.number(
                "SCHEDULE_DELAY", None if schedule_delay is None else schedule_delay * 1000, 1000, "milliseconds"
            )
            / 1000,
            buffer_max_hits=int(read.number("BUFFER_MAX_HITS", buffer_max_hits, 50_000, "a whole number of hits")),
            buffer_max_bytes=int(
                read.number("BUFFER_MAX_BYTES", buffer_max_bytes, 32 * 1024 * 1024, "a whole number of bytes")
            ),
            buffer_max_age=read.number("BUFFER_MAX_AGE", buffer_max_age, 86_400, "seconds, e.g. 86400"),
            spool_dir=read.text("SPOOL_DIR", spool_dir, "") or None,
        )
        settings._warn_about_plain_http()
        if token is None and not dry:
            _logger.warning(
                "otel-matomo has no token_auth (%sTOKEN_AUTH): Matomo accepts the visitor IP (cip) only with a "
                "token that may write to the site, so every visit will be recorded with this server's IP address "
                "(wrong locations). Set a token created without 'Only allow secure requests'.",
                ENV_PREFIX,
            )
        return settings

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
        if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
            _logger.warning(
                "otel-matomo sends token_auth over plain http:// to %s; anyone on the network path can read "
                "it. Use an https:// endpoint.",
                parts.hostname,
            )

    @property
    def endpoint_for_logs(self) -> str:
        """The endpoint without any user:password part, safe to log."""
        if self.endpoint is None:
            return "(dry run)"
        parts = urlsplit(self.endpoint)
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def read_flag(suffix: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """A true/false ``OTEL_EXPORTER_MATOMO_<suffix>`` variable, with the same errors as :class:`Settings`."""
    reader = _Reader(os.environ if environ is None else environ)
    return reader.boolean(suffix, suffix.lower(), None, default)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Reader:
    """Reads one setting at a time, naming ``argument (VARIABLE)`` in every error."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def _raw(self, suffix: str, value: object) -> object:
        if value is not None:
            return value
        raw = self._environ.get(ENV_PREFIX + suffix)
        return None if raw is None or raw.strip() == "" else raw.strip()

    @staticmethod
    def _error(suffix: str, argument: str, problem: str, expected: str) -> ConfigurationError:
        return ConfigurationError(f"{argument} ({ENV_PREFIX}{suffix}) {problem}: expected {expected}")

    def boolean(self, suffix: str, argument: str, value: bool | None, default: bool) -> bool:
        raw = self._raw(suffix, value)
        if raw is None:
            return default
        if isinstance(raw, bool):
            return raw
        text = str(raw).lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise self._error(suffix, argument, f"is {raw!r}", "true or false")

    def _items(self, suffix: str, value: Sequence[object] | None) -> tuple[str, ...] | None:
        """A comma-separated list (or the argument's sequence); ``None`` when unset, ``()`` for ``none``."""
        if isinstance(value, str):
            value = value.split(",")  # a bare string is a list, as in the variable, not its characters
        if value is not None:
            return tuple(str(item).strip() for item in value if str(item).strip())
        raw = self._raw(suffix, None)
        if raw is None:
            return None
        text = str(raw)
        if text.lower() == _NONE:
            return ()
        return tuple(item.strip() for item in text.split(",") if item.strip())

    def names(self, suffix: str, value: Sequence[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
        items = self._items(suffix, value)
        return default if items is None else tuple(item.lower().lstrip(".") for item in items)

    def globs(self, suffix: str, value: Sequence[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
        items = self._items(suffix, value)
        if items is None:
            return default
        for item in items:
            if not item.startswith(("/", "*")):
                raise self._error(
                    suffix, suffix.lower(), f"has the pattern {item!r}", "path globs starting with / or *, e.g. /api/*"
                )
        return items

    def networks(self, value: Sequence[str] | None) -> tuple[IpNetwork, ...]:
        items = self._items("TRUSTED_PROXIES", value)
        if items is None:
            return DEFAULT_TRUSTED_PROXIES
        try:
            return Networks(ipaddress.ip_network(item, strict=False) for item in items)
        except ValueError as error:
            raise self._error(
                "TRUSTED_PROXIES",
                "trusted_proxies",
                f"has an invalid address ({error})",
                "comma-separated IP addresses or CIDR networks, e.g. 127.0.0.1,10.0.0.0/8, or none",
            ) from None

    def status_ranges(self, value: Sequence[str | int] | None) -> tuple[tuple[int, int], ...]:
        items = self._items("EXCLUDE_STATUS", value)
        ranges = []
        for item in items or ():
            text = item.lower()
            if re.fullmatch(r"[1-5]xx", text):
                ranges.append((int(text[0]) * 100, int(text[0]) * 100 + 99))
            elif re.fullmatch(r"[1-5][0-9]{2}", text):
                ranges.append((int(text), int(text)))
            else:
                raise self._error(
                    "EXCLUDE_STATUS", "exclude_status", f"has {item!r}", "status codes or classes, e.g. 404,5xx"
                )
        return tuple(ranges)

    def number(self, suffix: str, value: float | None, default: float, expected: str) -> float:
        """A positive finite number; arguments use the same unit as the variable except where documented."""
        raw = self._raw(suffix, value)
        if raw is None:
            return default
        try:
            number = float(str(raw))
        except ValueError:
            number = math.nan
        if isinstance(raw, bool) or not 0 < number < math.inf:
            raise self._error(suffix, suffix.lower(), f"is {raw!r}", f"a positive number: {expected}")
        return number

    def dimensions(self, value: Mapping[int, str] | None) -> tuple[tuple[int, str], ...]:
        if value is not None:
            items = [f"{key}={name}" for key, name in value.items()]
        else:
            items = list(self._items("DIMENSIONS", None) or ())
        pairs = []
        for item in items:
            key, sep, name = item.partition("=")
            if not sep or not (key.strip().isascii() and key.strip().isdigit()) or int(key) < 1 or not name.strip():
                raise self._error(
                    "DIMENSIONS", "dimensions", f"has {item!r}", "id=attribute pairs, e.g. 1=enduser.role,2=tenant"
                )
            pairs.append((int(key), name.strip()))
        return tuple(pairs)

    def mask(self, value: int | None) -> int:
        raw = self._raw("ANONYMIZE_IP", value)
        if raw is None:
            return 0
        text = str(raw)
        if isinstance(raw, bool) or text not in ("0", "1", "2", "3"):
            raise self._error(
                "ANONYMIZE_IP", "anonymize_ip", f"is {text!r}", "0, 1, 2 or 3 (bytes of the IP to mask, as in Matomo)"
            )
        return int(text)

    def choice(self, suffix: str, argument: str, value: str | None, choices: tuple[str, ...]) -> str:
        raw = self._raw(suffix, value)
        if raw is None:
            return choices[0]
        text = str(raw).lower()
        if text not in choices:
            raise self._error(suffix, argument, f"is {raw!r}", " or ".join(choices))
        return text

    def text(self, suffix: str, value: str | None, default: str) -> str:
        raw = self._raw(suffix, value)
        return default if raw is None else str(raw)

    def endpoint(self, value: str | None, *, required: bool) -> str | None:
        expected = "the Matomo base URL or its matomo.php URL, e.g. https://matomo.example.com"
        raw = self._raw("ENDPOINT", value)
        if raw is None:
            if required:
                raise self._error("ENDPOINT", "endpoint", "is not set", expected)
            return None
        text = str(raw)
        parts = urlsplit(text)
        # Never echo a query (it may hold a token) nor what stands before an '@' (it may be a password), even
        # where urlsplit sees no netloc.
        base = re.split(r"[?#]", text, maxsplit=1)[0]
        shown = repr(base if "@" not in base else "…@" + base.rpartition("@")[2])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self._error("ENDPOINT", "endpoint", f"is {shown}, which has no http(s) scheme and host", expected)
        if parts.query or parts.fragment:
            raise self._error(
                "ENDPOINT",
                "endpoint",
                f"is {shown} with a query or fragment (never put token_auth in a URL)",
                expected,
            )
        path = parts.path if parts.path.endswith(".php") else parts.path.rstrip("/") + "/matomo.php"
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))

    def site_id(self, value: int | str | None, default: int | None) -> int:
        expected = "a positive whole number, the Matomo idsite, e.g. 1"
        raw = self._raw("SITE_ID", value)
        if raw is None:
            if default is None:
                raise self._error("SITE_ID", "site_id", "is not set", expected)
            return default
        text = str(raw)
        if isinstance(raw, bool) or not (text.isascii() and text.isdigit()) or int(text) < 1:
            raise self._error("SITE_ID", "site_id", f"is {text!r}", expected)
        return int(text)

    def token(self, value: str | None) -> str | None:
        raw = self._raw("TOKEN_AUTH", value)
        if raw is None:
            return None
        text = str(raw).strip()
        if not text.isascii() or not text.isalnum():
            # Never echo the value: it is a secret, even when mistyped.
            raise self._error(
                "TOKEN_AUTH",
                "token_auth",
                "contains characters a Matomo token never has",
                "the token_auth of a Matomo user with write access (letters and digits only)",
            )
        return text

    def timeout(self, value: float | None) -> float:
        expected = "a positive number of milliseconds, e.g. 10000"
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ConfigurationError(f"timeout is {value!r}: expected a positive number of seconds")
            return float(value)
        raw = self._raw("TIMEOUT", None)
        if raw is None:
            return _DEFAULT_TIMEOUT_S
        try:
            millis = float(str(raw))
        except ValueError:
            raise self._error("TIMEOUT", "timeout", f"is {raw!r}", expected) from None
        if not 0 < millis < math.inf:
            raise self._error("TIMEOUT", "timeout", f"is {raw!r}", expected)
        return millis / 1000.0

    def secret(self, value: str | bytes | None, token: str | None, *, warn: bool) -> bytes:
        raw = self._raw("VISITOR_ID_SECRET", value)
        if raw is not None:
            secret = raw if isinstance(raw, bytes) else str(raw).encode()
            if len(secret) < 16:
                raise self._error(
                    "VISITOR_ID_SECRET",
                    "visitor_id_secret",
                    "is shorter than 16 bytes",
                    "a random string of at least 16 characters shared by every process of the deployment",
                )
            return secret
        if token is not None:
            # The token is already a secret that every process of one deployment shares, so ids stay stable
            # across workers and restarts; hashing it keeps the token itself out of the key material's uses.
            return hashlib.sha256(b"otel-matomo visitor id\0" + token.encode()).digest()
        if warn:
            _logger.warning(
                "otel-matomo has no %sVISITOR_ID_SECRET (and no token_auth to derive one from): visitor "
                "ids are keyed with a public constant, so a visitor's IP and user agent could be guessed back "
                "from them. Set a random secret shared by every process of the deployment.",
                ENV_PREFIX,
            )
        return b"otel-matomo public visitor id key"
